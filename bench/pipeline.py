"""Benchmark: ingest + sequence build on `full` generated data, ours vs a pandas reference.

The reference is the transformation the original plan wrote: pandas read_csv, merge_asof for
the item dimension, groupby into Python lists per visitor, windows cut in Python loops, results
pickled. Both run in child processes so each peak RSS is its own. Prints both wall times and
peaks, then one line:
    speedup=<reference wall / ours> memory_ratio=<our peak / reference peak> wall_s=<ours>
Goal on the 2-core machine: speedup >= 10, memory_ratio <= 0.25, wall_s <= 6.

    .venv/bin/python bench/pipeline.py [--scale full] [--out bench/out]
"""
from __future__ import annotations

import argparse
import json
import pickle
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ACTION_BITS = {"transaction": 1, "addtocart": 2, "view": 4}


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(data_dir: Path, work_dir: Path) -> dict:
    """Our pipeline: DuckDB ingest + set-based sequence build (plain functions, no Prefect)."""
    from recs.ingest import ingest_dir
    from recs.sequences import build_sequence_tables
    from recs.warehouse import connect

    warehouse = work_dir / "warehouse_ours"
    shutil.rmtree(warehouse, ignore_errors=True)  # a fresh warehouse (snapshots, symlinks and all)
    start = time.perf_counter()
    # One connection per stage, as the flows (and `recs run`) open them.
    con = connect(warehouse)
    ingest_report = ingest_dir(con, data_dir)
    con.close()
    t_ingest = time.perf_counter() - start
    con = connect(warehouse)
    build_report = build_sequence_tables(con, warehouse)
    con.close()
    wall = time.perf_counter() - start
    return {"wall_s": wall, "ingest_s": t_ingest, "build_s": wall - t_ingest, "peak_mb": peak_rss_mb(),
            "rows_loaded": ingest_report["rows_loaded"],
            "examples": {k: v for k, v in build_report.items() if k.startswith("n_")}}


def run_reference(data_dir: Path, work_dir: Path, min_user_events: int = 10, min_item_events: int = 5,
                  history_len: int = 64, max_candidates: int = 16) -> dict:
    """The original plan's way: pandas groupby, Python lists and loops, pickles."""
    import pandas as pd

    start = time.perf_counter()
    events = pd.read_csv(data_dir / "events.csv")
    events = events[events["event"].isin(ACTION_BITS)].drop_duplicates()
    props = pd.concat([pd.read_csv(data_dir / f"item_properties_part{i}.csv") for i in (1, 2)])
    cats = props[props["property"] == "categoryid"][["timestamp", "itemid", "value"]].copy()
    cats["categoryid"] = cats["value"].astype("int64")
    tree = pd.read_csv(data_dir / "category_tree.csv")
    parent = dict(zip(tree["categoryid"], tree["parentid"]))

    def root_of(c):
        seen = 0
        while c in parent and pd.notna(parent[c]) and seen < 50:
            c, seen = int(parent[c]), seen + 1
        return c

    events = events.sort_values("timestamp")
    cats = cats.sort_values("timestamp")
    events = pd.merge_asof(events, cats[["timestamp", "itemid", "categoryid"]], on="timestamp", by="itemid",
                           direction="backward")
    events["categoryid"] = events["categoryid"].fillna(0).astype("int64")
    events["root_categoryid"] = events["categoryid"].map(lambda c: root_of(c) if c else 0)

    item_counts = events.groupby("itemid").size()
    vocab = item_counts[item_counts >= min_item_events].index
    events = events[events["itemid"].isin(vocab)]
    user_counts = events.groupby("visitorid").size()
    keep = user_counts[user_counts >= min_user_events].index
    train_events = events[events["visitorid"].isin(keep)]
    c1, c2 = train_events["timestamp"].quantile([0.8, 0.9]).tolist()

    examples = {"train": [], "val": [], "test": []}
    serving = []
    for visitor, group in events.sort_values(["visitorid", "timestamp"]).groupby("visitorid"):
        steps = []
        for ts, item, ev, cat, root in zip(group["timestamp"], group["itemid"], group["event"],
                                           group["categoryid"], group["root_categoryid"]):
            if steps and steps[-1][1] == item:
                steps[-1][2] |= ACTION_BITS[ev]
            else:
                steps.append([ts, item, ACTION_BITS[ev], cat, root])
        serving.append((visitor, steps[-history_len:]))
        if visitor not in keep:
            continue
        by_split = {"train": [], "val": [], "test": []}
        for i, s in enumerate(steps):
            by_split["train" if s[0] < c1 else "val" if s[0] < c2 else "test"].append(i)
        for split, idx in by_split.items():
            for k in range(0, len(idx), max_candidates):
                first = idx[k]
                window = [steps[i] for i in idx[k:k + max_candidates]]
                candidates = {}
                for s in window:
                    candidates[s[1]] = candidates.get(s[1], 0) | s[2]
                examples[split].append({"visitorid": visitor, "history": steps[max(0, first - history_len):first],
                                        "window": window, "candidates": list(candidates.items())})
    out = work_dir / "reference"
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in examples.items():
        with open(out / f"{split}.pkl", "wb") as f:
            pickle.dump(rows, f)
    with open(out / "serving.pkl", "wb") as f:
        pickle.dump(serving, f)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "peak_mb": peak_rss_mb(),
            "examples": {f"n_{k}": len(v) for k, v in examples.items()} | {"n_serving": len(serving)}}


def child(which: str, data_dir: Path, work_dir: Path) -> dict:
    """Run one side in a fresh interpreter so its peak memory is its own."""
    out = subprocess.run([sys.executable, __file__, "--child", which, "--data", str(data_dir), "--out", str(work_dir)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="full", choices=["tiny", "small", "full"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "bench" / "out"))
    parser.add_argument("--data", default=None, help="use this CSV directory instead of generating")
    parser.add_argument("--child", choices=["ours", "reference"], default=None)
    args = parser.parse_args()
    work_dir = Path(args.out)
    if args.child:
        fn = run_ours if args.child == "ours" else run_reference
        print(json.dumps(fn(Path(args.data), work_dir)))
        return

    data_dir = Path(args.data) if args.data else work_dir / f"data_{args.scale}_{args.seed}"
    if not args.data and not (data_dir / "events.csv").exists():
        from recs.generate import generate

        t = time.perf_counter()
        generate(data_dir, scale=args.scale, seed=args.seed)
        print(f"generated {args.scale} data in {time.perf_counter() - t:.1f}s -> {data_dir}")
    ours = child("ours", data_dir, work_dir)
    print(f"ours:      wall {ours['wall_s']:.2f}s (ingest {ours['ingest_s']:.2f}s, build {ours['build_s']:.2f}s)"
          f"  peak {ours['peak_mb']:.0f} MB  {ours['examples']}")
    ref = child("reference", data_dir, work_dir)
    print(f"reference: wall {ref['wall_s']:.2f}s  peak {ref['peak_mb']:.0f} MB  {ref['examples']}")
    print(f"speedup={ref['wall_s'] / ours['wall_s']:.1f} memory_ratio={ours['peak_mb'] / ref['peak_mb']:.2f} "
          f"wall_s={ours['wall_s']:.2f}")


if __name__ == "__main__":
    main()
