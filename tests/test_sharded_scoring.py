"""Sharded scoring on Dask (flows/score_all.py, recs/sharding.py) on the tiny trained warehouse:
3 shards on a 2-worker LocalCluster publish the same `recommendations` rows as the in-process
run; a shard whose worker is killed mid-run is retried alone and the run still publishes once,
complete and identical; a shard that fails for good publishes nothing.

Faults are injected for real (recs.sharding.FAULTS_ENV): the shard task kills its own worker
process with SIGKILL, or raises on every attempt.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from flows.score_all import score_all
from recs.publish import staging_dir
from recs.sharding import FAULTS_ENV, ShardsFailed, customer_range
from tests.trained_fixtures import TinyTrained, copy_warehouse, tiny_trained, tiny_warehouse  # noqa: F401
from tests.warehouse_queries import query

TOP_N = 5
SHARDS = 3
GUARD_FIELDS = ("strategy", "val_recall20", "val_mrr20", "baseline", "baseline_val_recall20", "baseline_val_mrr20",
                "guard_warning")


def rows(warehouse: Path, run_id: str) -> dict[tuple[int, int], tuple]:
    """(customer_id, rank) -> (item_id, source, score, p_transaction, p_addtocart, p_view, model_version)."""
    found = query(warehouse, "SELECT customer_id, rank, item_id, source, score, p_transaction, p_addtocart, p_view, "
                             "model_version FROM recommendations WHERE run_id = ?", [run_id])
    return {(r[0], r[1]): r[2:] for r in found}


def assert_same_lists(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    assert [got[k][:2] for k in sorted(got)] == [want[k][:2] for k in sorted(want)]  # items and sources
    for key in want:
        for a, b in zip(got[key][2:6], want[key][2:6]):
            assert (a is None and b is None) or math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6), (key, a, b)
        assert got[key][6] == want[key][6]


def test_customer_ranges_cover_every_customer_once():
    for n, shards in ((10, 3), (1786, 3), (5, 7), (1, 1)):
        ranges = [customer_range(s, shards, n) for s in range(shards)]
        owners = [[s for s, (lo, hi) in enumerate(ranges) if lo <= idx < hi] for idx in range(1, n + 1)]
        assert all(len(o) == 1 for o in owners)
        assert [o[0] for o in owners] == sorted(o[0] for o in owners)  # contiguous, in shard order
    assert [customer_range(s, 3, 9) for s in range(3)] == [(0, 4), (4, 7), (7, 2**31 - 1)]


@pytest.fixture(scope="module")
def scored(tiny_trained: TinyTrained, tmp_path_factory, prefect_harness):
    """One warehouse copy scored in-process (1 shard), then with 3 shards on a 2-worker
    LocalCluster (processes, one thread each), shared by this module's runs through
    dask_address: a cluster start costs seconds. The workers share the session's XLA cache and
    see the fault directory."""
    import jax
    from distributed import LocalCluster

    root = tmp_path_factory.mktemp("sharded")
    faults = root / "faults"
    faults.mkdir()
    saved = {k: os.environ.get(k) for k in (FAULTS_ENV, "JAX_COMPILATION_CACHE_DIR",
                                            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")}
    os.environ[FAULTS_ENV] = str(faults)  # before the workers start: they inherit it
    if jax.config.jax_compilation_cache_dir:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = jax.config.jax_compilation_cache_dir
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    warehouse = copy_warehouse(tiny_trained.warehouse_dir, root / "warehouse")
    try:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="3GiB",
                          dashboard_address=None) as cluster:
            common = {"warehouse_dir": str(warehouse), "checkpoint_dir": str(tiny_trained.checkpoint_dir),
                      "top_n": TOP_N, "keep_runs": 10}
            on_dask = {**common, "shards": SHARDS, "dask_address": cluster.scheduler_address}
            single = score_all(**common)
            sharded = score_all(**on_dask)
            yield {"warehouse": warehouse, "faults": faults, "on_dask": on_dask, "single": single, "sharded": sharded}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_local_cluster_defaults():
    """Without an address: a LocalCluster of worker processes, one thread each, one per shard up to
    the cores (the path `recs run --shards 2` takes)."""
    from flows.score_all import dask_task_runner

    runner = dask_task_runner(3, dask_workers=2)
    assert runner.address is None
    assert runner.cluster_kwargs == {"n_workers": 2, "threads_per_worker": 1, "processes": True,
                                     "dashboard_address": None}
    assert dask_task_runner(64).cluster_kwargs["n_workers"] == os.cpu_count()
    assert dask_task_runner(2, dask_address="tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"


def test_three_shards_on_two_workers_publish_the_in_process_rows(scored):
    single, sharded, warehouse = scored["single"], scored["sharded"], scored["warehouse"]
    assert "shards" not in single and sharded["shards"] == SHARDS
    want = rows(warehouse, single["run_id"])
    assert len(want) == single["n_rows"] == single["n_customers"] * TOP_N
    assert_same_lists(rows(warehouse, sharded["run_id"]), want)
    for key in ("n_customers", "n_rows", "share_fallback", "model_version", "top_n", *GUARD_FIELDS):
        assert sharded[key] == single[key], key
    # Published last, so it is the latest run; its row carries the same guard decision.
    [(latest, strategy)] = query(warehouse, "SELECT DISTINCT r.run_id, strategy FROM latest_recommendations r "
                                            "JOIN recommendation_runs USING (run_id)")
    assert (latest, strategy) == (sharded["run_id"], single["strategy"])
    assert not staging_dir(warehouse, sharded["run_id"]).exists()


def test_a_killed_worker_is_retried_and_the_run_still_publishes_complete(scored):
    warehouse, faults = scored["warehouse"], scored["faults"]
    (faults / "kill-shard-1").touch()
    summary = score_all(**scored["on_dask"])
    killed = faults / "killed-shard-1"
    assert killed.exists() and not (faults / "kill-shard-1").exists()  # the first attempt did kill its worker
    assert summary["shard_stats"][1]["pid"] != int(killed.read_text())  # shard 1 finished in another process
    assert_same_lists(rows(warehouse, summary["run_id"]), rows(warehouse, scored["single"]["run_id"]))
    assert summary["n_customers"] == scored["single"]["n_customers"]
    [(latest,)] = query(warehouse, "SELECT DISTINCT run_id FROM latest_recommendations")
    assert latest == summary["run_id"]


def test_a_shard_failing_for_good_publishes_nothing(scored):
    warehouse, faults = scored["warehouse"], scored["faults"]
    before = query(warehouse, "SELECT run_id FROM recommendation_runs ORDER BY run_id")
    [(latest_before,)] = query(warehouse, "SELECT DISTINCT run_id FROM latest_recommendations")
    (faults / "fail-shard-2").touch()
    try:
        with pytest.raises(ShardsFailed, match=r"shard 2 of 3 failed: RuntimeError: injected fault: shard 2 fails"):
            score_all(**scored["on_dask"])
    finally:
        (faults / "fail-shard-2").unlink()
    assert query(warehouse, "SELECT run_id FROM recommendation_runs ORDER BY run_id") == before
    assert query(warehouse, "SELECT DISTINCT run_id FROM latest_recommendations") == [(latest_before,)]
    assert list((warehouse / "recommendations" / "_staging").glob("*")) == []  # the shards' parts are gone
