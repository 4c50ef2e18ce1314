"""Data parallelism over every device of every process: one mesh axis, sharded batches, replicated state.

The trainer (model/train.py) lays out a 1-D device mesh with axis `data` over `jax.devices()`
(all processes' devices), keeps its state (step, params, optimiser state) REPLICATED on it,
splits every batch along its leading (example) axis over it, and jit-compiles the step for
those shardings. XLA inserts the gradient all-reduce, so N steps on D devices compute what N
steps on one device compute with the same global batch (up to the order of floating-point
sums). With one device nothing changes.

A batch pytree names its top-level fields that are NOT per-example (the same for every row,
e.g. retrieval's shared negatives) in a class attribute `SHARED_FIELDS`; those are replicated.

Multi-host: every process runs the same program. `initialize_distributed` joins them into one
JAX cluster when the environment says so; each process's Grain loader computes only its slice
of every global batch (model.data.make_loader, sharded by `jax.process_index()`), and
`shard_batch` assembles the global batch from the processes' slices. Environment:

    JAX_COORDINATOR_ADDRESS=host:port JAX_NUM_PROCESSES=N JAX_PROCESS_ID=i   explicit cluster
    RECS_DISTRIBUTED=1    JAX detects the cluster (Slurm, Open MPI, Kubernetes, Cloud TPU)

Neither set: one process, all its local devices (1 CPU, or every GPU of the machine).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
TRUE_VALUES = ("1", "true", "yes", "on")


def initialize_distributed(environ: Mapping[str, str] | None = None) -> bool:
    """Join the multi-process JAX cluster the environment describes (see the module docstring);
    returns whether this process is part of one. A no-op without those variables, or when
    already initialised. Must run before any JAX computation in the process."""
    env = os.environ if environ is None else environ
    if jax.distributed.is_initialized():
        return True
    address = env.get("JAX_COORDINATOR_ADDRESS") or None
    if address is None and env.get("RECS_DISTRIBUTED", "").strip().lower() not in TRUE_VALUES:
        return False
    kwargs: dict[str, Any] = {"coordinator_address": address}
    for variable, name in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
        value = env.get(variable, "").strip()
        if value:
            if not value.isdigit():
                raise ValueError(f"{variable}={value!r}: expected a non-negative integer")
            kwargs[name] = int(value)
    try:
        jax.distributed.initialize(**kwargs)
    except RuntimeError as exc:
        if "before" in str(exc):  # the backend is already up: too late to join a cluster
            raise RuntimeError("jax.distributed.initialize must run before any JAX computation: "
                               "call model.parallel.initialize_distributed first") from exc
        raise
    return True


def data_mesh(devices: list | None = None) -> Mesh:
    """The 1-D mesh `data` over all devices of all processes (process-major, as `jax.devices()`)."""
    return Mesh(np.array(jax.devices() if devices is None else devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (params, optimiser state, step, shared batch fields)."""
    return NamedSharding(mesh, PartitionSpec())


def split_examples(mesh: Mesh) -> NamedSharding:
    """The leading (example) axis split over the mesh, the other axes whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def per_example_mask(batch: Any) -> Any:
    """A pytree of bool like `batch`: True for leaves with a leading example axis (split over
    devices and processes), False for the leaves of the batch's `SHARED_FIELDS`."""
    shared = set(getattr(type(batch), "SHARED_FIELDS", ()))
    fill = lambda tree, value: jax.tree_util.tree_map(lambda _: value, tree)  # noqa: E731
    if shared and hasattr(batch, "_fields"):
        return type(batch)(*(fill(value, name not in shared) for name, value in zip(batch._fields, batch)))
    return fill(batch, True)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """`tree` (numpy or single-device arrays, the same value in every process) replicated on `mesh`."""
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """This process's slice of a global batch (numpy) -> global arrays on `mesh`: per-example
    leaves split along axis 0 (this process's rows on its own devices), shared leaves replicated.

    Raises ValueError when the rows do not split evenly over the devices (a batch size that is
    not a multiple of the device count)."""
    local_devices = sum(1 for d in mesh.devices.flat if d.process_index == jax.process_index())
    leaves, treedef = jax.tree_util.tree_flatten(batch)
    split = [m and np.ndim(x) > 0 for x, m in zip(leaves, jax.tree_util.tree_leaves(per_example_mask(batch)))]
    uneven = sorted({int(np.shape(x)[0]) for x, s in zip(leaves, split) if s and np.shape(x)[0] % local_devices})
    if uneven:
        raise ValueError(f"a batch of {uneven[0] * jax.process_count()} rows does not split evenly over "
                         f"{mesh.devices.size} devices: use a batch size (and, for length-bucketed retrieval, "
                         "a tokens_per_batch) whose rows are a multiple of the device count")
    rows, whole = split_examples(mesh), replicated(mesh)
    shardings = [rows if s else whole for s in split]
    if jax.process_count() == 1:
        arrays = jax.device_put(leaves, shardings)
    else:
        arrays = [jax.make_array_from_process_local_data(sh, np.asarray(x)) for x, sh in zip(leaves, shardings)]
    return jax.tree_util.tree_unflatten(treedef, arrays)


def local_copy(tree: Any) -> Any:
    """Replicated arrays -> the copy on this process's first device (host-side work such as
    validation then runs once, on one device, instead of on every device of the mesh)."""
    def one(x):
        if isinstance(x, jax.Array) and x.is_fully_replicated and len(x.sharding.device_set) > 1:
            return x.addressable_data(0)
        return x

    return jax.tree_util.tree_map(one, tree)


def is_primary_process() -> bool:
    """Whether this process reports for the cluster (process 0; always, with one process)."""
    return jax.process_index() == 0


def agree(flag: bool) -> bool:
    """Process 0's value of a host-side decision (e.g. a time limit) on every process, so that
    all processes take the same branch (each checkpoint save is a collective)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(bool(flag))))


def sync(name: str) -> None:
    """Wait until every process gets here (no-op with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
