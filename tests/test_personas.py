"""Persona probes: the price property end to end, the personas, recommend_for_history on the
nightly path, the preference metrics (hand-checked) and `recs personas` into comparison_metrics.

One session warehouse and tiny models (tests/trained_fixtures.py); writes go to copies.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from recs.cli import main
from recs.generate import generate
from recs.ingest import PRICE_PROPERTY, ingest_dir
from recs.persona_probe import persona_rows
from recs.personas import PERSONAS, Persona, Preference, persona_histories, preference_metrics
from recs.warehouse import connect
from tests.trained_fixtures import (TinyTrained, TinyWarehouse, copy_warehouse, tiny_trained,  # noqa: F401
                                    tiny_warehouse)
from tests.warehouse_queries import query

TOP_N = 5
HEADER = "timestamp,itemid,property,value\n"


def property_frame(data_dir: Path) -> pl.DataFrame:
    return pl.concat([pl.read_csv(data_dir / f"item_properties_part{i}.csv", schema_overrides={"value": pl.String})
                      for i in (1, 2)])


# -- the price property ----------------------------------------------------------------------

def test_generator_writes_one_price_per_item_and_ingest_exposes_the_latest(tiny_warehouse: TinyWarehouse):
    props = property_frame(tiny_warehouse.data_dir)
    prices = props.filter(pl.col("property") == PRICE_PROPERTY)
    catalogue = props["itemid"].unique()
    # Every catalogue item has a price from the first snapshot on, in the `n<number>.000` style.
    assert set(prices["itemid"].unique()) == set(catalogue)
    assert prices["value"].str.contains(r"^n[0-9]+\.000$").all()
    first = prices.group_by("itemid").agg(pl.col("timestamp").min())
    assert first["timestamp"].n_unique() == 1
    # Prices change rarely and span a wide positive range.
    per_item = prices.group_by("itemid").len()["len"]
    assert per_item.mean() < 3 and per_item.max() > 1
    value = prices["value"].str.slice(1).cast(pl.Float64)
    assert value.min() > 0 and value.max() / value.min() > 100
    latest = (prices.sort("timestamp").group_by("itemid").agg(pl.col("value").last())
              .with_columns(pl.col("value").str.slice(1).cast(pl.Float64)))
    expected = dict(zip(latest["itemid"].to_list(), latest["value"].to_list()))
    stored = dict(query(tiny_warehouse.warehouse_dir, "SELECT itemid, price FROM item_prices"))
    assert stored == expected
    # Every item with events has its price queryable.
    assert query(tiny_warehouse.warehouse_dir,
                 "SELECT count(*) FROM items LEFT JOIN item_prices USING (itemid) WHERE price IS NULL")[0][0] == 0


def test_ingest_reads_only_plain_positive_numbers_as_prices(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "events.csv").write_text("timestamp,visitorid,event,itemid,transactionid\n1433221332117,1,view,5,\n")
    (data / "item_properties_part1.csv").write_text(HEADER + "".join([
        f"1000,5,{PRICE_PROPERTY},n120.000\n",
        f"2000,5,{PRICE_PROPERTY},n96.000\n",  # the latest wins
        f"1000,6,{PRICE_PROPERTY},n12.000 n24.000\n",  # not one number
        f"1000,7,{PRICE_PROPERTY},abc\n",
        f"1000,8,{PRICE_PROPERTY},n0.000\n",  # not positive
        f"1000,9,{PRICE_PROPERTY},n7.500\n",
        "1000,9,888,n1.000\n",  # another property
        "1000,5,categoryid,3\n",
    ]))
    with connect(tmp_path / "warehouse") as con:
        report = ingest_dir(con, data)
        prices = con.execute("SELECT itemid, price, min_price, max_price, n_records FROM item_prices ORDER BY 1").fetchall()
        items = con.execute("SELECT itemid, categoryid FROM items").fetchall()
    assert prices == [(5, 96.0, 96.0, 120.0, 2), (9, 7.5, 7.5, 7.5, 1)]
    assert report["n_item_prices"] == 2 and items == [(5, 3)]


def test_generator_stays_deterministic_with_prices(tmp_path: Path):
    generate(tmp_path / "a", scale="tiny", seed=3)
    generate(tmp_path / "b", scale="tiny", seed=3)
    for name in ("item_properties_part1.csv", "item_properties_part2.csv", "events.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


# -- personas --------------------------------------------------------------------------------

def test_personas_are_deterministic_and_their_histories_honour_their_preference(tiny_warehouse: TinyWarehouse):
    wh = tiny_warehouse.warehouse_dir
    personas = persona_histories(wh, seed=0)
    assert tuple(personas) == PERSONAS
    again = persona_histories(wh, seed=0)
    assert all(personas[n].history == again[n].history for n in PERSONAS)
    other = persona_histories(wh, seed=1)
    assert any(personas[n].history != other[n].history for n in PERSONAS)

    vocab = {i for (i,) in query(wh, "SELECT itemid FROM item_index WHERE in_vocab")}
    item = {i: (c, r) for i, c, r in query(wh, "SELECT itemid, categoryid, root_categoryid FROM items")}
    price = dict(query(wh, "SELECT itemid, price FROM item_prices"))
    for p in personas.values():
        items = [i for i, _ in p.history]
        assert len(set(items)) >= 5 and set(items) <= vocab and set(items) <= p.preference.items
        assert {a for _, a in p.history} == {"view", "addtocart"}

    budget = personas["budget_conscious"].preference
    all_prices = sorted(price[i] for i in vocab)
    assert budget.price_high < all_prices[len(all_prices) // 2]  # a low band
    assert all(price[i] <= budget.price_high for i, _ in personas["budget_conscious"].history)
    assert budget.items == {i for i in vocab if price[i] <= budget.price_high}

    brand = personas["brand_loyal"].preference
    assert {item[i][1] for i, _ in personas["brand_loyal"].history} == {brand.category_id}

    niche = personas["niche_enthusiast"].preference
    depth = dict(query(wh, "SELECT categoryid, depth FROM categories"))
    assert depth[niche.category_id] == max(depth[item[i][0]] for i in vocab)  # the deepest level
    assert {item[i][0] for i, _ in personas["niche_enthusiast"].history} == {niche.category_id}

    last = query(wh, "SELECT max(timestamp) FROM events")[0][0]
    recent = query(wh, "SELECT itemid, count(*) FROM events WHERE timestamp >= ? - 7 * 86400000 "
                       "GROUP BY 1 ORDER BY 2 DESC, 1", [last])
    in_vocab = [i for i, _ in recent if i in vocab]
    assert personas["impulse_trending"].preference.items == set(in_vocab[:50])


# -- metrics (hand-checked) ------------------------------------------------------------------

def test_preference_metrics_by_hand():
    focus = Preference("category", "share_in_focus", "category 9", frozenset({1, 2}), category_id=9)
    assert preference_metrics(focus, [1, 3, 2, 4], {}) == {"share_in_focus": 0.5}
    assert preference_metrics(focus, [3, 4], {}) == {"share_in_focus": 0.0}
    band = Preference("price_band", "share_in_band", "10 .. 20", frozenset({1, 2}), price_low=10.0, price_high=20.0)
    prices = {1: 15.0, 2: 20.0, 3: 30.0, 4: 40.0}
    # Outside the band by 0, 0, 10 and 20, relative to its top 20: (0 + 0 + 10 + 20) / 4 / 20.
    assert preference_metrics(band, [1, 3, 2, 4], prices) == {"share_in_band": 0.5, "price_distance": 0.375}
    # Unpriced items (5) are left out of the distance, not counted as in the band.
    assert preference_metrics(band, [3, 5], prices) == {"share_in_band": 0.0, "price_distance": 0.5}


def test_persona_rows_say_who_beats_popularity():
    pref = Preference("category", "share_in_focus", "category 9", frozenset({1, 2, 3}), category_id=9)
    persona = Persona("niche_enthusiast", "deep", [(1, "view"), (2, "view"), (2, "addtocart")], pref)
    lists = {"niche_enthusiast": {"ours": [1, 2, 5, 6], "incumbent": [3, 7, 8, 9], "popularity": [3, 7, 8, 9]}}
    rows = persona_rows({"niche_enthusiast": persona}, lists, {}, "run-1", "item_knn", 4)
    got = {(r["system"], r["metric"]): r["value"] for r in rows}
    assert got == {("ours", "share_in_focus"): 0.5, ("ours", "history_share"): 0.5, ("ours", "beats_popularity"): 1.0,
                   ("incumbent", "share_in_focus"): 0.25, ("incumbent", "history_share"): 0.0,
                   ("incumbent", "beats_popularity"): 0.0,  # a tie is not better
                   ("popularity", "share_in_focus"): 0.25, ("popularity", "history_share"): 0.0}
    assert {(r["run_id"], r["incumbent"], r["segment"], r["k"]) for r in rows} == {
        ("run-1", "item_knn", "persona:niche_enthusiast", 4)}


# -- the serving path ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scored(tiny_trained: TinyTrained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the tiny warehouse with one published run."""
    from recs.scoring import score_all_customers

    warehouse = copy_warehouse(tiny_trained.warehouse_dir, tmp_path_factory.mktemp("personas") / "warehouse")
    score_all_customers(warehouse, tiny_trained.checkpoint_dir, top_n=TOP_N, progress=False)
    return warehouse


def test_recommend_for_history_equals_the_published_list(scored: Path, tiny_trained: TinyTrained):
    from recs.recommend import recommend_for_history
    from recs.scoring import load_scorer

    # The busiest customers whose items never changed category (a given history takes each
    # item's latest category; the build takes it as of the event).
    customers = [c for (c,) in query(scored, """
        SELECT visitorid FROM events e JOIN items i USING (itemid)
        GROUP BY visitorid HAVING bool_and(e.categoryid = i.categoryid) AND count(*) >= 5
        ORDER BY count(*) DESC, visitorid LIMIT 3""")]
    assert customers
    strategy = query(scored, "SELECT strategy FROM recommendation_runs")[0][0]
    scorer = load_scorer(scored, tiny_trained.checkpoint_dir, top_n=TOP_N, strategy=strategy)
    keys = ("rank", "item_id", "score", "p_transaction", "p_addtocart", "p_view", "source")
    for customer in customers:
        history = query(scored, """
            SELECT itemid, event FROM events WHERE visitorid = ?
            ORDER BY timestamp, CASE event WHEN 'view' THEN 0 WHEN 'addtocart' THEN 1 ELSE 2 END, itemid""", [customer])
        published = [dict(zip(keys, row)) for row in query(
            scored, f"SELECT {', '.join(keys)} FROM latest_recommendations WHERE customer_id = ? ORDER BY rank",
            [customer])]
        got = recommend_for_history(scorer, history, TOP_N, customer_id=customer)
        assert got == published
        assert any(r["source"] != "popularity" for r in got)
    # No history: the popularity fallback, as for a customer without usable history.
    fallback = recommend_for_history(scorer, [], TOP_N)
    assert [r["source"] for r in fallback] == ["popularity"] * TOP_N
    assert [r["item_id"] for r in fallback] == scorer.tables.item_ids[scorer.fallback[:TOP_N]].tolist()
    with pytest.raises(ValueError, match="top_n"):
        recommend_for_history(scorer, history, TOP_N + 1)


def test_recs_personas_writes_persona_rows_and_a_rerun_replaces_them(prefect_harness, scored: Path,
                                                                     tiny_trained: TinyTrained, capsys):
    from recs.persona_probe import write_persona_metrics

    run_id = query(scored, "SELECT run_id FROM recommendation_runs")[0][0]
    # A row of `recs compare` (not a persona segment) must survive persona re-runs.
    write_persona_metrics(scored, [], run_id, "item_knn")
    with connect(scored) as con:
        con.execute("INSERT INTO comparison_metrics VALUES (?, 'item_knn', 'all', 'both', 'overlap', 5, 0.4)", [run_id])
    args = ["personas", "--warehouse", str(scored), "--checkpoints", str(tiny_trained.checkpoint_dir),
            "--top-n", str(TOP_N)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in PERSONAS) and "ours > pop" in out
    sql = "SELECT * FROM comparison_metrics WHERE segment LIKE 'persona:%' ORDER BY ALL"
    first = query(scored, sql)
    assert {r[2] for r in first} == {f"persona:{n}" for n in PERSONAS}
    assert {(r[0], r[1], r[5]) for r in first} == {(run_id, "item_knn", TOP_N)}
    assert {r[3] for r in first} == {"ours", "incumbent", "popularity"}
    beats = [r[6] for r in first if r[4] == "beats_popularity"]
    assert len(beats) == 2 * len(PERSONAS) and set(beats) <= {0.0, 1.0}
    shares = [r[6] for r in first if r[4].startswith("share_")]
    assert len(shares) == 3 * len(PERSONAS) and all(0.0 <= s <= 1.0 for s in shares)
    # Popularity's list is the fallback: its trending share is 1 (the fallback is the trending list).
    trending = {r[3]: r[6] for r in first if r[2] == "persona:impulse_trending" and r[4] == "share_trending"}
    assert trending["popularity"] == 1.0

    assert main(args) == 0
    assert query(scored, sql) == first
    assert query(scored, "SELECT value FROM comparison_metrics WHERE segment = 'all'") == [(0.4,)]


def test_recs_personas_rejects_bad_input(scored: Path, tiny_trained: TinyTrained, capsys):
    code = main(["personas", "--warehouse", str(scored), "--checkpoints", str(tiny_trained.checkpoint_dir),
                 "--top-n", "0"])
    assert code == 2 and "--top-n must be >= 1" in capsys.readouterr().err


def test_a_file_incumbent_is_not_covered_by_personas(scored: Path, tiny_trained: TinyTrained):
    from recs.persona_probe import format_personas, probe_personas

    result = probe_personas(scored, tiny_trained.checkpoint_dir, top_n=TOP_N, incumbent="lists/shop_lists.csv")
    assert result["incumbent"] == "shop_lists" and not result["incumbent_covered"]
    assert {r["system"] for r in result["rows"]} == {"ours", "popularity"}
    assert "personas do not cover it" in format_personas(result)
    stored = query(scored, "SELECT DISTINCT system FROM comparison_metrics WHERE incumbent = 'shop_lists' ORDER BY 1")
    assert stored == [("ours",), ("popularity",)]
