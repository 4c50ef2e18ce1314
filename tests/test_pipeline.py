"""The `recs_run` flow end to end (flows/run.py) on a directory holding only events.csv."""
from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq

from flows.run import run
from recs.publish import connect_with_retry
from recs.warehouse import sequences_dir
from tests.trained_fixtures import TinyWarehouse, tiny_warehouse  # noqa: F401

TOP_N = 3


def test_recs_run_on_events_only_scores_every_customer(prefect_harness, tiny_warehouse: TinyWarehouse,
                                                       tmp_path: Path, capsys):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(tiny_warehouse.data_dir / "events.csv", data_dir / "events.csv")  # no properties, no tree
    warehouse, checkpoints = tmp_path / "warehouse", tmp_path / "checkpoints"

    result = run(data_dir=str(data_dir), warehouse_dir=str(warehouse), checkpoint_dir=str(checkpoints),
                 profile="tiny", min_user_events=2, top_n=TOP_N)

    assert result["ingest"]["files"] == {"events": "events.csv", "item_properties": [], "category_tree": None}
    assert result["ingest"]["rows_loaded"] == 4_500
    assert result["retrieval"]["steps"] == result["ranking"]["steps"] == 40
    # Retrieval is refit on all data; the ranker is stacked on the validation period (no refit).
    assert {m: s["refit"] for m, s in result["refit"].items()} == {"retrieval": True}
    for model in ("retrieval", "ranking", "retrieval_serving"):
        assert (checkpoints / model / "latest").is_dir(), model
    assert not (checkpoints / "ranking_serving").exists()
    # The publishing guard read the run's own validation evaluation and recorded its decision.
    scoring = result["scoring"]
    assert scoring["strategy"] in ("model", "item_knn") and scoring["val_recall20"] is not None
    assert scoring["baseline"] in ("popularity", "s_pop", "item_knn", "session_knn")
    if scoring["strategy"] == "model":
        assert scoring["model_version"].startswith("retrieval_serving-")
    else:
        assert "trails" in scoring["guard_warning"]

    printed = capsys.readouterr().out
    assert "== recs run: done ==" in printed and result["report"] in printed
    header = next(line for line in printed.splitlines() if line.startswith("| section | metric |"))
    assert set(header.strip("| ").split(" | ")[2:]) == {"shipped", "ranker", "two_tower", "popularity", "s_pop",
                                                        "item_knn", "session_knn"}
    assert f"{result['scoring']['n_customers']:,} customers" in printed
    # It ends with the comparison against the built-in item-kNN incumbent (flows/compare.py).
    assert "Comparison with the built-in incumbent item_knn" in printed
    assert result["comparison"]["markdown"] in printed and "| overlap | 10 |" in printed

    visitors = set(pq.read_table(sequences_dir(warehouse) / "customers", columns=["visitorid"])
                   .column("visitorid").to_pylist())
    con = connect_with_retry(warehouse, read_only=True)
    try:
        per_customer = con.execute("""
            SELECT customer_id, count(*), count(DISTINCT item_id), min(rank), max(rank)
            FROM latest_recommendations GROUP BY customer_id""").fetchall()
        [(n_visitors,)] = con.execute("SELECT count(DISTINCT visitorid) FROM events").fetchall()
        # The source's ids as written: for Retail Rocket the decimal ids.
        [(bad_keys,)] = con.execute("SELECT count(*) FROM latest_recommendations WHERE customer_key <> "
                                    "customer_id::VARCHAR OR item_key <> item_id::VARCHAR OR item_key IS NULL").fetchall()
        [(n_metrics,)] = con.execute("SELECT count(*) FROM eval_metrics WHERE run_id = ?",
                                     [result["evaluation"]["run_id"]]).fetchall()
        [(n_compared,)] = con.execute("SELECT count(*) FROM comparison_metrics WHERE run_id = ? AND "
                                      "incumbent = 'item_knn' AND segment = 'all'",
                                      [result["scoring"]["run_id"]]).fetchall()
    finally:
        con.close()
    assert {c for c, *_ in per_customer} == visitors and len(visitors) == n_visitors
    assert all(tuple(stats) == (TOP_N, TOP_N, 1, TOP_N) for _, *stats in per_customer)
    assert result["scoring"]["n_customers"] == len(visitors)
    assert n_metrics > 0 and n_compared > 0
    assert bad_keys == 0
