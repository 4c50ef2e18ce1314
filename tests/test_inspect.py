"""Runs you can inspect: training_metrics rows, curves and evaluation PNGs, unique model versions
(checkpoint meta, eval_metrics, recommendation_runs) and `recs status`, on the tiny warehouse."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from model.meta import combined_version, read_checkpoint_meta
from model.tasks import checkpoint_path, train_retrieval_model
from recs.plots import PNG_SIGNATURE, is_png
from recs.training_metrics import WarehouseMetricWriter, read_run, replace_rows
from tests.trained_fixtures import (TinyTrained, copy_checkpoints, copy_warehouse, rebuild_sequences,  # noqa: F401
                                    tiny_trained, tiny_warehouse)
from tests.warehouse_queries import query

VERSION = re.compile(r"(retrieval|ranking|retrieval_serving)-\d{8}T\d{6}Z-[0-9a-f]{8}")
TRAIN_METRICS = {"train_loss", "train_grad_norm", "learning_rate", "steps_per_s", "examples_per_s"}


def metric_rows(warehouse: Path, run_id: str) -> list[tuple]:
    return query(warehouse, "SELECT step, metric, value FROM training_metrics WHERE run_id = ? ORDER BY step, metric",
                 [run_id])


def assert_no_duplicates(warehouse: Path) -> None:
    [(total, distinct)] = query(warehouse, "SELECT count(*), count(DISTINCT (run_id, model, step, metric)) "
                                           "FROM training_metrics")
    assert total == distinct > 0


@pytest.fixture
def warehouse(tiny_warehouse, tmp_path) -> Path:
    """A private copy of the tiny warehouse (tests here write to it)."""
    return copy_warehouse(tiny_warehouse.warehouse_dir, tmp_path / "warehouse")


def test_training_flow_writes_metrics_logs_curves_and_a_version(prefect_harness, warehouse, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    from flows.train_retrieval import train_retrieval

    checkpoints = tmp_path / "checkpoints"
    task_logger = logging.getLogger("prefect.task_runs")
    level = task_logger.level
    task_logger.setLevel(logging.INFO)  # the tests run Prefect at WARNING; the writer logs at INFO
    try:
        state = train_retrieval(warehouse_dir=str(warehouse), checkpoint_dir=str(checkpoints), profile="tiny",
                                steps=20, return_state=True)
    finally:
        task_logger.setLevel(level)
    summary = state.result()
    version = summary["model_version"]
    assert VERSION.fullmatch(version) and version.startswith("retrieval-")
    meta = read_checkpoint_meta(checkpoint_path(checkpoints, "retrieval"))
    assert meta["model_version"] == version and meta["variant"] == "retrieval" and meta["saved_at"]

    rows = metric_rows(warehouse, version)
    by_step: dict[int, dict[str, float]] = {}
    for step, metric, value in rows:
        by_step.setdefault(step, {})[metric] = value
    assert sorted(by_step) == [10, 20]  # log_every = 10
    assert set(by_step[10]) >= TRAIN_METRICS and all(k.startswith("train_") for k in set(by_step[10]) - TRAIN_METRICS)
    validation = {k for k in by_step[20] if k.startswith("val_")}
    assert validation == {"val_recall@100", "val_recall@20", "val_mrr@20", "val_ndcg@20"}
    assert by_step[20]["val_recall@100"] == summary["best"]["val_recall@100"]
    assert by_step[10]["learning_rate"] > 0 and by_step[10]["examples_per_s"] > 0
    [(model, model_version, variant)] = query(warehouse, "SELECT DISTINCT model, model_version, variant "
                                                         "FROM training_metrics")
    assert (model, model_version, variant) == ("retrieval", version, "retrieval")
    assert_no_duplicates(warehouse)

    png = Path(summary["curves_png"])
    assert png == checkpoint_path(checkpoints, "retrieval") / "curves.png"
    assert is_png(png) and png.read_bytes()[:8] == PNG_SIGNATURE and png.stat().st_size > 10_000

    for h in logging.getLogger("prefect.task_runs").handlers:
        if isinstance(h, APILogHandler):
            h.flush()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))
        artifacts = client.read_artifacts()
    messages = [log.message for log in logs]
    assert any(m.startswith("retrieval step 10: ") and all(f" {k}=" in m for k in TRAIN_METRICS)
               for m in messages), messages
    assert any(m.startswith("retrieval step 20: val_recall@100=") for m in messages), messages
    training = [a for a in artifacts if a.key == "train-retrieval" and version in str(a.data)]
    assert training and str(png) in str(training[0].data)


def test_a_resumed_run_keeps_its_version_and_writes_each_step_once(warehouse, tmp_path):
    first = train_retrieval_model(warehouse, tmp_path, profile="tiny", stop_after=20, progress=False,
                                  writer=WarehouseMetricWriter(warehouse, "retrieval"))
    version = first["model_version"]
    assert sorted({s for s, _, _ in metric_rows(warehouse, version)}) == [10, 20]
    # A killed run may have flushed steps after its last checkpoint: the resume replaces them.
    replace_rows(warehouse, version, "retrieval", [{"step": 30, "metric": "train_loss", "value": 99.0}],
                 after_step=20)
    second = train_retrieval_model(warehouse, tmp_path, profile="tiny", progress=False,
                                   writer=WarehouseMetricWriter(warehouse, "retrieval"))
    assert (second["resumed_from"], second["steps"], second["model_version"]) == (20, 40, version)
    rows = metric_rows(warehouse, version)
    assert sorted({s for s, _, _ in rows}) == [10, 20, 30, 40]
    assert 99.0 not in {v for s, m, v in rows if (s, m) == (30, "train_loss")}
    assert {m for s, m, _ in rows if s == 40} >= TRAIN_METRICS | {"val_recall@100"}
    assert_no_duplicates(warehouse)
    # Re-running the finished run trains nothing and adds nothing.
    before = metric_rows(warehouse, version)
    again = train_retrieval_model(warehouse, tmp_path, profile="tiny", progress=False,
                                  writer=WarehouseMetricWriter(warehouse, "retrieval"))
    assert again["model_version"] == version and metric_rows(warehouse, version) == before
    assert [r["step"] for r in read_run(warehouse, version) if r["metric"] == "train_loss"] == [10, 20, 30, 40]


def test_two_trainings_get_two_versions(tiny_warehouse, tmp_path):
    """Same data, same settings, started seconds apart: each run is named apart."""
    a = train_retrieval_model(tiny_warehouse.warehouse_dir, tmp_path / "a", profile="tiny", steps=10, progress=False)
    b = train_retrieval_model(tiny_warehouse.warehouse_dir, tmp_path / "b", profile="tiny", steps=10, progress=False)
    assert VERSION.fullmatch(a["model_version"]) and VERSION.fullmatch(b["model_version"])
    assert a["model_version"] != b["model_version"]
    for run, root in ((a, tmp_path / "a"), (b, tmp_path / "b")):
        assert read_checkpoint_meta(checkpoint_path(root, "retrieval"))["model_version"] == run["model_version"]
        assert read_checkpoint_meta(checkpoint_path(root, "retrieval"), "best")["model_version"] == run["model_version"]


def _versions(checkpoints: Path) -> str:
    return combined_version(read_checkpoint_meta(checkpoint_path(checkpoints, "retrieval"))["model_version"],
                            read_checkpoint_meta(checkpoint_path(checkpoints, "ranking"))["model_version"])


def test_evaluation_and_scoring_name_the_checkpoints_they_used(prefect_harness, tiny_trained: TinyTrained,
                                                                warehouse, tmp_path):
    from flows.evaluate import evaluate
    from recs.publish import connect_with_retry
    from recs.scoring import score_all_customers

    checkpoints = copy_checkpoints(tiny_trained.checkpoint_dir, tmp_path / "checkpoints")
    expected = _versions(checkpoints)
    assert all(VERSION.fullmatch(v) for v in expected.split("+"))
    # A warehouse from before evaluations named their checkpoints: the column is added.
    con = connect_with_retry(warehouse)
    try:
        con.execute("CREATE TABLE eval_metrics (run_id VARCHAR NOT NULL, model VARCHAR NOT NULL, split VARCHAR "
                    "NOT NULL, metric VARCHAR NOT NULL, k INTEGER, value DOUBLE, section VARCHAR, created_at TIMESTAMP)")
        con.execute("INSERT INTO eval_metrics VALUES ('old', 'shipped', 'val', 'recall', 20, 0.1, 'next_event', "
                    "TIMESTAMP '2020-01-01')")
    finally:
        con.close()
    result = evaluate(warehouse_dir=str(warehouse), checkpoint_dir=str(checkpoints), profile="tiny")
    assert result["model_version"] == expected
    assert query(warehouse, "SELECT DISTINCT split FROM eval_metrics WHERE run_id = ? ORDER BY 1",
                 [result["run_id"]]) == [("test",), ("val",)]
    assert query(warehouse, "SELECT DISTINCT model_version FROM eval_metrics WHERE run_id = ?",
                 [result["run_id"]]) == [(expected,)]
    assert query(warehouse, "SELECT model_version FROM eval_metrics WHERE run_id = 'old'") == [(None,)]
    png = Path(result["evaluation_png"])
    assert png == checkpoints / "evaluation.png" and is_png(png)

    scored = score_all_customers(warehouse, checkpoints, top_n=3, progress=False, keep_model=True)
    assert query(warehouse, "SELECT model_version FROM recommendation_runs WHERE run_id = ?",
                 [scored["run_id"]]) == [(expected,)]
    assert query(warehouse, "SELECT DISTINCT model_version FROM recommendations WHERE run_id = ?",
                 [scored["run_id"]]) == [(expected,)]


def test_status_names_each_part_and_flags_what_is_stale(tiny_trained: TinyTrained, warehouse, tmp_path, capsys):
    from recs.cli import main
    from recs.scoring import score_all_customers
    from recs.status import collect_status

    checkpoints = copy_checkpoints(tiny_trained.checkpoint_dir, tmp_path / "checkpoints")
    db = warehouse / "recs.duckdb"

    def status_text() -> str:
        before = db.stat().st_mtime_ns
        assert main(["status", "--warehouse", str(warehouse), "--checkpoints", str(checkpoints)]) == 0
        assert db.stat().st_mtime_ns == before  # read-only
        return capsys.readouterr().out

    text = status_text()
    for part in ("Last ingest:", "quarantined by reason:", "Last build:", "Models:", "Last evaluation: none",
                 "Last scoring run: none", "Stale:"):
        assert part in text, (part, text)
    for model in ("retrieval", "ranking"):
        version = read_checkpoint_meta(checkpoint_path(checkpoints, model))["model_version"]
        assert f"  {model}: {version}, 40 steps" in text
    assert "val_recall@100=" in text and "val_recall@20=" in text
    assert "no scoring since the last training" in text and "trained on other sequence tables" not in text

    scored = score_all_customers(warehouse, checkpoints, top_n=3, progress=False)
    status = collect_status(warehouse, checkpoints)
    run = status["scoring"]
    assert run["run_id"] == scored["run_id"] and run["n_customers"] == scored["n_customers"]
    assert 0 < run["distinct_items"] <= run["catalogue"] and run["coverage"] == run["distinct_items"] / run["catalogue"]
    assert run["share_fallback"] == pytest.approx(scored["share_fallback"])
    text = status_text()
    assert f"Last scoring run: {scored['run_id']}" in text and "coverage" in text and "guard warning:" in text
    assert "no scoring since the last training" not in text

    # New sequence tables: both models were trained on other data.
    rebuild_sequences(warehouse, min_user_events=2, min_item_events=3)
    text = status_text()
    assert "model retrieval was trained on other sequence tables than the current build" in text
    assert "model ranking was trained on other sequence tables than the current build" in text
    # The warehouse is free for a writer afterwards (the status connection was closed).
    from recs.publish import connect_with_retry

    connect_with_retry(warehouse, timeout_s=1).close()


def test_status_of_an_empty_place_says_what_to_run(tmp_path, capsys):
    from recs.cli import main

    assert main(["status", "--warehouse", str(tmp_path / "wh"), "--checkpoints", str(tmp_path / "ck")]) == 0
    text = capsys.readouterr().out
    assert "(missing: run `recs ingest`)" in text and "Last ingest: none" in text and "Models: none" in text
    assert "Stale: nothing" in text
