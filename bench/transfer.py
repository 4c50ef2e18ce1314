"""Benchmark: does a model trained on one catalogue give a head start on another (`recs transfer`)?

Source: retrieval + ranker trained on generated Retail Rocket `small` data, seed 0
(bench/out/data_small_0, warehouse bench/out/warehouse_small_0 with the default build), with the
benchmark profile (below); checkpoints cached in bench/out/transfer/source/ (a re-run with the
same settings reuses them).
Target: another generated catalogue: `small`, seed 1, every item and category id shifted by
ID_OFFSET (no id in common with the source; another category tree, other tastes, other items).
Its customers with >= MIN_EVENTS events are shuffled once and the first ~100, ~1,000, ~10,000
are kept (nested samples): events.csv of those customers only, the same item properties and
category tree, built with min_user_events=MIN_EVENTS.

For each size, with the same steps and batch sizes:
  scratch:  retrieval for R steps, then the ranker (stacked on it) for K steps, fresh init;
  transfer: retrieval R/2 steps stage 1 (new id tables only, the source transformer and every
            id-free part frozen) + R/2 steps stage 2 (everything, learning rate / 10), then the
            ranker the same way with K/2 + K/2 (model/transfer_task.py, as `recs transfer`).
Both are evaluated on the target's test split with model/evaluation.py (next-event protocol,
the shipped lists through the serving path): Recall@20 and MRR@20 of the shipped list and of the
two-tower model alone, and the ranker's mean AUC over the actions. Also printed: training
seconds of each, and the validation curves (val_recall@100 of retrieval, val_recall@20 of the
ranker at each evaluation); each run's curves PNG goes to bench/out/transfer/<size>/<arm>/<variant>/curves.png.
Ends with
    transfer_over_scratch_recall20_smallest=<transfer / scratch shipped Recall@20 at the smallest size>
Goal: >= 1.2 at the smallest size, and never worse than scratch at the largest.

Profile: the `cpu` profile's architecture and batch settings, without early stopping (patience /
max_seconds: both arms run exactly their steps), evaluations every quarter of a run.

Full run (what the report quotes; ~20 minutes on 2 shared cores):
    .venv/bin/python bench/transfer.py
Smoke test (a few minutes):
    .venv/bin/python bench/transfer.py --quick
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_OUT, cpu_note, ensure_generated, ensure_warehouse, format_table, log, timer  # noqa: E402

ID_OFFSET = 10_000_000
TARGET_SEED = 1
MIN_EVENTS = 2  # the target keeps customers with >= 2 events (one next-event case or more)
SIZES = (100, 1_000, 10_000)


def bench_profile(base: str, retrieval_steps: int, ranking_steps: int):
    """`base` without early stopping, evaluating every quarter of a run."""
    from model.config import PROFILES

    prof = PROFILES[base]
    return dataclasses.replace(
        prof,
        retrieval=dataclasses.replace(prof.retrieval, steps=retrieval_steps, patience=None, max_seconds=None,
                                      eval_every=max(1, retrieval_steps // 4)),
        ranking=dataclasses.replace(prof.ranking, steps=ranking_steps, patience=None, max_seconds=None,
                                    eval_every=max(1, ranking_steps // 4)))


def train_source(profile, out: Path, steps: tuple[int, int]) -> Path:
    """Retrieval + ranker on small seed 0 (resumed / reused when already trained so)."""
    from model.ranking_task import train_ranking_model
    from model.tasks import train_retrieval_model

    data = ensure_generated(DEFAULT_OUT, "small", 0)
    warehouse = DEFAULT_OUT / "warehouse_small_0"
    ensure_warehouse(data, warehouse)
    ckpt = out / "source"
    with timer() as t:
        r = train_retrieval_model(warehouse, ckpt, profile=profile, steps=steps[0], progress=False)
        k = train_ranking_model(warehouse, ckpt, profile=profile, steps=steps[1], progress=False)
    log(f"source: retrieval {r['model_version']} best {fmt_best(r)}, ranking {k['model_version']} best "
        f"{fmt_best(k)} ({t():.0f}s)")
    return ckpt


def fmt_best(summary: dict) -> str:
    best = summary.get("best") or {}
    return " ".join(f"{k}={v:.4f}" for k, v in best.items() if k in ("val_recall@100", "val_recall@20", "step"))


def target_data(out: Path, sizes: tuple[int, ...]) -> dict[int, Path]:
    """{size: CSV directory} of nested customer samples of the target catalogue."""
    import numpy as np
    import polars as pl

    from recs.generate import generate

    full = DEFAULT_OUT / f"data_small_{TARGET_SEED}_offset{ID_OFFSET}"
    if not (full / "events.csv").exists():
        generate(full, scale="small", seed=TARGET_SEED, id_offset=ID_OFFSET)
    events = pl.read_csv(full / "events.csv")
    counts = events.group_by("visitorid").len().filter(pl.col("len") >= MIN_EVENTS).sort("visitorid")
    order = np.random.default_rng([TARGET_SEED, 11]).permutation(counts.height)
    visitors = counts["visitorid"].to_numpy()[order]
    log(f"target: {full} ({events.height:,} events, {counts.height:,} customers with >= {MIN_EVENTS} events)")
    dirs = {}
    for size in sizes:
        d = out / f"target_{size}" / "data"
        keep = visitors[:size]
        if not (d / "events.csv").exists():
            d.mkdir(parents=True, exist_ok=True)
            events.filter(pl.col("visitorid").is_in(keep)).write_csv(d / "events.csv.tmp", null_value="")
            for name in ("item_properties_part1.csv", "item_properties_part2.csv", "category_tree.csv"):
                shutil.copyfile(full / name, d / name)
            (d / "events.csv.tmp").rename(d / "events.csv")
        dirs[size] = d
    return dirs


def plot(rows: list[dict], path: Path, title: str) -> None:
    from recs.plots import training_curves

    if rows:
        training_curves(rows, path, title=title)


def scratch_arm(warehouse: Path, ckpt: Path, profile, steps: tuple[int, int]) -> dict:
    from model.ranking_task import train_ranking_model
    from model.tasks import train_retrieval_model
    from model.train import MetricRows

    out = {}
    for model, train, n in (("retrieval", train_retrieval_model, steps[0]), ("ranking", train_ranking_model, steps[1])):
        rows = MetricRows()
        summary = train(warehouse, ckpt, profile=profile, steps=n, progress=False, writer=rows)
        plot(rows.rows, ckpt / model / "curves.png", f"scratch {model} {summary['model_version']}")
        out[model] = [summary]
    return out


def transfer_arm(warehouse: Path, ckpt: Path, source: Path, steps: tuple[int, int]) -> dict:
    from model.train import MetricRows
    from model.transfer import STAGES
    from model.transfer_task import STAGE_FUNCTIONS, stage_variant

    out: dict[str, list] = {}
    for model, n in (("retrieval", steps[0]), ("ranking", steps[1])):
        for stage, stage_steps in zip(STAGES, (n // 2, n - n // 2)):
            rows = MetricRows()
            summary = STAGE_FUNCTIONS[model](warehouse, ckpt, source, stage, steps=stage_steps, progress=False,
                                             writer=rows)
            plot(rows.rows, ckpt / stage_variant(model, stage) / "curves.png",
                 f"transfer {model} {stage} {summary['model_version']}")
            out.setdefault(model, []).append(summary)
    return out


def evaluate(warehouse: Path, ckpt: Path, profile) -> dict[str, float]:
    from model.evaluation import evaluate_all

    rows = evaluate_all(warehouse, ckpt, profile=profile, splits=("test",))
    value = {(r["model"], r["section"], r["metric"], r["k"]): r["value"] for r in rows}
    return {"recall@20": value[("shipped", "next_event", "recall", 20)],
            "mrr@20": value[("shipped", "next_event", "mrr", 20)],
            "two_tower_recall@20": value[("two_tower", "next_event", "recall", 20)],
            "two_tower_mrr@20": value[("two_tower", "next_event", "mrr", 20)],
            "mean_auc": value[("ranker", "ranking", "mean_auc", None)],
            "item_knn_recall@20": value[("item_knn", "next_event", "recall", 20)]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="target customer counts")
    parser.add_argument("--profile", default="cpu", choices=["tiny", "cpu"], help="architecture and batches")
    parser.add_argument("--source-steps", default="600,200", help="source retrieval,ranking steps")
    parser.add_argument("--steps", default="200,100", help="target retrieval,ranking steps (each arm)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT / "transfer")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny sizes and few steps")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.source_steps, args.steps = "100,1000", "200,60", "40,20"
    sizes = tuple(int(s) for s in args.sizes.split(","))
    source_steps = tuple(int(s) for s in args.source_steps.split(","))
    steps = tuple(int(s) for s in args.steps.split(","))
    print(f"bench/transfer.py {cpu_note()} profile={args.profile} (no early stopping) source_steps={source_steps} "
          f"target_steps={steps} sizes={sizes}", flush=True)
    profile = bench_profile(args.profile, *steps)
    source_profile = bench_profile(args.profile, *source_steps)
    out = args.out / args.profile
    source = train_source(source_profile, out, source_steps)
    results = []
    for size, data in target_data(out, sizes).items():
        warehouse = out / f"target_{size}" / "warehouse"
        built = ensure_warehouse(data, warehouse, min_user_events=MIN_EVENTS, min_item_events=1)
        customers = built["meta"].get("n_customers") or built["meta"].get("customers")
        # Both arms train with the same batches: at ~100 customers one batch of the profile is
        # more than the train split holds (model.transfer_task.fit_batches_to_data caps it).
        from model.transfer_task import fit_batches_to_data

        arm_profile = fit_batches_to_data(profile, int(built["meta"]["n_train"]))
        arms = {}
        for arm in ("scratch", "transfer"):
            ckpt = out / f"target_{size}" / arm
            shutil.rmtree(ckpt, ignore_errors=True)  # both arms train anew every run
            with timer() as t:
                summaries = (scratch_arm(warehouse, ckpt, arm_profile, steps) if arm == "scratch"
                             else transfer_arm(warehouse, ckpt, source, steps))
            train_s = t()
            with timer() as t_eval:
                metrics = evaluate(warehouse, ckpt, arm_profile)
            arms[arm] = {"metrics": metrics, "train_s": train_s, "eval_s": t_eval(), "summaries": summaries}
            log(f"size {size} {arm}: {metrics} train {train_s:.0f}s eval {t_eval():.0f}s")
        results.append((size, customers, arms))
        report(results[-1])
    print()
    print(format_table(
        ["size", "customers", "arm", "Recall@20", "MRR@20", "mean AUC", "two-tower R@20", "item-kNN R@20", "train s"],
        [[size, customers, arm, a["metrics"]["recall@20"], a["metrics"]["mrr@20"], a["metrics"]["mean_auc"],
          a["metrics"]["two_tower_recall@20"], a["metrics"]["item_knn_recall@20"], round(a["train_s"], 1)]
         for size, customers, arms in results for arm, a in arms.items()]))
    for size, _, arms in results:
        ratio = arms["transfer"]["metrics"]["recall@20"] / max(arms["scratch"]["metrics"]["recall@20"], 1e-12)
        print(f"size={size} transfer_over_scratch_recall20={ratio:.3f} mrr20_ratio="
              f"{arms['transfer']['metrics']['mrr@20'] / max(arms['scratch']['metrics']['mrr@20'], 1e-12):.3f}")
    smallest = results[0][2]
    ratio = smallest["transfer"]["metrics"]["recall@20"] / max(smallest["scratch"]["metrics"]["recall@20"], 1e-12)
    print(f"transfer_over_scratch_recall20_smallest={ratio:.3f}")
    return 0


def report(result) -> None:
    """The validation curves of one size, as text."""
    from model.meta import read_checkpoint_meta

    size, customers, arms = result
    print(f"\n== target size {size} ({customers} customers in the sequence tables) ==")
    for model, metric in (("retrieval", "val_recall@100"), ("ranking", "val_recall@20")):
        for arm, a in arms.items():
            points, offset = [], 0
            for s in a["summaries"][model]:
                history = (read_checkpoint_meta(s["checkpoint"]) or {}).get("history", [])
                points += [f"{offset + h['step']}:{h[metric]:.3f}" for h in history if metric in h]
                offset += s["steps"]
            print(f"  {model:9s} {arm:8s} {metric}: {' '.join(points) or '-'}")


if __name__ == "__main__":
    sys.exit(main())
