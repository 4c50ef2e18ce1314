"""Prefect flow `train_retrieval`: the two-tower retrieval model from the parquet sequence tables.

Grain streams whole batches into a jit-compiled JAX step; Orbax checkpoints model, optimizer and
the Grain iterator together, so a retry or a re-run resumes where the last run stopped.
"""
from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows._common import is_transient, publish_markdown


@task(retries=1, retry_delay_seconds=2, retry_condition_fn=is_transient, cache_policy=NONE)
def fit_retrieval(warehouse_dir: str, checkpoint_dir: str, profile: str, steps: int | None, seed: int,
                  refit: bool) -> dict:
    """Train or resume; a retry continues from the latest checkpoint, not from scratch."""
    from model.tasks import train_retrieval_model

    return train_retrieval_model(warehouse_dir, checkpoint_dir, profile=profile, steps=steps, seed=seed, refit=refit)


def summary_markdown(summary: dict, metric_prefix: str = "val_") -> str:
    """A short markdown report of a training summary."""
    best = summary.get("best") or {}
    lines = [f"# {summary['model']} ({'refit on all data' if summary['refit'] else 'selected on validation'})",
             f"- profile `{summary['profile']}`, {summary['steps']} steps "
             f"(resumed from {summary['resumed_from']}), {summary['seconds']} s, "
             f"{summary['examples_per_s']} examples/s", f"- checkpoint `{summary['checkpoint']}`"]
    if best:
        lines.append(f"- best step {best.get('step')}: " + ", ".join(
            f"{k} = {v:.4f}" for k, v in best.items() if k.startswith(metric_prefix)))
    return "\n".join(lines)


def report_training(summary: dict) -> None:
    """Log a training summary on one line and publish it as a markdown artifact
    (key `train-<model>`, `-refit` appended for a refit)."""
    model, markdown = summary["model"], summary_markdown(summary)
    get_run_logger().info("%s: %s", model, markdown.replace("\n", " | "))
    publish_markdown(markdown, f"train-{model}" + ("-refit" if summary["refit"] else ""),
                     f"{model.capitalize()} training summary")


@flow(name="train_retrieval")
def train_retrieval(warehouse_dir: str = "warehouse", checkpoint_dir: str = "checkpoints", profile: str = "cpu",
                    steps: int | None = None, seed: int = 0, refit: bool = False) -> dict:
    """Train the retrieval model (`refit=True`: on all data, for serving)."""
    summary = fit_retrieval(str(warehouse_dir), str(checkpoint_dir), profile, steps, seed, refit)
    report_training(summary)
    return summary


if __name__ == "__main__":
    train_retrieval()
