"""`recs run` end to end on generated H&M-format data (tiny): transactions only, both models with
their multi-action heads, a list for every customer in customers.csv, the source's ids back in
latest_recommendations, and MAP@12 over the week after the training period beside the
repurchase + popular baseline in eval_metrics."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flows.run import run
from model.evaluation import MAP_K, average_precision, distinct_first
from recs.publish import connect_with_retry
from tests.trained_fixtures import tiny_warehouse  # noqa: F401

TOP_N = 12


def test_average_precision_is_the_competitions_map12():
    truth = np.array([[5, 7, 0], [9, 0, 0], [4, 0, 0]])
    top = np.zeros((3, MAP_K), np.int64)
    top[0, :3] = [7, 1, 5]  # hits at ranks 1 and 3 of 2 bought: (1 + 2/3) / 2
    top[1, 11] = 9  # hit at rank 12 of 1 bought: 1/12
    top[2, :2] = [1, 2]  # no hit
    assert average_precision(top, truth) == pytest.approx([(1 + 2 / 3) / 2, 1 / 12, 0.0])
    assert distinct_first(np.array([[3, 3, 0, 2, 3, 2]])).tolist() == [[3, 2, 0, 0, 0, 0]]


@pytest.fixture(scope="module")
def hm_run(prefect_harness, tmp_path_factory) -> tuple[dict, Path, Path]:
    from recs.generate_hm import generate_hm

    root = tmp_path_factory.mktemp("hm_run")
    data = root / "data"
    generate_hm(data, scale="tiny", seed=0)
    result = run(data_dir=str(data), warehouse_dir=str(root / "warehouse"), checkpoint_dir=str(root / "checkpoints"),
                 profile="tiny", top_n=TOP_N, steps=20)
    return result, data, root / "warehouse"


def _query(warehouse: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = connect_with_retry(warehouse, read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def test_recs_run_on_hm_scores_every_customer_with_the_source_ids(hm_run):
    import polars as pl

    result, data, warehouse = hm_run
    assert result["ingest"]["format"] == "hm" and result["ingest"]["rows_quarantined"] == 0
    assert result["ingest"]["events_by_type"]["view"] == 0
    customers = pl.read_csv(data / "customers.csv", columns=["customer_id"])["customer_id"].to_list()
    listed = dict(_query(warehouse, "SELECT customer_key, count(*) FROM latest_recommendations GROUP BY 1"))
    assert set(listed) == set(customers)  # also those without a transaction (popularity fallback)
    assert set(listed.values()) == {TOP_N} and result["scoring"]["n_customers"] == len(customers)
    # item_key is article_id as written: the leading zero survives the round trip.
    articles = set(pl.read_csv(data / "articles.csv", columns=["article_id"],
                               schema_overrides={"article_id": pl.String})["article_id"])
    keys = _query(warehouse, "SELECT DISTINCT item_key, item_id FROM latest_recommendations")
    assert keys and all(k.startswith("0") and len(k) == 10 and k in articles for k, _ in keys)
    mapped = dict(_query(warehouse, "SELECT itemid, item_key FROM item_keys"))
    assert all(mapped[i] == k for k, i in keys)
    # Existing columns unchanged, the two keys appended.
    columns = [c for (c,) in _query(warehouse, "SELECT column_name FROM information_schema.columns "
                                               "WHERE table_name = 'latest_recommendations' ORDER BY ordinal_position")]
    assert columns[-2:] == ["customer_key", "item_key"] and columns[:4] == ["run_id", "customer_id", "rank", "item_id"]


def test_recs_run_on_hm_writes_map12_beside_the_repurchase_popular_baseline(hm_run):
    result, _, warehouse = hm_run
    rows = _query(warehouse, "SELECT split, model, value FROM eval_metrics WHERE run_id = ? AND section = 'week' "
                             "AND metric = 'map' AND k = 12 ORDER BY 1, 2", [result["evaluation"]["run_id"]])
    by = {(split, model): value for split, model, value in rows}
    assert {m for _, m in by} == {"shipped", "two_tower", "repurchase_popular", "popularity"}
    assert {s for s, _ in by} == {"val", "test"}
    for split in ("val", "test"):
        assert all(0.0 <= by[(split, m)] <= 1.0 for m in ("shipped", "two_tower", "popularity"))
        # The generated customers re-buy: their own purchases first beat popularity alone.
        assert by[(split, "repurchase_popular")] > by[(split, "popularity")] > 0
    # The ranker's heads ran with one action only: transaction AUC is measured, add-to-cart has none.
    aucs = dict(_query(warehouse, "SELECT metric, value FROM eval_metrics WHERE run_id = ? AND section = 'ranking' "
                                  "AND model = 'ranker' AND split = 'test'", [result["evaluation"]["run_id"]]))
    assert 0.0 <= aucs["auc_transaction"] <= 1.0 and np.isnan(aucs["auc_addtocart"])


def test_purchase_only_data_lists_may_repeat_purchases(hm_run):
    """On H&M buying again is the behaviour to predict, so "never re-show bought items" is off by
    default there: some published lists hold items their customer bought (none would with the rule)."""
    _, _, warehouse = hm_run
    [(repeats,)] = _query(warehouse, """
        SELECT count(*) FROM latest_recommendations r
        JOIN (SELECT DISTINCT visitorid, itemid FROM events WHERE event = 'transaction') b
          ON b.visitorid = r.customer_id AND b.itemid = r.item_id""")
    assert repeats > 0


def test_the_bought_rule_defaults_on_except_for_purchase_only_data(hm_run, tiny_warehouse):
    from model.serving import resolve_exclude_bought
    from model.tasks import get_profile, load_tables

    _, _, hm_warehouse = hm_run
    hm = load_tables(hm_warehouse, get_profile("tiny"))
    retail_rocket = load_tables(tiny_warehouse.warehouse_dir, get_profile("tiny"))
    assert resolve_exclude_bought(None, hm) is False and resolve_exclude_bought(None, retail_rocket) is True
    assert resolve_exclude_bought(True, hm) is True and resolve_exclude_bought(False, retail_rocket) is False


def test_sharded_scoring_also_lists_customers_without_events(hm_run):
    """Sharded scoring publishes the in-process run's customers: those customers.csv lists without
    a transaction get the popularity fallback there too."""
    from flows.score_all import score_all

    result, _, warehouse = hm_run
    in_process = set(_query(warehouse, "SELECT DISTINCT customer_id FROM latest_recommendations"))
    summary = score_all(warehouse_dir=str(warehouse), checkpoint_dir=str(warehouse.parent / "checkpoints"),
                        top_n=TOP_N, shards=2, dask_workers=1)
    assert summary["n_customers"] == result["scoring"]["n_customers"]
    assert set(_query(warehouse, "SELECT DISTINCT customer_id FROM latest_recommendations")) == in_process
