"""Prefect flow `evaluate`: both models beside popularity and item-kNN on the test split.

Metrics go to the warehouse table `eval_metrics(run_id, model, split, metric, k, value)` (plus
`section`, `created_at`) and to a Prefect markdown artifact.
"""
from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows._common import is_transient, publish_markdown
from recs.publish import connect_with_retry, new_run_id
from recs.warehouse import run_sql


@task(cache_policy=NONE)
def compute_metrics(warehouse_dir: str, checkpoint_dir: str, profile: str, splits: list[str], seed: int) -> list[dict]:
    """Every metric of every model and baseline (pure computation, no warehouse writes)."""
    from model.evaluation import evaluate_all

    return evaluate_all(warehouse_dir, checkpoint_dir, profile=profile, splits=tuple(splits), seed=seed)


@task(retries=3, retry_delay_seconds=2, retry_condition_fn=is_transient, cache_policy=NONE)
def write_metrics(warehouse_dir: str, run_id: str, rows: list[dict]) -> int:
    """Append the rows under `run_id` (re-writing the same run id replaces it).

    One writer session: readers see all of the run's rows from the publish on, or none (a
    failure discards the private copy)."""
    with connect_with_retry(warehouse_dir) as con:
        run_sql(con, "marts/eval_metrics")
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM eval_metrics WHERE run_id = ?", [run_id])
        con.executemany("INSERT INTO eval_metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [[run_id, r["model"], r["split"], r["metric"], r["k"], r["value"], r["section"], now]
                         for r in rows])
        con.execute("COMMIT")
    return len(rows)


@flow(name="evaluate")
def evaluate(warehouse_dir: str = "warehouse", checkpoint_dir: str = "checkpoints", profile: str = "cpu",
             split: str = "test", seed: int = 0, run_id: str | None = None,
             splits: list[str] | None = None) -> dict:
    """Evaluate on `splits` (default: `split` alone); returns {run_id, rows, markdown} with the
    markdown of `split` (the reported one; `val` is what the publishing guard reads)."""
    from model.evaluation import metrics_markdown

    run_id = run_id or new_run_id()
    splits = list(splits or [split])
    report = split if split in splits else splits[-1]
    rows = compute_metrics(str(warehouse_dir), str(checkpoint_dir), profile, splits, seed)
    write_metrics(str(warehouse_dir), run_id, rows)
    markdown = metrics_markdown(rows, report)
    get_run_logger().info("evaluation %s on %s:\n%s", run_id, report, markdown)
    body = "\n\n".join(f"## {s}\n\n{metrics_markdown(rows, s)}" for s in splits)
    publish_markdown(f"# Evaluation `{run_id}`\n\n{body}", "evaluation", "Offline evaluation")
    return {"run_id": run_id, "rows": rows, "markdown": markdown}


if __name__ == "__main__":
    evaluate()
