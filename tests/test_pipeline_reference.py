"""bench/pipeline_reference.py: the polars reference reproduces our sequence tables exactly on
tiny generated data, and its cross-check fails when the reference is perturbed."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from recs.generate import generate
from recs.ingest import ingest_dir
from recs.sequences import build_sequence_tables
from recs.warehouse import connect
from tests.trained_fixtures import TINY_MIN_ITEM_EVENTS, TINY_MIN_USER_EVENTS, TINY_SCALE_SEED

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import pipeline_reference as reference  # noqa: E402

PARAMS = dict(min_user_events=TINY_MIN_USER_EVENTS, min_item_events=TINY_MIN_ITEM_EVENTS)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(CSV directory, our sequences/ directory) of the tiny data set."""
    root = tmp_path_factory.mktemp("pipeline_reference")
    data, warehouse = root / "data", root / "warehouse"
    generate(data, scale="tiny", seed=TINY_SCALE_SEED)
    con = connect(warehouse)
    ingest_dir(con, data)
    con.close()
    con = connect(warehouse)
    build_sequence_tables(con, warehouse, **PARAMS)
    con.close()
    return data, warehouse / "sequences"


def _check(built: tuple[Path, Path], out: Path, **perturbation) -> list[str]:
    data, ours = built
    reference.write_reference(reference.reference_tables(data, **PARAMS, **perturbation), out)
    return reference.cross_check(ours, out)


def test_reference_matches_ours(built, tmp_path) -> None:
    assert _check(built, tmp_path / "ref") == []


@pytest.mark.parametrize("perturbation, table", [
    (dict(itemid_descending=True), "train.history_item"),  # another tie-break of the step order
    (dict(train_quantile=0.79), "train: "),  # another split cutoff
])
def test_cross_check_fails_on_a_perturbed_reference(built, tmp_path, perturbation, table) -> None:
    problems = _check(built, tmp_path / "ref", **perturbation)
    assert problems and any(p.startswith(table) for p in problems), problems
