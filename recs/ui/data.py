"""What the side-by-side page reads from the warehouse: one short read-only connection per call.

DuckDB lets no writer in while another process holds the database file open, even read-only,
and the snapshot writer publishes a new file rather than writing the open one; either way a
page that kept a connection across reruns would pin an old snapshot. So every function here
opens `connect_with_retry(dir, read_only=True)` and closes it before returning. `snapshot_key`
names the snapshot published now: the page's caches are keyed by it, so a nightly publish is
picked up on the next rerun.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

from recs.publish import connect_with_retry
from recs.warehouse import db_path, table_exists

SUGGESTED_CUSTOMERS = 500  # the most active customers offered in the picker (any id can be typed)


@contextmanager
def reading(warehouse_dir: str | Path) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect_with_retry(warehouse_dir, read_only=True)
    try:
        yield con
    finally:
        con.close()


def snapshot_key(warehouse_dir: str | Path) -> str:
    """The file `recs.duckdb` resolves to now (changes with every publish)."""
    path = db_path(warehouse_dir)
    if not path.exists():
        raise FileNotFoundError(f"no warehouse at {path}: run `recs run` first")
    return os.path.realpath(path)


def _rows(cursor: duckdb.DuckDBPyConnection) -> list[dict]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def latest_run(warehouse_dir: str | Path) -> dict | None:
    """The newest published scoring run's row (None before the first `recs score`)."""
    with reading(warehouse_dir) as con:
        if not table_exists(con, "recommendation_runs"):
            return None
        rows = _rows(con.execute("SELECT * FROM recommendation_runs ORDER BY published_at DESC, run_id DESC LIMIT 1"))
    return rows[0] if rows else None


def incumbents(warehouse_dir: str | Path) -> list[dict]:
    """[{incumbent, n_customers, loaded_at}] of `incumbent_lists`, most recently loaded first."""
    with reading(warehouse_dir) as con:
        if not table_exists(con, "incumbent_lists"):
            return []
        return _rows(con.execute(
            "SELECT incumbent, count(DISTINCT customer_id) AS n_customers, max(loaded_at) AS loaded_at "
            "FROM incumbent_lists GROUP BY 1 ORDER BY loaded_at DESC NULLS LAST, incumbent"))


def suggested_customers(warehouse_dir: str | Path, incumbent: str | None,
                        limit: int = SUGGESTED_CUSTOMERS) -> list[dict]:
    """[{customer_id, n_events}] of the most active customers in the latest run (and covered by
    the incumbent, when it has lists), most events first."""
    with reading(warehouse_dir) as con:
        if not table_exists(con, "latest_recommendations"):
            return []
        covered = ("SEMI JOIN (SELECT DISTINCT customer_id FROM incumbent_lists WHERE incumbent = $incumbent) "
                   "AS c USING (customer_id)" if incumbent and table_exists(con, "incumbent_lists") else "")
        params = {"limit": limit, **({"incumbent": incumbent} if covered else {})}
        return _rows(con.execute(
            f"WITH run AS (SELECT DISTINCT customer_id FROM latest_recommendations {covered}) "
            "SELECT r.customer_id, count(e.visitorid) AS n_events FROM run AS r "
            "LEFT JOIN events AS e ON e.visitorid = r.customer_id "
            "GROUP BY 1 ORDER BY n_events DESC, r.customer_id LIMIT $limit", params))


def our_list(warehouse_dir: str | Path, customer_id: int, top_n: int) -> list[dict]:
    """The customer's list in the latest published run: rank, item_id, score, p_*, source."""
    with reading(warehouse_dir) as con:
        if not table_exists(con, "latest_recommendations"):
            return []
        return _rows(con.execute(
            "SELECT rank, item_id, score, p_transaction, p_addtocart, p_view, source FROM latest_recommendations "
            "WHERE customer_id = ? AND rank <= ? ORDER BY rank", [customer_id, top_n]))


def incumbent_list(warehouse_dir: str | Path, incumbent: str, customer_id: int, top_n: int) -> list[dict]:
    """The incumbent's list for the customer (empty: not covered), ranked 1.. in its order."""
    with reading(warehouse_dir) as con:
        if not table_exists(con, "incumbent_lists"):
            return []
        rows = _rows(con.execute(
            "SELECT rank AS incumbent_rank, item_id, score FROM incumbent_lists "
            "WHERE incumbent = ? AND customer_id = ? ORDER BY rank, item_id LIMIT ?", [incumbent, customer_id, top_n]))
    return [{"rank": i, **r, "source": incumbent} for i, r in enumerate(rows, start=1)]


def item_details(warehouse_dir: str | Path, item_ids: list[int]) -> dict[int, dict]:
    """{item_id: {categoryid, root_categoryid, available, n_events, price}} (latest state)."""
    if not item_ids:
        return {}
    with reading(warehouse_dir) as con:
        price = "p.price" if table_exists(con, "item_prices") else "NULL::DOUBLE"
        join = "LEFT JOIN item_prices AS p ON p.itemid = i.itemid" if table_exists(con, "item_prices") else ""
        rows = _rows(con.execute(
            f"SELECT i.itemid AS item_id, i.categoryid, i.root_categoryid, i.available = 1 AS available, "
            f"i.n_events, {price} AS price FROM items AS i {join} WHERE list_contains(?, i.itemid)",
            [sorted(set(int(i) for i in item_ids))]))
    return {r.pop("item_id"): r for r in rows}


def catalogue_totals(warehouse_dir: str | Path) -> dict:
    """{total_events, catalogue}: what novelty's item probabilities are taken over."""
    with reading(warehouse_dir) as con:
        total, catalogue = con.execute("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM items)").fetchone()
    return {"total_events": int(total), "catalogue": int(catalogue)}


def customer_item_ids(warehouse_dir: str | Path, customer_id: int) -> set[int]:
    """Every item the customer has an event on (for repeat_share)."""
    with reading(warehouse_dir) as con:
        return {r[0] for r in con.execute("SELECT DISTINCT itemid FROM events WHERE visitorid = ?",
                                          [customer_id]).fetchall()}


def comparison_overview(warehouse_dir: str | Path, run_id: str | None, incumbent: str | None) -> list[dict]:
    """The `all` segment of `comparison_metrics` for this run and incumbent (empty before `recs compare`)."""
    if not run_id or not incumbent:
        return []
    with reading(warehouse_dir) as con:
        if not table_exists(con, "comparison_metrics"):
            return []
        return _rows(con.execute(
            "SELECT system, metric, k, value FROM comparison_metrics "
            "WHERE run_id = ? AND incumbent = ? AND segment = 'all' ORDER BY metric, k, system", [run_id, incumbent]))


def beyond_accuracy(items: list[dict], seen: set[int], totals: dict) -> dict[str, float | None]:
    """One list's beyond-accuracy numbers, computed by `recs compare`'s own per-customer code
    (diversity, intra_list_dissimilarity, novelty, repeat_share, unavailable_share)."""
    import polars as pl

    from recs.compare import beyond_per_customer

    names = ("diversity", "intra_list_dissimilarity", "novelty", "repeat_share", "unavailable_share")
    if not items:
        return dict.fromkeys(names)
    frame = pl.DataFrame({
        "system": ["list"] * len(items), "customer_id": [0] * len(items),
        "position": list(range(1, len(items) + 1)), "item_id": [int(i["item_id"]) for i in items],
        "categoryid": [int(i.get("categoryid") or 0) for i in items],
        "root_categoryid": [int(i.get("root_categoryid") or 0) for i in items],
        "available": [i.get("available") is not False for i in items],
        "n_events": [int(i.get("n_events") or 0) for i in items],
        "seen": [int(i["item_id"]) in seen for i in items]})
    rows = beyond_per_customer(frame, [len(items)], totals["total_events"], totals["catalogue"])
    values = dict(rows.select("metric", "value").iter_rows())
    return {name: values.get(name) for name in names}


def popular_items(warehouse_dir: str | Path, n: int) -> list[int]:
    """The n items with the most events (an example history to start typing from)."""
    with reading(warehouse_dir) as con:
        return [r[0] for r in con.execute("SELECT itemid FROM items ORDER BY n_events DESC, itemid LIMIT ?",
                                          [n]).fetchall()]
