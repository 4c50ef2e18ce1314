"""Browsing behaviour statistics of an event log, after the real Retail Rocket slice's preprocessing.

`behaviour_stats(con, events_sql)` summarises how visitors browse, so that the generated data can
be compared with the real slice `../shared/data/retailrocket-sessions/events.csv.gz` (genuine
Retail Rocket views, already sessionized by a published session preprocessing).

Preprocessing (applied first, in this order, so that any log is measured like the real slice):
1. views only (`event = 'view'`);
2. sessions: a visitor's views ordered by (timestamp, itemid); a gap of more than 30 minutes
   opens a new session;
3. items with fewer than 5 views are dropped;
4. sessions left with fewer than 3 views are dropped.
The real slice has no session shorter than 3 views (53,853 of length 3, none of length 2), so its
preprocessing dropped sessions below 3, not below 2; measuring generated data with a cut at 2
would count sessions the real slice cannot contain. The filters run once, not to a fixed point:
the real slice itself is not a fixed point (it holds 3,267 items with fewer than 5 views, left
when its session filter ran after its item filter), which shows its preprocessing made one pass.
On the real slice this one pass removes 2.2% of the events and sessions; iterating would remove
more each round and measure something the real slice never went through.

Statistics (over the preprocessed views; position = 1-based rank of an event in its session):
- `same_as_previous`: share of events at position >= 2 whose item is the previous event's item;
- `seen_earlier`: share of events at position >= 2 whose item occurs among the session's earlier
  events (the previous one included), so `seen_earlier >= same_as_previous`;
- `length_p10` ... `length_p90`, `length_mean`: session length (views per session) quantiles
  (DuckDB `quantile_disc`, i.e. actual lengths) and mean;
- `top1_share` / `top10_share`: share of all events that fall on the most viewed 1% / 10% of
  items (ceil(1% / 10% of the items left), ranked by view count).
"""
from __future__ import annotations

from dataclasses import dataclass

import duckdb

SESSION_GAP_MS = 30 * 60 * 1000
MIN_ITEM_VIEWS = 5
MIN_SESSION_VIEWS = 3


@dataclass(frozen=True)
class BehaviourStats:
    """Browsing statistics of one preprocessed event log (see the module docstring)."""

    events: int
    sessions: int
    items: int
    same_as_previous: float
    seen_earlier: float
    length_p10: int
    length_p25: int
    length_median: int
    length_p75: int
    length_p90: int
    length_mean: float
    top1_share: float
    top10_share: float


def preprocessed_views_sql(events_sql: str) -> str:
    """A SELECT of the preprocessed views: `visitorid, session, position, ts, itemid, length`.

    `events_sql` is any SELECT yielding at least `timestamp` (ms), `visitorid`, `event` and
    `itemid`: e.g. `SELECT * FROM read_csv('events.csv.gz')`, a table name or a DuckDB relation's
    `sql_query()`. `session` numbers a visitor's sessions from 1; (`visitorid`, `session`)
    identifies a session.
    """
    return f"""
        WITH views AS (
            SELECT CAST("timestamp" AS BIGINT) AS ts, CAST(visitorid AS BIGINT) AS visitorid,
                   CAST(itemid AS BIGINT) AS itemid
            FROM ({events_sql}) WHERE event = 'view'
        ),
        openings AS (
            SELECT *, coalesce(ts - lag(ts) OVER (PARTITION BY visitorid ORDER BY ts, itemid) > {SESSION_GAP_MS}, true) AS opens
            FROM views
        ),
        sessionized AS (
            SELECT visitorid, ts, itemid,
                   sum(CAST(opens AS INTEGER)) OVER (PARTITION BY visitorid ORDER BY ts, itemid ROWS UNBOUNDED PRECEDING) AS session
            FROM openings
        ),
        frequent_items AS (
            SELECT * FROM sessionized
            WHERE itemid IN (SELECT itemid FROM sessionized GROUP BY itemid HAVING count(*) >= {MIN_ITEM_VIEWS})
        ),
        kept AS (
            SELECT * FROM (SELECT *, count(*) OVER (PARTITION BY visitorid, session) AS length FROM frequent_items)
            WHERE length >= {MIN_SESSION_VIEWS}
        )
        SELECT visitorid, session, row_number() OVER (PARTITION BY visitorid, session ORDER BY ts, itemid) AS position,
               ts, itemid, length
        FROM kept
    """


def behaviour_stats(con: duckdb.DuckDBPyConnection, events_sql: str) -> BehaviourStats:
    """Preprocess the events that `events_sql` selects (see `preprocessed_views_sql`) and measure them."""
    row = con.execute(f"""
        WITH positioned AS MATERIALIZED ({preprocessed_views_sql(events_sql)}),
        steps AS (
            SELECT position,
                   itemid = lag(itemid) OVER (PARTITION BY visitorid, session ORDER BY position) AS same_as_previous,
                   position > min(position) OVER (PARTITION BY visitorid, session, itemid) AS seen_earlier
            FROM positioned
        ),
        item_views AS (
            SELECT count(*) AS views, row_number() OVER (ORDER BY count(*) DESC, itemid) AS item_rank
            FROM positioned GROUP BY itemid
        ),
        n_items AS (SELECT count(*) AS n FROM item_views)
        SELECT
            (SELECT count(*) FROM positioned),
            (SELECT count(*) FROM positioned WHERE position = 1),
            (SELECT n FROM n_items),
            (SELECT avg(CAST(same_as_previous AS DOUBLE)) FROM steps WHERE position >= 2),
            (SELECT avg(CAST(seen_earlier AS DOUBLE)) FROM steps WHERE position >= 2),
            (SELECT quantile_disc(length, [0.1, 0.25, 0.5, 0.75, 0.9]) FROM positioned WHERE position = 1),
            (SELECT avg(length) FROM positioned WHERE position = 1),
            (SELECT sum(views) FILTER (WHERE item_rank <= ceil(0.01 * n)) / sum(views) FROM item_views, n_items),
            (SELECT sum(views) FILTER (WHERE item_rank <= ceil(0.10 * n)) / sum(views) FROM item_views, n_items)
    """).fetchone()
    events, sessions, items, same, seen, quantiles, mean, top1, top10 = row
    p10, p25, median, p75, p90 = (int(q) for q in quantiles)
    return BehaviourStats(
        events=int(events), sessions=int(sessions), items=int(items),
        same_as_previous=float(same), seen_earlier=float(seen),
        length_p10=p10, length_p25=p25, length_median=median, length_p75=p75, length_p90=p90,
        length_mean=float(mean), top1_share=float(top1), top10_share=float(top10),
    )
