"""Data-parallel training (model/parallel.py): on 2 CPU host devices, and on a cluster of 2 processes
(2 devices each) on this machine, the trainers compute what one device computes; a run killed with
its state sharded over 2 devices, or stopped on the cluster, resumes to the same parameters.

JAX fixes the device count when it starts, so every multi-device run is a fresh subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=2 (this pytest process has 1 device). The
subprocesses share this session's persistent compile cache (tests/trained_fixtures.py).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from model.data import make_loader
from model.parallel import per_example_mask
from model.train import fit, load_best_params
from tests.trained_fixtures import tiny_warehouse  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600
RTOL, ATOL = 1e-4, 1e-6  # sums over the batch are reduced in another order on 2 devices


def child_env(devices: int = 1, **extra: str) -> dict[str, str]:
    """The environment of a fresh Python process with `devices` CPU devices."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COORDINATOR", "JAX_NUM_PROC", "JAX_PROCESS"))}
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    if jax.config.jax_compilation_cache_dir:
        env.update(JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return {**env, **extra}


def python(script: str) -> list[str]:
    prelude = f"import sys; sys.path[:0] = [{str(REPO)!r}, {str(REPO / 'tests')!r}]\n"
    return [sys.executable, "-c", prelude + textwrap.dedent(script)]


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def assert_close(expected, actual) -> None:
    la, lb = jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(actual)
    assert len(la) == len(lb)
    for a, b in zip(la, lb):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------------
# The generic trainer on 2 devices: the batch is split, the state replicated, a kill resumes
# ---------------------------------------------------------------------------------------------

# The regression task of tests/test_train.py through the real Grain loader; the loss reports
# the sharding XLA gives the batch; KILL_AT = n SIGKILLs the process when batch n is read (read
# synchronously: prefetch=0), so the steps since the last checkpoint are lost.
REGRESSION = """
    import json, os, signal
    import jax, numpy as np
    from test_train import CFG, RegressionBatches, regression_task
    from model.data import make_loader
    from model.train import fit

    kill_at = int(os.environ.get("KILL_AT", "-1"))
    seen = []
    task = regression_task()
    loss_fn = task.loss_fn

    def inspecting_loss(params, batch, rng):
        jax.debug.inspect_array_sharding(batch["x"], callback=seen.append)
        return loss_fn(params, batch, rng)

    task.loss_fn = inspecting_loss

    class KillingBatches(RegressionBatches):
        def __getitem__(self, i):
            if i == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return super().__getitem__(i)

    result = fit(task, CFG, lambda start: make_loader(KillingBatches(40), start_step=start, prefetch=0),
                 os.environ["CKPT"], progress=False)
    w = result.params["w"]
    from model.parallel import data_mesh, shard_batch
    try:
        shard_batch({"x": np.zeros((3, 2))}, data_mesh())
        uneven = None
    except ValueError as exc:
        uneven = str(exc)
    print(json.dumps({"uneven_error": uneven, "devices": jax.device_count(), "resumed_from": result.resumed_from,
                      "batch_devices": len(seen[0].device_set), "batch_spec": str(seen[0].spec),
                      "param_devices": len(w.sharding.device_set), "params_replicated": w.is_fully_replicated,
                      "params": {k: np.asarray(v).tolist() for k, v in result.params.items()}}))
"""


def test_two_devices_split_the_batch_and_resume_a_sigkill_to_the_one_device_parameters(tmp_path):
    from test_train import CFG, RegressionBatches, regression_task

    straight = fit(regression_task(), CFG, lambda start: make_loader(RegressionBatches(40), start_step=start),
                   tmp_path / "one_device", progress=False)
    ckpt = tmp_path / "two_devices"
    # Killed when asking for batch 24 (checkpoints every 5 steps): steps 21-23 are lost.
    killed = subprocess.run(python(REGRESSION), env=child_env(2, CKPT=str(ckpt), KILL_AT="23"),
                            capture_output=True, text=True, timeout=TIMEOUT_S)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert sorted(int(p.name) for p in (ckpt / "latest").iterdir() if p.name.isdigit())[-1] == 20
    assert (ckpt / "latest" / "20" / "data" / "process_0-of-1.json").exists()  # the Grain state of the process

    resumed = subprocess.run(python(REGRESSION), env=child_env(2, CKPT=str(ckpt)),
                             capture_output=True, text=True, timeout=TIMEOUT_S)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    out = last_json(resumed.stdout)
    assert out["devices"] == 2 and out["resumed_from"] == 20
    # The batch really is split over both devices along its rows; the parameters are on both, whole.
    assert out["batch_devices"] == 2 and "data" in out["batch_spec"]
    assert out["param_devices"] == 2 and out["params_replicated"]
    assert "a batch of 3 rows does not split evenly over 2 devices" in out["uneven_error"]
    assert_close(straight.params, {k: np.asarray(v) for k, v in out["params"].items()})
    # ... and the one-device process loads the two-device checkpoint.
    best, _ = load_best_params(ckpt)
    assert len(best["w"].sharding.device_set) == 1
    assert_close(load_best_params(tmp_path / "one_device")[0], best)


# ---------------------------------------------------------------------------------------------
# The retrieval trainer on a 2-process cluster of 2 devices each, every process loading half of
# every batch, as on 2 hosts
# ---------------------------------------------------------------------------------------------

STEPS = 4
RETRIEVAL = """
    import json, os
    from model.tasks import train_retrieval_model
    import jax

    summary = train_retrieval_model(os.environ["WAREHOUSE"], os.environ["CKPT"], profile="tiny",
                                    steps=int(os.environ["STEPS"]), progress=False,
                                    stop_after=int(os.environ["STOP_AFTER"]))
    print(json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
                      "devices": jax.device_count(), "steps": summary["steps"]}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_retrieval_on_a_two_process_cluster_matches_one_device_and_resumes_on_one(
        tiny_warehouse, tmp_path):  # noqa: F811
    from model.tasks import train_retrieval_model

    warehouse, half = str(tiny_warehouse.warehouse_dir), STEPS // 2
    cluster = {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{free_port()}", "JAX_NUM_PROCESSES": "2",
               "WAREHOUSE": warehouse, "CKPT": str(tmp_path / "cluster"), "STEPS": str(STEPS), "STOP_AFTER": str(half)}
    processes = [subprocess.Popen(python(RETRIEVAL), env=child_env(2, JAX_PROCESS_ID=str(i), **cluster),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    # Meanwhile the same run on this process's one device, read at half time and at the end.
    one = tmp_path / "one"
    train_retrieval_model(warehouse, one, profile="tiny", steps=STEPS, progress=False, stop_after=half)
    at_half, _ = load_best_params(one / "retrieval")  # no validation yet: the latest state
    train_retrieval_model(warehouse, one, profile="tiny", steps=STEPS, progress=False)
    at_end, _ = load_best_params(one / "retrieval")

    outputs = [p.communicate(timeout=TIMEOUT_S) for p in processes]
    for p, (_, stderr) in zip(processes, outputs):
        assert p.returncode == 0, stderr[-3000:]
    assert [last_json(stdout) for stdout, _ in outputs] == [
        {"process": i, "processes": 2, "devices": 4, "steps": half} for i in range(2)]
    data = tmp_path / "cluster" / "retrieval" / "latest" / str(half) / "data"
    assert sorted(p.name for p in data.glob("process_*.json")) == ["process_0-of-2.json", "process_1-of-2.json"]
    assert_close(at_half, load_best_params(tmp_path / "cluster" / "retrieval")[0])

    # Resumed here, on one device (no iterator state for a 1-process run: it restarts at the step).
    resumed = train_retrieval_model(warehouse, tmp_path / "cluster", profile="tiny", steps=STEPS, progress=False)
    assert resumed["resumed_from"] == half and resumed["steps"] == STEPS
    assert_close(at_end, load_best_params(tmp_path / "cluster" / "retrieval")[0])


# ---------------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------------

def test_shared_batch_fields_are_not_split():
    from model.batch import History, Items, RetrievalBatch
    from model.tasks import RetrievalTrainBatch

    rows = np.zeros((4, 3), np.int32)
    batch = RetrievalTrainBatch(RetrievalBatch(History(rows[:, 0], rows, rows, rows, rows), Items(rows, rows, rows)),
                                Items(*(np.zeros(8, np.int32),) * 3), np.zeros(8, np.float32), rows.astype(np.float32))
    mask = per_example_mask(batch)
    assert all(jax.tree_util.tree_leaves(mask.batch)) and mask.target_logq
    assert not any(jax.tree_util.tree_leaves((mask.negatives, mask.negative_logq)))


def test_process_shards_hold_contiguous_blocks_of_the_global_batch(tiny_warehouse):  # noqa: F811
    import grain

    from model.config import PROFILES
    from model.data import RetrievalBatchSource, negative_sampler
    from model.tasks import RetrievalTrainSource, load_tables

    tables = load_tables(tiny_warehouse.warehouse_dir, PROFILES["tiny"])
    source = RetrievalTrainSource(RetrievalBatchSource(tables, "train", 16, seed=3, num_steps=10),
                                  negative_sampler(tables, 64, seed=3))
    whole = next(make_loader(source, start_step=5))
    halves = [next(make_loader(source, start_step=5, shard_options=grain.sharding.ShardOptions(i, 2)))
              for i in range(2)]
    for field in ("batch", "target_logq"):  # per-example: the halves, in order, are the batch
        for got, *parts in zip(*(jax.tree_util.tree_leaves(getattr(b, field)) for b in (whole, *halves))):
            np.testing.assert_array_equal(np.concatenate(parts), got)
    for half in halves:  # shared: every process draws the step's negatives
        np.testing.assert_array_equal(half.negative_logq, whole.negative_logq)
    with pytest.raises(ValueError, match="does not split evenly over 3 processes"):
        source.sharded(grain.sharding.ShardOptions(0, 3))[0]


def test_bucketed_retrieval_batches_round_their_rows_to_the_device_count(tiny_warehouse):  # noqa: F811
    from model.config import PROFILES
    from model.data import RetrievalBatchSource
    from model.tasks import load_tables

    tables = load_tables(tiny_warehouse.warehouse_dir, PROFILES["tiny"])
    sizes = {m: [len(RetrievalBatchSource(tables, "train", 16, num_steps=50, tokens_per_batch=100,
                                          row_multiple=m).rows_and_width(s)[0]) for s in range(50)]
             for m in (1, 8)}
    assert any(n % 8 for n in sizes[1])  # e.g. 100 // 16 = 6 rows
    assert all(n % 8 == 0 for n in sizes[8]) and sizes[8] == [max(8, n - n % 8) for n in sizes[1]]


def test_initialize_distributed_needs_the_environment():
    from model.parallel import initialize_distributed

    assert initialize_distributed({}) is False  # one process: nothing to join
    with pytest.raises(ValueError, match="JAX_PROCESS_ID"):
        initialize_distributed({"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1", "JAX_NUM_PROCESSES": "2",
                                "JAX_PROCESS_ID": "one"})
