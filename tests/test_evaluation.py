"""model/evaluation.py and flows/evaluate.py on the default (`small`) generated data: the next-event
protocol through the serving path, the shipped system clearly ahead of popularity on the test
split, validation and test both reported, and the metrics land in `eval_metrics`."""
from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from flows.evaluate import write_metrics
from model.config import PROFILES, Profile
from model.evaluation import evaluate_all, metrics_markdown
from model.ranking_task import train_ranking_model
from model.tasks import train_retrieval_model
from recs.publish import connect_with_retry
from tests.trained_fixtures import build_warehouse

MODELS = {"shipped", "ranker", "two_tower", "popularity", "s_pop", "item_knn", "session_knn"}
SECTIONS = ("next_event", "next_event_last", "window", "ranking")
MARGIN = 1.5  # "clearly beats": at least 1.5x popularity's Recall@20

# Small settings that train in about a minute here: the tiny architecture with 32-d embeddings
# and fewer item-hash collisions, 100 retrieval steps and 60 ranking steps at batch 32.
_TINY = PROFILES["tiny"]
EVAL_PROFILE = Profile(
    model=dataclasses.replace(_TINY.model, emb_dim=32, retrieval_dim=32, item_hash_rows=10_000),
    retrieval=dataclasses.replace(_TINY.retrieval, steps=100, eval_every=50, learning_rate=1e-2, batch_size=32),
    ranking=dataclasses.replace(_TINY.ranking, steps=60, eval_every=30, learning_rate=5e-3, batch_size=32),
)


@dataclass(frozen=True)
class SmallEvaluation:
    warehouse_dir: Path
    rows: list[dict]


@pytest.fixture(scope="module")
def small_evaluation(tmp_path_factory: pytest.TempPathFactory) -> SmallEvaluation:
    """`recs generate --scale small` (the default data), default build filters, both models trained
    (the ranker stacked on retrieval, as `recs run` does) and evaluated on validation and test."""
    from recs.generate import generate

    root = tmp_path_factory.mktemp("small")
    generate(root / "data", scale="small", seed=0)
    build_warehouse(root / "data", root / "warehouse", min_user_events=10, min_item_events=5)
    checkpoints = root / "checkpoints"
    train_retrieval_model(root / "warehouse", checkpoints, profile=EVAL_PROFILE, progress=False)
    train_ranking_model(root / "warehouse", checkpoints, profile=EVAL_PROFILE, progress=False)
    return SmallEvaluation(root / "warehouse", evaluate_all(root / "warehouse", checkpoints, profile=EVAL_PROFILE))


def metric(rows: list[dict], section: str, model: str, name: str, k: int | None, split: str = "test") -> float:
    [value] = [r["value"] for r in rows
               if (r["split"], r["section"], r["model"], r["metric"], r["k"]) == (split, section, model, name, k)]
    return value


@pytest.mark.slow
def test_shipped_lists_clearly_beat_popularity_on_the_next_event_protocol(small_evaluation: SmallEvaluation):
    rows = small_evaluation.rows
    assert {r["split"] for r in rows} == {"val", "test"} and {r["model"] for r in rows} == MODELS
    shipped = metric(rows, "next_event", "shipped", "recall", 20)
    popularity = metric(rows, "next_event", "popularity", "recall", 20)
    item_knn = metric(rows, "next_event", "item_knn", "recall", 20)
    margins = f"shipped {shipped:.4f}, popularity {popularity:.4f}, item-kNN {item_knn:.4f}"
    print(f"next-event Recall@20 on test: {margins}")  # shown with -rP
    assert popularity > 0.02, margins  # popularity is a real baseline here
    assert shipped >= MARGIN * popularity, margins


@pytest.mark.slow
def test_every_section_reports_every_metric_as_a_rate(small_evaluation: SmallEvaluation):
    rows = small_evaluation.rows
    for r in rows:
        assert math.isnan(r["value"]) or 0.0 <= r["value"] <= 1.0, r
    for split in ("val", "test"):
        sections = {r["section"] for r in rows if r["split"] == split}
        assert sections == set(SECTIONS), (split, sections)
        for section in ("next_event", "next_event_last"):
            models = {r["model"] for r in rows if (r["split"], r["section"]) == (split, section)}
            assert models == MODELS
            for model in models:
                for name in ("recall", "ndcg"):
                    values = [metric(rows, section, model, name, k, split) for k in (10, 20, 50)]
                    assert values == sorted(values), (split, section, model, name)
                assert (metric(rows, section, model, "mrr", 20, split)
                        <= metric(rows, section, model, "recall", 20, split))
    aucs = {r["metric"] for r in rows if r["section"] == "ranking" and r["model"] == "ranker"}
    assert {"auc_view", "auc_transaction", "auc_addtocart", "mean_auc"} <= aucs


@pytest.mark.slow
def test_write_metrics_fills_eval_metrics_and_replaces_a_rerun(small_evaluation: SmallEvaluation):
    warehouse, rows = small_evaluation.warehouse_dir, small_evaluation.rows
    assert write_metrics.fn(str(warehouse), "eval-1", rows) == len(rows)
    assert write_metrics.fn(str(warehouse), "eval-1", rows) == len(rows)  # same run id: replaced
    write_metrics.fn(str(warehouse), "eval-2", rows[:3])
    con = connect_with_retry(warehouse, read_only=True)
    try:
        columns = [c for (c,) in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'eval_metrics' "
            "ORDER BY ordinal_position").fetchall()]
        stored = con.execute("SELECT model, split, metric, k, value, section FROM eval_metrics "
                             "WHERE run_id = 'eval-1'").fetchall()
        per_run = dict(con.execute("SELECT run_id, count(*) FROM eval_metrics GROUP BY 1").fetchall())
    finally:
        con.close()
    assert columns[:6] == ["run_id", "model", "split", "metric", "k", "value"]
    assert per_run == {"eval-1": len(rows), "eval-2": 3}

    def key(model, split, name, k, value, section):
        return (model, split, name, k, "nan" if math.isnan(value) else round(value, 9), section)

    assert Counter(key(*row) for row in stored) == Counter(
        key(r["model"], r["split"], r["metric"], r["k"], r["value"], r["section"]) for r in rows)


@pytest.mark.slow
def test_metrics_markdown_has_a_column_per_model(small_evaluation: SmallEvaluation):
    def cells_of(line: str) -> list[str]:
        return [cell.strip() for cell in line.split("|")[1:-1]]

    lines = metrics_markdown(small_evaluation.rows).splitlines()
    header = cells_of(lines[0])
    assert header[:2] == ["section", "metric"] and set(header[2:]) == MODELS
    assert lines[1] == "|---|---|" + "---|" * len(MODELS)
    recall_20 = [line for line in lines if line.startswith("| next_event | recall@20 |")]
    assert len(recall_20) == 1
    cells = dict(zip(header, cells_of(recall_20[0])))
    assert float(cells["shipped"]) == pytest.approx(
        metric(small_evaluation.rows, "next_event", "shipped", "recall", 20), abs=1e-4)
    [window] = [line for line in lines if line.startswith("| window | recall@20 |")]
    assert dict(zip(header, cells_of(window)))["ranker"] == ""  # no window metric: empty cell, not a zero
