"""recs/behaviour.py's statistics, on a hand-made log and on the real Retail Rocket sessions.

The real figures are computed here from `../shared/data/retailrocket-sessions/events.csv.gz`
(skipped when that file is absent).
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import duckdb
import pytest

from recs.behaviour import behaviour_stats, preprocessed_views_sql

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_SESSIONS = REPO_ROOT / ".." / "shared" / "data" / "retailrocket-sessions" / "events.csv.gz"


def csv_events(path: Path) -> str:
    return f"SELECT * FROM read_csv('{path}')"


@pytest.fixture(scope="module")
def real_events() -> str:
    if not REAL_SESSIONS.exists():
        pytest.skip(f"real Retail Rocket sessions not available at {REAL_SESSIONS}")
    return csv_events(REAL_SESSIONS)


@pytest.fixture(scope="module")
def real(real_events):
    return behaviour_stats(duckdb.connect(), real_events)


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
# The real slice


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
