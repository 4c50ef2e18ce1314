"""Atomic publish of a scoring run into the warehouse.

Scoring writes parquet shards into `warehouse/recommendations/_staging/<run_id>/` without
touching the database. Publishing is one short writer session (recs/warehouse.py): insert the
shards into `recommendations`, insert the run's row into `recommendation_runs`, prune old runs,
commit, and publish the snapshot. `latest_recommendations` is a view over the newest run in
`recommendation_runs`, and a reader opens a whole snapshot, so it sees either the previous run or
the new one in full: never a partial run. A crash before the publish leaves the warehouse as it
was.

Writers work on a private copy of the database and publish it with one rename, so a reader
(DuckDB CLI, notebook, BI tool) holding `recs.duckdb` open never blocks them; writers wait for
each other on the writer lock.
"""
from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from recs.warehouse import connect_read_only, open_writer, run_sql

RECOMMENDATION_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("customer_id", pa.int64()),
    ("rank", pa.int32()),
    ("item_id", pa.int64()),
    ("score", pa.float64()),
    ("p_transaction", pa.float64()),
    ("p_addtocart", pa.float64()),
    ("p_view", pa.float64()),
    ("source", pa.string()),
    ("model_version", pa.string()),
    ("generated_at", pa.timestamp("us")),
])


def new_run_id(now: datetime | None = None) -> str:
    """Sortable run id: UTC time to the microsecond."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S%fZ")


def staging_dir(warehouse_dir: str | Path, run_id: str) -> Path:
    """Where a run's shards wait before publish."""
    return Path(warehouse_dir) / "recommendations" / "_staging" / run_id


def write_shard(table: pa.Table, warehouse_dir: str | Path, run_id: str, shard: int | str) -> Path:
    """Write one shard of a run as parquet (temp name + rename, so a shard is whole or absent);
    `shard` names the file (`part-00003`, or `part-<shard>` when a string, e.g. "00001-00000")."""
    out_dir = staging_dir(warehouse_dir, run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = table.select(RECOMMENDATION_SCHEMA.names).cast(RECOMMENDATION_SCHEMA)
    final = out_dir / (f"part-{shard:05d}.parquet" if isinstance(shard, int) else f"part-{shard}.parquet")
    tmp = final.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    tmp.replace(final)
    return final


def connect_with_retry(warehouse_dir: str | Path, read_only: bool = False, timeout_s: float = 120.0,
                       poll_s: float = 0.2) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, waiting up to timeout_s: a writer waits for the writer lock and gets
    a `WarehouseWriter` (published when closed); a reader gets a read-only connection to the
    current snapshot."""
    if read_only:
        return connect_read_only(warehouse_dir, timeout_s=timeout_s, poll_s=poll_s)
    return open_writer(warehouse_dir, timeout_s=timeout_s, poll_s=poll_s)


GUARD_COLUMNS = {"strategy": "VARCHAR", "val_recall20": "DOUBLE", "val_mrr20": "DOUBLE", "baseline": "VARCHAR",
                 "baseline_val_recall20": "DOUBLE", "baseline_val_mrr20": "DOUBLE", "guard_warning": "VARCHAR"}


def ensure_recommendation_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the output tables and the `latest_recommendations` view if missing."""
    run_sql(con, "marts/recommendations")
    run_sql(con, "marts/recommendation_runs")
    for name, sql_type in GUARD_COLUMNS.items():  # warehouses made before the guard existed
        con.execute(f"ALTER TABLE recommendation_runs ADD COLUMN IF NOT EXISTS {name} {sql_type}")
    run_sql(con, "marts/customer_keys_init")  # the view maps ids back to the source's keys
    run_sql(con, "marts/item_keys_init")
    con.execute((Path(__file__).resolve().parents[1] / "sql" / "marts" / "latest_recommendations.sql").read_text())


def publish_run(warehouse_dir: str | Path, run_id: str, summary: dict, keep_runs: int = 3,
                before_commit: Callable[[duckdb.DuckDBPyConnection], None] | None = None) -> dict:
    """Make a staged run visible in one publish; keep the newest `keep_runs` runs.

    `summary` fills the run's row in `recommendation_runs` (model_version, n_customers,
    share_fallback, duration_s, top_n, generated_at). Returns the row as published.
    `before_commit` is a fault-injection point for tests of crash safety.
    """
    shards = staging_dir(warehouse_dir, run_id)
    files = sorted(shards.glob("part-*.parquet"))
    if not files:
        raise FileNotFoundError(f"run {run_id} has no shards in {shards}")
    row = {
        "run_id": run_id,
        "generated_at": summary.get("generated_at"),
        "model_version": summary.get("model_version", ""),
        "n_customers": int(summary.get("n_customers", 0)),
        "n_rows": 0,
        "share_fallback": float(summary.get("share_fallback", 0.0)),
        "duration_s": float(summary.get("duration_s", 0.0)),
        "top_n": int(summary.get("top_n", 0)),
        **{name: summary.get(name) for name in GUARD_COLUMNS},
    }
    # Leaving the block publishes the snapshot (readers switch to the new run); an exception,
    # the before_commit hook's included, discards it.
    with connect_with_retry(warehouse_dir) as con:
        ensure_recommendation_tables(con)
        con.execute("BEGIN TRANSACTION")
        try:
            # Re-publishing the same run id replaces it (idempotent re-runs of publish).
            con.execute("DELETE FROM recommendations WHERE run_id = ?", [run_id])
            con.execute("DELETE FROM recommendation_runs WHERE run_id = ?", [run_id])
            con.execute("INSERT INTO recommendations SELECT * FROM read_parquet(?)",
                        [[str(f) for f in files]])
            row["n_rows"] = con.execute("SELECT count(*) FROM recommendations WHERE run_id = ?", [run_id]).fetchone()[0]
            con.execute(
                f"INSERT INTO recommendation_runs BY NAME SELECT now()::TIMESTAMP AS published_at, "
                f"{', '.join(f'${k} AS {k}' for k in row)}", row)
            stale = [r[0] for r in con.execute(
                "SELECT run_id FROM recommendation_runs ORDER BY published_at DESC, run_id DESC OFFSET ?",
                [keep_runs]).fetchall()]
            if stale:
                con.execute("DELETE FROM recommendations WHERE list_contains(?, run_id)", [stale])
                con.execute("DELETE FROM recommendation_runs WHERE list_contains(?, run_id)", [stale])
            if before_commit is not None:
                before_commit(con)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    shutil.rmtree(shards, ignore_errors=True)
    return row
