"""`recs build`: hand-written warehouse events in, exact sequence-table rows out.

Items get item_idx in itemid order and visitors customer_idx in visitorid order on a first
build, so expected ids below follow from the hand-written ids. A pure-Python reference of
the README contract cross-checks every row on a random events table.
"""
from __future__ import annotations

import json
import math
import os
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recs.sequences import SPLITS, TABLES, build_sequence_tables, read_meta, split_path
from recs.warehouse import connect, db_path

VIEW, CART, BUY = "view", "addtocart", "transaction"
RANK = {VIEW: 0, CART: 1, BUY: 2}
BIT = {VIEW: 4, CART: 2, BUY: 1}
LOOSE = dict(min_user_events=1, min_item_events=1)  # no filtering


class Event(NamedTuple):
    ts: int
    visitorid: int
    event: str
    itemid: int
    category: int = 1
    root: int = 1


def insert_events(con: duckdb.DuckDBPyConnection, events: Sequence[Event]) -> None:
    """Append events (contract columns) and rebuild `items` as ingest would (latest state)."""
    con.execute(
        """
        CREATE TABLE IF NOT EXISTS events (
            timestamp BIGINT, visitorid BIGINT, event VARCHAR, itemid BIGINT, transactionid BIGINT,
            event_time TIMESTAMP, categoryid BIGINT, available TINYINT, root_categoryid BIGINT)
        """
    )
    columns = {name: [getattr(e, name) for e in events] for name in Event._fields}
    con.execute(
        """
        INSERT INTO events
        SELECT ts, visitorid, event, itemid, CASE WHEN event = 'transaction' THEN 7 END,
               make_timestamp(ts * 1000), category, 1, root
        FROM (SELECT unnest($ts) AS ts, unnest($visitorid) AS visitorid, unnest($event) AS event,
                     unnest($itemid) AS itemid, unnest($category) AS category, unnest($root) AS root)
        """,
        columns,
    )
    con.execute(
        """
        CREATE OR REPLACE TABLE items AS
        SELECT itemid, arg_max(categoryid, (timestamp, categoryid)) AS categoryid,
               arg_max(root_categoryid, (timestamp, categoryid)) AS root_categoryid,
               arg_max(available, timestamp) AS available, count(*) AS n_events,
               count(*) FILTER (WHERE event = 'view') AS n_views,
               count(*) FILTER (WHERE event = 'addtocart') AS n_addtocarts,
               count(*) FILTER (WHERE event = 'transaction') AS n_transactions,
               max(timestamp) AS last_timestamp
        FROM events GROUP BY itemid
        """
    )


def make_warehouse(root: Path, events: Sequence[Event]) -> Path:
    """A warehouse directory whose recs.duckdb holds `events` and `items`."""
    warehouse = root / "warehouse"
    with connect(warehouse) as con:
        insert_events(con, events)
    return warehouse


def append_events(warehouse: Path, events: Sequence[Event]) -> None:
    """Add events to an existing warehouse (a later ingest)."""
    with connect(warehouse) as con:
        insert_events(con, events)


def build(warehouse: Path, **params) -> dict:
    """Run the build on its own writer, as the flow does."""
    with connect(warehouse) as con:
        return build_sequence_tables(con, warehouse, **params)


def rows(warehouse: Path, table: str) -> list[dict]:
    """All rows of one sequence table."""
    return pq.read_table(split_path(warehouse, table)).to_pylist()


def steps_of(row: dict, prefix: str) -> list[tuple]:
    """(item, category, root, action, ts) per step of a row's history or window lists."""
    return list(zip(*(row[f"{prefix}_{f}"] for f in ("item", "category", "root", "action", "ts"))))


def example(customer_idx, visitorid, history, window) -> dict:
    """Expected example row from step tuples; candidates derived as the contract says."""
    candidates: dict[int, list[int]] = {}
    for item, category, root, action, _ in window:
        if item in candidates:
            candidates[item][2] |= action
        else:
            candidates[item] = [category, root, action]
    row = {"customer_idx": customer_idx, "visitorid": visitorid, "window_start_ts": window[0][4]}
    for prefix, steps in (("history", history), ("window", window)):
        for k, name in enumerate(("item", "category", "root", "action", "ts")):
            row[f"{prefix}_{name}"] = [s[k] for s in steps]
    row["candidate_item"] = list(candidates)
    row["candidate_category"] = [c[0] for c in candidates.values()]
    row["candidate_root"] = [c[1] for c in candidates.values()]
    row["candidate_label"] = [c[2] for c in candidates.values()]
    return row


def serving(customer_idx, visitorid, history) -> dict:
    """Expected serving row."""
    row = {"customer_idx": customer_idx, "visitorid": visitorid}
    for k, name in enumerate(("item", "category", "root", "action", "ts")):
        row[f"history_{name}"] = [s[k] for s in history]
    row["last_ts"] = history[-1][4] if history else None
    return row


# ------------------------------------------------------------------------------------------
# Steps
# ------------------------------------------------------------------------------------------

def test_every_event_is_a_step_by_default_so_repeats_stay_visible(tmp_path):
    a, b = 500, 300  # item_idx: b -> 1, a -> 2 (itemid order)
    events = [Event(1000, 1, VIEW, a, 11, 1), Event(2000, 1, VIEW, a, 11, 1), Event(2000, 1, CART, a, 12, 1),
              Event(3000, 1, VIEW, b, 21, 2), Event(4000, 1, VIEW, b, 21, 2)]
    warehouse = make_warehouse(tmp_path, events)
    report = build(warehouse, **LOOSE)
    assert rows(warehouse, "serving") == [serving(1, 1, [
        (2, 11, 1, 4, 1000), (2, 11, 1, 4, 2000), (2, 12, 1, 2, 2000), (1, 21, 2, 4, 3000), (1, 21, 2, 4, 4000)])]
    assert rows(warehouse, "customers")[0]["n_steps"] == 5
    assert report["collapse_repeats"] is False


def test_steps_collapse_consecutive_repeats_into_multi_hot_and_keep_later_repeats(tmp_path):
    a, b = 500, 300  # item_idx: b -> 1, a -> 2 (itemid order)
    events = [
        Event(1000, 1, VIEW, a, 11, 1),
        Event(2000, 1, VIEW, a, 11, 1),
        Event(2000, 1, CART, a, 12, 1),  # same step: category stays the first event's (11)
        Event(3000, 1, VIEW, b, 21, 2),
        Event(4000, 1, BUY, a, 12, 1),  # A again after B: a new step
        Event(4000, 1, VIEW, a, 13, 1),  # same ms: view ranks before transaction -> first event
        Event(5000, 1, CART, a, 12, 1),  # same ms as the next view: view (rank 0) first
        Event(5000, 1, VIEW, b, 21, 2),
        Event(6000, 1, VIEW, a, 12, 1),  # same ms and rank: itemid order, b (300) first
        Event(6000, 1, VIEW, b, 21, 2),
    ]
    warehouse = make_warehouse(tmp_path, events)
    build(warehouse, **LOOSE, collapse_repeats=True)
    expected = [(2, 11, 1, 6, 1000), (1, 21, 2, 4, 3000), (2, 13, 1, 5, 4000), (1, 21, 2, 4, 5000),
                (2, 12, 1, 2, 5000), (1, 21, 2, 4, 6000), (2, 12, 1, 4, 6000)]
    assert rows(warehouse, "serving") == [serving(1, 1, expected)]
    assert rows(warehouse, "customers") == [
        {"customer_idx": 1, "visitorid": 1, "n_events": 10, "n_steps": 7, "in_training": True}
    ]
    items = rows(warehouse, "items")
    assert [(r["item_idx"], r["itemid"], r["n_events"], r["in_vocab"]) for r in items] == [
        (1, b, 3, True), (2, a, 7, True)
    ]


def test_filters_drop_rare_items_and_light_customers_but_serve_everyone(tmp_path):
    p, q, r, s = 10, 20, 30, 40  # P: 3 events, Q: 2, R: 1, S: 1
    events = [
        Event(1000, 1, VIEW, p), Event(2000, 1, VIEW, p), Event(3000, 1, VIEW, q), Event(4000, 1, VIEW, r),
        Event(5000, 2, VIEW, p), Event(6000, 2, CART, q),
        Event(7000, 3, VIEW, s),
    ]
    warehouse = make_warehouse(tmp_path, events)
    report = build(warehouse, min_item_events=2, min_user_events=3)

    # Filtered events: visitor 1's three vocabulary events (visitor 2 has only two).
    # Cutoffs: the ceil(0.8 * 3) = 3rd and ceil(0.9 * 3) = 3rd smallest -> both 3000.
    assert (report["train_end_ts"], report["val_end_ts"], report["n_filtered_events"]) == (3000, 3000, 3)
    assert rows(warehouse, "items") == [
        {"item_idx": 1, "itemid": p, "categoryid": 1, "root_categoryid": 1, "available": 1,
         "n_events": 3, "n_train_events": 2, "in_vocab": True},
        {"item_idx": 2, "itemid": q, "categoryid": 1, "root_categoryid": 1, "available": 1,
         "n_events": 2, "n_train_events": 0, "in_vocab": True},
    ]
    assert rows(warehouse, "customers") == [
        {"customer_idx": 1, "visitorid": 1, "n_events": 4, "n_steps": 3, "in_training": True},
        {"customer_idx": 2, "visitorid": 2, "n_events": 2, "n_steps": 2, "in_training": False},
        {"customer_idx": 3, "visitorid": 3, "n_events": 1, "n_steps": 0, "in_training": False},
    ]
    step_p, step_p2, step_q = (1, 1, 1, 4, 1000), (1, 1, 1, 4, 2000), (2, 1, 1, 4, 3000)
    assert rows(warehouse, "train") == [example(1, 1, [], [step_p, step_p2])]
    assert rows(warehouse, "val") == []
    assert rows(warehouse, "test") == [example(1, 1, [step_p, step_p2], [step_q])]
    assert rows(warehouse, "serving") == [
        serving(1, 1, [step_p, step_p2, step_q]),
        serving(2, 2, [(1, 1, 1, 4, 5000), (2, 1, 1, 2, 6000)]),
        serving(3, 3, []),
    ]
    assert (report["n_items"], report["n_customers"], report["n_in_training"]) == (2, 3, 1)


# ------------------------------------------------------------------------------------------
# Splits, windows, histories
# ------------------------------------------------------------------------------------------

def test_split_cutoffs_put_boundary_steps_in_the_later_split(tmp_path):
    events = [Event(i * 1000, 1, VIEW, i) for i in range(1, 11)]
    warehouse = make_warehouse(tmp_path, events)
    report = build(warehouse, **LOOSE)
    # 10 filtered events: the 8th and 9th smallest timestamps.
    assert (report["train_end_ts"], report["val_end_ts"]) == (8000, 9000)
    assert read_meta(warehouse)["train_end_ts"] == 8000
    step = {i: (i, 1, 1, 4, i * 1000) for i in range(1, 11)}
    assert rows(warehouse, "train") == [example(1, 1, [], [step[i] for i in range(1, 8)])]
    # ts == train_end_ts belongs to val; ts == val_end_ts to test; histories reach back.
    assert rows(warehouse, "val") == [example(1, 1, [step[i] for i in range(1, 8)], [step[8]])]
    assert rows(warehouse, "test") == [example(1, 1, [step[i] for i in range(1, 9)], [step[9], step[10]])]
    assert (report["n_train"], report["n_val"], report["n_test"]) == (1, 1, 1)


def late_bulk_events(visitorid: int = 99, itemid: int = 999, n: int = 40) -> list[Event]:
    """A heavy customer far in the future: pushes both cutoffs past the other customers."""
    return [Event(1_000_000 + i, visitorid, VIEW, itemid) for i in range(n)]


def test_windows_chunk_at_max_candidates_and_histories_truncate_at_history_len(tmp_path):
    events = [Event(i * 1000, 1, VIEW, i) for i in range(1, 9)] + late_bulk_events()
    warehouse = make_warehouse(tmp_path, events)
    build(warehouse, **LOOSE, max_candidates=3, history_len=4)
    step = {i: (i, 1, 1, 4, i * 1000) for i in range(1, 9)}
    train = [r for r in rows(warehouse, "train") if r["visitorid"] == 1]
    assert train == [
        example(1, 1, [], [step[1], step[2], step[3]]),
        example(1, 1, [step[1], step[2], step[3]], [step[4], step[5], step[6]]),
        example(1, 1, [step[3], step[4], step[5], step[6]], [step[7], step[8]]),
    ]
    # Serving keeps the latest H steps too.
    assert rows(warehouse, "serving")[0] == serving(1, 1, [step[5], step[6], step[7], step[8]])


def test_history_never_holds_a_step_at_the_window_start_time(tmp_path):
    # B and C share a millisecond and the window boundary (M = 2) falls between them.
    events = [Event(1000, 1, VIEW, 1), Event(2000, 1, VIEW, 2), Event(2000, 1, VIEW, 3),
              Event(3000, 1, BUY, 4)] + late_bulk_events()
    warehouse = make_warehouse(tmp_path, events)
    build(warehouse, **LOOSE, max_candidates=2)
    a, b, c, d = (1, 1, 1, 4, 1000), (2, 1, 1, 4, 2000), (3, 1, 1, 4, 2000), (4, 1, 1, 1, 3000)
    train = [r for r in rows(warehouse, "train") if r["visitorid"] == 1]
    assert train == [example(1, 1, [], [a, b]), example(1, 1, [a], [c, d])]


def test_candidates_are_distinct_window_items_with_or_of_their_actions(tmp_path):
    events = [Event(1000, 1, VIEW, 1, 11, 1), Event(2000, 1, VIEW, 2, 21, 2), Event(3000, 1, CART, 1, 12, 1),
              Event(4000, 1, BUY, 1, 13, 1), Event(5000, 1, VIEW, 2, 22, 2)] + late_bulk_events()
    warehouse = make_warehouse(tmp_path, events)
    build(warehouse, **LOOSE, collapse_repeats=True)
    [row] = [r for r in rows(warehouse, "train") if r["visitorid"] == 1]
    # Steps: 1(view) 2(view) 1(cart+buy collapsed) 2(view); category at first occurrence.
    assert row["window_item"] == [1, 2, 1, 2]
    assert row["window_action"] == [4, 4, 3, 4]
    assert (row["candidate_item"], row["candidate_category"], row["candidate_root"], row["candidate_label"]) == (
        [1, 2], [11, 21], [1, 2], [7, 4]
    )


# ------------------------------------------------------------------------------------------
# Against a reference implementation of the contract, on random events
# ------------------------------------------------------------------------------------------

def random_events(seed: int, n_visitors: int = 120, n_items: int = 40) -> list[Event]:
    """Heavy-tailed visitors, popular and rare items, many same-millisecond ties."""
    rng = random.Random(seed)
    events = []
    for visitorid in range(1, n_visitors + 1):
        for _ in range(min(int(rng.paretovariate(0.9)), 60)):
            itemid = 1 + int(n_items * rng.random() ** 2)
            event = rng.choices([VIEW, CART, BUY], weights=[85, 10, 5])[0]
            events.append(Event(rng.randrange(0, 400) * 1000, visitorid, event, itemid,
                                rng.randrange(1, 4), rng.randrange(1, 3)))
            if rng.random() < 0.3:  # a quick repeat on the same item
                events.append(events[-1]._replace(ts=events[-1].ts + rng.randrange(0, 3) * 1000, event=VIEW))
    return events


def reference_tables(events: Sequence[Event], *, min_user_events, min_item_events, history_len,
                     max_candidates, train_quantile, val_quantile, collapse_repeats=False) -> dict:
    """The README contract, literally, with loops (first build: ids in id order)."""
    counts = Counter(e.itemid for e in events)
    item_idx = {i: k + 1 for k, i in enumerate(sorted(i for i, n in counts.items() if n >= min_item_events))}
    visitors = sorted({e.visitorid for e in events})
    by_visitor = defaultdict(list)
    for e in events:
        by_visitor[e.visitorid].append(e)
    steps, n_vocab = {}, {}
    for v in visitors:
        ordered = sorted((e for e in by_visitor[v] if e.itemid in item_idx),
                         key=lambda e: (e.ts, RANK[e.event], e.itemid, e.category, e.root))
        n_vocab[v] = len(ordered)
        out: list[list[int]] = []
        for e in ordered:
            if collapse_repeats and out and out[-1][0] == item_idx[e.itemid]:
                out[-1][3] |= BIT[e.event]
            else:
                out.append([item_idx[e.itemid], e.category, e.root, BIT[e.event], e.ts])
        steps[v] = [tuple(s) for s in out]
    trained = [v for v in visitors if n_vocab[v] >= min_user_events]
    filtered = sorted(e.ts for v in trained for e in by_visitor[v] if e.itemid in item_idx)
    train_end, val_end = (filtered[max(math.ceil(len(filtered) * q), 1) - 1] for q in (train_quantile, val_quantile))

    def split_of(ts: int) -> str:
        return "train" if ts < train_end else "val" if ts < val_end else "test"

    tables = {split: [] for split in SPLITS}
    for v in trained:
        for split in SPLITS:
            in_split = [s for s in steps[v] if split_of(s[4]) == split]
            for k in range(0, len(in_split), max_candidates):
                window = in_split[k:k + max_candidates]
                history = [s for s in steps[v] if s[4] < window[0][4]][-history_len:] if history_len else []
                tables[split].append(example(visitors.index(v) + 1, v, history, window))
    tables["serving"] = [serving(k + 1, v, steps[v][-history_len:]) for k, v in enumerate(visitors)]
    tables["customers"] = [
        {"customer_idx": k + 1, "visitorid": v, "n_events": len(by_visitor[v]), "n_steps": len(steps[v]),
         "in_training": n_vocab[v] >= min_user_events} for k, v in enumerate(visitors)
    ]
    tables["cutoffs"] = (train_end, val_end)
    return tables


@pytest.mark.parametrize("params", [
    dict(min_user_events=5, min_item_events=3, history_len=6, max_candidates=4, train_quantile=0.7, val_quantile=0.85),
    dict(min_user_events=10, min_item_events=5, history_len=64, max_candidates=16, train_quantile=0.8, val_quantile=0.9),
])
@pytest.mark.parametrize("batch_rows", [None, 7], ids=["one-batch", "tiny-batches"])
@pytest.mark.parametrize("collapse_repeats", [False, True], ids=["event-steps", "collapsed"])
def test_random_events_match_the_reference_and_never_leak(tmp_path, monkeypatch, params, batch_rows,
                                                          collapse_repeats):
    """Also with event and serving batches of a few rows, so customers straddle batches."""
    if batch_rows:
        import recs.sequences as sequences

        monkeypatch.setattr(sequences, "STEP_BATCH_ROWS", batch_rows)
        monkeypatch.setattr(sequences, "SERVING_BATCH_ROWS", batch_rows - 2)
        monkeypatch.setattr(sequences, "STEP_VISITOR_RANGES", 3)
    events = random_events(seed=params["history_len"])
    warehouse = make_warehouse(tmp_path, events)
    params = {**params, "collapse_repeats": collapse_repeats}
    report = build(warehouse, **params)
    expected = reference_tables(events, **params)
    train_end, val_end = expected["cutoffs"]
    assert (report["train_end_ts"], report["val_end_ts"]) == (train_end, val_end)
    bounds = {"train": (-math.inf, train_end), "val": (train_end, val_end), "test": (val_end, math.inf)}
    for split in SPLITS:
        got = rows(warehouse, split)
        assert got == expected[split], split
        lo, hi = bounds[split]
        for row in got:  # the leakage property, stated directly
            assert all(t < row["window_start_ts"] for t in row["history_ts"])
            assert row["window_ts"][0] == row["window_start_ts"]
            assert all(lo <= t < hi for t in row["window_ts"])
            assert 1 <= len(row["window_item"]) <= params["max_candidates"]
            assert len(row["history_item"]) <= params["history_len"]
    assert sum(len(expected[s]) for s in SPLITS) > 20  # the data really exercises windows
    assert rows(warehouse, "serving") == expected["serving"]
    assert rows(warehouse, "customers") == expected["customers"]


# ------------------------------------------------------------------------------------------
# Output format, atomic re-runs, stable ids
# ------------------------------------------------------------------------------------------

I32, I8, I64 = pa.list_(pa.int32()), pa.list_(pa.int8()), pa.list_(pa.int64())
STEP_TYPES = [I32, I32, I32, I8, I64]
STEP_NAMES = ["item", "category", "root", "action", "ts"]
EXPECTED_TYPES = {
    "train": [pa.int32(), pa.int64(), pa.int64()] + STEP_TYPES + STEP_TYPES + [I32, I32, I32, I8],
    "serving": [pa.int32(), pa.int64()] + STEP_TYPES + [pa.int64()],
    "items": [pa.int32(), pa.int64(), pa.int64(), pa.int64(), pa.int8(), pa.int64(), pa.int64(), pa.bool_()],
    "customers": [pa.int32(), pa.int64(), pa.int64(), pa.int64(), pa.bool_()],
}
EXPECTED_NAMES = {
    "train": ["customer_idx", "visitorid", "window_start_ts"] + [f"history_{n}" for n in STEP_NAMES]
    + [f"window_{n}" for n in STEP_NAMES] + ["candidate_item", "candidate_category", "candidate_root", "candidate_label"],
    "serving": ["customer_idx", "visitorid"] + [f"history_{n}" for n in STEP_NAMES] + ["last_ts"],
    "items": ["item_idx", "itemid", "categoryid", "root_categoryid", "available", "n_events", "n_train_events", "in_vocab"],
    "customers": ["customer_idx", "visitorid", "n_events", "n_steps", "in_training"],
}


def test_parquet_columns_have_the_contract_types(tmp_path):
    warehouse = make_warehouse(tmp_path, [Event(i * 1000, 1, VIEW, i % 3) for i in range(1, 11)])
    build(warehouse, **LOOSE)
    for table in TABLES:
        schema = pq.read_schema(next(split_path(warehouse, table).glob("*.parquet")))
        kind = "train" if table in SPLITS else table
        assert schema.names == EXPECTED_NAMES[kind], table
        got = [t.value_type if pa.types.is_list(t) else t for t in schema.types]
        want = [t.value_type if pa.types.is_list(t) else t for t in EXPECTED_TYPES[kind]]
        assert got == want, table
        assert [pa.types.is_list(t) for t in schema.types] == [pa.types.is_list(t) for t in EXPECTED_TYPES[kind]]


def read_all(warehouse: Path) -> dict:
    """Every sequence table plus meta.json, for comparing builds."""
    out = {table: pq.read_table(split_path(warehouse, table)) for table in TABLES}
    out["meta"] = read_meta(warehouse)
    return out


def test_rerun_is_idempotent_and_a_failed_build_keeps_the_previous_tables(tmp_path):
    events = random_events(seed=3)
    warehouse = make_warehouse(tmp_path, events)
    params = dict(min_user_events=5, min_item_events=3, history_len=8, max_candidates=4)
    build(warehouse, **params)
    first = read_all(warehouse)
    first_bytes = {p.relative_to(warehouse): p.read_bytes() for p in (warehouse / "sequences").rglob("*") if p.is_file()}
    build(warehouse, **params)
    second = read_all(warehouse)
    assert all(first[k].equals(second[k]) for k in TABLES)
    assert first["meta"] == second["meta"]
    assert {p.relative_to(warehouse): p.read_bytes() for p in (warehouse / "sequences").rglob("*") if p.is_file()} == first_bytes

    with pytest.raises(ValueError, match="no events left after the filters"):
        build(warehouse, **{**params, "min_user_events": 10_000})
    after_failure = read_all(warehouse)
    assert all(first[k].equals(after_failure[k]) for k in TABLES) and first["meta"] == after_failure["meta"]
    # No temporary directories left: one snapshot, the sequence versions of this build and the
    # one before it (kept for readers that resolved `sequences/` just before the last publish).
    assert sorted(p.name for p in warehouse.iterdir()) == [
        ".current", ".sequences", ".snapshots", ".writer.lock", "recs.duckdb", "sequences"]
    assert [p.name for p in (warehouse / ".snapshots").iterdir()] == [os.readlink(warehouse / ".current").split("/")[-1]]
    assert len(list((warehouse / ".sequences").iterdir())) == 2
    assert (warehouse / "sequences").resolve().parent == (warehouse / ".sequences").resolve()
    with duckdb.connect(str(db_path(warehouse)), read_only=True) as con:
        assert con.execute("SELECT min_user_events FROM sequence_meta").fetchall() == [(5,)]


def test_ids_stay_stable_when_events_arrive_and_items_leave_the_vocabulary(tmp_path):
    events = [Event(1000, 10, VIEW, 100), Event(2000, 10, VIEW, 100), Event(3000, 10, VIEW, 200),
              Event(4000, 20, VIEW, 100), Event(5000, 20, VIEW, 200), Event(6000, 20, VIEW, 200)]
    warehouse = make_warehouse(tmp_path, events)
    build(warehouse, min_user_events=1, min_item_events=2)
    assert [(r["item_idx"], r["itemid"]) for r in rows(warehouse, "items")] == [(1, 100), (2, 200)]
    assert [(r["customer_idx"], r["visitorid"]) for r in rows(warehouse, "customers")] == [(1, 10), (2, 20)]

    # Later: more events on 200 by visitor 10; a new visitor 5 on a new item 50 (smaller ids).
    append_events(warehouse, [Event(7000, 10, VIEW, 200), Event(8000, 10, VIEW, 200)]
                  + [Event(9000 + i, 5, VIEW, 50) for i in range(4)])
    for _ in range(2):  # and once more: nothing moves
        build(warehouse, min_user_events=1, min_item_events=4)
        items = rows(warehouse, "items")
        assert [(r["item_idx"], r["itemid"], r["n_events"], r["in_vocab"]) for r in items] == [
            (1, 100, 3, False), (2, 200, 5, True), (3, 50, 4, True)
        ]
        assert [(r["customer_idx"], r["visitorid"]) for r in rows(warehouse, "customers")] == [(1, 10), (2, 20), (3, 5)]
        # Item 100 left the vocabulary: no steps; every event on 200 and 50 is one.
        assert [(r["visitorid"], r["history_item"], r["history_ts"]) for r in rows(warehouse, "serving")] == [
            (10, [2, 2, 2], [3000, 7000, 8000]), (20, [2, 2], [5000, 6000]), (5, [3] * 4, [9000, 9001, 9002, 9003])
        ]
    with duckdb.connect(str(db_path(warehouse)), read_only=True) as con:
        assert con.execute("SELECT item_idx, itemid, in_vocab FROM item_index ORDER BY item_idx").fetchall() == [
            (1, 100, False), (2, 200, True), (3, 50, True)
        ]
        assert con.execute("SELECT customer_idx, visitorid FROM customer_index ORDER BY 1").fetchall() == [
            (1, 10), (2, 20), (3, 5)
        ]

    # A re-ingest without visitor 20: the id stays reserved, with zero counts and no history.
    with connect(warehouse) as con:
        con.execute("DELETE FROM events WHERE visitorid = 20")
    build(warehouse, min_user_events=1, min_item_events=2)
    assert rows(warehouse, "customers")[1] == {
        "customer_idx": 2, "visitorid": 20, "n_events": 0, "n_steps": 0, "in_training": False
    }
    assert rows(warehouse, "serving")[1] == serving(2, 20, [])


# ------------------------------------------------------------------------------------------
# Errors, helpers, flow
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    (dict(min_user_events=0), "min_user_events must be a positive integer"),
    (dict(min_item_events=-1), "min_item_events must be a positive integer"),
    (dict(history_len=True), "history_len must be a positive integer"),
    (dict(max_candidates=2.5), "max_candidates must be a positive integer"),
    (dict(train_quantile=0.0), "train_quantile must be a number strictly between 0 and 1"),
    (dict(val_quantile=1.0), "val_quantile must be a number strictly between 0 and 1"),
    (dict(train_quantile=0.9, val_quantile=0.8), "must be smaller than val_quantile"),
])
def test_bad_parameters_are_rejected_before_any_work(tmp_path, bad, message):
    with duckdb.connect() as con, pytest.raises(ValueError, match=message):
        build_sequence_tables(con, tmp_path, **bad)
    assert not (tmp_path / "sequences").exists()


def test_missing_events_table_asks_for_ingest(tmp_path):
    with duckdb.connect() as con, pytest.raises(FileNotFoundError, match="run `recs ingest` first"):
        build_sequence_tables(con, tmp_path)


def test_reader_helpers(tmp_path):
    assert split_path(tmp_path, "val") == tmp_path / "sequences" / "val"
    with pytest.raises(ValueError, match="unknown sequence table"):
        split_path(tmp_path, "dev")
    with pytest.raises(FileNotFoundError, match="run `recs build` first"):
        read_meta(tmp_path)


def test_prefect_flow_builds_the_tables(tmp_path, prefect_harness):
    from flows.build_sequences import build_sequences

    warehouse = make_warehouse(tmp_path, [Event(i * 1000, 1 + i % 2, VIEW, i % 4) for i in range(1, 21)])
    report = build_sequences(warehouse_dir=str(warehouse), min_user_events=1, min_item_events=1, max_candidates=4)
    meta = json.loads((warehouse / "sequences" / "meta.json").read_text())
    assert {k: report[k] for k in meta} == meta
    assert (report["n_customers"], report["n_items"], report["max_candidates"]) == (2, 4, 4)
    assert report["n_train"] == len(rows(warehouse, "train")) > 0


def test_prefect_flow_fails_clearly_without_a_warehouse(tmp_path, prefect_harness):
    from flows.build_sequences import build_sequences

    with pytest.raises(FileNotFoundError, match="run `recs ingest` first"):
        build_sequences(warehouse_dir=str(tmp_path / "nowhere"))
    assert not (tmp_path / "nowhere").exists()
