"""A small, model-agnostic JAX trainer: Task/State split, Orbax checkpoints, resumable Grain data.

A `TrainTask` says what to train (init, a pure loss, host-side validation and the metric that
selects the best checkpoint); `fit` says how: AdamW with warmup + cosine decay and global-norm
clipping, a jit-compiled step, per-step RNG by `fold_in(seed, step)`, periodic validation, and
two Orbax CheckpointManagers under `<checkpoint_dir>/`:

    latest/<step>/  state + Grain iterator state + meta   (resume after a kill)
    best/<step>/    state + meta, best by the selection metric (what evaluation/scoring load)

Because the data order and the per-step RNG are pure functions of (seed, step), a run killed at
any point and resumed from `latest/` ends with the same parameters as an uninterrupted run.

Data-parallel over every device of every process (model/parallel.py): the state is replicated
on a 1-D `data` mesh, each batch is split along its example axis, and the step is compiled for
those shardings; with one device this is the plain single-device loop. Several processes each
load their slice of the batch, save their own Grain iterator state (`data/process_<i>-of-<n>.json`)
and take the same decisions; process 0 alone reports metrics and progress.

Metrics go to an optional `MetricWriter` (the protocol of flax/clu's metric writers, reduced to
what `fit` needs): the run's identity once (`write_hparams`), then every `log_every` steps the
training metrics, learning rate and throughput, and at every evaluation the validation metrics
(`write_scalars`); `flush` is called just before each checkpoint is saved, so a writer that
persists on flush holds exactly the steps up to the newest checkpoint (plus, after a kill between
its flush and the save, a few steps a resumed run writes again: see `write_hparams`'
`resumed_from`). `model/` stays free of storage: the flows give `fit` a writer that puts the rows
into the warehouse (recs/training_metrics.py) and the Prefect run log.
"""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from model.parallel import agree, data_mesh, is_primary_process, local_copy, replicate, replicated, shard_batch

Params = Any
Batch = Any


class TrainState(NamedTuple):
    """Everything that changes during training (a pytree, checkpointed whole)."""

    step: jax.Array
    params: Params
    opt_state: Any


@dataclass
class TrainTask:
    """What to train. `loss_fn(params, batch, rng) -> (loss, metrics)` must be pure and jit-able."""

    name: str
    init_fn: Callable[[jax.Array, Batch], Params]
    loss_fn: Callable[[Params, Batch, jax.Array], tuple[jax.Array, dict]]
    validate: Callable[[Params], dict[str, float]] | None = None
    selection_metric: str = "loss"
    selection_mode: str = "max"
    trainable: Callable[[Params], Any] | None = None  # params -> pytree of bool (False = frozen)
    init_params: Callable[[Params], Params] | None = None  # e.g. transplant retrieval tables
    decay_mask: Callable[[Params], Any] | None = None  # params -> pytree of bool (True = weight-decayed)
    meta: dict = field(default_factory=dict)  # stored with every checkpoint (profile, vocab sizes)


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and loop settings (a profile's TrainConfig maps onto this)."""

    steps: int
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    clip_norm: float = 1.0
    eval_every: int = 200
    checkpoint_every: int = 200
    log_every: int = 10
    seed: int = 0
    # Early stopping: end after this many evaluations without a better selection metric, or once
    # this many seconds of this call have passed (checked at evaluations). None = no limit.
    patience: int | None = None
    max_seconds: float | None = None


class MetricWriter(Protocol):
    """Where `fit` reports a run (the shape of clu's `metric_writers.MetricWriter`)."""

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        """Once per `fit` call, before any scalars: task, model_version, steps, resumed_from, ..."""

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Metrics of one step ({name: value})."""

    def flush(self) -> None:
        """Persist what was written (called before every checkpoint save and at the end)."""


class MetricRows:
    """A MetricWriter that collects `{step, metric, value}` rows in memory (and the hparams)."""

    def __init__(self) -> None:
        self.hparams: dict[str, Any] = {}
        self.rows: list[dict[str, Any]] = []

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.hparams.update(hparams)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        self.rows += [{"step": int(step), "metric": str(k), "value": float(v)} for k, v in scalars.items()]

    def flush(self) -> None:
        pass


class LoggingWriter:
    """A MetricWriter that logs one line per step (e.g. to a Prefect run logger)."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter, level: int = logging.INFO) -> None:
        self.logger, self.level, self.name = logger, level, "train"

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.name = str(hparams.get("task", self.name))
        self.logger.log(self.level, "%s: %s", self.name, ", ".join(f"{k}={v}" for k, v in hparams.items()))

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        self.logger.log(self.level, "%s step %d: %s", self.name, step,
                        " ".join(f"{k}={_fmt(v)}" for k, v in scalars.items()))

    def flush(self) -> None:
        pass


class MultiWriter:
    """Every call goes to each of several writers."""

    def __init__(self, writers: Sequence[MetricWriter]) -> None:
        self.writers = list(writers)

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        for w in self.writers:
            w.write_hparams(hparams)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        for w in self.writers:
            w.write_scalars(step, scalars)

    def flush(self) -> None:
        for w in self.writers:
            w.flush()


def _fmt(value: float) -> str:
    value = float(value)
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"


def make_schedule(cfg: OptimConfig) -> optax.Schedule:
    """Linear warmup + cosine decay to 5% of the peak learning rate over `cfg.steps`."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=max(1, min(cfg.warmup_steps, cfg.steps // 2)),
        decay_steps=max(cfg.steps, 2), end_value=cfg.learning_rate * 0.05)


def make_optimizer(cfg: OptimConfig, trainable_mask: Any = None, decay_mask: Any = None) -> optax.GradientTransformation:
    """AdamW with linear warmup + cosine decay and global-norm clipping; frozen leaves get no update.

    decay_mask (pytree of bool or callable) limits weight decay, e.g. to matrices: decaying norm
    scales or a log-temperature pulls them towards meaningless values.
    """
    schedule = make_schedule(cfg)
    tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm),
                     optax.adamw(schedule, weight_decay=cfg.weight_decay, mask=decay_mask))
    if trainable_mask is not None:
        frozen = jax.tree_util.tree_map(lambda t: "train" if t else "freeze", trainable_mask)
        tx = optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, frozen)
    return tx


def make_train_step(task: TrainTask, tx: optax.GradientTransformation, seed: int,
                    mesh: jax.sharding.Mesh | None = None):
    """The jit-compiled step: grads of the task loss, one optimiser update, metrics.

    With a mesh, the new state and the metrics stay replicated on it (the batch comes split over
    it from `shard_batch`, so XLA all-reduces the gradients)."""
    base_key = jax.random.PRNGKey(seed)

    def step_fn(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(base_key, state.step)
        (loss, metrics), grads = jax.value_and_grad(task.loss_fn, has_aux=True)(state.params, batch, rng)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
        return TrainState(state.step + 1, params, opt_state), metrics

    if mesh is None:
        return jax.jit(step_fn, donate_argnums=(0,))
    return jax.jit(step_fn, donate_argnums=(0,), out_shardings=replicated(mesh))


def checkpoint_managers(checkpoint_dir: str | Path, task: TrainTask) -> tuple[ocp.CheckpointManager, ocp.CheckpointManager]:
    """(latest, best) managers; `best` keeps the single best checkpoint by the selection metric."""
    root = Path(checkpoint_dir).resolve()
    latest = ocp.CheckpointManager(root / "latest", options=ocp.CheckpointManagerOptions(
        max_to_keep=1, enable_async_checkpointing=False, create=True))
    best = ocp.CheckpointManager(root / "best", options=ocp.CheckpointManagerOptions(
        max_to_keep=1, best_fn=lambda m: m[task.selection_metric], best_mode=task.selection_mode,
        keep_checkpoints_without_metrics=False, enable_async_checkpointing=False, create=True))
    return latest, best


class FitResult(NamedTuple):
    params: Params
    step: int
    history: list[dict]
    best: dict | None
    resumed_from: int
    seconds: float
    examples_per_s: float
    stopped: str = "steps"  # why training ended: steps, patience, time (or stop_after)


def _finite(x: float) -> bool:
    return math.isfinite(float(x))


def fit(task: TrainTask, cfg: OptimConfig, loader_factory: Callable[[int], Iterator[Batch]],
        checkpoint_dir: str | Path, *, stop_after: int | None = None, progress: bool = True,
        batch_size: int | None = None, writer: MetricWriter | None = None) -> FitResult:
    """Train `task` for `cfg.steps` steps, resuming from `<checkpoint_dir>/latest` if present.

    `loader_factory(start_step)` returns a Grain iterator positioned at `start_step` (its state
    is also saved in each checkpoint and restored when the iterator supports it).
    `stop_after` ends the call early after that many total steps (used to test resumption).
    `writer` receives the run's metrics (see the module docstring); a resumed run writes only
    the steps after `resumed_from`. Runs on all devices (see the module docstring); `batch_size`
    is the global batch.
    """
    start_time = time.perf_counter()
    mesh = data_mesh()
    if not is_primary_process():  # one report per run, not one per process (see `quiet` below)
        writer, progress = None, False
    latest_mgr, best_mgr = checkpoint_managers(checkpoint_dir, task)
    iterator = loader_factory(0)
    init_key = jax.random.PRNGKey(cfg.seed)
    sample = _peek(loader_factory)
    params = task.init_fn(init_key, sample)
    if task.init_params is not None:
        params = task.init_params(params)
    mask = task.trainable(params) if task.trainable else None
    tx = make_optimizer(cfg, mask, task.decay_mask(params) if task.decay_mask else None)
    state = replicate(TrainState(jnp.asarray(0, jnp.int32), params, tx.init(params)), mesh)
    resumed_from, finished = 0, False
    history: list[dict] = []
    best_record: dict | None = None
    if latest_mgr.latest_step() is not None:
        step0 = latest_mgr.latest_step()
        restored = _restore(latest_mgr, step0, state, iterator)
        state, iterator = restored["state"], restored["iterator"]
        meta = restored["meta"]
        history, best_record = meta.get("history", []), meta.get("best")
        resumed_from = int(state.step)
        finished = meta.get("stopped") in ("patience", "time")  # an early stop is final: do not resume
        if not restored["iterator_restored"]:
            iterator = loader_factory(resumed_from)
    step_fn = make_train_step(task, tx, cfg.seed, mesh)
    schedule = make_schedule(cfg)
    if writer is not None:
        writer.write_hparams({"task": task.name, "model_version": task.meta.get("model_version"),
                              "variant": task.meta.get("variant"),
                              "steps": cfg.steps, "resumed_from": resumed_from, "batch_size": batch_size,
                              "peak_learning_rate": cfg.learning_rate, "seed": cfg.seed,
                              "devices": mesh.devices.size, "processes": jax.process_count()})
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    if resumed_from and finished:
        end = resumed_from
    bar = _progress(task.name, resumed_from, cfg.steps, progress, quiet=not is_primary_process())
    window_start, window_steps = time.perf_counter(), 0
    examples = 0
    step = resumed_from
    last_metrics: dict = {}
    stopped = "steps" if stop_after is None or stop_after >= cfg.steps else "stop_after"
    if finished:
        stopped = meta["stopped"]
    while step < end:
        batch = next(iterator)
        state, metrics = step_fn(state, shard_batch(batch, mesh))
        step += 1
        window_steps += 1
        examples += batch_size or 0
        if step % cfg.log_every == 0 or step == end:
            last_metrics = {k: float(v) for k, v in metrics.items()}
            if not _finite(last_metrics["loss"]):
                raise FloatingPointError(
                    f"{task.name}: loss is {last_metrics['loss']} at step {step}; stopping. "
                    + (f"Last good checkpoint: {latest_mgr.directory} step {latest_mgr.latest_step()}. "
                       if latest_mgr.latest_step() is not None else "No checkpoint was saved yet. ")
                    + "Lower the learning rate or check the input data.")
            rate = window_steps / max(time.perf_counter() - window_start, 1e-9)
            bar.update(window_steps, last_metrics["loss"], rate * (batch_size or 0))
            window_start, window_steps = time.perf_counter(), 0
            if writer is not None:
                # The learning rate of this step's update (optax counts updates from 0).
                writer.write_scalars(step, {**{f"train_{k}": v for k, v in last_metrics.items()},
                                            "learning_rate": float(schedule(step - 1)), "steps_per_s": rate,
                                            **({"examples_per_s": rate * batch_size} if batch_size else {})})
        is_eval = step % cfg.eval_every == 0 or step == cfg.steps
        if is_eval or step % cfg.checkpoint_every == 0 or step == end:
            record = {"step": step, **{f"train_{k}": v for k, v in last_metrics.items()}}
            if is_eval and task.validate is not None:
                validation = task.validate(local_copy(state.params))
                record.update(validation)
                if writer is not None:
                    writer.write_scalars(step, validation)
                bar.write(f"{task.name} step {step}: " + " ".join(
                    f"{k}={v:.4f}" for k, v in record.items() if k != "step"))
            improved = False
            if is_eval:
                history.append(record)
                if task.validate is not None and (best_record is None or _better(
                        record[task.selection_metric], best_record[task.selection_metric], task.selection_mode)):
                    best_record, improved = record, True
                if step < end and task.validate is not None and cfg.patience is not None and best_record is not None:
                    evals_since_best = sum(1 for r in history if r["step"] > best_record["step"])
                    if evals_since_best >= cfg.patience:
                        stopped = "patience"
                if step < end and cfg.max_seconds is not None and agree(
                        time.perf_counter() - start_time > cfg.max_seconds):  # process 0's clock decides
                    stopped = "time"
            meta = dict(task.meta, history=history, best=best_record, step=step, task=task.name, stopped=stopped,
                        saved_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
            if writer is not None:
                writer.flush()  # before the save: a kill in between re-writes steps, never loses them
            _save(latest_mgr, step, state, iterator, meta)
            # Only a strictly better validation replaces best/: on a tie the earlier step stays, the
            # one meta["best"] (and the refit's selected steps) name.
            if improved:
                best_mgr.save(step, args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state.params), meta=ocp.args.JsonSave(meta)),
                    metrics={task.selection_metric: float(record[task.selection_metric])})
                best_mgr.wait_until_finished()
            if stopped in ("patience", "time"):
                bar.write(f"{task.name}: stopping at step {step} ({stopped}: best "
                          f"{task.selection_metric}={best_record[task.selection_metric]:.4f} at step "
                          f"{best_record['step']})" if best_record else f"{task.name}: stopping at step {step} ({stopped})")
                break
    bar.close()
    if writer is not None:
        writer.flush()
    seconds = time.perf_counter() - start_time
    done = step - resumed_from
    return FitResult(state.params, step, history, best_record, resumed_from, seconds,
                     done * (batch_size or 0) / max(seconds, 1e-9), stopped)


def _better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


def _peek(loader_factory: Callable[[int], Iterator[Batch]]) -> Batch:
    """One batch for shapes at init (a fresh iterator, so the training iterator is untouched)."""
    return next(loader_factory(0))


def _save(mgr: ocp.CheckpointManager, step: int, state: TrainState, iterator: Any, meta: dict) -> None:
    items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
    if hasattr(iterator, "get_state"):
        import grain

        items["data"] = grain.checkpoint.CheckpointSave(iterator)
    mgr.save(step, args=ocp.args.Composite(**items), force=True)
    mgr.wait_until_finished()


def _restore(mgr: ocp.CheckpointManager, step: int, state: TrainState, iterator: Any) -> dict:
    """Restore onto `state`'s shardings; the iterator too when this process saved its state (a
    checkpoint of another process count has none for it: the caller restarts it at the step)."""
    items = {"state": ocp.args.StandardRestore(state), "meta": ocp.args.JsonRestore()}
    own_data = (Path(mgr.directory) / str(step) / "data"
                / f"process_{jax.process_index()}-of-{jax.process_count()}.json")  # grain's file name
    has_data = own_data.exists() and hasattr(iterator, "set_state")
    if has_data:
        import grain

        items["data"] = grain.checkpoint.CheckpointRestore(iterator)
    restored = mgr.restore(step, args=ocp.args.Composite(**items))
    return {"state": restored["state"], "meta": restored["meta"], "iterator": iterator,
            "iterator_restored": has_data}


def load_best_params(checkpoint_dir: str | Path, abstract_params: Params | None = None) -> tuple[Params, dict]:
    """Params and meta of the best checkpoint under `checkpoint_dir` (falls back to latest).

    Without `abstract_params` the arrays land on this process's first device, whatever devices
    the checkpoint was saved from (a data-parallel run's replicated params load anywhere)."""
    root = Path(checkpoint_dir).resolve()
    for sub in ("best", "latest"):
        mgr = ocp.CheckpointManager(root / sub)
        step = mgr.latest_step() if sub == "latest" else (mgr.best_step() or mgr.latest_step())
        if step is None:
            continue
        target = abstract_params
        if target is None:
            target = _on_one_device(Path(mgr.directory) / str(step) / "state")
        restored = mgr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
        if sub == "best":
            return restored["state"], restored["meta"]
        return restored["state"]["params"], restored["meta"]
    raise FileNotFoundError(f"no checkpoint under {root}: train the model first")


def _on_one_device(item_dir: Path) -> Any:
    """A restore target putting every array of the pytree saved in `item_dir` on this process's
    first device (Orbax would otherwise re-create the saved device layout, or fail without it)."""
    tree = ocp.StandardCheckpointHandler().metadata(item_dir).tree
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)


class _Progress:
    """A tqdm bar with loss and throughput, or nothing when disabled."""

    def __init__(self, name: str, start: int, total: int, enabled: bool, quiet: bool = False):
        self.bar, self.quiet = None, quiet
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc=name, unit="step", file=sys.stderr,
                            dynamic_ncols=True, mininterval=1.0)

    def update(self, n: int, loss: float, examples_per_s: float) -> None:
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(loss=f"{loss:.4f}", ex_s=f"{examples_per_s:,.0f}", refresh=False)

    def write(self, text: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress(name: str, start: int, total: int, enabled: bool, quiet: bool = False) -> _Progress:
    return _Progress(name, start, total, enabled, quiet)


def save_json(path: str | Path, obj: dict) -> None:
    """Small helper for run summaries next to checkpoints."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=2, default=float))


def tree_allclose(a: Params, b: Params, atol: float = 1e-6) -> bool:
    """True when two pytrees have the same structure and numerically close leaves."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.allclose(np.asarray(x), np.asarray(y), atol=atol) for x, y in zip(la, lb))
