"""Sharded nightly scoring: the customers split into N shards, each scored on its own, one publish.

flows/score_all.py runs each shard as a Prefect task on a Dask cluster; this module is what
those tasks do, in four steps that pass each other only paths, ids and small dicts:

1. `plan_run` (the flow's process): the run id, the time, the publishing guard's decision
   (recs/guard.py, taken once so every shard ships the same strategy), the number of customers
   and the sequence build every shard must score.
2. `score_shard` (a worker, once per shard): shard s of N is the customers with customer_idx in
   `customer_range(s, N, n_customers)`, contiguous ranges of equal size (sequences/serving is in
   customer_idx order, so a shard reads only its row groups). The worker opens the warehouse
   read-only and the checkpoints itself (load_scorer), scores its customers in chunks exactly as
   the in-process path does, writes `part-<shard>-<chunk>.parquet` into the run's staging
   directory (recs/publish.py) and, last, `shard-<shard>.json` with its counts: a shard is
   complete when its marker exists. An attempt first removes what an earlier, killed attempt
   of the same shard left.
3. `check_shards` (the flow's process): every marker present, their customers adding up to the
   build's, one sequence build and one model version across shards, no stray part file.
4. `publish_shards`: `publish_run`, the same single atomic publish as the in-process path.

Nothing here opens the warehouse for writing but the publish: DuckDB allows no writer while any
other process holds the file, and the workers only read the current snapshot.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from recs.publish import new_run_id, publish_run, staging_dir, write_shard

MAX_CUSTOMER_IDX = 2**31 - 1  # customer_idx is int32: the last shard's open upper end
# Fault injection for tests (tests/test_sharded_scoring.py): a directory holding
# `kill-shard-<s>` (the attempt that claims it kills its own worker process after writing its
# first part) or `fail-shard-<s>` (every attempt of shard s raises).
FAULTS_ENV = "RECS_SCORING_FAULTS"


class ShardsFailed(RuntimeError):
    """Some shards failed for good: the run published nothing."""


def customer_range(shard: int, shards: int, n_customers: int) -> tuple[int, int]:
    """[lo, hi) of customer_idx in shard `shard` of `shards` (ids are 1..n_customers; the first
    and last shards are open-ended, so no customer falls between shards)."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
    lo = 0 if shard == 0 else 1 + shard * n_customers // shards
    hi = MAX_CUSTOMER_IDX if shard == shards - 1 else 1 + (shard + 1) * n_customers // shards
    return lo, hi


def _marker(warehouse_dir: str | Path, run_id: str, shard: int) -> Path:
    return staging_dir(warehouse_dir, run_id) / f"shard-{shard:05d}.json"


def _parts(warehouse_dir: str | Path, run_id: str, shard: int) -> list[Path]:
    return sorted(staging_dir(warehouse_dir, run_id).glob(f"part-{shard:05d}-*.parquet"))


def plan_run(warehouse_dir: str | Path, keep_model: bool = False, run_id: str | None = None) -> dict:
    """What every shard of one run shares: run_id, generated_at (ISO), the guard's decision
    (`decision`, GuardDecision.as_row()), n_customers, sequences_version; `started` (epoch s)."""
    from recs.guard import decide, validation_figures
    from recs.sequences import read_meta
    from recs.warehouse import pinned_sequences_dir

    root = pinned_sequences_dir(warehouse_dir)
    meta = read_meta(warehouse_dir, root)
    decision = decide(validation_figures(warehouse_dir), keep_model=keep_model)
    return {"run_id": run_id or new_run_id(),
            "generated_at": datetime.now(timezone.utc).replace(tzinfo=None).isoformat(),
            "decision": decision.as_row(), "n_customers": int(meta["n_serving"]), "sequences_version": root.name,
            "started": time.time()}


_SCORER: dict = {}  # one per worker process: (key, Scorer) of the run it last scored a shard of
_SCORER_LOCK = threading.Lock()


def _scorer(warehouse_dir: str, checkpoint_dir: str, run_id: str, strategy: str, params: dict):
    """load_scorer, once per run per worker process (a worker given several shards of a run loads
    the models, tables and indexes once)."""
    from recs.scoring import load_scorer

    key = (str(warehouse_dir), str(checkpoint_dir), run_id, strategy, json.dumps(params, sort_keys=True))
    with _SCORER_LOCK:
        if _SCORER.get("key") != key:
            _SCORER.clear()
            _SCORER.update(key=key, scorer=load_scorer(warehouse_dir, checkpoint_dir, strategy=strategy, **params))
        return _SCORER["scorer"]


def _injected_fault(shard: int, stage: str) -> None:
    faults = os.environ.get(FAULTS_ENV)
    if not faults:
        return
    if stage == "start" and (Path(faults) / f"fail-shard-{shard}").exists():
        raise RuntimeError(f"injected fault: shard {shard} fails")
    kill = Path(faults) / f"kill-shard-{shard}"
    if stage == "written" and kill.exists():
        claimed = kill.with_name(f"killed-shard-{shard}")
        try:
            os.replace(kill, claimed)  # one attempt claims it
        except FileNotFoundError:
            return
        claimed.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


def score_shard(warehouse_dir: str | Path, checkpoint_dir: str | Path, *, run_id: str, shard: int, shards: int,
                n_customers: int, sequences_version: str, generated_at: str, strategy: str = "model",
                chunk_rows: int = 65_536, **scorer_params) -> dict:
    """Score shard `shard` of `shards` into the run's staging directory; returns its marker's
    content (counts, model_version, seconds, pid). scorer_params: load_scorer's keywords."""
    from model.data import serving_histories
    from recs.scoring import listed_without_events

    started = time.perf_counter()
    _injected_fault(shard, "start")
    for stale in [*_parts(warehouse_dir, run_id, shard), _marker(warehouse_dir, run_id, shard)]:
        stale.unlink(missing_ok=True)  # an earlier attempt's, killed part-way
    scorer = _scorer(str(warehouse_dir), str(checkpoint_dir), run_id, strategy, scorer_params)
    if scorer.tables.root.name != sequences_version:
        raise ValueError(f"shard {shard}: the sequence tables changed during run {run_id} (build "
                         f"{scorer.tables.root.name}, the run started on {sequences_version}): score again")
    loaded = time.perf_counter()
    lo, hi = customer_range(shard, shards, n_customers)
    stamp = datetime.fromisoformat(generated_at)
    n = n_fallback = n_rows = 0
    files = []
    for chunk_no, chunk in enumerate(serving_histories(scorer.tables, chunk_rows=chunk_rows, customer_range=(lo, hi))):
        table, chunk_fallback = scorer.score_chunk(chunk, run_id, stamp)
        files.append(write_shard(table, warehouse_dir, run_id, f"{shard:05d}-{chunk_no:05d}").name)
        n += len(chunk.customer_idx)
        n_fallback += chunk_fallback
        n_rows += table.num_rows
        _injected_fault(shard, "written")
    n_listed = 0
    if shard == shards - 1:  # as in-process: customers the data lists without any event get the fallback
        listed = listed_without_events(warehouse_dir, scorer.tables)
        if len(listed):
            table = scorer.fallback_rows(listed, run_id, stamp)
            files.append(write_shard(table, warehouse_dir, run_id, f"{shard:05d}-{len(files):05d}").name)
            n_listed, n_fallback, n_rows = len(listed), n_fallback + len(listed), n_rows + table.num_rows
    result = {"shard": shard, "customer_range": [lo, hi], "n_customers": n, "n_listed": n_listed,
              "n_fallback": n_fallback, "n_rows": n_rows, "files": files, "model_version": scorer.model_version,
              "sequences_version": scorer.tables.root.name, "load_s": round(loaded - started, 3),
              "score_s": round(time.perf_counter() - loaded, 3), "pid": os.getpid()}
    marker = _marker(warehouse_dir, run_id, shard)
    tmp = marker.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(marker)  # whole or absent
    return result


def check_shards(warehouse_dir: str | Path, run_id: str, shards: int, n_customers: int) -> list[dict]:
    """The markers of every shard, after checking the run is complete and consistent (else
    ValueError naming what is missing)."""
    missing = [s for s in range(shards) if not _marker(warehouse_dir, run_id, s).exists()]
    if missing:
        raise ValueError(f"run {run_id}: shard(s) {', '.join(map(str, missing))} of {shards} did not finish")
    results = [json.loads(_marker(warehouse_dir, run_id, s).read_text()) for s in range(shards)]
    scored = sum(r["n_customers"] for r in results)
    if scored != n_customers:
        raise ValueError(f"run {run_id}: the shards scored {scored:,} customers, the build has {n_customers:,}")
    for field in ("model_version", "sequences_version"):
        values = sorted({r[field] for r in results})
        if len(values) > 1:
            raise ValueError(f"run {run_id}: shards used different {field.replace('_', ' ')}s {values}: score again")
    listed = {name for r in results for name in r["files"]}
    on_disk = {p.name for p in staging_dir(warehouse_dir, run_id).glob("part-*.parquet")}
    if listed != on_disk:
        raise ValueError(f"run {run_id}: staged parts {sorted(on_disk ^ listed)} do not match the shards' markers")
    return results


def publish_shards(warehouse_dir: str | Path, plan: dict, shards: int, top_n: int, keep_runs: int = 3) -> dict:
    """Check every shard and publish the run atomically (publish_run); returns the run summary
    (the keys of the in-process score_all_customers, plus shards, publish_s and shard_stats:
    each shard's customers, rows, load and scoring seconds and worker pid)."""
    run_id = plan["run_id"]
    results = check_shards(warehouse_dir, run_id, shards, plan["n_customers"])
    n = sum(r["n_customers"] + r["n_listed"] for r in results)
    duration = time.time() - plan["started"]  # wall time from the plan, the cluster's start included
    summary = {"run_id": run_id, "generated_at": datetime.fromisoformat(plan["generated_at"]),
               "model_version": results[0]["model_version"], "n_customers": n,
               "share_fallback": sum(r["n_fallback"] for r in results) / max(n, 1),
               "duration_s": round(duration, 2), "top_n": top_n, **plan["decision"]}
    publishing = time.perf_counter()
    published = publish_run(warehouse_dir, run_id, summary, keep_runs=keep_runs)
    stats = [{k: r[k] for k in ("shard", "n_customers", "n_rows", "load_s", "score_s", "pid")} for r in results]
    return {**summary, "n_rows": published["n_rows"], "customers_per_s": round(n / max(duration, 1e-9), 1),
            "shards": shards, "publish_s": round(time.perf_counter() - publishing, 3), "shard_stats": stats}


def discard_run(warehouse_dir: str | Path, run_id: str) -> None:
    """Remove a run's staged parts (a run that will not be published)."""
    import shutil

    shutil.rmtree(staging_dir(warehouse_dir, run_id), ignore_errors=True)
