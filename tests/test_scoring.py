"""recs/scoring.py and model/serving.py on the tiny warehouse with the session's tiny models:
every customer gets a full, clean top-N; the business rules hold; runs publish and stay."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from flows.evaluate import write_metrics
from model.data import serving_histories
from model.serving import Recommender, ServingConfig
from model.tasks import corpus_mask
from recs.scoring import load_serving_models, score_all_customers
from recs.warehouse import sequences_dir
from tests.trained_fixtures import TinyTrained, copy_warehouse, tiny_trained, tiny_warehouse  # noqa: F401
from tests.warehouse_queries import query

TOP_N = 5


@dataclass(frozen=True)
class ScoringRuns:
    """Two runs on a private copy of the tiny warehouse: rules on, then rules off."""

    warehouse_dir: Path
    ruled: dict  # summary of the run with both rules (exclude unavailable and bought)
    unruled: dict  # the next run, exclude_unavailable=False and exclude_bought=False


@pytest.fixture(scope="module")
def runs(tiny_trained: TinyTrained, tmp_path_factory: pytest.TempPathFactory) -> ScoringRuns:
    warehouse = copy_warehouse(tiny_trained.warehouse_dir, tmp_path_factory.mktemp("scoring") / "warehouse")
    ruled = score_all_customers(warehouse, tiny_trained.checkpoint_dir, top_n=TOP_N, keep_runs=3, progress=False)
    unruled = score_all_customers(warehouse, tiny_trained.checkpoint_dir, top_n=TOP_N, keep_runs=3, progress=False,
                                  exclude_unavailable=False, exclude_bought=False)
    return ScoringRuns(warehouse, ruled, unruled)


def customers(warehouse: Path) -> dict[int, bool]:
    """visitorid -> has usable history (a non-empty serving history), for every sequences/customers row."""
    serving = pq.read_table(sequences_dir(warehouse) / "serving", columns=["visitorid", "history_item"])
    has_history = dict(zip(serving.column("visitorid").to_pylist(),
                           pc.greater(pc.list_value_length(serving.column("history_item")), 0).to_pylist()))
    visitors = pq.read_table(sequences_dir(warehouse) / "customers", columns=["visitorid"]).column("visitorid")
    assert set(visitors.to_pylist()) == set(has_history)
    return has_history


def test_every_customer_gets_exactly_top_n_distinct_ranked_items(runs: ScoringRuns):
    expected = customers(runs.warehouse_dir)
    lists = query(runs.warehouse_dir, """
        SELECT customer_id, list(rank ORDER BY rank), count(DISTINCT item_id)
        FROM recommendations WHERE run_id = ? GROUP BY customer_id""", [runs.ruled["run_id"]])
    assert {c for c, _, _ in lists} == set(expected)
    assert all(ranks == list(range(1, TOP_N + 1)) for _, ranks, _ in lists)
    assert all(distinct == TOP_N for _, _, distinct in lists)
    assert runs.ruled["n_customers"] == len(expected) and runs.ruled["n_rows"] == len(expected) * TOP_N
    # Ids are the original visitorid / itemid of the warehouse.
    [(unknown_customers, unknown_items)] = query(runs.warehouse_dir, """
        SELECT count(*) FILTER (WHERE customer_id NOT IN (SELECT visitorid FROM events)),
               count(*) FILTER (WHERE item_id NOT IN (SELECT itemid FROM items))
        FROM recommendations WHERE run_id = ?""", [runs.ruled["run_id"]])
    assert (unknown_customers, unknown_items) == (0, 0)
    # An item offered because the customer saw it recently maps back to one of their own events.
    [(recent, unseen)] = query(runs.warehouse_dir, """
        SELECT count(*), count(*) FILTER (WHERE NOT EXISTS (
                   SELECT 1 FROM events e WHERE e.visitorid = r.customer_id AND e.itemid = r.item_id))
        FROM recommendations r WHERE run_id = ? AND 'recent' IN string_split(source, '+')""",
                               [runs.ruled["run_id"]])
    assert recent > 0 and unseen == 0


def test_customers_without_history_get_popularity_with_null_probabilities(runs: ScoringRuns):
    has_history = customers(runs.warehouse_dir)
    rows = query(runs.warehouse_dir, """
        SELECT customer_id, source, score, p_transaction, p_addtocart, p_view
        FROM recommendations WHERE run_id = ?""", [runs.ruled["run_id"]])
    cold = [r for r in rows if not has_history[r[0]]]
    warm = [r for r in rows if has_history[r[0]]]
    assert cold and warm  # the tiny data has both kinds
    assert {r[1] for r in cold} == {"popularity"}
    assert all(r[2:] == (None, None, None, None) for r in cold)
    # Cold customers all get the same ranked fallback list.
    cold_lists = query(runs.warehouse_dir, """
        SELECT DISTINCT list(item_id ORDER BY rank) FROM recommendations
        WHERE run_id = ? AND customer_id IN (SELECT unnest(?)) GROUP BY customer_id""",
                       [runs.ruled["run_id"], [c for c, h in has_history.items() if not h]])
    assert len(cold_lists) == 1
    modelled = [r for r in warm if r[1] != "popularity"]
    sources = {"recent", "cooccurrence", "retrieval", "similar_sessions"}
    assert modelled and all(set(r[1].split("+")) <= sources for r in modelled)
    assert all(r[2] is not None and all(0.0 < p < 1.0 for p in r[3:]) for r in modelled)
    share = sum(not h for h in has_history.values()) / len(has_history)
    assert runs.ruled["share_fallback"] == pytest.approx(share)


def _unavailable_hits(warehouse: Path, run_id: str) -> int:
    [(n,)] = query(warehouse, """
        SELECT count(*) FROM recommendations r JOIN items i ON i.itemid = r.item_id
        WHERE r.run_id = ? AND i.available = 0""", [run_id])
    return n


def _bought_hits(warehouse: Path, run_id: str) -> int:
    [(n,)] = query(warehouse, """
        SELECT count(*) FROM recommendations r
        WHERE r.run_id = ? AND EXISTS (SELECT 1 FROM events e WHERE e.event = 'transaction'
                                       AND e.visitorid = r.customer_id AND e.itemid = r.item_id)""", [run_id])
    return n


def test_rules_exclude_unavailable_and_bought_items(runs: ScoringRuns):
    [(n_unavailable,)] = query(runs.warehouse_dir, "SELECT count(*) FROM item_index WHERE available = 0")
    assert n_unavailable > 0  # the generated data makes items unavailable week to week
    assert _unavailable_hits(runs.warehouse_dir, runs.ruled["run_id"]) == 0
    assert _bought_hits(runs.warehouse_dir, runs.ruled["run_id"]) == 0
    # Without the rules both kinds do come up, so the rules above were doing the work.
    assert _unavailable_hits(runs.warehouse_dir, runs.unruled["run_id"]) > 0
    assert _bought_hits(runs.warehouse_dir, runs.unruled["run_id"]) > 0


def test_second_run_becomes_latest_and_first_is_kept(runs: ScoringRuns):
    first, second = runs.ruled["run_id"], runs.unruled["run_id"]
    assert query(runs.warehouse_dir, "SELECT DISTINCT run_id FROM latest_recommendations") == [(second,)]
    counts = dict(query(runs.warehouse_dir, "SELECT run_id, count(*) FROM recommendations GROUP BY 1"))
    assert counts == {first: runs.ruled["n_rows"], second: runs.unruled["n_rows"]}
    assert runs.unruled["n_rows"] == runs.ruled["n_rows"]


def test_recommendation_runs_row_describes_the_run(runs: ScoringRuns):
    summary = runs.ruled
    [row] = query(runs.warehouse_dir, """
        SELECT n_customers, n_rows, share_fallback, duration_s, top_n, model_version
        FROM recommendation_runs WHERE run_id = ?""", [summary["run_id"]])
    n_customers, n_rows, share_fallback, duration_s, top_n, model_version = row
    assert (n_customers, n_rows, top_n) == (len(customers(runs.warehouse_dir)), n_customers * TOP_N, TOP_N)
    assert share_fallback == pytest.approx(summary["share_fallback"]) and 0.0 < share_fallback < 1.0
    assert duration_s == pytest.approx(summary["duration_s"]) and duration_s > 0.0
    assert model_version.startswith("retrieval-") and "+ranking-" in model_version


def test_a_candidate_score_does_not_depend_on_the_other_candidates(tiny_trained: TinyTrained):
    """Candidate isolation through serving's ranking function: removing half of a customer's
    candidates leaves every other candidate's purchase / cart probabilities unchanged (p_view
    is a softmax over the list, normalised by design, so only its ratios are kept)."""
    import jax.numpy as jnp

    from model.data import SPLITS
    from model.ranking_task import fit_cooccurrence, fit_session_index
    from model.tasks import load_tables

    profile, retrieval_params, ranking_params, _ = load_serving_models(tiny_trained.checkpoint_dir)
    tables = load_tables(tiny_trained.warehouse_dir, profile, refit=True)
    chunk = next(serving_histories(tables))
    rows = np.flatnonzero((chunk.history_item_idx > 0).sum(axis=1) > 2)[:8]
    assert len(rows) == 8
    history = type(chunk.history)(*(x[rows] for x in chunk.history))
    corpus = corpus_mask(tables)
    recommender = Recommender(profile, retrieval_params, ranking_params, tables=tables,
                              cooc=fit_cooccurrence(tables, SPLITS), corpus=corpus, available=np.ones_like(corpus),
                              config=ServingConfig(exclude_unavailable=False, exclude_bought=False, batch_size=8),
                              sessions=fit_session_index(tables, SPLITS))
    h_idx = chunk.history_item_idx[rows]
    cs = recommender.generator.generate(h_idx, history.action, recommender.retriever(history))
    valid = cs.item_idx > 0
    assert valid.sum(axis=1).min() >= 10

    def probs(mask):
        _, p = recommender._rank(recommender.ranking_params, recommender.token_table, history,
                                 jnp.asarray(cs.item_idx), jnp.asarray(cs.features), jnp.asarray(mask))
        return np.asarray(p)

    every = probs(valid)
    half = valid & (np.arange(cs.item_idx.shape[1]) % 2 == 0)[None, :]
    fewer = probs(half)
    np.testing.assert_allclose(fewer[half][:, :2], every[half][:, :2], atol=1e-5, rtol=0)
    ratio = lambda p: p[..., 2] / p[..., 2][:, :1]  # noqa: E731 - p_view relative to slot 0
    np.testing.assert_allclose(ratio(fewer)[half], ratio(every)[half], rtol=1e-4)
    assert np.abs(fewer[half][:, 2] - every[half][:, 2]).max() > 1e-4  # the softmax did renormalise


# --- the publishing guard --------------------------------------------------------------------

def _validation_rows(shipped: tuple[float, float], item_knn: tuple[float, float]) -> list[dict]:
    """eval_metrics rows of a validation evaluation: shipped and item-kNN at k=20 (+ a k=10 decoy)."""
    rows = []
    for model, (recall, mrr) in (("shipped", shipped), ("item_knn", item_knn), ("popularity", (0.01, 0.005))):
        rows += [{"model": model, "split": "val", "section": "next_event", "metric": "recall", "k": 20,
                  "value": recall},
                 {"model": model, "split": "val", "section": "next_event", "metric": "mrr", "k": 20, "value": mrr},
                 {"model": model, "split": "val", "section": "next_event", "metric": "recall", "k": 10,
                  "value": 0.99}]
    return rows


@pytest.fixture(scope="module")
def guarded(tiny_trained: TinyTrained, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Runs on a warehouse whose latest validation evaluation says the model loses to item-kNN."""
    warehouse = copy_warehouse(tiny_trained.warehouse_dir, tmp_path_factory.mktemp("guard") / "warehouse")
    write_metrics.fn(str(warehouse), "eval-loses", _validation_rows((0.30, 0.10), (0.50, 0.20)))
    loses = score_all_customers(warehouse, tiny_trained.checkpoint_dir, top_n=TOP_N, progress=False)
    kept = score_all_customers(warehouse, tiny_trained.checkpoint_dir, top_n=TOP_N, progress=False, keep_model=True)
    write_metrics.fn(str(warehouse), "eval-wins", _validation_rows((0.60, 0.30), (0.50, 0.20)))
    wins = score_all_customers(warehouse, tiny_trained.checkpoint_dir, top_n=TOP_N, progress=False)
    return {"warehouse": warehouse, "loses": loses, "kept": kept, "wins": wins}


def _run_row(warehouse: Path, run_id: str) -> dict:
    names = ["strategy", "val_recall20", "val_mrr20", "baseline", "baseline_val_recall20", "baseline_val_mrr20",
             "guard_warning", "model_version"]
    [row] = query(warehouse, f"SELECT {', '.join(names)} FROM recommendation_runs WHERE run_id = ?", [run_id])
    return dict(zip(names, row))


def _sources(warehouse: Path, run_id: str) -> set[str]:
    return {s for (s,) in query(warehouse, "SELECT DISTINCT source FROM recommendations WHERE run_id = ?", [run_id])}


def test_a_model_that_loses_on_validation_is_replaced_by_item_knn_and_says_so(guarded):
    row = _run_row(guarded["warehouse"], guarded["loses"]["run_id"])
    assert row["strategy"] == "item_knn" and row["baseline"] == "item_knn"
    assert (row["val_recall20"], row["val_mrr20"]) == (0.50, 0.20)  # what was published: item-kNN's figures
    assert (row["baseline_val_recall20"], row["baseline_val_mrr20"]) == (0.50, 0.20)
    assert "trails item_knn" in row["guard_warning"] and "--keep-model" in row["guard_warning"]
    assert row["model_version"].startswith("item_knn")
    assert _sources(guarded["warehouse"], guarded["loses"]["run_id"]) <= {"item_knn", "popularity"}
    assert "item_knn" in _sources(guarded["warehouse"], guarded["loses"]["run_id"])


def test_keep_model_publishes_the_model_with_the_warning(guarded):
    row = _run_row(guarded["warehouse"], guarded["kept"]["run_id"])
    assert row["strategy"] == "model" and (row["val_recall20"], row["val_mrr20"]) == (0.30, 0.10)
    assert "published the model anyway" in row["guard_warning"]
    assert "item_knn" not in _sources(guarded["warehouse"], guarded["kept"]["run_id"])


def test_a_model_that_wins_is_published_without_warning(guarded):
    row = _run_row(guarded["warehouse"], guarded["wins"]["run_id"])
    assert row["strategy"] == "model" and row["guard_warning"] is None
    assert (row["val_recall20"], row["baseline"], row["baseline_val_recall20"]) == (0.60, "item_knn", 0.50)
    assert row["model_version"].startswith("retrieval-")


def test_without_a_validation_evaluation_the_run_warns(runs: ScoringRuns):
    row = _run_row(runs.warehouse_dir, runs.ruled["run_id"])
    assert row["strategy"] == "model" and row["val_recall20"] is None
    assert "no validation evaluation" in row["guard_warning"]


def test_guard_decision_compares_recall_first_then_mrr():
    from recs.guard import decide

    tie_worse_mrr = decide({"shipped": (0.5, 0.2), "item_knn": (0.5, 0.3)})
    assert tie_worse_mrr.strategy == "item_knn"
    better_recall = decide({"shipped": (0.51, 0.1), "item_knn": (0.5, 0.3), "s_pop": (0.4, 0.35)})
    assert better_recall.strategy == "model" and better_recall.guard_warning is None
    # Loses to session-kNN but item-kNN (the publishable one) is worse still: keep the model, warn.
    stuck = decide({"shipped": (0.5, 0.2), "item_knn": (0.4, 0.1), "session_knn": (0.6, 0.3)})
    assert stuck.strategy == "model" and stuck.baseline == "session_knn"
    assert "no publishable strategy does better" in stuck.guard_warning
