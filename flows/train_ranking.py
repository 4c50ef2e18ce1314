"""Prefect flow `train_ranking`: the candidate-isolated ranking transformer.

Stage 2 of the plan: `init_from_retrieval` starts the shared item/customer/category tables from
the retrieval checkpoint; `freeze_embeddings` keeps them fixed.
"""
from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NONE

from flows._common import is_transient, training_writer
from flows.train_retrieval import report_training


@task(retries=1, retry_delay_seconds=2, retry_condition_fn=is_transient, cache_policy=NONE)
def fit_ranking(warehouse_dir: str, checkpoint_dir: str, profile: str, steps: int | None, seed: int, refit: bool,
                init_from_retrieval: bool, freeze_embeddings: bool) -> dict:
    """Train or resume; a retry continues from the latest checkpoint, not from scratch. Metrics
    go to `training_metrics` and this task's log as training runs."""
    from model.ranking_task import train_ranking_model

    return train_ranking_model(warehouse_dir, checkpoint_dir, profile=profile, steps=steps, seed=seed, refit=refit,
                               init_from_retrieval=init_from_retrieval, freeze_embeddings=freeze_embeddings,
                               writer=training_writer(warehouse_dir, "ranking"))


@flow(name="train_ranking")
def train_ranking(warehouse_dir: str = "warehouse", checkpoint_dir: str = "checkpoints", profile: str = "cpu",
                  steps: int | None = None, seed: int = 0, refit: bool = False, init_from_retrieval: bool = False,
                  freeze_embeddings: bool = False) -> dict:
    """Train the ranking model (`refit=True`: on all data, for serving); its metrics go to
    `training_metrics`, its curves to `<checkpoint_dir>/ranking/curves.png`."""
    summary = fit_ranking(str(warehouse_dir), str(checkpoint_dir), profile, steps, seed, refit,
                          init_from_retrieval, freeze_embeddings)
    return report_training(summary, str(warehouse_dir))


if __name__ == "__main__":
    train_ranking()
