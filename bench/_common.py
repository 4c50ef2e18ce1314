"""Helpers shared by the benchmarks: generated data and bench warehouses under bench/out/, timing, tables.

Everything a benchmark writes lives under `bench/out/` (git-ignored): generated CSVs in
`data_{scale}_{seed}/` (the same naming as bench/pipeline.py) and warehouses built from them in
`warehouse_{name}/`. A warehouse is rebuilt only when its sequence tables are missing or were built
from other data or other parameters (a small stamp file records both).
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_OUT = REPO / "bench" / "out"
STAMP_FILE = "bench_stamp.json"


def log(text: str) -> None:
    """Progress notes go to stderr so stdout holds only the figures."""
    print(text, file=sys.stderr, flush=True)


@contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """`with timer() as t: ...; t()` -> seconds elapsed (frozen when the block ends)."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def ensure_generated(out_dir: Path, scale: str, seed: int = 0) -> Path:
    """`out_dir/data_{scale}_{seed}/` with generated Retail Rocket CSVs (generated when missing)."""
    data_dir = Path(out_dir) / f"data_{scale}_{seed}"
    if not (data_dir / "events.csv").exists():
        from recs.generate import generate

        with timer() as t:
            generate(data_dir, scale=scale, seed=seed)
        log(f"generated {scale} data (seed {seed}) in {t():.1f}s -> {data_dir}")
    return data_dir


def _data_identity(data_dir: Path) -> dict[str, Any]:
    """What a warehouse was built from: resolved input files with their sizes and mtimes."""
    files = {}
    for p in sorted(Path(data_dir).iterdir()):
        if p.name.endswith((".csv", ".csv.gz")):
            real = p.resolve()
            st = real.stat()
            files[p.name] = [str(real), st.st_size, int(st.st_mtime)]
    return files


def ensure_warehouse(data_dir: Path, warehouse_dir: Path, *, force: bool = False, **build_params: Any) -> dict:
    """Ingest `data_dir` and build sequence tables into `warehouse_dir` unless an identical build is there.

    Returns {"rebuilt": bool, "ingest_s", "build_s", "meta": sequences/meta.json}.
    """
    from recs.ingest import ingest_dir
    from recs.sequences import build_sequence_tables, read_meta
    from recs.warehouse import connect

    warehouse_dir = Path(warehouse_dir)
    stamp_path = warehouse_dir / STAMP_FILE
    wanted = {"data": _data_identity(data_dir), "build_params": build_params}
    if not force and stamp_path.exists() and (warehouse_dir / "sequences" / "meta.json").exists():
        if json.loads(stamp_path.read_text()) == json.loads(json.dumps(wanted)):
            return {"rebuilt": False, "ingest_s": 0.0, "build_s": 0.0, "meta": read_meta(warehouse_dir)}
    stamp_path.unlink(missing_ok=True)
    con = connect(warehouse_dir)
    try:
        with timer() as t_ingest:
            ingest_dir(con, data_dir)
        with timer() as t_build:
            build_sequence_tables(con, warehouse_dir, **build_params)
    finally:
        con.close()
    stamp_path.write_text(json.dumps(wanted, indent=2))
    log(f"ingested {data_dir} in {t_ingest():.1f}s, built sequences in {t_build():.1f}s -> {warehouse_dir}")
    return {"rebuilt": True, "ingest_s": t_ingest(), "build_s": t_build(), "meta": read_meta(warehouse_dir)}


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width text table (floats to 4 significant decimals, None as '-')."""
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:,.4f}" if abs(v) < 10 else f"{v:,.1f}"
        return str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) if text else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in text)])


def cpu_note() -> str:
    """Cores and load when a benchmark starts (the machine may be shared: figures are noisy then)."""
    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return f"cpus={os.cpu_count()} load_avg=[{load}]"
