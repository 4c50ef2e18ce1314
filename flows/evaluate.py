"""Prefect flow `evaluate`: both models beside the baselines on validation and test.

Metrics go to the warehouse table `eval_metrics(run_id, model, split, metric, k, value)` (plus
`section`, `created_at`, `model_version`: the checkpoints measured), to a chart of the
next-event Recall@20 / MRR@20 per model and split (`<checkpoint_dir>/evaluation.png`) and to a
Prefect markdown artifact.
"""
from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows._common import is_transient, publish_markdown
from recs.publish import connect_with_retry, new_run_id
from recs.warehouse import run_sql

EVALUATION_PNG = "evaluation.png"  # <checkpoint_dir>/evaluation.png
EVAL_COLUMNS = ("run_id", "model", "split", "metric", "k", "value", "section", "created_at", "model_version")


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
        # Warehouses made before evaluations named their checkpoints.
        con.execute("ALTER TABLE eval_metrics ADD COLUMN IF NOT EXISTS model_version VARCHAR")
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM eval_metrics WHERE run_id = ?", [run_id])
        con.executemany(f"INSERT INTO eval_metrics ({', '.join(EVAL_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(EVAL_COLUMNS))})",
                        [[run_id, r["model"], r["split"], r["metric"], r["k"], r["value"], r["section"], now,
                          r.get("model_version")] for r in rows])
        con.execute("COMMIT")
    return len(rows)


def headline_markdown(rows: list[dict], section: str = "next_event") -> str:
    """Recall@20 and MRR@20 of every model on every split, one line per model."""
    splits = list(dict.fromkeys(r["split"] for r in rows if r["section"] == section))
    value = {(r["model"], r["split"], r["metric"]): r["value"] for r in rows
             if r["section"] == section and r["k"] == 20 and r["metric"] in ("recall", "mrr")}
    models = list(dict.fromkeys(m for m, _, _ in value))
    head = " | ".join(f"{s} Recall@20 | {s} MRR@20" for s in splits)
    lines = [f"| model | {head} |", "|---|" + "---:|" * (2 * len(splits))]
    for m in models:
        cells = [value.get((m, s, k)) for s in splits for k in ("recall", "mrr")]
        lines.append(f"| {m} | " + " | ".join("" if c is None else f"{c:.4f}" for c in cells) + " |")
    return "\n".join(lines)


@task(cache_policy=NONE)
def plot_evaluation(checkpoint_dir: str, run_id: str, rows: list[dict]) -> str:
    """The next-event chart of this evaluation, `<checkpoint_dir>/evaluation.png`."""
    from pathlib import Path

    from recs.plots import evaluation_chart

    version = next((r.get("model_version") for r in rows if r.get("model_version")), None)
    return str(evaluation_chart(rows, Path(checkpoint_dir) / EVALUATION_PNG,
                                title=f"evaluation {run_id}: next-event, models beside baselines"
                                      + (f"\n{version}" if version else "")))


@flow(name="evaluate")
def evaluate(warehouse_dir: str = "warehouse", checkpoint_dir: str = "checkpoints", profile: str = "cpu",
             split: str = "test", seed: int = 0, run_id: str | None = None,
             splits: list[str] | None = None) -> dict:
    """Evaluate on `splits` (default: `val` and `split`); returns {run_id, rows, markdown,
    model_version, evaluation_png} with the markdown of `split` (the reported one; `val` is
    what the publishing guard reads)."""
    from model.evaluation import metrics_markdown

    run_id = run_id or new_run_id()
    splits = list(dict.fromkeys(splits or ["val", split]))
    report = split if split in splits else splits[-1]
    rows = compute_metrics(str(warehouse_dir), str(checkpoint_dir), profile, splits, seed)
    write_metrics(str(warehouse_dir), run_id, rows)
    png = plot_evaluation(str(checkpoint_dir), run_id, rows)
    version = next((r.get("model_version") for r in rows if r.get("model_version")), None)
    markdown = metrics_markdown(rows, report)
    get_run_logger().info("evaluation %s of %s on %s (chart %s):\n%s", run_id, version, report, png, markdown)
    body = "\n\n".join(f"## {s}\n\n{metrics_markdown(rows, s)}" for s in splits)
    publish_markdown(f"# Evaluation `{run_id}`\n\n- checkpoints: `{version}`\n- chart: `{png}`\n\n"
                     f"## next-event Recall@20 / MRR@20\n\n{headline_markdown(rows)}\n\n{body}",
                     "evaluation", "Offline evaluation")
    return {"run_id": run_id, "rows": rows, "markdown": markdown, "model_version": version, "evaluation_png": png}


if __name__ == "__main__":
    evaluate()
