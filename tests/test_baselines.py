"""model/baselines.py on a tiny hand-made sequence set, and once on real Retail Rocket sessions."""
from __future__ import annotations

import math

import numpy as np
import pytest

from model.baselines import DAY_MS, ItemKNN, Popularity, evaluate_on_sessions, load_sessions
from model.data import SequenceTables
from model.metrics import top_k
from tests.sequence_fixtures import tiny_sequences

# Left-padded item_idx sequences over items 1..7.
SEQUENCES = np.array([
    [1, 2, 3],
    [1, 2, 4],
    [5, 1, 2],
    [0, 6, 7],
    [0, 3, 5],
])
# Forward pairs at distance 1: (1,2) x3, (2,3), (2,4), (5,1), (6,7), (3,5).
# Occurrences: 1:3, 2:3, 3:2, 4:1, 5:2, 6:1, 7:1.


def plain_knn(**overrides) -> ItemKNN:
    params = dict(window=1, backward_weight=0.0, alpha=0.5, last_n=2, recency_decay=0.5,
                  repeat_boost=0.0, popularity_weight=0.0)
    return ItemKNN(num_items=7, **{**params, **overrides}).fit(SEQUENCES)


def test_knn_similarity_hand_computed():
    sim = plain_knn().sim.toarray()
    assert sim[1, 2] == pytest.approx(3 / math.sqrt(3 * 3))
    assert sim[2, 4] == pytest.approx(1 / math.sqrt(3 * 1))
    assert sim[5, 1] == pytest.approx(1 / math.sqrt(2 * 3))
    assert sim[2, 1] == 0.0  # backward pairs weigh 0 here
    assert sim[1, 3] == 0.0  # distance 2 is outside window=1
    both_ways = ItemKNN(num_items=7, window=2, distance_decay=0.5, backward_weight=1.0, alpha=0.5).fit(SEQUENCES).sim.toarray()
    # co(1,3): (1,3) at distance 2 in row 0 -> 0.5; co(3,1): none. cosine over sqrt(3 * 2).
    assert both_ways[1, 3] == pytest.approx(0.5 / math.sqrt(6))
    assert both_ways[3, 1] == pytest.approx(0.5 / math.sqrt(6))  # backward weight 1: symmetric


def test_knn_ranks_the_co_occurring_item_first():
    knn = plain_knn()
    scores = knn.score(np.array([[0, 5, 1]]))
    # Seeds: 1 (weight 1), 5 (weight 0.5): score(2) = sim(1,2) = 1, score(1) = 0.5 * sim(5,1).
    expected = np.array([-np.inf, 0.5 / math.sqrt(6), 1.0, 0, 0, 0, 0, 0], np.float32)
    np.testing.assert_allclose(scores[0], expected, rtol=1e-6)
    assert knn.topk(np.array([[0, 5, 1], [0, 0, 6]]), 1).tolist() == [[2], [7]]


def test_knn_repeat_boost_puts_seen_items_back_on_top():
    history = np.array([[0, 5, 1]])
    knn = plain_knn(repeat_boost=2.0, repeat_decay=0.5)
    scores = knn.score(history)[0]
    assert scores[1] == pytest.approx(0.5 / math.sqrt(6) + 2.0)  # most recent step: 2 * 0.5**0
    assert scores[5] == pytest.approx(2.0 * 0.5)  # one step back
    assert knn.topk(history, 1)[0, 0] == 1
    assert plain_knn().topk(history, 1)[0, 0] == 2  # without the boost the neighbour wins


def test_knn_popularity_orders_cold_rows_and_chunks_agree():
    knn = ItemKNN(num_items=7, window=1, popularity_weight=1e-3).fit(SEQUENCES)
    cold = knn.topk(np.zeros((1, 3), np.int64), 3)[0]
    assert set(cold[:2]) == {1, 2}  # the most frequent items (3 occurrences each)
    histories = np.array([[0, 5, 1], [1, 2, 3], [0, 0, 6], [0, 0, 0]])
    np.testing.assert_allclose(knn.score(histories, chunk_rows=1), knn.score(histories))
    np.testing.assert_array_equal(knn.topk(histories, 4, chunk_rows=3), top_k(knn.score(histories), 4))


def test_knn_first_counted_skips_overlapping_steps():
    twice = np.array([[1, 2, 3], [1, 2, 3]])
    once = ItemKNN(num_items=3, window=2).fit(twice[:1]).sim.toarray()
    dedup = ItemKNN(num_items=3, window=2).fit(twice, first_counted=np.array([0, 3])).sim.toarray()
    np.testing.assert_allclose(dedup, once)


def test_knn_fit_tables_counts_window_steps_only(tmp_path):
    tables = SequenceTables.load(tiny_sequences(tmp_path), splits=("train",), history_len=64)
    knn = ItemKNN(num_items=tables.num_items, window=1, backward_weight=0.0, alpha=0.5).fit_tables(tables)
    sim = knn.sim.toarray()
    # Counted window occurrences: 1:3, 2:2, 3:2, 4:1, 5:1, 6:2.
    assert sim[1, 2] == pytest.approx(1 / math.sqrt(3 * 2))  # customer 1's first window
    assert sim[6, 1] == pytest.approx(1 / math.sqrt(2 * 3))  # customer 3's window
    assert sim[4, 5] == pytest.approx(1.0)  # history step 4 -> window step 5
    assert sim[2, 3] == 0.0 and sim[3, 4] == 0.0  # only inside customer 3's history: not a train target


def test_popularity_counts_and_trending(tmp_path):
    items = np.array([1, 1, 2, 3, 3, 3, 0])
    ts = np.array([0, 1, 2, 3, 4, 5, 6]) * DAY_MS
    pop = Popularity.fit(items, 4)
    np.testing.assert_array_equal(pop.counts, [0, 2, 1, 3, 0])
    scores = pop.score(np.zeros((2, 5), np.int32))
    assert scores.shape == (2, 5) and scores[0, 0] == -np.inf
    assert pop.topk(np.zeros((2, 5)), 2).tolist() == [[3, 1], [3, 1]]
    trending = Popularity.fit(items, 4, ts=ts, cutoff_ts=3 * DAY_MS, trending_days=2)  # days 1, 2
    np.testing.assert_array_equal(trending.counts, [0, 1, 1, 0, 0])


def test_popularity_from_tables(tmp_path):
    tables = SequenceTables.load(tiny_sequences(tmp_path), splits=("train",), history_len=4)
    np.testing.assert_array_equal(Popularity.from_tables(tables).counts, [0, 50, 40, 30, 20, 10, 5, 0])
    # Train window steps in the last 650 ms before train_end_ts = 1000: 6@350 1@360 2@400 4@410 6@420.
    recent = Popularity.from_tables(tables, trending_days=650 / DAY_MS)
    np.testing.assert_array_equal(recent.counts, [0, 1, 1, 0, 1, 0, 2, 0])


@pytest.mark.slow
def test_real_sessions_knn_beats_popularity(shared_data):
    path = shared_data / "retailrocket-sessions" / "events.csv.gz"
    if not path.exists():
        pytest.skip("real Retail Rocket sessions not available")
    split = load_sessions(path, test_fraction=0.1)
    assert split.train.shape[0] + len(split.target) == 126_168
    # A slice of the test sessions keeps this fast; the full figures are in the README.
    split.test_history, split.target = split.test_history[:2000], split.target[:2000]
    knn = evaluate_on_sessions(split, ItemKNN(split.num_items).fit(split.train))
    pop = evaluate_on_sessions(split, Popularity.fit(split.train_items, split.num_items))
    assert knn["recall@20"] > 0.6 and knn["mrr@20"] > 0.35
    assert pop["recall@20"] < 0.05
