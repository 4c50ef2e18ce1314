"""model/metrics.py against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from model.metrics import (
    hit_rate_at_k, mrr_at_k, ndcg_at_k, purchase_rate_at_k, rank_of_targets, ranks_in_chunks, recall_at_k,
    roc_auc, top_k,
)

RANKS = np.array([1, 3, 0, 25, 2])  # 0 = not retrieved


def test_recall_mrr_ndcg_hand_computed():
    assert recall_at_k(RANKS, 20) == pytest.approx(3 / 5)
    assert recall_at_k(RANKS, 2) == pytest.approx(2 / 5)
    assert mrr_at_k(RANKS, 20) == pytest.approx((1 + 1 / 3 + 1 / 2) / 5)
    assert mrr_at_k(RANKS, 2) == pytest.approx((1 + 1 / 2) / 5)
    assert ndcg_at_k(RANKS, 20) == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(3)) / 5)
    assert recall_at_k(np.array([np.inf, 1.0]), 5) == pytest.approx(0.5)  # inf = not retrieved
    assert math.isnan(recall_at_k(np.array([]), 5))


SCORES = np.array([
    [9.0, 0.1, 0.5, 0.5, 0.2],  # column 0 (padding) never competes; tie with column 2
    [0.0, 0.3, 0.2, 0.1, 0.0],
    [0.0, 0.3, 0.2, 0.1, 0.0],
    [0.0, 1.0, 1.0, 1.0, 1.0],  # all tied: pessimistic = last
    [0.0, -np.inf, 0.2, 0.1, 0.0],
])
TARGETS = np.array([3, 1, 0, 4, 1])


def test_rank_of_targets_pessimistic_ties():
    np.testing.assert_array_equal(rank_of_targets(SCORES, TARGETS), [2, 1, 0, 4, 0])
    np.testing.assert_array_equal(rank_of_targets(SCORES, TARGETS, chunk_rows=2), [2, 1, 0, 4, 0])
    valid = np.array([True, True, False, True, True])  # drop column 2
    np.testing.assert_array_equal(rank_of_targets(SCORES, TARGETS, valid=valid), [1, 1, 0, 3, 0])
    np.testing.assert_array_equal(rank_of_targets(SCORES.astype(np.float32), TARGETS), [2, 1, 0, 4, 0])


def test_ranks_in_chunks_matches_and_cuts_at_k():
    calls = []

    def score_fn(start, stop):
        calls.append((start, stop))
        return SCORES[start:stop]

    np.testing.assert_array_equal(ranks_in_chunks(score_fn, TARGETS, chunk_rows=2), [2, 1, 0, 4, 0])
    assert calls == [(0, 2), (2, 4), (4, 5)]
    np.testing.assert_array_equal(ranks_in_chunks(score_fn, TARGETS, k=3, chunk_rows=2), [2, 1, 0, 0, 0])


def test_top_k_best_first():
    np.testing.assert_array_equal(top_k(np.array([[0.1, 0.5, 0.5, 0.9], [4.0, 3.0, 2.0, 1.0]]), 3),
                                  [[3, 1, 2], [0, 1, 2]])


def test_roc_auc_with_ties_and_missing_class():
    # Positive/negative pairs: 0.9>0.8, 0.9>0.1, 0.8=0.8 (half), 0.8>0.1, 0.3<0.8, 0.3>0.1 -> 4.5 / 6.
    assert roc_auc(np.array([1, 0, 1, 0, 1]), np.array([0.9, 0.8, 0.8, 0.1, 0.3])) == pytest.approx(0.75)
    assert roc_auc(np.array([[1, 0], [0, 1]]), np.array([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(1.0)
    assert roc_auc(np.array([1, 0, 1, 0]), np.zeros(4)) == pytest.approx(0.5)  # all tied


def test_roc_auc_nan_when_one_class():
    assert math.isnan(roc_auc(np.array([1, 1]), np.array([0.1, 0.2])))
    assert math.isnan(roc_auc(np.array([0, 0]), np.array([0.1, 0.2])))


CAND_SCORES = np.array([[0.9, 0.5, 0.5, 0.1], [0.2, 0.8, 0.7, 0.3], [0.5, 0.4, 0.3, 0.2], [0.4, 0.4, 0.1, 0.0]])
CAND_LABELS = np.array([[4, 1, 4, 0], [1, 4, 4, 0], [4, 4, 0, 0], [4, 5, 0, 0]])  # bit 0 = purchase


def test_purchase_rate_at_k_hand_computed():
    # Rows with a purchase: 0, 1, 3 (row 2 has none and is left out).
    # Non-purchased slots scoring >= the best purchased one: row 0 -> 2 (0.9, tie 0.5), row 1 -> 3, row 3 -> 1 (tie).
    assert purchase_rate_at_k(CAND_SCORES, CAND_LABELS, 1) == pytest.approx(0.0)
    assert purchase_rate_at_k(CAND_SCORES, CAND_LABELS, 2) == pytest.approx(1 / 3)
    assert purchase_rate_at_k(CAND_SCORES, CAND_LABELS, 3) == pytest.approx(2 / 3)
    assert purchase_rate_at_k(CAND_SCORES, CAND_LABELS, 4) == pytest.approx(1.0)
    valid = np.ones_like(CAND_LABELS, bool)
    valid[1, 1:3] = False  # padding slots of row 1: only 0.3 beats its purchase now
    assert purchase_rate_at_k(CAND_SCORES, CAND_LABELS, 2, valid) == pytest.approx(2 / 3)
    assert math.isnan(purchase_rate_at_k(CAND_SCORES, np.full((4, 4), 4), 2))


def test_hit_rate_any_relevant():
    relevant = CAND_LABELS == 4  # views only: row 0 slots 0, 2; row 1 slots 1, 2; row 2 slots 0, 1; row 3 slot 0
    # Best relevant vs non-relevant >= it: row 0 0.9 (none), row 1 0.8 (none), row 2 0.5 (none), row 3 0.4 (tie 0.4).
    assert hit_rate_at_k(CAND_SCORES, relevant, 1) == pytest.approx(3 / 4)
