"""Ratings from the side-by-side page, stored without ever taking the warehouse's writer lock.

A writer copies the whole database and serialises on a lock (recs/warehouse.py), so a click on
the page must not open one: nightly scoring would wait behind it, or it behind nightly scoring.
Instead every submission is one small parquet file, written under a temporary name and renamed
into `warehouse/feedback/` (a file is whole or absent). Every warehouse writer folds the
pending files into the `feedback` table just before it publishes (`fold_pending`) and removes
them once the snapshot is live (`remove_folded`); a file written meanwhile waits for the next
writer. Rows carry a unique feedback_id, so a file folded twice (a crash between the publish
and the removal) is inserted once. A file that cannot be read is logged and left pending: it
never fails the publish that tried to fold it.

Readers (`read_feedback`) list and read the pending files first, then open the snapshot: a file
gone by then was removed after the snapshot holding its rows was published, so every rating is
seen, once, the moment it is written.
"""
from __future__ import annotations

import logging
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

FEEDBACK_DIR = "feedback"
SYSTEMS = ("ours", "incumbent")
LIST_RATINGS = (1, 2, 3, 4, 5)
THUMBS = {"up": 1, "down": -1}

FEEDBACK_SCHEMA = pa.schema([
    ("feedback_id", pa.string()),
    ("given_at", pa.timestamp("us")),
    ("customer", pa.string()),
    ("customer_id", pa.int64()),
    ("system", pa.string()),
    ("kind", pa.string()),
    ("item_id", pa.int64()),
    ("rating", pa.int32()),
    ("run_id", pa.string()),
    ("incumbent", pa.string()),
])


def feedback_dir(warehouse_dir: str | Path) -> Path:
    return Path(warehouse_dir) / FEEDBACK_DIR


def record_feedback(warehouse_dir: str | Path, *, customer: str, system: str, rating: int,
                    item_id: int | None = None, customer_id: int | None = None, run_id: str | None = None,
                    incumbent: str | None = None, given_at: datetime | None = None) -> dict:
    """Store one rating: a list rating (item_id None, rating 1..5) or a thumb on an item (rating
    +1 / -1). Writes one parquet file, takes no lock, opens no database; returns the row."""
    if system not in SYSTEMS:
        raise ValueError(f"system must be one of {SYSTEMS}, got {system!r}")
    kind = "list" if item_id is None else "item"
    allowed = LIST_RATINGS if kind == "list" else tuple(THUMBS.values())
    if rating not in allowed:
        raise ValueError(f"a {kind} rating must be one of {allowed}, got {rating!r}")
    if not customer:
        raise ValueError("customer must name the customer, persona or history rated")
    given_at = given_at or datetime.now(timezone.utc).replace(tzinfo=None)
    row = {"feedback_id": uuid.uuid4().hex, "given_at": given_at, "customer": str(customer),
           "customer_id": None if customer_id is None else int(customer_id), "system": system, "kind": kind,
           "item_id": None if item_id is None else int(item_id), "rating": int(rating), "run_id": run_id,
           "incumbent": incumbent}
    out = feedback_dir(warehouse_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = out / f"{given_at:%Y%m%dT%H%M%S%f}-{row['feedback_id']}.parquet"
    tmp = out / f".{final.name}.tmp"  # not matched by pending_files' pattern
    pq.write_table(pa.Table.from_pylist([row], schema=FEEDBACK_SCHEMA), tmp)
    os.replace(tmp, final)
    return row


def pending_files(warehouse_dir: str | Path) -> list[Path]:
    """Feedback files not yet folded into the table, oldest first."""
    return sorted(feedback_dir(warehouse_dir).glob("*.parquet"))


def _read_files(files: list[Path]) -> tuple[pa.Table, list[Path]]:
    """(rows of the readable files, those files); a file removed meanwhile or unreadable is left out."""
    tables, read = [], []
    for path in files:
        try:
            tables.append(pq.read_table(path, schema=FEEDBACK_SCHEMA))
        except FileNotFoundError:
            continue  # folded and removed by a writer since it was listed
        except (OSError, pa.ArrowException) as exc:
            log.warning("feedback file %s cannot be read (left pending): %s", path, exc)
            continue
        read.append(path)
    return (pa.concat_tables(tables) if tables else FEEDBACK_SCHEMA.empty_table()), read


def fold_pending(con: duckdb.DuckDBPyConnection, warehouse_dir: str | Path) -> list[Path]:
    """Insert the pending files' rows into `feedback` (a writer's connection, before it
    publishes); returns the files folded, to remove once the snapshot is published. Never
    raises for a feedback problem: nothing is folded then, and the files wait."""
    from recs.warehouse import run_sql

    files = pending_files(warehouse_dir)
    if not files:
        return []
    rows, files = _read_files(files)
    if not files:
        return []
    try:
        con.execute("BEGIN TRANSACTION")
    except duckdb.Error:
        return []  # the writer left a transaction open: it is rolled back, and the files wait
    try:
        run_sql(con, "marts/feedback")
        con.register("pending_feedback", rows)
        con.execute("INSERT INTO feedback BY NAME SELECT * FROM pending_feedback "
                    "WHERE feedback_id NOT IN (SELECT feedback_id FROM feedback)")
        con.unregister("pending_feedback")
        con.execute("COMMIT")
    except duckdb.Error as exc:
        con.execute("ROLLBACK")
        log.warning("could not fold %d feedback file(s) into %s (left pending): %s", len(files), warehouse_dir, exc)
        return []
    return files


def remove_folded(files: list[Path]) -> None:
    """Remove files whose rows a published snapshot holds."""
    for path in files:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # folded again (once) by the next writer
            log.warning("could not remove folded feedback file %s: %s", path, exc)


def read_feedback(warehouse_dir: str | Path, customer: str | None = None) -> list[dict]:
    """Every rating, folded or pending, oldest first (only `customer`'s when given)."""
    from recs.warehouse import db_path, table_exists
    from recs.publish import connect_with_retry

    pending, _ = _read_files(pending_files(warehouse_dir))
    rows: dict[str, dict] = {}
    if db_path(warehouse_dir).exists():
        con = connect_with_retry(warehouse_dir, read_only=True)
        try:
            if table_exists(con, "feedback"):
                cursor = con.execute(f"SELECT {', '.join(FEEDBACK_SCHEMA.names)} FROM feedback")
                rows.update((r["feedback_id"], r) for r in
                            (dict(zip(FEEDBACK_SCHEMA.names, values)) for values in cursor.fetchall()))
        finally:
            con.close()
    rows.update((r["feedback_id"], r) for r in pending.to_pylist())
    out = sorted(rows.values(), key=lambda r: (r["given_at"], r["feedback_id"]))
    return [r for r in out if customer is None or r["customer"] == customer]


def summarise(rows: list[dict]) -> dict[str, dict]:
    """{system: {n_list_ratings, mean_list_rating, thumbs_up, thumbs_down}} of rating rows."""
    out = {}
    for system in SYSTEMS:
        lists = [r["rating"] for r in rows if r["system"] == system and r["kind"] == "list"]
        items = [r["rating"] for r in rows if r["system"] == system and r["kind"] == "item"]
        out[system] = {"n_list_ratings": len(lists),
                       "mean_list_rating": sum(lists) / len(lists) if lists else None,
                       "thumbs_up": sum(1 for r in items if r > 0), "thumbs_down": sum(1 for r in items if r < 0)}
    return out
