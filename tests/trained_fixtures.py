"""One tiny warehouse and ONE pair of tiny trained models per test session, shared by
tests/test_tasks.py, tests/test_scoring.py and tests/test_pipeline.py.

Import the fixtures into a test module (`from tests.trained_fixtures import tiny_trained  # noqa: F401`).
Pytest registers an imported fixture once per importing module, so each fixture delegates to a
module-level cache: the warehouse is generated and the models trained once per session however
many modules use them.

The shared directories are read-only for tests: a test that writes (re-trains, rebuilds the
sequence tables, publishes recommendations) works on a copy (`copy_warehouse`, `copy_checkpoints`).
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jax
import pytest


def _enable_session_compilation_cache() -> None:
    """Share XLA executables between the many training / scoring calls of one test session.

    Every `fit` builds a new jitted step (and every Recommender a new scoring function), so the
    in-memory cache never hits; JAX's persistent cache is keyed by the computation instead, and
    cuts a repeated tiny training call from ~13 s to ~1 s on 2 cores. The cache lives in a
    temporary directory removed at exit; a cache the user configured is left alone.
    """
    if jax.config.jax_compilation_cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    cache_dir = tempfile.mkdtemp(prefix="recs-test-xla-cache-")
    atexit.register(shutil.rmtree, cache_dir, ignore_errors=True)
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


_enable_session_compilation_cache()

TINY_SCALE_SEED = 0
# The tiny data set has 1,786 visitors and 4,500 events, most visitors with 1-3 events:
# min_user_events=2 keeps ~680 customers in training (~550 train examples, 34 batches of 16).
TINY_MIN_USER_EVENTS = 2
TINY_MIN_ITEM_EVENTS = 2

_CACHE: dict[str, Any] = {}


def _once(key: str, build: Callable[[], Any]) -> Any:
    """build() the first time `key` is asked for in this process, the cached value afterwards."""
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


@dataclass(frozen=True)
class TinyWarehouse:
    """Generated tiny CSVs, ingested and built into sequence tables."""

    data_dir: Path  # the four Retail Rocket-format CSVs of `recs generate --scale tiny`
    warehouse_dir: Path  # recs.duckdb + sequences/
    build_report: dict


@dataclass(frozen=True)
class TinyTrained:
    """The tiny warehouse plus retrieval and the ranker stacked on it, trained on it."""

    warehouse: TinyWarehouse
    checkpoint_dir: Path
    retrieval: dict  # train_retrieval_model summary
    ranking: dict  # train_ranking_model summary

    @property
    def warehouse_dir(self) -> Path:
        return self.warehouse.warehouse_dir


def build_warehouse(data_dir: Path, warehouse_dir: Path, *, min_user_events: int = TINY_MIN_USER_EVENTS,
                    min_item_events: int = TINY_MIN_ITEM_EVENTS) -> dict:
    """Ingest `data_dir` into `warehouse_dir` and build its sequence tables; returns the build report."""
    from recs.ingest import ingest_dir
    from recs.sequences import build_sequence_tables
    from recs.warehouse import connect

    with connect(warehouse_dir) as con:
        ingest_dir(con, data_dir)
        return build_sequence_tables(con, warehouse_dir, min_user_events=min_user_events,
                                     min_item_events=min_item_events)


def rebuild_sequences(warehouse_dir: Path, **params: Any) -> dict:
    """Re-run `recs build` on an ingested warehouse with other parameters."""
    from recs.sequences import build_sequence_tables
    from recs.warehouse import connect

    with connect(warehouse_dir) as con:
        return build_sequence_tables(con, warehouse_dir, **params)


def copy_warehouse(warehouse_dir: Path, dest: Path) -> Path:
    """A private copy of a warehouse directory (DuckDB file and sequence tables). Symlinks are
    copied as symlinks: they are relative, so the copy's point into the copy."""
    shutil.copytree(warehouse_dir, dest, symlinks=True)
    return dest


def copy_checkpoints(checkpoint_dir: Path, dest: Path) -> Path:
    """A private copy of a checkpoint directory (Orbax resolves paths, so copies are independent)."""
    shutil.copytree(checkpoint_dir, dest)
    return dest


def _make_tiny_warehouse(root: Path) -> TinyWarehouse:
    from recs.generate import generate

    generate(root / "data", scale="tiny", seed=TINY_SCALE_SEED)
    report = build_warehouse(root / "data", root / "warehouse")
    return TinyWarehouse(root / "data", root / "warehouse", report)


def _make_tiny_trained(warehouse: TinyWarehouse, checkpoint_dir: Path) -> TinyTrained:
    from model.ranking_task import train_ranking_model
    from model.tasks import train_retrieval_model

    retrieval = train_retrieval_model(warehouse.warehouse_dir, checkpoint_dir, profile="tiny", progress=False)
    ranking = train_ranking_model(warehouse.warehouse_dir, checkpoint_dir, profile="tiny", progress=False)
    return TinyTrained(warehouse, checkpoint_dir, retrieval, ranking)


@pytest.fixture(scope="session")
def tiny_warehouse(tmp_path_factory: pytest.TempPathFactory) -> TinyWarehouse:
    """`recs generate --scale tiny` ingested and built (min_user_events=2, min_item_events=2). Read-only."""
    return _once("tiny_warehouse", lambda: _make_tiny_warehouse(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="session")
def tiny_trained(tiny_warehouse: TinyWarehouse, tmp_path_factory: pytest.TempPathFactory) -> TinyTrained:
    """The "tiny" profile's retrieval and ranking models trained on `tiny_warehouse`. Read-only."""
    return _once("tiny_trained",
                 lambda: _make_tiny_trained(tiny_warehouse, tmp_path_factory.mktemp("tiny_checkpoints")))
