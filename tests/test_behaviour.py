"""recs/behaviour.py's statistics, and generated `small` measured against the real Retail Rocket sessions.

The real figures are computed here from `../shared/data/retailrocket-sessions/events.csv.gz`
(skipped when that file is absent); the generated data must land within TOLERANCES of them.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import duckdb
import numpy as np
import pytest

from model.baselines import ItemKNN, Popularity, SessionSplit, evaluate_on_sessions, load_sessions
from recs.behaviour import behaviour_stats, preprocessed_views_sql
from recs.generate import generate

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_SESSIONS = REPO_ROOT / ".." / "shared" / "data" / "retailrocket-sessions" / "events.csv.gz"

# |generated small - real| allowed per statistic: the bounds for the repeat shares, the
# median, p90 and the top shares, plus p10 exact (>= 10% of sessions have the minimum 3 views),
# p25 +-1, p75 +-2 and the mean +-15%. Seeds 0-7 of `small` use at most 35% of any bound
# (the top-10% share varies most: 0.418-0.436 against 0.412); the generator before this model
# (same_as_previous 0.34, seen_earlier 0.52, p75 9, p90 13, mean 6.9) fails five of them.
TOLERANCES = {
    "same_as_previous": 0.03,
    "seen_earlier": 0.04,
    "length_p10": 0,
    "length_p25": 1,
    "length_median": 1,
    "length_p75": 2,
    "length_p90": 3,
    "length_mean": 0.8,
    "top1_share": 0.04,
    "top10_share": 0.07,
}
RECALL_AT = 20


def csv_events(path: Path) -> str:
    return f"SELECT * FROM read_csv('{path}')"


def session_split(events_sql: str, folder: Path) -> SessionSplit:
    """The preprocessed sessions as `model.baselines.load_sessions` reads them (one visitorid
    per session, dense item ids): the first 90% of sessions by start time train, the last 10% test."""
    path = folder / "sessions.csv"
    duckdb.connect().execute(f"""
        COPY (
            SELECT ts AS "timestamp", dense_rank() OVER (ORDER BY visitorid, session) AS visitorid,
                   'view' AS event, dense_rank() OVER (ORDER BY itemid) AS itemid
            FROM ({preprocessed_views_sql(events_sql)})
        ) TO '{path}' (HEADER)
    """)
    return load_sessions(path, test_fraction=0.1)


def recalls(split: SessionSplit) -> dict[str, float]:
    """Recall@20 of each test session's last item from its earlier items."""
    key = f"recall@{RECALL_AT}"
    return {
        "popularity": evaluate_on_sessions(split, Popularity.fit(split.train_items, split.num_items))[key],
        # The repeat term alone (no neighbours, no decay): the session's own items, most frequent first.
        "reshow": evaluate_on_sessions(split, ItemKNN(split.num_items, window=0, repeat_decay=1.0).fit(split.train))[key],
        "knn": evaluate_on_sessions(split, ItemKNN(split.num_items).fit(split.train))[key],
    }


@pytest.fixture(scope="module")
def real_events() -> str:
    if not REAL_SESSIONS.exists():
        pytest.skip(f"real Retail Rocket sessions not available at {REAL_SESSIONS}")
    return csv_events(REAL_SESSIONS)


@pytest.fixture(scope="module")
def real(real_events):
    return behaviour_stats(duckdb.connect(), real_events)


@pytest.fixture(scope="module")
def small_events(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("small")
    generate(out, scale="small", seed=0)
    return csv_events(out / "events.csv")


@pytest.fixture(scope="module")
def small(small_events):
    return behaviour_stats(duckdb.connect(), small_events)


# ---------------------------------------------------------------------------------------------
# The statistics' definitions, on a hand-made log


HAND_MADE = """
    SELECT * FROM (VALUES
        -- visitor 1: A A B A, then 31 minutes later B C B (two sessions), and a cart (not a view)
        (0, 1, 'view', 1), (60000, 1, 'view', 1), (120000, 1, 'view', 2), (180000, 1, 'view', 1),
        (2040000, 1, 'view', 2), (2100000, 1, 'view', 3), (2160000, 1, 'view', 2), (2170000, 1, 'addtocart', 3),
        -- visitor 2: A C (too short), then D alone 100 minutes later (D has one view)
        (0, 2, 'view', 1), (60000, 2, 'view', 3), (6000000, 2, 'view', 4),
        -- visitor 3, one session (gaps of exactly 30 minutes do not split it): A B E C C A B C, E seen once
        (0, 3, 'view', 1), (1800000, 3, 'view', 2), (1860000, 3, 'view', 5), (1920000, 3, 'view', 3),
        (3720000, 3, 'view', 3), (3780000, 3, 'view', 1), (3840000, 3, 'view', 2), (3900000, 3, 'view', 3)
    ) AS t("timestamp", visitorid, event, itemid)
"""


def test_hand_made_log():
    con = duckdb.connect()
    sessions = con.execute(f"""
        SELECT visitorid, session, list(itemid ORDER BY position)
        FROM ({preprocessed_views_sql(HAND_MADE)}) GROUP BY ALL ORDER BY ALL
    """).fetchall()
    # E and D (one view each) are dropped, then visitor 2's session (A C, 2 views). C keeps 4
    # views: the item filter ran before the session filter, once.
    assert sessions == [(1, 1, [1, 1, 2, 1]), (1, 2, [2, 3, 2]), (3, 1, [1, 2, 3, 3, 1, 2, 3])]
    stats = behaviour_stats(con, HAND_MADE)
    # 11 events at position >= 2; same as previous: A A, C C; seen earlier: those two and
    # A (A A B A), B (B C B), A, B, C (A B C C A B C).
    assert asdict(stats) == {
        "events": 14, "sessions": 3, "items": 3,
        "same_as_previous": pytest.approx(2 / 11), "seen_earlier": pytest.approx(7 / 11),
        "length_p10": 3, "length_p25": 3, "length_median": 4, "length_p75": 7, "length_p90": 7,
        "length_mean": pytest.approx(14 / 3),
        # 3 items: the top 1% and the top 10% are both ceil(...) = 1 item, A or B with 5 views.
        "top1_share": pytest.approx(5 / 14), "top10_share": pytest.approx(5 / 14),
    }


# ---------------------------------------------------------------------------------------------
# Real slice vs generated small


def test_real_slice_preprocessing_is_nearly_a_no_op(real):
    # 685,984 views in 126,168 sessions, as the file holds them; the one pass keeps 97.8%.
    assert real.events >= 0.97 * 685_984 and real.sessions >= 0.97 * 126_168
    # The figures the generator is tuned to (README).
    assert real.same_as_previous == pytest.approx(0.20, abs=0.01)
    assert real.seen_earlier == pytest.approx(0.375, abs=0.01)
    assert (real.length_p10, real.length_p25, real.length_median, real.length_p75, real.length_p90) == (3, 3, 4, 6, 9)
    assert real.length_mean == pytest.approx(5.44, abs=0.05)
    assert real.top1_share == pytest.approx(0.11, abs=0.01)
    assert real.top10_share == pytest.approx(0.41, abs=0.015)


@pytest.mark.parametrize("group", [
    ("same_as_previous", "seen_earlier"),
    ("length_p10", "length_p25", "length_median", "length_p75", "length_p90", "length_mean"),
    ("top1_share", "top10_share"),
], ids=["repeats", "visit_lengths", "popularity_skew"])
def test_small_behaves_like_the_real_sessions(real, small, group):
    off = {
        name: (getattr(small, name), getattr(real, name))
        for name in group if abs(getattr(small, name) - getattr(real, name)) > TOLERANCES[name]
    }
    assert not off, f"generated vs real outside {TOLERANCES}: {off}"


def test_small_keeps_enough_sessions(small):
    assert small.sessions >= 10_000 and small.items >= 3_000


def test_recommenders_rank_alike(real_events, small_events, tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "small").mkdir()
    real = recalls(session_split(real_events, tmp_path / "real"))
    small = recalls(session_split(small_events, tmp_path / "small"))
    print(f"Recall@{RECALL_AT} real {real} generated small {small}")
    for measured in (real, small):
        assert measured["popularity"] < 0.25 * measured["reshow"] < 0.25 * measured["knn"]
    assert small["reshow"] == pytest.approx(real["reshow"], abs=0.15)
    assert small["knn"] == pytest.approx(real["knn"], abs=0.15)
    assert small["knn"] - small["reshow"] > 0.05  # co-occurrence adds to re-showing
