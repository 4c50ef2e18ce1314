"""Prefect flow `transfer`: a trained model's head start on a new catalogue (`recs transfer`).

ingest the new shop's CSVs -> build its sequence tables -> for retrieval, then the ranker
stacked on it: stage `embeddings` (fresh id tables, the trained transformer and every id-free
part frozen) and stage `finetune` (everything, lower learning rate). See model/transfer.py for
what carries over. Each stage is a task that resumes from its checkpoint on a retry or re-run;
its metrics go to `training_metrics`, its curves to `<checkpoint_dir>/<variant>/curves.png`.
"""
from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows._common import is_transient, training_writer
from flows.build_sequences import build_sequences
from flows.ingest import ingest
from flows.train_retrieval import report_training


@task(retries=1, retry_delay_seconds=2, retry_condition_fn=is_transient, cache_policy=NONE)
def check_transfer_source(source_dir: str, checkpoint_dir: str) -> dict:
    """The source checkpoints (path and model_version of each model), checked before any work."""
    from pathlib import Path

    from model.transfer_task import check_source, source_origin

    if Path(source_dir).resolve() == Path(checkpoint_dir).resolve():
        raise ValueError(f"--checkpoints {checkpoint_dir} is the source directory: transfer would overwrite "
                         "the source models; give another --checkpoints")
    return {model: source_origin(s["checkpoint"], s["meta"], model) for model, s in check_source(source_dir).items()}


@task(retries=1, retry_delay_seconds=2, retry_condition_fn=is_transient, cache_policy=NONE)
def fit_transfer_stage(model: str, stage: str, warehouse_dir: str, checkpoint_dir: str, source_dir: str,
                       steps: int | None, learning_rate: float | None, seed: int) -> dict:
    """One stage of one model; a retry continues from the stage's latest checkpoint."""
    from model.transfer_task import STAGE_FUNCTIONS

    return STAGE_FUNCTIONS[model](warehouse_dir, checkpoint_dir, source_dir, stage, steps=steps,
                                  learning_rate=learning_rate, seed=seed, writer=training_writer(warehouse_dir, model))


@flow(name="transfer")
def transfer(source_dir: str, data_dir: str, warehouse_dir: str = "warehouse", checkpoint_dir: str = "checkpoints",
             min_user_events: int = 10, min_item_events: int = 1, frozen_steps: int | None = None,
             frozen_learning_rate: float | None = None, finetune_steps: int | None = None,
             finetune_learning_rate: float | None = None, seed: int = 0) -> dict:
    """Transfer the retrieval and ranking models under `source_dir` to the catalogue in `data_dir`.

    frozen_*: stage 1 (new id tables only); None = half the source profile's steps, its learning
    rate. finetune_*: stage 2 (everything); None = the other half, a tenth of the learning rate.
    Both apply to each model. Returns each stage's training summary.
    """
    from model.transfer_task import MODELS, STAGES

    logger = get_run_logger()
    sources = check_transfer_source(str(source_dir), str(checkpoint_dir))
    logger.info("transfer from %s", ", ".join(f"{m} {s['source_model_version']} ({s['source_checkpoint']})"
                                            for m, s in sources.items()))
    ingested = ingest(data_dir=str(data_dir), warehouse_dir=warehouse_dir)
    built = build_sequences(warehouse_dir=warehouse_dir, min_user_events=min_user_events,
                            min_item_events=min_item_events)
    settings = {"embeddings": (frozen_steps, frozen_learning_rate), "finetune": (finetune_steps, finetune_learning_rate)}
    stages = {}
    for model in MODELS:
        for stage in STAGES:
            steps, lr = settings[stage]
            summary = fit_transfer_stage(model, stage, str(warehouse_dir), str(checkpoint_dir), str(source_dir),
                                         steps, lr, seed)
            # Prefect artifact keys take dashes, not underscores (`train-retrieval-embeddings`).
            reported = report_training({**summary, "model": summary["model"].replace("_", "-")}, str(warehouse_dir))
            stages[f"{model}_{stage}"] = {**reported, "model": summary["model"]}
    logger.info("transferred: evaluation and scoring use %s/retrieval and %s/ranking "
                "(`recs evaluate --checkpoints %s`, `recs score --checkpoints %s`)",
                checkpoint_dir, checkpoint_dir, checkpoint_dir, checkpoint_dir)
    return {"source": sources, "ingest": ingested, "build": built, **stages}
