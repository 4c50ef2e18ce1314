"""Prefect flow `build_sequences`: warehouse `events` -> `warehouse/sequences/` parquet tables.

Thin wrapper over `recs.sequences.build_sequence_tables`; the task opens its own DuckDB
connection (never hashed into a cache key) and the build publishes atomically, so a retry
after a failure starts from the previous published state.
"""
from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows._common import is_transient
from recs.sequences import build_sequence_tables, validate_params
from recs.warehouse import connect, db_path


@task(retries=1, retry_delay_seconds=2, retry_condition_fn=is_transient, cache_policy=NONE)
def build_tables(warehouse_dir: str, params: dict[str, Any]) -> dict[str, Any]:
    """Build the sequence tables of one warehouse (one writer connection, closed on return)."""
    if not db_path(warehouse_dir).exists():
        raise FileNotFoundError(f"no warehouse at {db_path(warehouse_dir)}: run `recs ingest` first")
    # Leaving the block publishes the DuckDB tables and the parquet directory together; a
    # failure discards both.
    with connect(warehouse_dir) as con:
        return build_sequence_tables(con, warehouse_dir, **params)


@flow(name="build_sequences")
def build_sequences(
    warehouse_dir: str = "warehouse",
    min_user_events: int = 10,
    min_item_events: int = 1,
    history_len: int = 64,
    max_candidates: int = 16,
    train_quantile: float = 0.8,
    val_quantile: float = 0.9,
    collapse_repeats: bool = False,
) -> dict:
    """Filter, split and window the warehouse events (one step per event unless
    collapse_repeats) into parquet sequence tables."""
    params = dict(
        min_user_events=min_user_events,
        min_item_events=min_item_events,
        history_len=history_len,
        max_candidates=max_candidates,
        train_quantile=train_quantile,
        val_quantile=val_quantile,
    )
    validate_params(**params)  # fail before any task starts
    report = build_tables(str(warehouse_dir), {**params, "collapse_repeats": collapse_repeats})
    get_run_logger().info(
        "sequences: %d train / %d val / %d test examples, %d items, %d customers (%d in training) in %.2f s",
        report["n_train"], report["n_val"], report["n_test"], report["n_items"],
        report["n_customers"], report["n_in_training"], report["seconds"],
    )
    return report


if __name__ == "__main__":
    build_sequences()
