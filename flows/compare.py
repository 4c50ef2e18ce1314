"""Prefect flow `compare`: the latest published run against an incumbent's lists.

Loads the incumbent (a shop's CSV / parquet lists, validated, or a built-in baseline exported
through the scoring code: recs/incumbent.py) into `incumbent_lists`, computes agreement,
beyond-accuracy and test-period accuracy by segment (recs/compare.py), replaces this (run,
incumbent)'s rows of `comparison_metrics` (segments other than `persona:*`) and publishes the
table as a markdown artifact. Returns the validation report, the rows' count and the markdown.
"""
from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows._common import is_transient, publish_markdown
from recs.publish import connect_with_retry
from recs.warehouse import run_sql


@task(cache_policy=NONE)
def latest_run(warehouse_dir: str) -> str:
    """run_id of latest_recommendations (the run compared)."""
    con = connect_with_retry(warehouse_dir, read_only=True)
    try:
        row = con.execute("SELECT run_id FROM recommendation_runs ORDER BY published_at DESC, run_id DESC LIMIT 1"
                          ).fetchone() if _has_runs(con) else None
    finally:
        con.close()
    if row is None:
        raise ValueError(f"no published recommendation run in {warehouse_dir}: run `recs score` first")
    return row[0]


def _has_runs(con) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'recommendation_runs'"
                            ).fetchall()[0][0])


@task(cache_policy=NONE)  # no retries: a built-in export is minutes of scoring; the writer lock already waits
def load_incumbent(warehouse_dir: str, checkpoint_dir: str, incumbent: str, name: str, top_n: int) -> dict:
    """Validate and store the incumbent's lists (idempotent: its previous rows are replaced)."""
    from recs.incumbent import export_builtin, is_builtin, load_incumbent_file

    if is_builtin(incumbent):
        return export_builtin(warehouse_dir, checkpoint_dir, incumbent, name, top_n=top_n)
    return load_incumbent_file(warehouse_dir, incumbent, name)


@task(cache_policy=NONE)
def compute_comparison(warehouse_dir: str, checkpoint_dir: str, run_id: str, name: str, ks: list[int],
                       builtin: str | None, bootstrap: int, max_accuracy_customers: int, seed: int):
    """Every comparison row (pure computation, no warehouse writes)."""
    from recs.compare import comparison_rows

    return comparison_rows(warehouse_dir, checkpoint_dir, run_id, name, ks, builtin=builtin, n_bootstrap=bootstrap,
                           max_accuracy_customers=max_accuracy_customers, seed=seed)


@task(retries=3, retry_delay_seconds=2, retry_condition_fn=is_transient, cache_policy=NONE)
def write_comparison(warehouse_dir: str, run_id: str, name: str, rows) -> int:
    """Replace this (run, incumbent)'s non-persona rows of comparison_metrics, in one transaction."""
    import polars as pl

    table = rows.with_columns(pl.lit(run_id).alias("run_id"), pl.lit(name).alias("incumbent"),
                              pl.lit(datetime.now(timezone.utc).replace(tzinfo=None)).alias("computed_at")).to_arrow()
    with connect_with_retry(warehouse_dir) as con:
        run_sql(con, "marts/comparison_metrics")
        con.register("new_comparison_rows", table)
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM comparison_metrics WHERE run_id = ? AND incumbent = ? AND segment NOT LIKE 'persona:%'",
                    [run_id, name]).fetchall()
        con.execute("INSERT INTO comparison_metrics (run_id, incumbent, segment, system, metric, k, value, ci_low, "
                    "ci_high, n_customers, computed_at) SELECT run_id, incumbent, segment, system, metric, k, value, "
                    "ci_low, ci_high, n_customers, computed_at FROM new_comparison_rows").fetchall()
        con.execute("COMMIT")
        con.unregister("new_comparison_rows")
    return table.num_rows


def validation_lines(report: dict) -> list[str]:
    """The incumbent load as text: rows kept, rows kept out by reason, columns left out, coverage."""
    lines = [f"incumbent {report['incumbent']} from {report['source']}: {report['n_kept']:,} of "
             f"{report['n_rows']:,} rows kept; {report['customers_covered']:,} customers covered, "
             f"{report['customers_not_covered'] or 0:,} of the published run's customers not covered (not guessed)"]
    for reason, n in report["rejected"].items():
        lines.append(f"  kept out, {reason}: {n:,} rows (e.g. {report['examples'].get(reason, [])[:1]})")
    for column, n in report["unknown_columns"].items():
        lines.append(f"  unknown column {column!r} left out ({n:,} rows with a value)")
    return lines


@flow(name="compare")
def compare(incumbent: str = "item_knn", name: str | None = None, k: list[int] | str = "10,20",
            warehouse_dir: str = "warehouse", checkpoint_dir: str = "checkpoints", seed: int = 0,
            bootstrap: int = 1000, max_accuracy_customers: int = 10_000, top_n: int = 20) -> dict:
    """Compare the latest published run with `incumbent`: a CSV / parquet file or directory of
    customer_id, rank, item_id[, score] lists, or a built-in baseline (`item_knn`, `popularity`).

    name: the incumbent's name in the tables (default: the built-in's name or the file's stem);
    k: the list depths compared ("10,20"); bootstrap: resamples of the paired 95% interval;
    max_accuracy_customers: test-period customers scored (a deterministic sample beyond);
    top_n: length of a built-in incumbent's lists."""
    from recs.compare import comparison_markdown, parse_ks
    from recs.incumbent import default_name, is_builtin

    logger = get_run_logger()
    ks = parse_ks(k)
    if bootstrap < 0:
        raise ValueError(f"--bootstrap must be >= 0, got {bootstrap}")
    name = name or default_name(incumbent)
    run_id = latest_run(str(warehouse_dir))
    report = load_incumbent(str(warehouse_dir), str(checkpoint_dir), incumbent, name, top_n)
    for line in validation_lines(report):
        logger.info(line) if not report["rejected"] else logger.warning(line)
    rows, summary = compute_comparison(str(warehouse_dir), str(checkpoint_dir), run_id, name, ks,
                                       incumbent if is_builtin(incumbent) else None, bootstrap,
                                       max_accuracy_customers, seed)
    n_rows = write_comparison(str(warehouse_dir), run_id, name, rows)
    markdown = comparison_markdown(rows, summary)
    logger.info("comparison of run %s with %s (%d rows in comparison_metrics):\n%s", run_id, name, n_rows, markdown)
    validation = "\n".join(f"- {line.strip()}" for line in validation_lines(report))
    publish_markdown(f"# Comparison of `{run_id}` with `{name}`\n\n{validation}\n\n{markdown}",
                     "comparison", f"Our lists against {name}")
    return {"run_id": run_id, "incumbent": name, "validation": report, "summary": summary, "n_rows": n_rows,
            "markdown": markdown}


if __name__ == "__main__":
    compare()
