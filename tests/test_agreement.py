"""recs/agreement.py against values worked by hand."""
from __future__ import annotations

import pytest

from recs.agreement import jaccard, kendall, list_agreement, overlap, rbo, spearman


def test_identical_lists_agree_fully():
    a = [5, 3, 9, 1]
    assert list_agreement(a, list(a), k=4) == pytest.approx(
        {"overlap": 1.0, "jaccard": 1.0, "rbo": 1.0, "spearman": 1.0, "kendall": 1.0})
    assert rbo(list(range(20)), list(range(20))) == pytest.approx(1.0)


def test_reversed_lists_hand_computed():
    """RBO_ext of equal-length lists (Webber, Moffat & Zobel 2010, eq. 32 with s = l = k):
    (1-p)/p * sum_d X_d/d p^d + X_k/k p^k.

    k = 3, p = 0.9, [1,2,3] vs [3,2,1]: X = 0, 1, 3 ->
        (0.1/0.9) * (0 + 1/2 * 0.81 + 3/3 * 0.729) + 3/3 * 0.729 = 1.134 / 9 + 0.729 = 0.855.
    k = 4, [1,2,3,4] vs [4,3,2,1]: X = 0, 0, 2, 4 ->
        (2/3 * 0.729 + 4/4 * 0.6561) / 9 + 0.6561 = 1.1421 / 9 + 0.6561 = 0.783.
    """
    assert rbo([1, 2, 3], [3, 2, 1], p=0.9) == pytest.approx(0.855)
    assert rbo([1, 2, 3, 4], [4, 3, 2, 1], p=0.9) == pytest.approx(0.783)
    got = list_agreement([1, 2, 3, 4], [4, 3, 2, 1], k=4)
    assert got["overlap"] == pytest.approx(1.0) and got["jaccard"] == pytest.approx(1.0)
    assert got["rbo"] == pytest.approx(0.783) and got["rbo"] < 1
    assert got["spearman"] == pytest.approx(-1.0) and got["kendall"] == pytest.approx(-1.0)


def test_published_example():
    """The RBO_ext example of a published implementation (b4ny4n/rankmeasures README):
    [1,2,3,4,5] vs [2,3,4,1,5] at p = 0.9 is 0.828. By hand: X = 0, 1, 2, 4, 5 ->
    (1/2 .81 + 2/3 .729 + 4/4 .6561 + 5/5 .59049) / 9 + .59049 = 2.13759 / 9 + .59049."""
    assert rbo([1, 2, 3, 4, 5], [2, 3, 4, 1, 5]) == pytest.approx(2.13759 / 9 + 0.59049)
    assert rbo([1, 2, 3, 4, 5], [2, 3, 4, 1, 5]) == pytest.approx(0.828)


def test_disjoint_lists():
    got = list_agreement([1, 2, 3], [4, 5, 6], k=3)
    assert got == {"overlap": 0.0, "jaccard": 0.0, "rbo": 0.0, "spearman": None, "kendall": None}


def test_unequal_lengths_rbo_ext_eq32():
    """Eq. 32 with S = [1,2] (s = 2) and L = [1,3,2,4] (l = 4), p = 0.9.

    X_d (overlap of the top d; for d > s all of S against L's top d): 1, 1, 2, 2; X_s = 1.
    First sum  sum_{d=1..4} X_d/d p^d = .9 + .405 + .486 + .32805 = 2.11905.
    Second sum sum_{d=3..4} X_s (d-s)/(s d) p^d = 1/6 .729 + 2/8 .6561 = .1215 + .164025 = .285525.
    Tail       ((X_l - X_s)/l + X_s/s) p^l = (1/4 + 1/2) .6561 = .492075.
    RBO_ext = (2.11905 + .285525) / 9 + .492075 = 0.75925.

    The PyPI `rbo` package (changyaochen/rbo) gets this case wrong by default: its
    `RankingSimilarity.rbo()` defaults to p = 1.0 (plain average overlap, no top weighting) and
    truncates both lists to the shorter one (k = min(len(S), len(T))), so it would call S and L's
    top two ([1,3]) half-agreeing and ignore that L holds 2 at rank 3.
    """
    assert rbo([1, 2], [1, 3, 2, 4]) == pytest.approx(0.75925)
    assert rbo([1, 3, 2, 4], [1, 2]) == pytest.approx(0.75925)  # symmetric
    # A prefix of the longer list: nothing contradicts the extrapolation beyond s (the second sum
    # tops each A_d = s/d back up to 1).
    assert rbo([1, 2, 3], [1, 2, 3, 4, 5]) == pytest.approx(1.0)
    assert rbo([], [1, 2]) == 0.0 and rbo([], []) is None
    with pytest.raises(ValueError):
        rbo([1], [1], p=1.0)


def test_overlap_and_jaccard_at_k_and_short_lists():
    a, b = [1, 2, 3, 4, 5], [2, 9, 1, 8, 7]
    assert overlap(a, b, 2) == pytest.approx(1 / 2)  # {1,2} vs {2,9}
    assert overlap(a, b, 5) == pytest.approx(2 / 5)
    assert jaccard(a, b, 5) == pytest.approx(2 / 8)
    # Lists shorter than k: k is cut to the longer list (identical 3-item lists agree fully at 10).
    assert overlap([1, 2, 3], [1, 2, 3], 10) == pytest.approx(1.0)
    assert overlap([1, 2, 3], [1, 2, 3, 4, 5], 10) == pytest.approx(3 / 5)
    assert overlap([], [], 10) is None and jaccard([], [], 10) is None
    assert overlap([1, 1, 2], [1, 2], 2) == pytest.approx(1.0)  # a repeat counts once


def test_rank_correlations_on_shared_items():
    # Shared {1, 2, 3}: order 1,2,3 in a; 2,1,3 in b -> one swapped pair of three.
    a, b = [1, 2, 3, 4], [2, 7, 1, 3]
    assert kendall(a, b) == pytest.approx((2 - 1) / 3)
    assert spearman(a, b) == pytest.approx(1 - 6 * 2 / (3 * 8))  # d = (1, 1, 0)
    assert spearman([1, 2], [2, 1]) == pytest.approx(-1.0)
    assert kendall([1, 9], [1, 8]) is None  # one shared item


def test_list_agreement_cuts_to_k():
    a, b = [1, 2, 3, 4], [1, 2, 4, 3]
    assert list_agreement(a, b, k=2) == pytest.approx(
        {"overlap": 1.0, "jaccard": 1.0, "rbo": 1.0, "spearman": 1.0, "kendall": 1.0})
    assert list_agreement(a, b, k=4)["rbo"] < 1
