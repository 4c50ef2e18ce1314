"""`recs recommend`: one customer's history and list, from the published run or computed live.

One session warehouse from `recs generate --scale tiny`: ingested, built, both models trained
for a few steps. The live list is taken BEFORE anything is published, then the warehouse is
scored and the published list must be the same list.
"""
from __future__ import annotations

import csv
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from recs.publish import connect_with_retry
from recs.recommend import HISTORY_EVENTS, format_recommendation, recommend_for_customer
from tests.warehouse_queries import query

TOP_N = 8
# Every candidate-source combination (model.candidates.source_name) and the fallback.
SOURCES = {"+".join(n for bit, n in ((1, "recent"), (2, "cooccurrence"), (4, "retrieval"), (8, "similar_sessions"))
                    if flags & bit) for flags in range(1, 16)} | {"popularity"}
NEW_CUSTOMER = 999_999_999  # not in the generated data
UNKNOWN_ITEM = 999_999_998  # not in any vocabulary: an event on it changes no list


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> SimpleNamespace:
    """Tiny warehouse with sequence tables and both models trained (nothing scored yet)."""
    from model.ranking_task import train_ranking_model
    from model.tasks import train_retrieval_model
    from recs.generate import generate
    from recs.ingest import ingest_dir
    from recs.sequences import build_sequence_tables
    from recs.warehouse import connect

    root = tmp_path_factory.mktemp("recommend")
    data, warehouse, checkpoints = root / "data", root / "warehouse", root / "checkpoints"
    generate(data, scale="tiny", seed=0)
    con = connect(warehouse)
    try:
        ingest_dir(con, data)
        # min_item_events=2: some customers saw only rare items (no usable history: the fallback).
        build_sequence_tables(con, warehouse, min_user_events=2, min_item_events=2)
        # The most active customer: a long history, so the models (not the fallback) decide.
        customer = con.execute("SELECT visitorid FROM events GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1").fetchone()[0]
    finally:
        con.close()
    train_retrieval_model(warehouse, checkpoints, profile="tiny", steps=20, progress=False)
    train_ranking_model(warehouse, checkpoints, profile="tiny", steps=20, progress=False)
    return SimpleNamespace(data=data, warehouse=warehouse, checkpoints=checkpoints, customer=int(customer))


@pytest.fixture(scope="session")
def live(trained) -> dict:
    """The customer's result while no run is published, and the database file's (size, mtime) around it."""
    db = trained.warehouse / "recs.duckdb"
    before = (db.stat().st_size, db.stat().st_mtime_ns)
    result = recommend_for_customer(trained.warehouse, trained.checkpoints, trained.customer, top_n=TOP_N)
    return {"result": result, "db_before": before, "db_after": (db.stat().st_size, db.stat().st_mtime_ns)}


@pytest.fixture(scope="session")
def scored(trained, live) -> dict:
    """Publish a scoring run (after `live` was taken)."""
    from recs.scoring import score_all_customers

    return score_all_customers(trained.warehouse, trained.checkpoints, top_n=TOP_N, progress=False)


def test_live_list_when_nothing_is_published(trained, live):
    res = live["result"]
    recs = res["recommendations"]
    assert res["origin"] == "live" and res["run_id"] is None
    # The two checkpoints' unique training-run versions (their meta), joined by '+'.
    assert re.fullmatch(r"retrieval-\d{8}T\d{6}Z-[0-9a-f]{8}\+ranking-\d{8}T\d{6}Z-[0-9a-f]{8}", res["model_version"])
    assert [r["rank"] for r in recs] == list(range(1, TOP_N + 1))
    assert len({r["item_id"] for r in recs}) == TOP_N
    assert {r["source"] for r in recs} <= SOURCES
    # A model list for a customer with a long history: scored, best first.
    model_rows = [r for r in recs if r["source"] != "popularity"]
    assert model_rows and all(0.0 <= r[p] <= 1.0 for r in model_rows for p in ("p_transaction", "p_addtocart", "p_view"))
    scores = [r["score"] for r in model_rows]
    assert scores == sorted(scores, reverse=True)
    # categoryid is the item's current category in `items`.
    categories = dict(query(trained.warehouse, "SELECT itemid, categoryid FROM items"))
    assert [r["categoryid"] for r in recs] == [categories[r["item_id"]] for r in recs]
    # Bought items are never recommended.
    bought = {i for (i,) in query(trained.warehouse, "SELECT itemid FROM events WHERE visitorid = ? "
                                                     "AND event = 'transaction'", [trained.customer])}
    assert not bought & {r["item_id"] for r in recs}
    # Read-only: the database file was not touched and nothing was published.
    assert live["db_before"] == live["db_after"]
    assert query(trained.warehouse, "SELECT count(*) FROM information_schema.tables "
                                    "WHERE table_name = 'recommendations'") == [(0,)]


def test_published_list_is_the_live_list(trained, live, scored):
    res = recommend_for_customer(trained.warehouse, trained.checkpoints, trained.customer, top_n=TOP_N)
    assert res["origin"] == "published" and res["run_id"] == scored["run_id"]
    assert res["model_version"] == scored["model_version"]
    before = live["result"]["recommendations"]
    after = res["recommendations"]
    assert [(r["rank"], r["item_id"], r["source"], r["categoryid"]) for r in after] == \
        [(r["rank"], r["item_id"], r["source"], r["categoryid"]) for r in before]
    for a, b in zip(after, before):
        for key in ("score", "p_transaction", "p_addtocart", "p_view"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6)
    # top_n below the run's: the head of the same list.
    head = recommend_for_customer(trained.warehouse, trained.checkpoints, trained.customer, top_n=3)
    assert [r["item_id"] for r in head["recommendations"]] == [r["item_id"] for r in after[:3]]


def test_history_is_the_latest_events_newest_first(trained, live):
    with open(trained.data / "events.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["visitorid"]) == trained.customer]
    rows.sort(key=lambda r: (-int(r["timestamp"]), -int(r["itemid"])))
    res = live["result"]
    assert res["n_events"] == len(rows) > HISTORY_EVENTS
    history = res["history"]
    assert [(h["itemid"], h["event"]) for h in history] == \
        [(int(r["itemid"]), r["event"]) for r in rows[:HISTORY_EVENTS]]
    epoch = datetime(1970, 1, 1)
    assert [h["time"] for h in history] == [epoch + timedelta(milliseconds=int(r["timestamp"]))
                                            for r in rows[:HISTORY_EVENTS]]
    assert res["last_event_time"] == history[0]["time"]
    assert res["first_event_time"] == epoch + timedelta(milliseconds=int(rows[-1]["timestamp"]))
    known = dict(query(trained.warehouse, "SELECT categoryid, root_categoryid FROM categories"))
    assert all(h["root"] == known[h["categoryid"]] for h in history if h["categoryid"])


def test_customer_missing_from_the_run_gets_the_live_fallback(trained, scored, tmp_path):
    """A customer whose first event came after the run (and the build): popularity fallback,
    the same list every customer without usable history got in the run."""
    warehouse = tmp_path / "warehouse"
    shutil.copytree(trained.warehouse, warehouse, symlinks=True)
    con = connect_with_retry(warehouse)
    try:
        # Earliest timestamp: the trending window (the log's last days) is unchanged.
        con.execute("INSERT INTO events SELECT min(timestamp), ?, 'view', ?, NULL, min(event_time), 0, 1, 0 "
                    "FROM events", [NEW_CUSTOMER, UNKNOWN_ITEM])
    finally:
        con.close()
    res = recommend_for_customer(warehouse, trained.checkpoints, NEW_CUSTOMER, top_n=TOP_N)
    assert res["origin"] == "live" and res["n_events"] == 1
    assert [(h["itemid"], h["event"]) for h in res["history"]] == [(UNKNOWN_ITEM, "view")]
    recs = res["recommendations"]
    assert [r["source"] for r in recs] == ["popularity"] * TOP_N
    assert all(r["score"] is None and r["p_transaction"] is None for r in recs)
    fallback_lists = query(trained.warehouse, """
        SELECT DISTINCT list(item_id ORDER BY rank) FROM latest_recommendations
        GROUP BY customer_id HAVING bool_and(source = 'popularity')""")
    assert len(fallback_lists) == 1  # everyone without history shares one list
    assert [r["item_id"] for r in recs] == fallback_lists[0][0]
    text = format_recommendation(res)
    assert "computed live" in text
    assert all(line.split()[3] == "-" for line in text.splitlines()[-TOP_N - 2:-2])


def test_unknown_customer_and_bad_top_n(trained):
    with pytest.raises(ValueError, match=r"^customer 123456789 not found in the warehouse$"):
        recommend_for_customer(trained.warehouse, trained.checkpoints, 123456789)
    with pytest.raises(ValueError, match="top_n must be >= 1"):
        recommend_for_customer(trained.warehouse, trained.checkpoints, trained.customer, top_n=0)
    with pytest.raises(FileNotFoundError, match="no warehouse at"):
        recommend_for_customer(trained.warehouse.parent / "nowhere", trained.checkpoints, trained.customer)


def test_format_recommendation_block(trained, scored):
    res = recommend_for_customer(trained.warehouse, trained.checkpoints, trained.customer, top_n=TOP_N)
    lines = format_recommendation(res).splitlines()
    assert lines[0] == (f"Customer {trained.customer}: {res['n_events']} events, "
                        f"{res['first_event_time']:%Y-%m-%d %H:%M} .. {res['last_event_time']:%Y-%m-%d %H:%M}")
    start = lines.index(f"Recent history (newest first, {HISTORY_EVENTS} of {res['n_events']} events):")
    history_lines = lines[start + 2:start + 2 + HISTORY_EVENTS]
    assert [(int(x.split()[3]), x.split()[2]) for x in history_lines] == \
        [(h["itemid"], h["event"]) for h in res["history"]]
    header = next(i for i, x in enumerate(lines) if x.startswith(f"Top {TOP_N} recommendations (published run "))
    assert scored["run_id"] in lines[header]
    rec_lines = lines[header + 2:header + 2 + TOP_N]
    assert [(int(x.split()[0]), int(x.split()[1])) for x in rec_lines] == \
        [(r["rank"], r["item_id"]) for r in res["recommendations"]]
    assert [x.split()[-1] for x in rec_lines] == [r["source"] for r in res["recommendations"]]
