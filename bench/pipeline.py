"""Benchmark: ingest + sequence build on `full` generated data, ours vs a vectorised polars reference.

Ours: recs/ingest.py `ingest_dir` then recs/sequences.py `build_sequence_tables` (DuckDB SQL +
numpy) on a fresh warehouse, one `recs.warehouse.connect` writer per stage as the flows open
them (each writer works on a private snapshot copy of the database and publishes it on close;
the copy is part of the measured work), default build parameters (min_user_events=10,
min_item_events=1, H=64, M=16, one step per event).

Reference: bench/pipeline_reference.py, the same transformation written as polars expressions
(no per-visitor Python loop): CSV parsing with the quarantine rules that decide which rows
survive, item states as of each event, the vocabulary, ids, step order, quantile_disc cutoffs,
windows, histories, candidates and serving rows, written as the same six parquet tables.

Cross-check: after the runs, every table of our `sequences/` (train, val, test, serving, items,
customers) is compared with the reference's in full: schema, row count and every value of every
row in row order, list columns element by element. Any difference is printed (first few) and
the benchmark exits with status 1.

Memory: each side runs in its own fresh child process; its figure is that process's peak
resident set (VmHWM from /proc/self/status, read at the end of the child: the whole
transformation plus the Python interpreter and every imported library; file pages mapped by a
reader count as resident while mapped). Both sides get the same knobs, set explicitly: DuckDB
threads 2 and memory_limit 200MB (RECS_DUCKDB_MEMORY_LIMIT, the warehouse default), polars
POLARS_MAX_THREADS=2. Each side runs --repeats times (default 3, alternating ours / reference);
the figures are medians and the spread (min-max over the runs) is printed. Final line:
    speedup=<reference wall / ours> memory_ratio=<our peak / reference peak> wall_s=<ours> peak_mb=<ours> ... cross_check=ok

H&M (`--format hm`): the generated H&M-format files (recs/generate_hm.py; `full` = ~31.8M
transaction rows, 1.37M customers, 105K articles) through recs/ingest_hm.py, against the
reference's H&M front end (bench/pipeline_reference.py `hm_events` / `hm_item_states`). DuckDB's
memory_limit is 1500MB there (the goal is <= 3 GB peak for ours; 200MB would spill the 31.8M-row
joins to disk); set --duckdb-memory to change it.

    .venv/bin/python bench/pipeline.py [--format hm] [--scale full] [--out bench/out] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

CHILD_ENV = {"POLARS_MAX_THREADS": "2", "RECS_DUCKDB_MEMORY_LIMIT": "200MB"}
DUCKDB_THREADS = 2


def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KB


def run_ours(data_dir: Path, work_dir: Path, fmt: str = "retailrocket") -> dict:
    """Our pipeline: DuckDB ingest + set-based sequence build (plain functions, no Prefect)."""
    from recs.ingest import ingest_dir
    from recs.sequences import build_sequence_tables
    from recs.warehouse import connect

    warehouse = work_dir / "warehouse_ours"
    shutil.rmtree(warehouse, ignore_errors=True)  # a fresh warehouse (snapshots, symlinks and all)
    start = time.perf_counter()
    # One connection per stage, as the flows (and `recs run`) open them.
    con = connect(warehouse)
    con.execute(f"SET threads = {DUCKDB_THREADS}")
    ingest_report = ingest_dir(con, data_dir, data_format=fmt)
    con.close()
    t_ingest = time.perf_counter() - start
    con = connect(warehouse)
    con.execute(f"SET threads = {DUCKDB_THREADS}")
    build_report = build_sequence_tables(con, warehouse)
    con.close()
    wall = time.perf_counter() - start
    return {"wall_s": wall, "ingest_s": t_ingest, "build_s": wall - t_ingest, "peak_mb": peak_rss_mb(),
            "rows_loaded": ingest_report["rows_loaded"],
            "examples": {k: v for k, v in build_report.items() if k.startswith("n_")}}


def run_reference(data_dir: Path, work_dir: Path, fmt: str = "retailrocket") -> dict:
    """The vectorised polars reference (bench/pipeline_reference.py) of the same transformation
    with the same (default) build parameters, its tables written as parquet like ours."""
    from pipeline_reference import reference_tables, write_reference

    out = work_dir / "reference_sequences"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    tables = reference_tables(data_dir, fmt=fmt)
    write_reference(tables, out)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "peak_mb": peak_rss_mb(),
            "examples": {f"n_{k}": tables[k].height for k in ("train", "val", "test", "serving")}}


def child(which: str, data_dir: Path, work_dir: Path, fmt: str = "retailrocket", duckdb_memory: str = "200MB") -> dict:
    """Run one side in a fresh interpreter so its peak memory is its own."""
    out = subprocess.run([sys.executable, __file__, "--child", which, "--data", str(data_dir), "--out", str(work_dir),
                          "--format", fmt],
                         check=True, capture_output=True, text=True,
                         env={**os.environ, **CHILD_ENV, "RECS_DUCKDB_MEMORY_LIMIT": duckdb_memory})
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(runs: list[dict]) -> dict:
    """Medians of wall and peak over the runs, with their spread."""
    walls, peaks = [r["wall_s"] for r in runs], [r["peak_mb"] for r in runs]
    return {"wall_s": statistics.median(walls), "wall_min": min(walls), "wall_max": max(walls),
            "peak_mb": statistics.median(peaks), "peak_min": min(peaks), "peak_max": max(peaks),
            "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="full", choices=["tiny", "small", "full"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "bench" / "out"))
    parser.add_argument("--data", default=None, help="use this CSV directory instead of generating")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side; medians are reported")
    parser.add_argument("--child", choices=["ours", "reference"], default=None)
    parser.add_argument("--format", dest="fmt", choices=["retailrocket", "hm"], default="retailrocket")
    parser.add_argument("--duckdb-memory", default=None, help="DuckDB memory_limit (default 200MB; hm 1500MB)")
    args = parser.parse_args()
    work_dir = Path(args.out)
    if args.child:
        fn = run_ours if args.child == "ours" else run_reference
        print(json.dumps(fn(Path(args.data), work_dir, args.fmt)))
        return

    hm = args.fmt == "hm"
    duckdb_memory = args.duckdb_memory or ("1500MB" if hm else CHILD_ENV["RECS_DUCKDB_MEMORY_LIMIT"])
    data_dir = Path(args.data) if args.data else work_dir / (f"data_hm_{args.scale}_{args.seed}" if hm
                                                              else f"data_{args.scale}_{args.seed}")
    main_file = "transactions_train.csv" if hm else "events.csv"
    if not args.data and not (data_dir / main_file).exists():
        from recs.generators import generate_data

        t = time.perf_counter()
        generate_data(data_dir, scale=args.scale, seed=args.seed, data_format=args.fmt)
        print(f"generated {args.fmt} {args.scale} data in {time.perf_counter() - t:.1f}s -> {data_dir}")
    runs: dict[str, list[dict]] = {"ours": [], "reference": []}
    for i in range(args.repeats):
        for which in ("ours", "reference"):
            r = child(which, data_dir, work_dir, args.fmt, duckdb_memory)
            runs[which].append(r)
            extra = f" (ingest {r['ingest_s']:.2f}s, build {r['build_s']:.2f}s)" if which == "ours" else ""
            print(f"run {i + 1} {which:9s}: wall {r['wall_s']:.2f}s{extra}  peak {r['peak_mb']:.0f} MB  {r['examples']}",
                  flush=True)
    ours, ref = summary(runs["ours"]), summary(runs["reference"])
    for name, s in (("ours", ours), ("reference", ref)):
        print(f"{name:9s} median: wall {s['wall_s']:.2f}s (spread {s['wall_min']:.2f}-{s['wall_max']:.2f})  "
              f"peak RSS {s['peak_mb']:.0f} MB (spread {s['peak_min']:.0f}-{s['peak_max']:.0f})")
    ratios = [o["peak_mb"] / r["peak_mb"] for o, r in zip(runs["ours"], runs["reference"])]
    print(f"memory_ratio per run pair: {', '.join(f'{x:.3f}' for x in ratios)}  "
          "(peak resident set of the whole child process: interpreter + libraries + data)")

    from pipeline_reference import cross_check

    t = time.perf_counter()
    problems = cross_check(work_dir / "warehouse_ours" / "sequences", work_dir / "reference_sequences")
    print(f"cross-check of train/val/test/serving/items/customers, every row and value: "
          f"{'identical' if not problems else 'DIFFERENT'} ({time.perf_counter() - t:.1f}s)")
    for p in problems:
        print("  " + p)
    print(f"speedup={ref['wall_s'] / ours['wall_s']:.1f} memory_ratio={ours['peak_mb'] / ref['peak_mb']:.2f} "
          f"wall_s={ours['wall_s']:.2f} peak_mb={ours['peak_mb']:.0f} memory_ratio_spread={min(ratios):.2f}-{max(ratios):.2f} "
          f"repeats={args.repeats} cross_check={'ok' if not problems else 'FAILED'}")
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
