"""The two training tasks (retrieval, ranking) wired to the sequence tables, Grain and the trainer.

`train_retrieval_model` / `train_ranking_model` are the plain functions behind the Prefect flows
and `recs train-*`. Checkpoints go to `<checkpoint_dir>/<model>/` for the model selected on the
temporal split, and `<checkpoint_dir>/<model>_serving/` for the refit on all data (`refit=True`)
that nightly scoring prefers when present.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow.parquet as pq

from model.batch import Items, RetrievalBatch
from model.config import ARCHITECTURE_VERSION, PROFILES, Profile
from model.cases import Cases, next_event_cases
from model.data import (NegativeSampler, RetrievalBatchSource, SequenceTables, SplitArrays, StepArrays, eval_arrays,
                        history_batch, make_loader, negative_sampler)
from model.meta import checkpoint_version, combined_version, new_model_version, read_checkpoint_meta  # noqa: F401
from model.metrics import mrr_at_k, ndcg_at_k, ranks_in_chunks, recall_at_k
from model.parallel import initialize_distributed, is_primary_process, sync
from model.retrieval import corpus_items, corpus_vectors, make_retrieval_model
from model.transformer import weight_decay_mask
from model.train import FitResult, MetricWriter, OptimConfig, TrainTask, fit, load_best_params
from recs.sequences import SPLITS, read_meta
from recs.warehouse import pinned_sequences_dir

VALIDATION_ROWS = 2_000  # validation examples scored at each eval (deterministic subset)
ALL = "all"  # the pseudo-split of a refit: train + val + test


def get_profile(profile: str | Profile) -> Profile:
    """A profile by name (tiny, cpu, gpu) or as given."""
    if isinstance(profile, Profile):
        return profile
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    return PROFILES[profile]


def checkpoint_path(checkpoint_dir: str | Path, model: str, refit: bool = False) -> Path:
    """`<checkpoint_dir>/<model>` or, for the serving refit, `<checkpoint_dir>/<model>_serving`."""
    return Path(checkpoint_dir) / (f"{model}_serving" if refit else model)


def serving_checkpoint(checkpoint_dir: str | Path, model: str) -> Path:
    """The checkpoint scoring uses: the refit if it exists and is not older than the selected
    model (a later `recs train-*` without `--refit` must not be shadowed by a stale refit)."""
    refit = checkpoint_path(checkpoint_dir, model, refit=True)
    selected = checkpoint_path(checkpoint_dir, model)

    def newest(root: Path) -> float:
        stamps = [p.stat().st_mtime for p in root.glob("*/*/_CHECKPOINT_METADATA")]
        stamps += [p.stat().st_mtime for p in root.glob("*/*/meta")]
        return max(stamps, default=-1.0)

    has_refit = newest(refit) >= 0
    return refit if has_refit and newest(refit) >= newest(selected) else selected


def _left_pad_to(a: np.ndarray, width: int) -> np.ndarray:
    return np.pad(a, ((0, 0), (width - a.shape[1], 0))) if a.shape[1] < width else a


def concat_splits(parts: list[SplitArrays]) -> SplitArrays:
    """One SplitArrays of several (refit on all data); candidate widths are left-padded to match."""
    def steps(name: str) -> StepArrays:
        width = max(getattr(p, name).item.shape[1] for p in parts)
        fields = {f.name: np.concatenate([_left_pad_to(getattr(getattr(p, name), f.name), width)
                                          if f.name != "length" else getattr(p, name).length for p in parts])
                  for f in dataclasses.fields(StepArrays)}
        return StepArrays(**fields)

    width_c = max(p.candidate_item.shape[1] for p in parts)
    cand = {name: np.concatenate([_left_pad_to(getattr(p, name), width_c) for p in parts])
            for name in ("candidate_item", "candidate_category", "candidate_root", "candidate_label")}
    return SplitArrays(
        customer_idx=np.concatenate([p.customer_idx for p in parts]),
        visitorid=np.concatenate([p.visitorid for p in parts]),
        window_start_ts=np.concatenate([p.window_start_ts for p in parts]),
        history=steps("history"), window=steps("window"), **cand)


def load_tables(warehouse_dir: str | Path, profile: Profile, *, refit: bool = False) -> SequenceTables:
    """The sequence tables at the profile's history length; with refit, an `all` split too."""
    root = pinned_sequences_dir(warehouse_dir)  # every table and meta.json of one build
    meta = read_meta(warehouse_dir, root)
    tables = SequenceTables.load(root, splits=SPLITS, history_len=profile.model.history_len,
                                 window_len=int(meta.get("max_candidates", 16)),
                                 popularity="n_events" if refit else "n_train_events")
    if refit:
        tables.splits[ALL] = concat_splits([tables.split(s) for s in SPLITS])
    return tables


def corpus_mask(tables: SequenceTables) -> np.ndarray:
    """bool [I+1]: items that may be retrieved (in the current vocabulary; never padding)."""
    items = pq.read_table(tables.root / "items", columns=None)
    mask = np.zeros(tables.num_items + 1, bool)
    idx = items.column("item_idx").to_numpy()
    in_vocab = (items.column("in_vocab").to_numpy(zero_copy_only=False).astype(bool)
                if "in_vocab" in items.column_names else np.ones(len(idx), bool))
    mask[idx] = in_vocab
    mask[0] = False
    return mask


def optim_config(profile: Profile, which: str, steps: int | None, seed: int) -> OptimConfig:
    """The trainer's settings from a profile's TrainConfig (`steps` overrides)."""
    tc = getattr(profile, which)
    total = steps or tc.steps
    return OptimConfig(steps=total, learning_rate=tc.learning_rate, warmup_steps=min(tc.warmup_steps, total // 4 or 1),
                       weight_decay=tc.weight_decay, clip_norm=tc.clip_norm, eval_every=min(tc.eval_every, total),
                       checkpoint_every=min(tc.eval_every, total), seed=seed, patience=tc.patience,
                       max_seconds=tc.max_seconds)


# ----------------------------------------------------------------------------------------------
# Retrieval
# ----------------------------------------------------------------------------------------------

class RetrievalTrainBatch(NamedTuple):
    """A retrieval batch with the step's popularity negatives and logQ terms (a pytree)."""

    batch: RetrievalBatch
    negatives: Items
    negative_logq: np.ndarray
    target_logq: np.ndarray

    SHARED_FIELDS = ("negatives", "negative_logq")  # one set per step, not per row (model.parallel)


class RetrievalTrainSource:
    """Grain source: step -> RetrievalTrainBatch (batch rows and negatives both pure in step)."""

    def __init__(self, batches: RetrievalBatchSource, sampler: NegativeSampler):
        self.batches, self.sampler = batches, sampler

    def __len__(self) -> int:
        return len(self.batches)

    def sharded(self, shard_options) -> RetrievalTrainSource:
        """This shard's rows of every batch, with the step's shared negatives (model.data.make_loader)."""
        return RetrievalTrainSource(self.batches.sharded(shard_options), self.sampler)

    def __getitem__(self, step: int) -> RetrievalTrainBatch:
        batch = self.batches[step]
        negatives, neg_logq = self.sampler(step)
        target_logq = np.where(batch.target.item_id != 0, self.sampler.logq_of(batch.target.item_id), 0.0)
        return RetrievalTrainBatch(batch, negatives, neg_logq.astype(np.float32), target_logq.astype(np.float32))


def item_corpus(tables: SequenceTables) -> tuple[np.ndarray, Items]:
    """(item_idx [I'], Items [I']) of every retrievable item, latest category."""
    return corpus_items(tables, corpus_mask(tables))


def user_vectors(model, params, history, chunk: int = 1_024) -> np.ndarray:
    """Serving user vectors (state after the most recent step) of many histories."""
    fn = jax.jit(model.serving_user_vector)
    n = len(history.customer_id)
    return np.concatenate([np.asarray(fn(params, type(history)(*(x[i:i + chunk] for x in history))))
                           for i in range(0, n, chunk)])


def retrieval_ranks(model, params, tables: SequenceTables, split: str, rows: np.ndarray | None = None,
                    chunk: int = 1_024) -> np.ndarray:
    """1-based rank of each example's next item among the whole corpus (exact dot products)."""
    ev = eval_arrays(tables, split)
    rows = np.arange(len(ev.next_item_idx)) if rows is None else rows
    history = type(ev.history)(*(x[rows] for x in ev.history))
    target = ev.next_item_idx[rows]
    corpus_idx, corpus_items = item_corpus(tables)
    item_vecs = corpus_vectors(model, params, corpus_items)
    users = user_vectors(model, params, history, chunk)
    return ranks_in_chunks(lambda a, b: dense_scores(users[a:b] @ item_vecs.T, corpus_idx, tables.num_items),
                           target, chunk_rows=256)


def dense_scores(corpus_scores: np.ndarray, corpus_idx: np.ndarray, num_items: int) -> np.ndarray:
    """[n, I'] corpus scores -> [n, I+1] indexed by item_idx; items outside the corpus score -inf."""
    out = np.full((len(corpus_scores), num_items + 1), -np.inf, np.float32)
    out[:, corpus_idx] = corpus_scores
    return out


def validation_rows(n: int, limit: int = VALIDATION_ROWS, seed: int = 0) -> np.ndarray:
    """A fixed subset of validation examples (all when there are few)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 7]).choice(n, limit, replace=False))


def case_ranks(model, params, tables: SequenceTables, cases: Cases, chunk: int = 1_024) -> np.ndarray:
    """1-based rank of each next-event case's item among the whole corpus (exact dot products)."""
    history = history_batch(tables, cases.history, cases.visitorid, np.arange(len(cases)))
    corpus_idx, corpus_items = item_corpus(tables)
    item_vecs = corpus_vectors(model, params, corpus_items)
    users = user_vectors(model, params, history, chunk) if len(cases) else np.zeros((0, item_vecs.shape[1]))
    return ranks_in_chunks(lambda a, b: dense_scores(users[a:b] @ item_vecs.T, corpus_idx, tables.num_items),
                           cases.target_idx, chunk_rows=256)


def retrieval_task(tables: SequenceTables, profile: Profile, *, validation_split: str | None = "val",
                   seed: int = 0) -> tuple[TrainTask, object]:
    """TrainTask of the retrieval model and its model functions.

    Validation: the next-event protocol on a fixed sample of the validation period's cases,
    ranked over the whole corpus; Recall@100 (its job as a candidate source) selects.
    """
    tc = profile.retrieval
    model = make_retrieval_model(profile.model, temperature_init=tc.temperature_init, max_targets=tc.max_targets)

    # Jitted: Haiku init run eagerly compiles each of its ~200 ops on its own (~4x slower on CPU).
    @jax.jit
    def init_fn(key, sample: RetrievalTrainBatch):
        return model.init(key, sample.batch)

    def loss_fn(params, b: RetrievalTrainBatch, rng):
        return model.loss(params, b.batch, b.negatives, b.negative_logq, b.target_logq)

    validate = None
    cases = next_event_cases(tables, validation_split) if validation_split is not None else None
    if cases is not None and len(cases):
        sample = cases.take(validation_rows(len(cases), seed=seed))

        def validate(params) -> dict[str, float]:
            ranks = case_ranks(model, params, tables, sample)
            return {"val_recall@100": recall_at_k(ranks, 100), "val_recall@20": recall_at_k(ranks, 20),
                    "val_mrr@20": mrr_at_k(ranks, 20), "val_ndcg@20": ndcg_at_k(ranks, 20)}

    task = TrainTask("retrieval", init_fn, loss_fn, validate, selection_metric="val_recall@100",
                     decay_mask=weight_decay_mask,
                     meta={"profile": profile.to_dict(), "model": "retrieval",
                           "architecture_version": ARCHITECTURE_VERSION})
    return task, model


# ----------------------------------------------------------------------------------------------
# Entry points (called by the flows and the CLI)
# ----------------------------------------------------------------------------------------------

def data_fingerprint(warehouse_dir: str | Path) -> str:
    """Identity of the sequence tables a model is trained on (their meta: cutoffs, params, counts)."""
    from recs.sequences import sequences_fingerprint

    return sequences_fingerprint(warehouse_dir)


def discard_stale_checkpoint(ckpt: Path, fingerprint: str, profile: Profile, settings: dict | None = None) -> bool:
    """Remove a checkpoint trained on other data, another profile, another model architecture
    version or (when `settings` is given) other run settings: resuming it would be wrong or
    impossible. `settings` are the run's optimizer config (total steps: the learning-rate
    schedule depends on them; seed) and the task's options, as stored in its meta under
    "settings".

    Returns True when something was removed. A checkpoint of the same data, profile and settings
    is kept, so a re-run resumes (or, when complete, returns at once).
    """
    import json
    import shutil

    meta = read_checkpoint_meta(ckpt)
    if meta is None:
        return False
    # Compare as stored: the JSON round trip turns the profile's tuples into lists.
    as_stored = lambda value: json.loads(json.dumps(value))  # noqa: E731
    same_profile = meta.get("profile") == as_stored(profile.to_dict())
    same_architecture = meta.get("architecture_version") == ARCHITECTURE_VERSION
    same_settings = settings is None or meta.get("settings") == as_stored(settings)
    if meta.get("data_fingerprint") == fingerprint and same_profile and same_architecture and same_settings:
        return False
    shutil.rmtree(ckpt)
    return True


def _fit_and_summarize(task: TrainTask, cfg: OptimConfig, source, warehouse_dir: str | Path,
                       checkpoint_dir: str | Path, prof: Profile, profile: str | Profile, refit: bool,
                       batch_size: int, progress: bool, stop_after: int | None,
                       writer: MetricWriter | None = None) -> dict:
    """Shared tail of both entry points: tag the data, drop a stale checkpoint, name the run
    (a resumed run keeps its model_version), fit, summarize."""
    ckpt = checkpoint_path(checkpoint_dir, task.name, refit)
    task.meta["data_fingerprint"] = fingerprint = data_fingerprint(warehouse_dir)
    options = {k: task.meta[k] for k in ("init_from_retrieval", "freeze_embeddings", "stage_one", "action_weights",
                                         "transfer")
               if k in task.meta}
    task.meta["settings"] = settings = {"optim": dataclasses.asdict(cfg), **options}
    if is_primary_process():  # one process removes a shared checkpoint; the others wait for it
        discard_stale_checkpoint(ckpt, fingerprint, prof, settings)
    sync("discard-stale-checkpoint")
    previous = read_checkpoint_meta(ckpt) or {}
    task.meta["model_version"] = previous.get("model_version") or new_model_version(ckpt.name, fingerprint, settings,
                                                                                    prof.to_dict())
    task.meta["variant"] = ckpt.name
    result = fit(task, cfg, lambda start: make_loader(source, start_step=start), ckpt, progress=progress,
                 batch_size=batch_size, stop_after=stop_after, writer=writer)
    return _summary(task.name, result, ckpt, refit, profile if isinstance(profile, str) else "custom",
                    task.meta["model_version"])


def _summary(model_name: str, result: FitResult, ckpt: Path, refit: bool, profile_name: str,
             model_version: str | None = None) -> dict:
    return {"model": model_name, "model_version": model_version, "checkpoint": str(ckpt), "refit": refit,
            "profile": profile_name,
            "steps": result.step, "resumed_from": result.resumed_from, "seconds": round(result.seconds, 1),
            "examples_per_s": round(result.examples_per_s, 1), "best": result.best, "stopped": result.stopped,
            "final": result.history[-1] if result.history else None}


def train_retrieval_model(warehouse_dir: str | Path = "warehouse", checkpoint_dir: str | Path = "checkpoints",
                          profile: str | Profile = "cpu", steps: int | None = None, seed: int = 0,
                          refit: bool = False, progress: bool = True, stop_after: int | None = None,
                          writer: MetricWriter | None = None) -> dict:
    """Train (or resume) the retrieval model; returns a summary with the best validation metrics
    and the run's model_version. `writer` receives the training and validation metrics."""
    initialize_distributed()  # a multi-host run (model/parallel.py); before any JAX computation
    prof = get_profile(profile)
    tables = load_tables(warehouse_dir, prof, refit=refit)
    split = ALL if refit else "train"
    cfg = optim_config(prof, "retrieval", steps, seed)
    # A refit has seen the validation split: it trains for the selected steps, no selection.
    task, _ = retrieval_task(tables, prof, validation_split=None if refit else "val", seed=seed)
    batches = RetrievalBatchSource(tables, split, prof.retrieval.batch_size, seed=seed, num_steps=cfg.steps,
                                   tokens_per_batch=prof.retrieval.tokens_per_batch, row_multiple=jax.device_count())
    source = RetrievalTrainSource(batches, negative_sampler(tables, prof.retrieval.num_negatives, seed))
    return _fit_and_summarize(task, cfg, source, warehouse_dir, checkpoint_dir, prof, profile, refit,
                              prof.retrieval.batch_size, progress, stop_after, writer)
