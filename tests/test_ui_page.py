"""The side-by-side page through Streamlit's AppTest (the real script, no browser): a customer's
two lists with the shared items marked, the numbers beside them, ratings written as feedback."""
from __future__ import annotations

import math
import re
import sys

import pytest
from streamlit.testing.v1 import AppTest

from recs.feedback import read_feedback
from recs.ui.launch import APP
from tests.trained_fixtures import copy_warehouse, tiny_trained, tiny_warehouse  # noqa: F401
from tests.ui_fixtures import SHARED_OUR_RANKS, SHOP, TOP_N, PublishedWarehouse, published_warehouse  # noqa: F401
from tests.warehouse_queries import query

ROW = re.compile(r'class="rx-row( shared)?" data-system="(\w+)" data-item="(\d+)"(?: data-shared-rank="(\d+)")?')


@pytest.fixture()
def page(published_warehouse: PublishedWarehouse, tmp_path, monkeypatch):
    warehouse = copy_warehouse(published_warehouse.warehouse_dir, tmp_path / "warehouse")
    monkeypatch.setattr(sys, "argv", [str(APP), "--warehouse", str(warehouse), "--checkpoints",
                                      str(published_warehouse.checkpoint_dir)])
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at, warehouse


def rows_of(at: AppTest) -> dict[str, list[tuple[int, int | None]]]:
    """{system: [(item_id, shared rank or None)]} in page order, from the rendered list rows."""
    out: dict[str, list] = {"incumbent": [], "ours": []}
    for md in at.markdown:
        for shared, system, item, rank in ROW.findall(md.value):
            assert bool(shared) == bool(rank)
            out[system].append((int(item), int(rank) if rank else None))
    return out


def test_a_customer_shows_both_lists_with_shared_items_marked(page, published_warehouse):
    at, warehouse = page
    customer = published_warehouse.customer_id
    assert at.text_input(key="customer_id").value == str(customer)
    assert at.title[0].value == f"Customer {customer}"
    at.slider(key="top_n").set_value(TOP_N).run()
    rows = rows_of(at)
    ours = [r[0] for r in query(warehouse, "SELECT item_id FROM latest_recommendations WHERE customer_id = ? "
                                           "ORDER BY rank", [customer])]
    shop = [r[0] for r in query(warehouse, "SELECT item_id FROM incumbent_lists WHERE customer_id = ? AND "
                                           "incumbent = ? ORDER BY rank", [customer, SHOP])]
    assert [i for i, _ in rows["ours"]] == ours
    assert [i for i, _ in rows["incumbent"]] == shop
    # Our ranks 1, 3, 5 are shop's 1, 2, 3 (tests/ui_fixtures.py): marked both ways, nothing else.
    assert [(rank, other) for rank, (_, other) in enumerate(rows["ours"], start=1) if other] == [
        (1, 1), (3, 2), (5, 3)]
    assert [(rank, other) for rank, (_, other) in enumerate(rows["incumbent"], start=1) if other] == [
        (1, 1), (2, 3), (3, 5)]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["shared items"] == f"{len(SHARED_OUR_RANKS)} / {TOP_N}"
    assert metrics["overlap"] == f"{len(SHARED_OUR_RANKS) / TOP_N:.2f}"
    page_text = " ".join(md.value for md in at.markdown)
    assert "root categories" in page_text and "novelty" in page_text
    assert "Recent history" in page_text


def test_submitting_list_ratings_and_a_thumb_writes_feedback_rows(page, published_warehouse):
    at, warehouse = page
    customer = str(published_warehouse.customer_id)
    at.feedback(key=f"stars|{customer}|ours").set_value(3).run()  # the 4th star
    assert read_feedback(warehouse) == []  # picking stars alone saves nothing
    at.button(key="submit-ours").click().run()
    assert not at.exception, at.exception
    [row] = read_feedback(warehouse)
    run_id = published_warehouse.run["run_id"]
    assert (row["customer"], row["customer_id"], row["system"], row["kind"], row["item_id"], row["rating"],
            row["run_id"], row["incumbent"]) == (customer, int(customer), "ours", "list", None, 4, run_id, SHOP)
    assert any("Saved 4★ for the ours list" in s.value for s in at.success)

    first_shop_item = rows_of(at)["incumbent"][0][0]
    at.feedback(key=f"thumb|{customer}|incumbent|{first_shop_item}").set_value(0).run()  # thumbs down
    rows = read_feedback(warehouse)
    assert [(r["system"], r["kind"], r["item_id"], r["rating"]) for r in rows] == [
        ("ours", "list", None, 4), ("incumbent", "item", first_shop_item, -1)]
    summary = " ".join(md.value for md in at.markdown if "list rating" in md.value)
    assert "4.0 ★ (1)" in summary and "▼ 1" in summary

    # The next warehouse writer (tonight's scoring publish) folds them into the table.
    from recs.warehouse import connect

    with connect(warehouse):
        pass
    assert query(warehouse, "SELECT system, kind, rating FROM feedback ORDER BY given_at") == [
        ("ours", "list", 4), ("incumbent", "item", -1)]


def test_another_customer_typed_in_the_sidebar(page, published_warehouse):
    at, warehouse = page
    [(other,)] = query(warehouse, "SELECT min(customer_id) FROM incumbent_lists WHERE customer_id <> ?",
                       [published_warehouse.customer_id])
    at.text_input(key="customer_id").set_value(str(other)).run()
    assert at.title[0].value == f"Customer {other}"
    rows = rows_of(at)
    assert rows["ours"] and rows["incumbent"]
    at.text_input(key="customer_id").set_value("999999999").run()
    assert any("not in the warehouse" in e.value for e in at.error)


def test_a_typed_history_is_scored_through_the_serving_path_beside_item_knn(page, published_warehouse):
    from recs.recommend import recommend_for_history
    from recs.scoring import load_scorer

    at, warehouse = page
    popular = [r[0] for r in query(warehouse, "SELECT itemid FROM items ORDER BY n_events DESC, itemid LIMIT 3")]
    steps = [(popular[0], "view"), (popular[1], "view"), (popular[2], "addtocart")]
    at.radio(key="mode").set_value("Typed history").run()
    assert at.text_area(key="history_text").value == f"{popular[0]}, {popular[1]}, {popular[2]}:addtocart"
    assert any("not covered" in md.value for md in at.markdown)  # shop's lists are its own customers'
    assert rows_of(at)["incumbent"] == []
    at.selectbox(key="incumbent").set_value("item_knn").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Typed history of 3 steps"
    rows = rows_of(at)
    k = at.slider(key="top_n").value
    checkpoints = published_warehouse.checkpoint_dir
    expected_ours = recommend_for_history(load_scorer(warehouse, checkpoints, top_n=TOP_N), steps, k)
    expected_knn = recommend_for_history(load_scorer(warehouse, checkpoints, top_n=TOP_N, strategy="item_knn"), steps, k)
    assert [i for i, _ in rows["ours"]] == [r["item_id"] for r in expected_ours]
    assert [i for i, _ in rows["incumbent"]] == [r["item_id"] for r in expected_knn]
    both = {r["item_id"] for r in expected_ours} & {r["item_id"] for r in expected_knn}
    assert {i for i, other in rows["ours"] if other} == both

    at.feedback(key="stars|history:{},{},{}:addtocart|incumbent".format(*popular)).set_value(4).run()
    at.button(key="submit-incumbent").click().run()
    [row] = read_feedback(warehouse)
    assert (row["customer"], row["customer_id"], row["system"], row["rating"], row["incumbent"], row["run_id"]) == (
        "history:{},{},{}:addtocart".format(*popular), None, "incumbent", 5, "item_knn", None)


def test_a_persona_shows_its_history_and_preference(page):
    at, _ = page
    at.radio(key="mode").set_value("Persona").run()
    at.selectbox(key="persona").set_value("brand_loyal").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Persona brand loyal"
    assert rows_of(at)["ours"]
    assert any("share in focus (root category" in md.value for md in at.markdown)


@pytest.mark.parametrize("argv, message", [
    (["--warehouse", "{tmp}/none"], "no warehouse at"),
    (["--port", "70000"], "--port must be between 1 and 65535"),
    (["--incumbent", "nobody"], "no incumbent 'nobody' in the warehouse (loaded: shop)"),
])
def test_recs_ui_bad_input_is_one_line_and_exit_2(published_warehouse, tmp_path, capsys, argv, message):
    from recs.cli import main

    argv = [a.format(tmp=tmp_path) for a in argv]
    if "--warehouse" not in argv:
        argv += ["--warehouse", str(published_warehouse.warehouse_dir)]
    assert main(["ui", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("recs ui: error: ") and message in err[0], err


def test_beyond_accuracy_of_one_list_by_hand():
    from recs.ui.data import beyond_accuracy

    items = [{"item_id": 1, "categoryid": 5, "root_categoryid": 1, "available": True, "n_events": 9},
             {"item_id": 2, "categoryid": 5, "root_categoryid": 1, "available": False, "n_events": 0},
             {"item_id": 3, "categoryid": 7, "root_categoryid": 2, "available": None, "n_events": 3}]
    got = beyond_accuracy(items, seen={2}, totals={"total_events": 100, "catalogue": 10})
    # novelty: mean -log2((n + 1) / (100 + 10)); one same-leaf pair of three (ordered: 2 of 6).
    novelty = (-math.log2(10 / 110) - math.log2(1 / 110) - math.log2(4 / 110)) / 3
    assert got == pytest.approx({"diversity": 2.0, "intra_list_dissimilarity": 1 - 2 / 6, "novelty": novelty,
                                 "repeat_share": 1 / 3, "unavailable_share": 1 / 3})
    assert beyond_accuracy([], set(), {"total_events": 1, "catalogue": 1}) == dict.fromkeys(got)
