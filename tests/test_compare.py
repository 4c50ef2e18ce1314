"""`recs compare`: incumbent validation, the comparison rows and the flow on the tiny fixtures."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.trained_fixtures import TinyTrained, copy_warehouse, tiny_trained, tiny_warehouse  # noqa: F401
from tests.warehouse_queries import query


@pytest.fixture(scope="module")
def scored(tiny_trained: TinyTrained, tmp_path_factory) -> Path:
    """A private copy of the tiny warehouse with one published run."""
    from recs.scoring import score_all_customers

    warehouse = copy_warehouse(tiny_trained.warehouse_dir, tmp_path_factory.mktemp("compare") / "warehouse")
    score_all_customers(warehouse, tiny_trained.checkpoint_dir, top_n=10, progress=False)
    return warehouse


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _known(warehouse: Path) -> tuple[list[int], list[int]]:
    customers = [r[0] for r in query(warehouse, "SELECT DISTINCT visitorid FROM events ORDER BY 1 LIMIT 3")]
    items = [r[0] for r in query(warehouse, "SELECT itemid FROM items ORDER BY 1 LIMIT 6")]
    return customers, items


def test_incumbent_file_bad_rows_are_counted_by_reason_and_kept_out(scored, tmp_path):
    from recs.incumbent import load_incumbent_file

    (c1, c2, c3), items = _known(scored)
    rows = [
        [c1, 1, items[0], 0.9, "ok"], [c1, 2, items[1], 0.8, ""], [c1, 3, items[2], "", ""],  # 3 good
        [c2, "x", items[0], 1, ""],  # non_numeric_rank
        ["abc", 1, items[0], 1, ""],  # non_numeric_customer_id
        [c2, 1, "", 1, ""],  # missing_value
        [c2, 5, "item-7", 1, ""],  # non_numeric_item_id
        [c2, 0, items[0], 1, ""],  # bad_rank
        [c2, 2, items[0], "high", ""],  # non_numeric_score
        [999_999_999, 1, items[0], 1, ""],  # unknown_customer
        [c2, 3, 888_888_888, 1, ""],  # unknown_item
        [c3, 1, items[3], 1, ""], [c3, 1, items[4], 1, ""],  # duplicate_rank (both)
        [c3, 2, items[5], 1, ""], [c3, 3, items[5], 1, ""],  # duplicate_item (the second)
        [c2, 4, items[1], 1.5, ""],  # good
    ]
    path = _write_csv(tmp_path / "shop lists.csv", ["Customer_ID", "rank", "item_id", "score", "note"], rows)
    report = load_incumbent_file(scored, path, "shop")
    assert report["n_rows"] == len(rows)
    assert report["rejected"] == {"duplicate_rank": 2, "bad_rank": 1, "duplicate_item": 1, "missing_value": 1,
                                  "non_numeric_customer_id": 1, "non_numeric_item_id": 1, "non_numeric_rank": 1,
                                  "non_numeric_score": 1,
                                  "unknown_customer": 1, "unknown_item": 1}
    assert report["n_kept"] == 5 and report["unknown_columns"] == {"note": 1}
    assert report["examples"]["non_numeric_rank"][0]["rank"] == "x"
    stored = query(scored, "SELECT customer_id, rank, item_id, score FROM incumbent_lists WHERE incumbent = 'shop' "
                           "ORDER BY 1, 2")
    assert stored == sorted([(c1, 1, items[0], 0.9), (c1, 2, items[1], 0.8), (c1, 3, items[2], None),
                             (c2, 4, items[1], 1.5), (c3, 2, items[5], 1.0)])
    n_run = query(scored, "SELECT count(DISTINCT customer_id) FROM latest_recommendations")[0][0]
    assert report["customers_covered"] == 3 and report["customers_not_covered"] == n_run - 3
    # Idempotent: loading again replaces the incumbent's rows.
    again = load_incumbent_file(scored, path, "shop")
    assert again["rejected"] == report["rejected"]
    assert query(scored, "SELECT count(*) FROM incumbent_lists WHERE incumbent = 'shop'")[0][0] == 5


def test_incumbent_without_a_required_column_or_usable_row_fails_and_keeps_the_old_rows(scored, tmp_path):
    from recs.incumbent import load_incumbent_file

    (c1, _, _), items = _known(scored)
    good = _write_csv(tmp_path / "good.csv", ["customer_id", "rank", "item_id"], [[c1, 1, items[0]]])
    load_incumbent_file(scored, good, "keep")
    with pytest.raises(ValueError, match="missing column.*item_id"):
        load_incumbent_file(scored, _write_csv(tmp_path / "bad.csv", ["customer_id", "rank"], [[c1, 1]]), "keep")
    with pytest.raises(ValueError, match="no usable incumbent rows.*non_numeric_rank: 1"):
        load_incumbent_file(scored, _write_csv(tmp_path / "bad2.csv", ["customer_id", "rank", "item_id"],
                                               [[c1, "first", items[0]]]), "keep")
    assert query(scored, "SELECT count(*) FROM incumbent_lists WHERE incumbent = 'keep'")[0][0] == 1


@pytest.fixture(scope="module")
def identical(scored, tiny_trained: TinyTrained, prefect_harness, tmp_path_factory):
    """Our own published lists, exported as a parquet directory and compared as an incumbent."""
    import duckdb

    folder = tmp_path_factory.mktemp("ours-as-incumbent") / "ours"
    folder.mkdir()
    rows = query(scored, "SELECT customer_id, rank, item_id, score FROM latest_recommendations")
    con = duckdb.connect()
    con.execute("CREATE TABLE t (customer_id BIGINT, rank INTEGER, item_id BIGINT, score DOUBLE)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
    half = len(rows) // 2
    con.execute(f"COPY (SELECT * FROM t LIMIT {half}) TO '{folder / 'a.parquet'}' (FORMAT parquet)")
    con.execute(f"COPY (SELECT * FROM t OFFSET {half}) TO '{folder / 'b.parquet'}' (FORMAT parquet)")
    con.close()
    from flows.compare import compare

    return compare(incumbent=str(folder), warehouse_dir=str(scored), checkpoint_dir=str(tiny_trained.checkpoint_dir),
                   k="5,10", bootstrap=200)


def _metrics(warehouse: Path, incumbent: str) -> dict:
    return {(s, sy, m, k): (v, lo, hi, n) for s, sy, m, k, v, lo, hi, n in query(
        warehouse, "SELECT segment, system, metric, k, value, ci_low, ci_high, n_customers FROM comparison_metrics "
                   "WHERE incumbent = ?", [incumbent])}


def test_identical_lists_agree_fully_with_zero_differences(identical, scored):
    assert identical["incumbent"] == "ours" and identical["validation"]["rejected"] == {}
    assert identical["validation"]["customers_not_covered"] == 0
    rows = _metrics(scored, "ours")
    for k in (5, 10):
        for metric in ("overlap", "jaccard", "rbo"):
            assert rows[("all", "both", metric, k)][0] == pytest.approx(1.0)
        assert rows[("all", "both", "kendall", k)][0] == pytest.approx(1.0)
        for metric in ("coverage", "diversity", "intra_list_dissimilarity", "novelty", "repeat_share",
                       "unavailable_share"):
            assert rows[("all", "ours", metric, k)][0] == pytest.approx(rows[("all", "incumbent", metric, k)][0])
    assert rows[("all", "incumbent", "covered_share", None)][0] == pytest.approx(1.0)
    assert "| overlap | 5 |" in identical["markdown"]


def test_against_item_knn_values_in_range_and_rows_per_segment(scored, tiny_trained: TinyTrained, prefect_harness):
    from flows.compare import compare

    result = compare(incumbent="item_knn", warehouse_dir=str(scored), checkpoint_dir=str(tiny_trained.checkpoint_dir),
                     k="10", bootstrap=200)
    rows = _metrics(scored, "item_knn")
    segments = {s for s, *_ in rows}
    assert {"all", "history:2-5"} <= segments and any(s.startswith("root:") for s in segments)
    assert not any(s.startswith("persona:") for s in segments)
    n_all = rows[("all", "both", "overlap", 10)][3]
    assert n_all == result["summary"]["customers_both"] > 0
    history = [v[3] for (s, sy, m, k), v in rows.items() if s.startswith("history:") and (sy, m) == ("both", "overlap")]
    roots = [v[3] for (s, sy, m, k), v in rows.items() if s.startswith("root:") and (sy, m) == ("both", "overlap")]
    assert sum(history) == n_all and sum(roots) == n_all  # each customer in exactly one bucket of each family
    for (s, sy, m, k), (v, lo, hi, n) in rows.items():
        if m in ("overlap", "jaccard", "rbo", "coverage", "intra_list_dissimilarity", "repeat_share",
                 "unavailable_share", "recall", "mrr", "hit"):
            assert 0.0 <= v <= 1.0, (s, sy, m, k, v)
        if m in ("spearman", "kendall") or m.endswith("_diff"):
            assert -1.0 <= v <= 1.0
        if m.endswith("_diff") and lo is not None:
            assert lo <= v <= hi
    assert rows[("all", "both", "overlap", 10)][0] < 1  # the model and item-kNN do not agree fully
    assert 1 <= rows[("all", "ours", "diversity", 10)][0] <= 10
    assert rows[("all", "ours", "novelty", 10)][0] > 0
    # Accuracy of both on the test period and the paired difference.
    ours, theirs = rows[("all", "ours", "recall", 10)], rows[("all", "incumbent", "recall", 10)]
    diff = rows[("all", "both", "recall_diff", 10)]
    assert diff[0] == pytest.approx(ours[0] - theirs[0]) and diff[3] == ours[3] == result["summary"]["accuracy"][
        "n_customers"] > 0
    # Re-running replaces the rows and leaves a persona's alone.
    from recs.publish import connect_with_retry

    with connect_with_retry(scored) as con:
        con.execute("INSERT INTO comparison_metrics (run_id, incumbent, segment, system, metric, k, value) "
                    "VALUES (?, 'item_knn', 'persona:niche_enthusiast', 'ours', 'focus_share', 10, 0.5)",
                    [result["run_id"]])
    n_before = query(scored, "SELECT count(*) FROM comparison_metrics WHERE incumbent = 'item_knn'")[0][0]
    compare(incumbent="item_knn", warehouse_dir=str(scored), checkpoint_dir=str(tiny_trained.checkpoint_dir),
            k="10", bootstrap=200)
    assert query(scored, "SELECT count(*) FROM comparison_metrics WHERE incumbent = 'item_knn'")[0][0] == n_before
    assert query(scored, "SELECT count(*) FROM comparison_metrics WHERE segment LIKE 'persona:%'")[0][0] == 1


def test_cli_bad_incumbent_path_is_one_line_exit_2(scored, tiny_trained: TinyTrained, tmp_path, capsys):
    from recs.cli import main

    code = main(["compare", "--incumbent", str(tmp_path / "missing.csv"), "--warehouse", str(scored),
                 "--checkpoints", str(tiny_trained.checkpoint_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no incumbent file" in err[0]
    code = main(["compare", "--incumbent", "item_knn", "--k", "ten", "--warehouse", str(scored),
                 "--checkpoints", str(tiny_trained.checkpoint_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--k" in err[0]
