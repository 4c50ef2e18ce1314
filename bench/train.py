"""Benchmark: is training input-bound? Grain loader vs jit train step vs the full loop, per profile and model.

On `small` generated data (bench/out/data_small_0, generated when missing; ingested and built into
bench/out/warehouse_small_0 with the default build parameters), for each profile and each model
(retrieval, ranking), built exactly as model/tasks.py's train_*_model build them:
  (a) loader: batches/s of `make_loader` (Grain, one prefetch thread) over the real
      RetrievalTrainSource / ranking_data.RankingBatchSource (served candidates), N batches consumed
      after the first; beside it the bare `source[step]` rate without Grain;
  (b) step:   batches/s of the jit-compiled `make_train_step` on ONE pre-fetched batch already on the
      device (compile excluded, block_until_ready at the end);
  (c) loop:   examples/s of loader + step together as `fit` runs them (next batch, step, loss read
      back every 10 steps), compile excluded, no validation / checkpoints.
Prints a table per profile and model, and ends with one line per model for the cpu profile:
    model=<name> loader_to_step_ratio=<a/b> examples_per_s=<c>
Goal: loader_to_step_ratio >= 3 (the loader is never what the step waits for).
The `gpu` profile runs on CPU here: only a few steps (it is slow, and the numbers say nothing about a GPU).

Full run (the lead's; takes a few minutes on 2 idle cores):
    .venv/bin/python bench/train.py --profiles tiny,cpu,gpu
Smoke test (~1 minute):
    .venv/bin/python bench/train.py --quick
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_OUT, cpu_note, ensure_generated, ensure_warehouse, format_table, log, timer  # noqa: E402

MODELS = ("retrieval", "ranking")
# Batches per measurement (loader, step, loop) by profile; gpu-sized steps on CPU take seconds each.
DEFAULT_COUNTS = {"tiny": (500, 200, 200), "cpu": (500, 40, 40), "gpu": (100, 3, 3)}
QUICK_COUNTS = {"tiny": (200, 30, 30), "cpu": (200, 10, 10), "gpu": (20, 1, 1)}
LOG_EVERY = 10  # fit reads the loss back every cfg.log_every (10) steps


@dataclass
class Figures:
    profile: str
    model: str
    batch_size: int
    loader_bps: float
    source_bps: float
    step_bps: float
    compile_s: float
    loop_bps: float
    examples_per_s: float

    @property
    def ratio(self) -> float:
        return self.loader_bps / self.step_bps


def make_source(tables, prof, model: str, seed: int):
    """The Grain source train_{model}_model builds (enough steps for any measurement)."""
    from model.data import RetrievalBatchSource, negative_sampler
    from model.tasks import RetrievalTrainSource

    steps = 10**7  # rows(step) wraps epochs; the benchmark never reaches the end
    batches = RetrievalBatchSource(tables, "train", prof.retrieval.batch_size, seed=seed, num_steps=steps)
    retrieval_source = RetrievalTrainSource(batches, negative_sampler(tables, prof.retrieval.num_negatives, seed))
    if model == "retrieval":
        return retrieval_source
    # As model.ranking_task.train_ranking_model: the validation period's served candidates, stage
    # one from a retrieval model (untrained here: speed, not quality, is measured).
    import jax

    from model.ranking_data import RankingBatchSource
    from model.ranking_task import ranking_training_data
    from model.tasks import corpus_mask, retrieval_task

    task, _ = retrieval_task(tables, prof, validation_split=None, seed=seed)
    retrieval_params = task.init_fn(jax.random.PRNGKey(seed), retrieval_source[0])
    cases, _ = ranking_training_data(tables, prof, retrieval_params, corpus_mask(tables), seed=seed, progress=False)
    return RankingBatchSource(tables, cases, min(prof.ranking.batch_size, len(cases)), seed=seed, num_steps=steps)


def loader_rate(source, n: int, prefetch: int) -> float:
    """Batches/s of the Grain loader over `source`, n batches after the first (startup excluded)."""
    from model.data import make_loader

    iterator = make_loader(source, prefetch=prefetch)
    next(iterator)
    with timer() as t:
        for _ in range(n):
            next(iterator)
    return n / t()


def source_rate(source, n: int) -> float:
    """Batches/s of `source[step]` called directly (no Grain, no thread)."""
    source[0]
    with timer() as t:
        for step in range(1, n + 1):
            source[step]
    return n / t()


def train_setup(tables, prof, model: str, seed: int, sample, mesh=None):
    """(step_fn, state) exactly as `fit` makes them (AdamW, decay mask, jit with donation); with a
    device mesh, the state replicated on it and the step compiled for it (bench/data_parallel.py)."""
    import jax
    import jax.numpy as jnp

    from model.ranking_task import ranking_task
    from model.tasks import optim_config, retrieval_task
    from model.train import TrainState, make_optimizer, make_train_step

    if model == "retrieval":
        task, _ = retrieval_task(tables, prof, validation_split=None, seed=seed)
    else:
        task, _ = ranking_task(tables, prof, None, seed=seed)
    cfg = optim_config(prof, model, None, seed)
    params = task.init_fn(jax.random.PRNGKey(seed), sample)
    mask = task.trainable(params) if task.trainable else None
    tx = make_optimizer(cfg, mask, task.decay_mask(params) if task.decay_mask else None)
    state = TrainState(jnp.asarray(0, jnp.int32), params, tx.init(params))
    if mesh is not None:
        from model.parallel import replicate

        state = replicate(state, mesh)
    return make_train_step(task, tx, seed, mesh), state


def measure(tables, prof, profile: str, model: str, counts: tuple[int, int, int], prefetch: int,
            seed: int) -> Figures:
    """Loader, step and loop figures of one (profile, model)."""
    import jax

    from model.data import make_loader

    n_loader, n_step, n_loop = counts
    source = make_source(tables, prof, model, seed)
    batch_size = getattr(prof, model).batch_size
    log(f"[{profile}/{model}] loader: {n_loader} batches")
    source_bps = source_rate(source, n_loader)  # first: also warms the sources' lazy caches
    loader_bps = loader_rate(source, n_loader, prefetch)

    sample = source[0]
    step_fn, state = train_setup(tables, prof, model, seed, sample)
    batch = jax.device_put(sample)
    log(f"[{profile}/{model}] step: compile + {n_step} steps")
    with timer() as t_compile:
        state, metrics = step_fn(state, batch)
        jax.block_until_ready((state, metrics))
    with timer() as t_step:
        for _ in range(n_step):
            state, metrics = step_fn(state, batch)
        jax.block_until_ready((state, metrics))
    step_bps = n_step / t_step()

    log(f"[{profile}/{model}] loop: {n_loop} steps")
    iterator = make_loader(source, start_step=1, prefetch=prefetch)
    state, metrics = step_fn(state, next(iterator))  # new host batch: no recompile, warms the prefetch
    float(metrics["loss"])
    with timer() as t_loop:
        for i in range(1, n_loop + 1):
            state, metrics = step_fn(state, next(iterator))
            if i % LOG_EVERY == 0 or i == n_loop:
                float(metrics["loss"])  # as fit: a host sync every log_every steps
    loop_bps = n_loop / t_loop()
    return Figures(profile, model, batch_size, loader_bps, source_bps, step_bps, t_compile(), loop_bps,
                   loop_bps * batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", default="cpu", help="comma-separated: tiny,cpu,gpu (default cpu)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: retrieval,ranking")
    parser.add_argument("--loader-batches", type=int, default=None, help="batches timed for (a) (default per profile)")
    parser.add_argument("--step-batches", type=int, default=None, help="steps timed for (b) (default per profile)")
    parser.add_argument("--loop-batches", type=int, default=None, help="steps timed for (c) (default per profile)")
    parser.add_argument("--prefetch", type=int, default=2, help="make_loader prefetch (its default: 2)")
    parser.add_argument("--scale", default="small", choices=["tiny", "small", "full"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--quick", action="store_true", help="cpu profile only, few batches (~1 minute)")
    args = parser.parse_args()

    profiles = ["cpu"] if args.quick else [p.strip() for p in args.profiles.split(",") if p.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            parser.error(f"unknown model {m!r}")
    from model.tasks import get_profile, load_tables

    out = Path(args.out)
    data_dir = ensure_generated(out, args.scale, args.seed)
    warehouse = out / f"warehouse_{args.scale}_{args.seed}"
    built = ensure_warehouse(data_dir, warehouse)
    meta = built["meta"]
    print(f"data: {data_dir.name}  train/val/test examples {meta['n_train']}/{meta['n_val']}/{meta['n_test']}  "
          f"items {meta['n_items']}  {cpu_note()}" + ("  [--quick]" if args.quick else ""))

    results: list[Figures] = []
    for profile in profiles:
        prof = get_profile(profile)
        table_counts = (QUICK_COUNTS if args.quick else DEFAULT_COUNTS).get(profile, DEFAULT_COUNTS["cpu"])
        counts = tuple(given if given is not None else default for given, default in
                       zip((args.loader_batches, args.step_batches, args.loop_batches), table_counts))
        tables = load_tables(warehouse, prof)
        for model in models:
            results.append(measure(tables, prof, profile, model, counts, args.prefetch, args.seed))
        print(f"\nprofile {profile} (batches timed: loader {counts[0]}, step {counts[1]}, loop {counts[2]})")
        print(format_table(
            ["model", "batch", "loader b/s", "source b/s", "step b/s", "loader/step", "loop b/s", "examples/s",
             "compile s"],
            [[f.model, f.batch_size, f.loader_bps, f.source_bps, f.step_bps, f.ratio, f.loop_bps, f.examples_per_s,
              f.compile_s] for f in results if f.profile == profile]))
        if profile == "gpu":
            print("(gpu profile on CPU: a handful of steps, bfloat16 matmuls emulated; not a GPU figure)")

    final = [f for f in results if f.profile == "cpu"]
    print()
    if not final:
        print("(no cpu profile in --profiles: no summary lines)")
    for f in final:
        print(f"model={f.model} loader_to_step_ratio={f.ratio:.2f} examples_per_s={f.examples_per_s:.0f}")


if __name__ == "__main__":
    main()
