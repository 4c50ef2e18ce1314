"""Benchmark: steps/s of the data-parallel training loop on 1 vs 2 (or more) CPU host devices.

For each device count D of --devices, a fresh process with
XLA_FLAGS=--xla_force_host_platform_device_count=D runs the profile's retrieval and ranking steps
as `fit` runs them (model/parallel.py: a `data` mesh over the D devices, state replicated, every
batch from the Grain loader split over the devices by `shard_batch`, the loss read back every 10
steps) on `small` generated data (bench/out/, as bench/train.py), compile excluded. Prints
steps/s and examples/s per model and D beside D=1 measured in the same run, and ends with one
line per model: `model=<name> devices=<D> steps_per_s=<x> vs_one_device=<ratio>`.

This is NOT a speed-up claim. D host devices on a CPU are D slices of the same cores (2 here,
shared with other jobs), and XLA already spreads one device's matmuls over all of them, so on
CPU the figure shows what the sharding costs (per-device dispatch, the gradient all-reduce),
not what D GPUs give: there each device is its own accelerator and the same code splits the
batch over them.

    .venv/bin/python bench/data_parallel.py                  # cpu profile, 1 vs 2 devices
    .venv/bin/python bench/data_parallel.py --quick          # fewer steps, retrieval only (~1-2 minutes)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_OUT, cpu_note, ensure_generated, ensure_warehouse, format_table, log, timer  # noqa: E402

MODELS = ("retrieval", "ranking")
LOG_EVERY = 10  # fit reads the loss back every cfg.log_every (10) steps


def child(args: argparse.Namespace) -> None:
    """One device count: time each model's loop, print one JSON line per model."""
    import jax

    from train import make_source, train_setup  # bench/train.py: the sources and state fit builds

    from model.data import make_loader
    from model.parallel import data_mesh, shard_batch
    from model.tasks import get_profile, load_tables

    prof = get_profile(args.profile)
    tables = load_tables(Path(args.warehouse), prof)
    mesh = data_mesh()
    for model in args.models.split(","):
        source = make_source(tables, prof, model, args.seed)
        step_fn, state = train_setup(tables, prof, model, args.seed, source[0], mesh)
        iterator = make_loader(source, prefetch=2)
        state, metrics = step_fn(state, shard_batch(next(iterator), mesh))  # compile + warm the prefetch
        jax.block_until_ready((state, metrics))
        rows = 0
        with timer() as t:
            for i in range(1, args.steps + 1):
                batch = next(iterator)
                rows += len(jax.tree_util.tree_leaves(batch)[0])
                state, metrics = step_fn(state, shard_batch(batch, mesh))
                if i % LOG_EVERY == 0 or i == args.steps:
                    float(metrics["loss"])  # as fit: a host sync every log_every steps
        print(json.dumps({"model": model, "devices": jax.device_count(), "steps": args.steps,
                          "steps_per_s": args.steps / t(), "examples_per_s": rows / t()}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="1,2", help="comma-separated host device counts (default 1,2)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: retrieval,ranking")
    parser.add_argument("--profile", default="cpu", help="tiny, cpu or gpu (default cpu)")
    parser.add_argument("--steps", type=int, default=40, help="steps timed per model and device count")
    parser.add_argument("--scale", default="small", choices=["tiny", "small", "full"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--quick", action="store_true", help="retrieval only, 10 steps")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--warehouse", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.models, args.steps = "retrieval", 10
    for m in args.models.split(","):
        if m not in MODELS:
            parser.error(f"unknown model {m!r}")
    if args.child:
        return child(args)

    out = Path(args.out)
    data_dir = ensure_generated(out, args.scale, args.seed)
    warehouse = out / f"warehouse_{args.scale}_{args.seed}"
    ensure_warehouse(data_dir, warehouse)
    print(f"data: {data_dir.name}  profile {args.profile}  {args.steps} steps per run  {cpu_note()}"
          + ("  [--quick]" if args.quick else ""))
    results = []
    for devices in [int(d) for d in args.devices.split(",")]:
        log(f"[{devices} device(s)] {args.models}: compile + {args.steps} steps each")
        env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} "
                                          f"--xla_force_host_platform_device_count={devices}".strip()}
        command = [sys.executable, __file__, "--child", "--warehouse", str(warehouse), "--profile", args.profile,
                   "--models", args.models, "--steps", str(args.steps), "--seed", str(args.seed)]
        done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=True)
        results += [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    one = {r["model"]: r["steps_per_s"] for r in results if r["devices"] == 1}
    print(format_table(["model", "devices", "steps/s", "examples/s", "vs 1 device"],
                       [[r["model"], r["devices"], r["steps_per_s"], r["examples_per_s"],
                         r["steps_per_s"] / one[r["model"]] if r["model"] in one else None] for r in results]))
    print("(host devices share this machine's cores: the ratio is the cost of sharding on CPU, not a "
          "speed-up claim; on GPUs each device is its own accelerator)")
    for r in results:
        ratio = r["steps_per_s"] / one[r["model"]] if r["model"] in one else float("nan")
        print(f"model={r['model']} devices={r['devices']} steps_per_s={r['steps_per_s']:.2f} vs_one_device={ratio:.2f}")


if __name__ == "__main__":
    main()
