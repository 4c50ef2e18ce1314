"""Transfer of trained models to a new catalogue: the stages behind `recs transfer`.

Each model (retrieval, then the ranker stacked on the transferred retrieval model) trains in two
stages (model/transfer.py): `embeddings` (fresh id tables only, the carried-over parts frozen)
into `<checkpoint_dir>/<model>_embeddings/`, then `finetune` (everything, lower learning rate,
starting from stage 1's best) into `<checkpoint_dir>/<model>/`, where evaluation and scoring find
it. Both stages are ordinary `fit` runs: resumable, and a re-run with the same source, data and
settings resumes or returns at once. Every checkpoint's meta has a `transfer` entry naming the
source checkpoint (path, model_version, step, data fingerprint), the stage and, for stage 2,
stage 1's checkpoint and model_version.

The architecture is the source's: its profile is read from the source checkpoint's meta.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from model.config import ARCHITECTURE_VERSION, PROFILES, Profile
from model.meta import checkpoint_version, read_checkpoint_meta
from model.transfer import EMBEDDINGS, FINETUNE, STAGES, stage_trainable, transfer_params

MODELS = ("retrieval", "ranking")
FINETUNE_LR_SCALE = 0.1  # stage 2's default learning rate: the profile's times this


def stage_variant(model: str, stage: str) -> str:
    """Checkpoint directory name of a stage: `<model>_embeddings` (stage 1), `<model>` (stage 2)."""
    if stage not in STAGES:
        raise ValueError(f"unknown transfer stage {stage!r}; choose one of {STAGES}")
    return f"{model}_{EMBEDDINGS}" if stage == EMBEDDINGS else model


def source_checkpoint(source_dir: str | Path, model: str) -> Path:
    """The checkpoint of `model` under a source checkpoint directory: for retrieval the serving
    refit when it is the newer one (it saw all of the source's data), else the selected model."""
    from model.tasks import checkpoint_path, serving_checkpoint

    return serving_checkpoint(source_dir, model) if model == "retrieval" else checkpoint_path(source_dir, model)


def check_source(source_dir: str | Path) -> dict[str, dict]:
    """{model: {"checkpoint": Path, "meta": dict}} of a source checkpoint directory, checked:
    FileNotFoundError when a model has no checkpoint, ValueError when one was made by another
    architecture version or without a stored profile. Reads JSON only (no JAX)."""
    root = Path(source_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--from {root}: no such checkpoint directory")
    out = {}
    for model in MODELS:
        variants = ("retrieval_serving", "retrieval") if model == "retrieval" else (model,)
        found = [root / v for v in variants if read_checkpoint_meta(root / v) is not None]
        if not found:
            raise FileNotFoundError(f"--from {root}: no trained {model} checkpoint under {root / model} "
                                    "(transfer needs the retrieval and ranking checkpoints of a trained run)")
        ckpt = source_checkpoint(root, model) if len(found) > 1 else found[0]
        meta = read_checkpoint_meta(ckpt) or {}
        if meta.get("architecture_version") != ARCHITECTURE_VERSION:
            raise ValueError(f"--from {ckpt}: made by architecture version {meta.get('architecture_version')}, "
                             f"this code is version {ARCHITECTURE_VERSION}: retrain the source first")
        if "profile" not in meta:
            raise ValueError(f"--from {ckpt}: its meta has no profile")
        out[model] = {"checkpoint": ckpt, "meta": meta}
    if out["retrieval"]["meta"]["profile"]["model"] != out["ranking"]["meta"]["profile"]["model"]:
        raise ValueError(f"--from {root}: the ranking checkpoint was stacked on a retrieval model of another "
                         "profile than the retrieval checkpoint's")
    return out


def source_origin(ckpt: Path, meta: dict, model: str) -> dict:
    """What a transferred checkpoint records about its source."""
    return {"source_checkpoint": str(Path(ckpt).resolve()), "source_model_version": checkpoint_version(meta, ckpt, model),
            "source_step": meta.get("step"), "source_data_fingerprint": meta.get("data_fingerprint")}


def profile_name(profile: Profile) -> str:
    """The name of a stored profile when it is one of PROFILES, else "custom"."""
    as_stored = json.loads(json.dumps(profile.to_dict()))
    return next((name for name, p in PROFILES.items() if json.loads(json.dumps(p.to_dict())) == as_stored), "custom")


def fit_batches_to_data(profile: Profile, train_rows: int) -> Profile:
    """The profile with the retrieval batch capped at the train split's rows: a new shop may have
    fewer customers than one batch of the source's profile (the ranker caps its own batch)."""
    if train_rows < 1:
        raise ValueError("the new catalogue's train split is empty: ingest more events or lower --min-user-events")
    if train_rows >= profile.retrieval.batch_size:
        return profile
    return dataclasses.replace(profile, retrieval=dataclasses.replace(profile.retrieval, batch_size=train_rows))


def stage_optim(profile: Profile, model: str, stage: str, steps: int | None, learning_rate: float | None,
                seed: int):
    """The trainer settings of one stage. Defaults: half of the profile's steps each (stage 1
    rounds down); stage 1 at the profile's learning rate, stage 2 at FINETUNE_LR_SCALE of it."""
    from model.tasks import optim_config

    which = "retrieval" if model == "retrieval" else "ranking"
    tc = getattr(profile, which)
    if steps is None:
        steps = max(1, tc.steps // 2) if stage == EMBEDDINGS else max(1, tc.steps - tc.steps // 2)
    if steps < 1:
        raise ValueError(f"{stage} steps must be >= 1, got {steps}")
    if learning_rate is None:
        learning_rate = tc.learning_rate * (1.0 if stage == EMBEDDINGS else FINETUNE_LR_SCALE)
    if not learning_rate > 0:
        raise ValueError(f"{stage} learning rate must be positive, got {learning_rate}")
    return dataclasses.replace(optim_config(profile, which, steps, seed), learning_rate=float(learning_rate))


def _stage_start(checkpoint_dir: str | Path, model: str, stage: str, source: dict):
    """(init_params function, origin meta) of a stage: stage 1 transplants the source's carried
    parts onto a fresh initialisation; stage 2 starts from stage 1's best checkpoint."""
    from model.tasks import checkpoint_path
    from model.train import load_best_params

    ckpt, meta = source[model]["checkpoint"], source[model]["meta"]
    origin = {**source_origin(ckpt, meta, model), "stage": stage}
    if stage == EMBEDDINGS:
        source_params, _ = load_best_params(ckpt)
        return (lambda fresh: transfer_params(fresh, source_params)), origin
    first = checkpoint_path(checkpoint_dir, stage_variant(model, EMBEDDINGS))
    if read_checkpoint_meta(first) is None:
        raise FileNotFoundError(f"no {EMBEDDINGS} stage checkpoint under {first}: run stage {EMBEDDINGS} first")
    first_params, first_meta = load_best_params(first)
    origin.update({"from_stage_checkpoint": str(first.resolve()),
                   "from_stage_model_version": first_meta.get("model_version"), "from_stage_step": first_meta.get("step")})

    def init(fresh):
        transfer_params(fresh, first_params)  # checks the structure; every leaf is stage 1's
        return first_params

    return init, origin


def transfer_retrieval_stage(warehouse_dir: str | Path, checkpoint_dir: str | Path, source_dir: str | Path,
                             stage: str, *, steps: int | None = None, learning_rate: float | None = None,
                             seed: int = 0, progress: bool = True, writer=None) -> dict:
    """One stage of the retrieval model's transfer onto the warehouse's sequence tables; returns
    the training summary (as `train_retrieval_model`'s) with the `transfer` origin."""
    from model.data import RetrievalBatchSource, negative_sampler
    from model.tasks import RetrievalTrainSource, _fit_and_summarize, load_tables, retrieval_task

    source = check_source(source_dir)
    prof = Profile.from_dict(source["retrieval"]["meta"]["profile"])
    cfg = stage_optim(prof, "retrieval", stage, steps, learning_rate, seed)
    tables = load_tables(warehouse_dir, prof)
    prof = fit_batches_to_data(prof, len(tables.split("train")))
    task, _ = retrieval_task(tables, prof, validation_split="val", seed=seed)
    task.name = stage_variant("retrieval", stage)
    task.init_params, task.meta["transfer"] = _stage_start(checkpoint_dir, "retrieval", stage, source)
    task.trainable = stage_trainable(stage)
    batches = RetrievalBatchSource(tables, "train", prof.retrieval.batch_size, seed=seed, num_steps=cfg.steps,
                                   tokens_per_batch=prof.retrieval.tokens_per_batch)
    train_source = RetrievalTrainSource(batches, negative_sampler(tables, prof.retrieval.num_negatives, seed))
    summary = _fit_and_summarize(task, cfg, train_source, warehouse_dir, checkpoint_dir, prof, profile_name(prof),
                                 False, prof.retrieval.batch_size, progress, None, writer)
    return {**summary, "transfer": task.meta["transfer"], "learning_rate": cfg.learning_rate}


def transfer_ranking_stage(warehouse_dir: str | Path, checkpoint_dir: str | Path, source_dir: str | Path,
                           stage: str, *, steps: int | None = None, learning_rate: float | None = None,
                           seed: int = 0, progress: bool = True, writer=None) -> dict:
    """One stage of the ranker's transfer, stacked (as `train_ranking_model`) on the transferred
    retrieval model in `<checkpoint_dir>/retrieval`: its training cases are the new catalogue's
    validation period with the candidates and features stage one gives them."""
    from model.ranking_task import ranking_task, ranking_training_data, retrieval_identity
    from model.ranking_data import RankingBatchSource
    from model.serving import DEFAULT_ACTION_WEIGHTS
    from model.tasks import _fit_and_summarize, checkpoint_path, corpus_mask, load_tables
    from model.train import load_best_params

    source = check_source(source_dir)
    prof = Profile.from_dict(source["ranking"]["meta"]["profile"])
    cfg = stage_optim(prof, "ranking", stage, steps, learning_rate, seed)
    retrieval_ckpt = checkpoint_path(checkpoint_dir, "retrieval")
    if read_checkpoint_meta(retrieval_ckpt) is None:
        raise FileNotFoundError(f"no transferred retrieval checkpoint under {retrieval_ckpt}: "
                                "transfer the retrieval model first")
    tables = load_tables(warehouse_dir, prof)
    retrieval_params, _ = load_best_params(retrieval_ckpt)
    train, select = ranking_training_data(tables, prof, retrieval_params, corpus_mask(tables), seed=seed,
                                          progress=progress)
    task, _ = ranking_task(tables, prof, select, seed=seed, action_weights=DEFAULT_ACTION_WEIGHTS)
    task.name = stage_variant("ranking", stage)
    task.init_params, task.meta["transfer"] = _stage_start(checkpoint_dir, "ranking", stage, source)
    task.trainable = stage_trainable(stage)
    task.meta["stage_one"] = retrieval_identity(retrieval_ckpt)
    task.meta["action_weights"] = list(DEFAULT_ACTION_WEIGHTS)
    task.meta["cases"] = {"train": len(train), "selection": len(select)}
    batch = min(prof.ranking.batch_size, len(train))
    if batch < 1:
        raise ValueError("no ranking training cases: the new catalogue's validation period is too small")
    train_source = RankingBatchSource(tables, train, batch, seed=seed, num_steps=cfg.steps)
    summary = _fit_and_summarize(task, cfg, train_source, warehouse_dir, checkpoint_dir, prof, profile_name(prof),
                                 False, batch, progress, None, writer)
    return {**summary, "transfer": task.meta["transfer"], "learning_rate": cfg.learning_rate}


STAGE_FUNCTIONS = {"retrieval": transfer_retrieval_stage, "ranking": transfer_ranking_stage}


def transfer_models(warehouse_dir: str | Path, checkpoint_dir: str | Path, source_dir: str | Path, *,
                    frozen_steps: int | None = None, frozen_learning_rate: float | None = None,
                    finetune_steps: int | None = None, finetune_learning_rate: float | None = None,
                    seed: int = 0, progress: bool = True, writers=None) -> dict:
    """Both models, both stages, in order (retrieval first: the ranker is stacked on it).
    `writers(model, stage)` -> a MetricWriter or None. Returns {"<model>_<stage>": summary}."""
    check_source(source_dir)
    if Path(source_dir).resolve() == Path(checkpoint_dir).resolve():
        raise ValueError(f"--checkpoints {checkpoint_dir} is the source directory: transfer would overwrite "
                         "the source models; give another --checkpoints")
    settings = {EMBEDDINGS: (frozen_steps, frozen_learning_rate), FINETUNE: (finetune_steps, finetune_learning_rate)}
    out = {}
    for model in MODELS:
        for stage in STAGES:
            steps, lr = settings[stage]
            out[f"{model}_{stage}"] = STAGE_FUNCTIONS[model](
                warehouse_dir, checkpoint_dir, source_dir, stage, steps=steps, learning_rate=lr, seed=seed,
                progress=progress, writer=writers(model, stage) if writers else None)
    return out
