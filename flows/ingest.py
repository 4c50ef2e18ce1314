"""Prefect flow `ingest`: Retail Rocket CSVs -> DuckDB warehouse (see recs.ingest).

Thin: one task loads everything in one transaction of one writer session (published when it
closes, recs/warehouse.py), the flow checks that no row was lost, then a second task appends the
run to ingest_runs and a markdown artifact summarises it.
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from flows._common import is_transient
from recs.ingest import DEFAULT_MAX_QUARANTINE_SHARE, ingest_dir, locate_inputs, record_ingest_run, report_markdown
from recs.warehouse import connect


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=is_transient, cache_policy=NONE)
def load_warehouse(data_dir: str, warehouse_dir: str, plausible_window_days: int | None,
                   max_quarantine_share: float | None = None, data_format: str | None = None) -> dict:
    """Rebuild events, quarantine_events, categories, item_snapshots and items from data_dir
    (nothing changes when more than max_quarantine_share of the rows would be quarantined)."""
    locate_inputs(Path(data_dir), data_format)  # fail on a missing events.csv before opening the warehouse
    con = connect(warehouse_dir)
    try:
        report = ingest_dir(con, Path(data_dir), plausible_window_days=plausible_window_days,
                            max_quarantine_share=max_quarantine_share, data_format=data_format)
    except (FileNotFoundError, ValueError) as exc:
        # Re-raised below as a bare copy: the original's traceback frames hold the connection,
        # which Prefect's failed state would keep alive until exit (nanobind then prints pages
        # of "leaked" warnings after the CLI's one-line error).
        bad_input = type(exc)(*exc.args)
    except BaseException:
        con.discard()
        raise
    else:
        con.close()  # publishes: readers see the new tables from here on
        return report
    con.discard()  # nothing to publish: readers keep the previous tables
    del con
    raise bad_input


@task(retries=2, retry_delay_seconds=2, cache_policy=NONE)
def record_run(warehouse_dir: str, report: dict, run_id: str) -> None:
    """Append this run's counts to ingest_runs."""
    with connect(warehouse_dir) as con:
        record_ingest_run(con, report, run_id)


@task(cache_policy=NONE)
def publish_summary(report: dict) -> None:
    """Markdown artifact with the counts (rows, quarantine reasons, event types)."""
    create_markdown_artifact(
        markdown=report_markdown(report),
        key="ingest-summary",
        description=f"ingest of {report['data_dir']}",
    )


@flow(name="ingest")
def ingest(data_dir: str, warehouse_dir: str = "warehouse", plausible_window_days: int | None = None,
           max_quarantine_share: float = DEFAULT_MAX_QUARANTINE_SHARE, data_format: str | None = None) -> dict:
    """Load the CSVs in data_dir into warehouse_dir/recs.duckdb; returns the ingest report.

    data_format: "retailrocket" or "hm" (None: by the files' names). plausible_window_days:
    None = the format's default (365; H&M's two-year log 1,100).
    max_quarantine_share: fail (ValueError, previous tables kept) when a larger share of
    events.csv's rows would be quarantined; 1 never fails."""
    logger = get_run_logger()
    report = load_warehouse(data_dir, warehouse_dir, plausible_window_days, max_quarantine_share, data_format)
    logger.info(
        "ingest: %d rows read = %d loaded + %d quarantined (%s) in %.2f s",
        report["rows_read"], report["rows_loaded"], report["rows_quarantined"],
        {r: n for r, n in report["quarantine_by_reason"].items() if n}, report["seconds"],
    )
    if report["rows_read"] != report["rows_loaded"] + report["rows_quarantined"]:
        raise AssertionError(f"ingest lost rows: {report}")
    run_id = str(flow_run.id) if flow_run.id else report["started_at"]
    record_run(warehouse_dir, report, run_id)
    publish_summary(report)
    return {**report, "run_id": run_id}


if __name__ == "__main__":
    # data/ is where `recs generate --out data` puts the embedded default data.
    print(ingest(data_dir="data"))
