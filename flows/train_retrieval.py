"""Prefect flow `train_retrieval`: the two-tower retrieval model from the parquet sequence tables.

Grain streams whole batches into a jit-compiled JAX step; Orbax checkpoints model, optimizer and
the Grain iterator together, so a retry or a re-run resumes where the last run stopped.
"""
from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows._common import is_transient, publish_markdown, training_writer

CURVES_PNG = "curves.png"  # beside the run's checkpoints: <checkpoint_dir>/<variant>/curves.png


@task(retries=1, retry_delay_seconds=2, retry_condition_fn=is_transient, cache_policy=NONE)
def fit_retrieval(warehouse_dir: str, checkpoint_dir: str, profile: str, steps: int | None, seed: int,
                  refit: bool) -> dict:
    """Train or resume; a retry continues from the latest checkpoint, not from scratch. Metrics
    go to `training_metrics` and this task's log as training runs."""
    from model.tasks import train_retrieval_model

    return train_retrieval_model(warehouse_dir, checkpoint_dir, profile=profile, steps=steps, seed=seed, refit=refit,
                                 writer=training_writer(warehouse_dir, "retrieval"))


def summary_markdown(summary: dict, metric_prefix: str = "val_", curves: list[dict] | None = None) -> str:
    """A short markdown report of a training summary (with a table of the validations and the
    curves' PNG path when given)."""
    best = summary.get("best") or {}
    lines = [f"# {summary['model']} ({'refit on all data' if summary['refit'] else 'selected on validation'})",
             f"- model_version `{summary.get('model_version')}`",
             f"- profile `{summary['profile']}`, {summary['steps']} steps "
             f"(resumed from {summary['resumed_from']}), {summary['seconds']} s, "
             f"{summary['examples_per_s']} examples/s", f"- checkpoint `{summary['checkpoint']}`"]
    if best:
        lines.append(f"- best step {best.get('step')}: " + ", ".join(
            f"{k} = {v:.4f}" for k, v in best.items() if k.startswith(metric_prefix)))
    if summary.get("curves_png"):
        lines.append(f"- training curves: `{summary['curves_png']}`")
    if curves:
        by_step: dict[int, dict[str, float]] = {}
        for r in curves:
            if r["metric"].startswith(metric_prefix) or r["metric"] == "train_loss":
                by_step.setdefault(r["step"], {})[r["metric"]] = r["value"]
        names = list(dict.fromkeys(m for row in by_step.values() for m in row if m.startswith(metric_prefix)))
        evals = {s: row for s, row in by_step.items() if any(m in row for m in names)}
        if names and evals:
            lines += ["", "| step | train_loss | " + " | ".join(names) + " |", "|---:|---:|" + "---:|" * len(names)]
            lines += [f"| {s} | " + " | ".join("" if row.get(m) is None else f"{row[m]:.4f}"
                                               for m in ["train_loss", *names]) + " |"
                      for s, row in sorted(evals.items())]
    return "\n".join(lines)


@task(cache_policy=NONE)
def plot_training(warehouse_dir: str, summary: dict) -> tuple[str | None, list[dict]]:
    """Training curves of the run (its `training_metrics` rows) as `<checkpoint>/curves.png`."""
    from pathlib import Path

    from recs.plots import training_curves
    from recs.training_metrics import read_run

    rows = read_run(warehouse_dir, summary["model_version"]) if summary.get("model_version") else []
    if not rows:
        return None, []
    path = training_curves(rows, Path(summary["checkpoint"]) / CURVES_PNG,
                           title=f"{summary['model']} {summary['model_version']}")
    return str(path), rows


def report_training(summary: dict, warehouse_dir: str | None = None) -> dict:
    """Plot the run's curves (with `warehouse_dir`), log a training summary on one line and
    publish it as a markdown artifact (key `train-<model>`, `-refit` appended for a refit).
    Returns the summary with `curves_png` (the PNG's path, None when there were no rows).
    On a multi-host cluster only process 0 reports (the others return the summary as is)."""
    from model.parallel import is_primary_process

    if not is_primary_process():
        return summary
    curves: list[dict] = []
    if warehouse_dir is not None:
        png, curves = plot_training(str(warehouse_dir), summary)
        summary = {**summary, "curves_png": png}
    model, markdown = summary["model"], summary_markdown(summary, curves=curves)
    get_run_logger().info("%s: %s", model, summary_markdown(summary).replace("\n", " | "))
    publish_markdown(markdown, f"train-{model}" + ("-refit" if summary["refit"] else ""),
                     f"{model.capitalize()} training summary")
    return summary


@flow(name="train_retrieval")
def train_retrieval(warehouse_dir: str = "warehouse", checkpoint_dir: str = "checkpoints", profile: str = "cpu",
                    steps: int | None = None, seed: int = 0, refit: bool = False) -> dict:
    """Train the retrieval model (`refit=True`: on all data, for serving); its metrics go to
    `training_metrics`, its curves to `<checkpoint_dir>/<variant>/curves.png`."""
    summary = fit_retrieval(str(warehouse_dir), str(checkpoint_dir), profile, steps, seed, refit)
    return report_training(summary, str(warehouse_dir))


if __name__ == "__main__":
    train_retrieval()
