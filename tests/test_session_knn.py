"""model/session_knn.py on hand-made sessions (values worked out by hand), and once on real sessions."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from model.metrics import mrr_at_k, rank_of_targets, recall_at_k
from model.session_knn import DAY_MS, SessionKNN, _keep_top_per_row, _top_per_row, load_session_times

E = math.exp
# Every factor off: plain cosine neighbours, every item of a neighbour weighing its similarity.
PLAIN = dict(k=100, sample_size=0, lambda_spw=None, lambda_snh=None, lambda_inh=None, lambda_ipw=None,
             lambda_idf=None, idf_similarity=False, remind=True, popularity_weight=0.0)

# Left-padded past sessions over items 1..8 (8 never occurs).
SESSIONS = np.array([
    [0, 1, 2, 3],  # s0
    [0, 0, 2, 4],  # s1
    [0, 0, 5, 6],  # s2
    [3, 1, 7, 1],  # s3: item 1 last at position 4
])


def knn(sessions=SESSIONS, timestamps=None, num_items=8, **params) -> SessionKNN:
    return SessionKNN(num_items=num_items, **{**PLAIN, **params}).fit(sessions, timestamps)


def top1(model: SessionKNN, history, query_ts=None) -> int:
    return int(model.topk(np.array([history]), 1, None if query_ts is None else np.array([query_ts]))[0, 0])


def test_neighbours_and_scores_hand_computed():
    model = knn(lambda_spw=1.0, lambda_inh=1.0, lambda_ipw=1.0)
    query = np.array([[0, 1, 2]])  # item 2 newest (weight 1), item 1 one step back (weight e^-1)
    norm = math.sqrt(1 + E(-2))
    sim0 = (1 + E(-1)) / (norm * math.sqrt(3))
    sim1 = 1 / (norm * math.sqrt(2))
    sim3 = E(-1) / (norm * math.sqrt(3))
    rows, sims = model.neighbours(query)[0]
    assert rows.tolist() == [0, 1, 3]  # s2 shares nothing
    np.testing.assert_allclose(sims, [sim0, sim1, sim3], rtol=1e-12)
    # Item scores: sim * exp(-|pos - pos*|) * exp(-steps after the newest shared query item).
    # s0: pos* = 2 (item 2), newest shared step 0.  s1: pos* = 1, step 0.  s3: pos* = 4 (item 1), step 1.
    raw = np.zeros(9)
    raw[1] = sim0 * E(-1) + sim3 * E(-1)
    raw[2] = sim0 + sim1
    raw[3] = sim0 * E(-1) + sim3 * E(-3) * E(-1)
    raw[4] = sim1 * E(-1)
    raw[7] = sim3 * E(-1) * E(-1)
    scores = model.score(query)[0]
    expected = raw / raw.max()  # each row is scaled so that its best score is 1
    expected[[0, 8]] = -np.inf  # padding and the item never seen in training
    np.testing.assert_allclose(scores, expected.astype(np.float32), rtol=1e-6)
    assert scores[4] == pytest.approx(sim1 * E(-1) / (sim0 + sim1), rel=1e-6)
    assert model.topk(query, 3).tolist() == [[2, 1, 3]]
    assert [r.tolist() for r, _ in knn(k=2, lambda_spw=1.0).neighbours(query)] == [[0, 1]]


def test_idf_multiplies_item_scores():
    model = knn(lambda_idf=2.0)
    scores = model.score(np.array([[0, 0, 4]]))[0]  # the only neighbour: s1 = {2, 4}
    # idf = log(4 sessions / events): item 2 twice, item 4 once.
    raw2, raw4 = 1 + 2 * math.log(4 / 2), 1 + 2 * math.log(4 / 1)
    assert scores[2] == pytest.approx(raw2 / raw4, rel=1e-6)
    assert scores[4] == pytest.approx(1.0)
    plain = knn().score(np.array([[0, 0, 4]]))[0]
    assert plain[2] == plain[4] == pytest.approx(1.0)


# In these, a, b are query items and c, d the candidates one of which each feature should put first.
def test_position_weight_of_the_current_session():
    a, b, c, d = 1, 2, 3, 4
    sessions = np.array([[a, c], [a, c], [b, d]])
    query = [a, b]  # b is the newest step
    assert top1(knn(sessions, remind=False), query) == c  # two neighbours through a
    assert top1(knn(sessions, remind=False, lambda_spw=1.0), query) == d  # a weighs e^-1: 2 e^-1 < 1


def test_neighbour_session_recency():
    a, c, d = 1, 2, 3
    sessions = np.array([[a, c], [a, c], [a, d]])
    now = 100 * DAY_MS
    ts = np.array([now - 10 * DAY_MS, now - 10 * DAY_MS, now - DAY_MS // 2])
    assert top1(knn(sessions, ts, remind=False), [a], now) == c
    recent = knn(sessions, ts, remind=False, lambda_snh=1.0)
    assert top1(recent, [a], now) == d  # 2 e^-10 < e^-0.5
    assert top1(recent, [a]) == c  # no query time: no decay
    assert top1(knn(sessions, None, remind=False, lambda_snh=1.0), [a], now) == c  # no session times
    # Sessions later than the query count as age 0, never more than 1.
    sims = [s for _, s in recent.neighbours(np.array([[0, a]]), np.array([now - 20 * DAY_MS]))][0]
    np.testing.assert_allclose(sims, 1 / math.sqrt(2))


def test_item_position_relative_to_the_matching_item():
    a, c, x, y = 1, 2, 3, 4
    sessions = np.array([[c, x, a], [c, y, a]])  # c two steps from a in both, x and y one step
    assert top1(knn(sessions, remind=False), [a]) == c  # two neighbours hold c
    assert top1(knn(sessions, remind=False, lambda_inh=1.0), [a]) == x  # 2 e^-2 < e^-1


def test_neighbour_weight_by_the_newest_matching_query_step():
    a, b, c, d = 1, 2, 3, 4
    sessions = np.array([[a, c], [a, c], [b, d]])
    assert top1(knn(sessions, remind=False), [a, b]) == c
    assert top1(knn(sessions, remind=False, lambda_ipw=1.0), [a, b]) == d  # neighbours through a: e^-1


def test_idf_prefers_rare_items():
    a, c, d, e = 1, 2, 3, 4
    sessions = np.array([[a, c], [a, d], [a, d]] + [[d, e]] * 5)
    assert top1(knn(sessions, remind=False), [a]) == d
    # idf(c) = log(8 / 1) = 2.08 beats 2 x (1 + idf(d) = log(8 / 7)): 3.08 > 2.27.
    assert top1(knn(sessions, remind=False, lambda_idf=1.0), [a]) == c


def test_idf_weighted_similarity():
    a, b, c, d, e, f = 1, 2, 3, 4, 5, 6
    sessions = np.array([[0, 0, a, c], [0, 0, b, d], [0, 0, b, d], [0, b, b, b]] + [[0, 0, e, f]] * 4)
    assert top1(knn(sessions, remind=False), [a, b]) == d  # two neighbours through b
    # idf(a) = log(8 / 1) = 2.08, idf(b) = log(8 / 5) = 0.47: 2.08 > 2 x 0.47 (same norms).
    assert top1(knn(sessions, remind=False, idf_similarity=True), [a, b]) == c


def test_remind_scores_the_current_items():
    sessions = np.array([[1, 2], [1, 2]])
    model = knn(sessions, lambda_inh=1.0)
    assert top1(model, [1]) == 1  # pos* = 1 (item 1 itself): weight 1; item 2 one step away
    assert top1(model, [2, 1]) == 2  # pos* = 2: the later of the shared items
    without = knn(sessions, lambda_inh=1.0, remind=False).score(np.array([[0, 1]]))[0]
    assert without[1] == 0.0 and without[2] == 1.0


def test_sampling_the_most_recent_candidate_sessions():
    a, c, d = 1, 2, 3
    sessions = np.array([[a, c], [a, c], [a, d]])
    assert top1(knn(sessions, remind=False), [a]) == c
    assert top1(knn(sessions, remind=False, sample_size=1), [a]) == d  # row order = recency
    ts = np.array([3, 2, 1]) * DAY_MS  # now the d session is the oldest
    assert top1(knn(sessions, ts, remind=False, sample_size=1), [a]) == c
    assert top1(knn(sessions, remind=False, k=1), [a]) == d  # equal similarity: the more recent wins
    b = 4
    sessions = np.array([[a, c], [a, c], [b, d]])  # each query item's newest session: rows 1 and 2
    assert top1(knn(sessions, remind=False), [a, b]) == c
    assert top1(knn(sessions, remind=False, sample_size=1), [a, b]) == d  # the newest of those two
    model = knn(sessions, remind=False, sample_size=2)
    assert [r.tolist() for r, _ in model.neighbours(np.array([[a, b]]))] == [[2, 1]]  # equal: newest first


def test_top_per_row_without_sorting_matches_a_sort():
    rng = np.random.default_rng(2)
    lengths = rng.integers(0, 12, size=40)
    indptr = np.r_[0, np.cumsum(lengths)]
    values = rng.integers(0, 4, size=indptr[-1]).astype(np.float64)  # many ties
    for k in (0, 1, 3, 5):
        expected = np.zeros(len(values), bool)
        expected[_top_per_row(indptr, values, k, ties=-np.arange(len(values)))] = True  # ties: later first
        for cells in (7, 50, 1 << 22):  # blocks of one row, a few rows, everything at once
            np.testing.assert_array_equal(_keep_top_per_row(indptr, values, k, cells=cells), expected)


def test_popularity_orders_unscored_items():
    model = knn(popularity_weight=1e-3)
    scores = model.score(np.array([[0, 0, 6]]))[0]  # neighbour s2 = {5, 6}
    # events: 1:3, 2:2, 3:2, 4..7:1 -> popularity share count / 3.
    assert scores[5] == pytest.approx(1 + 1e-3 / 3)
    assert scores[1] == pytest.approx(1e-3) and scores[2] == pytest.approx(2e-3 / 3)
    assert model.topk(np.array([[0, 0, 6]]), 4).tolist() == [[5, 6, 1, 2]]


def test_padding_invariance_and_chunks():
    rng = np.random.default_rng(0)
    sessions = rng.integers(0, 30, size=(60, 6))
    params = dict(lambda_spw=1.0, lambda_inh=2.0, lambda_ipw=1.0, lambda_idf=1.0, lambda_snh=3.0,
                  popularity_weight=1e-3, k=10, sample_size=20)
    ts = rng.integers(0, 30, size=60) * DAY_MS
    history = rng.integers(0, 30, size=(25, 5))
    qts = np.full(25, 31 * DAY_MS)
    model = knn(sessions, ts, num_items=30, **params)
    base = model.score(history, qts)
    padded_fit = knn(np.pad(sessions, ((0, 0), (3, 0))), ts, num_items=30, **params)
    np.testing.assert_array_equal(padded_fit.score(history, qts), base)
    np.testing.assert_array_equal(model.score(np.pad(history, ((0, 0), (4, 0))), qts), base)
    np.testing.assert_array_equal(model.score(history, qts, chunk_rows=3), base)
    assert np.isfinite(base[:, 1:][:, model.popularity[1:] > 0]).all()


def test_score_topk_and_top_candidates_agree():
    rng = np.random.default_rng(1)
    sessions = rng.integers(0, 40, size=(80, 7))
    sessions[:, :2] = np.where(sessions[:, :2] > 35, 0, sessions[:, :2])
    history = rng.integers(0, 40, size=(30, 6))
    history[0] = 0  # an empty history: popularity only
    for params in (dict(popularity_weight=1e-3, lambda_spw=1.0, lambda_inh=2.0, lambda_idf=1.0, k=15),
                   dict(popularity_weight=0.0, remind=False)):
        model = knn(sessions, num_items=45, **params)  # items 40..44 never occur
        dense = model.score(history)
        items, values = model.top_candidates(history, 10)
        np.testing.assert_array_equal(model.topk(history, 10), items)
        np.testing.assert_array_equal(values, -np.sort(-dense, axis=1)[:, :10])  # the k best scores
        np.testing.assert_array_equal(np.take_along_axis(dense, items, axis=1), values)  # of these items
        assert all(len(set(r)) == 10 for r in items.tolist())
        np.testing.assert_array_equal(model.top_candidates(history, 10, chunk_rows=7)[0], items)


def test_items_never_in_training():
    model = knn(popularity_weight=1e-3)
    scores = model.score(np.array([[0, 8, 1], [0, 0, 8]]))
    assert (scores[:, [0, 8]] == -np.inf).all()
    assert np.isfinite(scores[:, 1:8]).all()
    assert np.isinf(scores[1]).sum() == 2  # a history of an unknown item: popularity only
    items, values = model.top_candidates(np.array([[0, 8, 1]]), 9)  # more than the 7 trained items
    assert sorted(items[0, :7].tolist()) == list(range(1, 8))
    assert items[0, 7:].tolist() == [0, 0] and (values[0, 7:] == -np.inf).all()


def test_real_sessions_beats_popularity(shared_data):
    from model.baselines import Popularity, load_sessions

    path = shared_data / "retailrocket-sessions" / "events.csv.gz"
    if not path.exists():
        pytest.skip("real Retail Rocket sessions not available")
    split, times = load_sessions(path), load_session_times(path)
    assert len(times.train_last) == len(split.train) and len(times.test_query) == len(split.target)
    assert (times.train_query <= times.train_last).all()
    # The first 20K train sessions: fit on 18K, predict the last item of the next 2K.
    fit, queries = split.train[:18_000], split.train[18_000:20_000]
    history = np.concatenate([np.zeros((len(queries), 1), queries.dtype), queries[:, :-1]], axis=1)
    target = queries[:, -1]
    model = SessionKNN(split.num_items).fit(fit, times.train_last[:18_000])
    ranks = rank_of_targets(model.score(history, times.train_query[18_000:20_000]), target)
    pop = Popularity.fit(fit[fit > 0], split.num_items)
    pop_ranks = rank_of_targets(pop.score(history), target)
    recall, pop_recall = recall_at_k(ranks, 20), recall_at_k(pop_ranks, 20)
    assert recall > 0.45 and mrr_at_k(ranks, 20) > 0.25
    assert recall > 5 * pop_recall
