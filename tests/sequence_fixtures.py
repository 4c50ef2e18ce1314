"""Write small `sequences/` parquet tables that follow the README data contract exactly.

Shared by tests that need sequence tables without running `recs build`: write hand-made rows
with `example_row` / `serving_row` and `write_sequences`, take the ready-made `tiny_sequences`
example, or generate a large random warehouse with `synthetic_sequences` (benchmarks).

A step is written as `(item_idx, category, root, action, ts)`; candidates and their labels are
derived from the window steps exactly as the contract says (distinct items in first-seen order,
label = OR of the window's actions on the item).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

Step = tuple[int, int, int, int, int]  # item_idx, category, root, action bitmask, ts (ms)

_I32 = pa.list_(pa.int32())
_I8 = pa.list_(pa.int8())
_I64 = pa.list_(pa.int64())

HISTORY_FIELDS = [
    pa.field("history_item", _I32), pa.field("history_category", _I32), pa.field("history_root", _I32),
    pa.field("history_action", _I8), pa.field("history_ts", _I64),
]
EXAMPLE_SCHEMA = pa.schema(
    [pa.field("customer_idx", pa.int32()), pa.field("visitorid", pa.int64()), pa.field("window_start_ts", pa.int64())]
    + HISTORY_FIELDS
    + [
        pa.field("window_item", _I32), pa.field("window_category", _I32), pa.field("window_root", _I32),
        pa.field("window_action", _I8), pa.field("window_ts", _I64),
        pa.field("candidate_item", _I32), pa.field("candidate_category", _I32), pa.field("candidate_root", _I32),
        pa.field("candidate_label", _I8),
    ]
)
SERVING_SCHEMA = pa.schema(
    [pa.field("customer_idx", pa.int32()), pa.field("visitorid", pa.int64())] + HISTORY_FIELDS
    + [pa.field("last_ts", pa.int64())]
)
ITEMS_SCHEMA = pa.schema([
    pa.field("item_idx", pa.int32()), pa.field("itemid", pa.int64()), pa.field("categoryid", pa.int64()),
    pa.field("root_categoryid", pa.int64()), pa.field("available", pa.int8()), pa.field("n_events", pa.int64()),
    pa.field("n_train_events", pa.int64()),
])
CUSTOMERS_SCHEMA = pa.schema([
    pa.field("customer_idx", pa.int32()), pa.field("visitorid", pa.int64()), pa.field("n_events", pa.int64()),
    pa.field("n_steps", pa.int64()), pa.field("in_training", pa.bool_()),
])


def _columns(prefix: str, steps: Sequence[Step]) -> dict[str, list[int]]:
    """The five per-step list columns of `steps` under `prefix` (history / window)."""
    return {
        f"{prefix}_item": [s[0] for s in steps],
        f"{prefix}_category": [s[1] for s in steps],
        f"{prefix}_root": [s[2] for s in steps],
        f"{prefix}_action": [s[3] for s in steps],
        f"{prefix}_ts": [s[4] for s in steps],
    }


def example_row(customer_idx: int, visitorid: int, history: Sequence[Step], window: Sequence[Step]) -> dict:
    """One train/val/test row: history (oldest first) and window steps; candidates derived."""
    if not window:
        raise ValueError("a window has at least one step")
    labels: dict[int, int] = {}
    first: dict[int, Step] = {}
    for step in window:
        labels[step[0]] = labels.get(step[0], 0) | step[3]
        first.setdefault(step[0], step)
    return {
        "customer_idx": customer_idx, "visitorid": visitorid, "window_start_ts": window[0][4],
        **_columns("history", history), **_columns("window", window),
        "candidate_item": list(first), "candidate_category": [s[1] for s in first.values()],
        "candidate_root": [s[2] for s in first.values()], "candidate_label": list(labels.values()),
    }


def serving_row(customer_idx: int, visitorid: int, history: Sequence[Step]) -> dict:
    """One `sequences/serving` row: the latest steps (may be empty; last_ts NULL then)."""
    return {"customer_idx": customer_idx, "visitorid": visitorid, **_columns("history", history),
            "last_ts": history[-1][4] if history else None}


def item_row(item_idx: int, itemid: int, categoryid: int, root: int, n_train_events: int,
             n_events: int | None = None, available: int = 1) -> dict:
    """One `sequences/items` row."""
    return {"item_idx": item_idx, "itemid": itemid, "categoryid": categoryid, "root_categoryid": root,
            "available": available, "n_events": n_train_events if n_events is None else n_events,
            "n_train_events": n_train_events}


def customer_row(customer_idx: int, visitorid: int, n_events: int = 10, n_steps: int = 10,
                 in_training: bool = True) -> dict:
    """One `sequences/customers` row."""
    return {"customer_idx": customer_idx, "visitorid": visitorid, "n_events": n_events, "n_steps": n_steps,
            "in_training": in_training}


def _write(table: pa.Table, directory: Path, rows_per_file: int | None) -> None:
    """Write `table` as part-*.parquet files (several when rows_per_file is set, like a real build)."""
    directory.mkdir(parents=True, exist_ok=True)
    step = rows_per_file or max(table.num_rows, 1)
    for part, start in enumerate(range(0, max(table.num_rows, 1), step)):
        pq.write_table(table.slice(start, step), directory / f"part-{part:05d}.parquet")


def write_sequences(root: str | Path, *, items: Sequence[dict], customers: Sequence[dict],
                    splits: dict[str, Sequence[dict]], serving: Sequence[dict] = (),
                    meta: dict | None = None, rows_per_file: int | None = None) -> Path:
    """Write a `sequences/` directory under `root`; returns its path.

    `splits` maps train/val/test to `example_row` dicts (a missing split is written empty).
    """
    out = Path(root) / "sequences"
    _write(pa.Table.from_pylist(list(items), schema=ITEMS_SCHEMA), out / "items", None)
    _write(pa.Table.from_pylist(list(customers), schema=CUSTOMERS_SCHEMA), out / "customers", None)
    for split in ("train", "val", "test"):
        rows = list(splits.get(split, ()))
        _write(pa.Table.from_pylist(rows, schema=EXAMPLE_SCHEMA), out / split, rows_per_file)
    _write(pa.Table.from_pylist(list(serving), schema=SERVING_SCHEMA), out / "serving", rows_per_file)
    meta = {"train_end_ts": 1_000, "val_end_ts": 2_000, "history_len": 64, "max_candidates": 16, **(meta or {})}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return out


# Items of the tiny example: item_idx -> (itemid, categoryid, root, n_train_events).
TINY_ITEMS = {1: (101, 11, 1, 50), 2: (102, 11, 1, 40), 3: (103, 12, 1, 30), 4: (104, 21, 2, 20),
              5: (105, 21, 2, 10), 6: (106, 22, 2, 5), 7: (107, 22, 2, 0)}


def tiny_step(item_idx: int, action: int, ts: int) -> Step:
    """A step on a TINY_ITEMS item with that item's category and root."""
    _, cat, root, _ = TINY_ITEMS[item_idx]
    return (item_idx, cat, root, action, ts)


def tiny_sequences(root: str | Path) -> Path:
    """A hand-made warehouse: 7 items, 4 customers, 5 train / 1 val / 1 test rows, 5 serving rows.

    Train rows (customer_idx, visitorid): history -> window (item_idx:action)
      0 (1, 9001): []                  -> [1:4, 2:4, 1:2]
      1 (1, 9001): [1:4, 2:4, 1:2]     -> [3:4, 3:1]
      2 (2, 9002): [4:4]               -> [5:4]
      3 (3, 9003): [1:4, 2:4, 3:4, 4:4, 5:4] -> [6:4, 1:4]
      4 (4, 9004): []                  -> [2:4, 4:2, 6:1]
    val: customer 2: [4:4, 5:4] -> [1:4]; test: customer 1: [.. 3:4, 3:1] -> [2:4, 7:4]
    serving: customers 1-4 plus customer 5 (visitorid 9005) with an empty history.
    """
    t = tiny_step
    items = [item_row(i, *v[:3], n_train_events=v[3]) for i, v in TINY_ITEMS.items()]
    customers = [customer_row(c, 9000 + c, in_training=c <= 4) for c in range(1, 6)]
    h1 = [t(1, 4, 100), t(2, 4, 110), t(1, 2, 120)]
    train = [
        example_row(1, 9001, [], h1),
        example_row(1, 9001, h1, [t(3, 4, 130), t(3, 1, 140)]),
        example_row(2, 9002, [t(4, 4, 200)], [t(5, 4, 210)]),
        example_row(3, 9003, [t(1, 4, 300), t(2, 4, 310), t(3, 4, 320), t(4, 4, 330), t(5, 4, 340)],
                    [t(6, 4, 350), t(1, 4, 360)]),
        example_row(4, 9004, [], [t(2, 4, 400), t(4, 2, 410), t(6, 1, 420)]),
    ]
    val = [example_row(2, 9002, [t(4, 4, 200), t(5, 4, 210)], [t(1, 4, 1500)])]
    h1_full = h1 + [t(3, 4, 130), t(3, 1, 140)]
    test = [example_row(1, 9001, h1_full, [t(2, 4, 2500), t(7, 4, 2510)])]
    serving = [
        serving_row(1, 9001, h1_full + [t(2, 4, 2500), t(7, 4, 2510)]),
        serving_row(2, 9002, [t(4, 4, 200), t(5, 4, 210), t(1, 4, 1500)]),
        serving_row(3, 9003, [t(1, 4, 300), t(2, 4, 310), t(3, 4, 320), t(4, 4, 330), t(5, 4, 340),
                              t(6, 4, 350), t(1, 4, 360)]),
        serving_row(4, 9004, [t(2, 4, 400), t(4, 2, 410), t(6, 1, 420)]),
        serving_row(5, 9005, []),
    ]
    return write_sequences(root, items=items, customers=customers,
                           splits={"train": train, "val": val, "test": test}, serving=serving)


def _list_column(lengths: np.ndarray, values: np.ndarray, dtype: pa.DataType) -> pa.Array:
    """A list column with the given per-row lengths over flat `values`."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.astype(dtype.to_pandas_dtype())))


def synthetic_sequences(root: str | Path, *, num_rows: int = 100_000, num_items: int = 20_000,
                        num_customers: int = 20_000, history_len: int = 64, window_len: int = 16,
                        seed: int = 0, rows_per_file: int = 50_000) -> Path:
    """A large random warehouse (contract schema, train split only + items/customers) for benchmarks.

    Rows are independent random examples: they do not chain like a real build, which is
    irrelevant for loader throughput.
    """
    rng = np.random.default_rng(seed)
    hist_len = rng.integers(0, history_len + 1, num_rows)
    win_len = rng.integers(1, window_len + 1, num_rows)
    columns: dict[str, pa.Array] = {
        "customer_idx": pa.array(rng.integers(1, num_customers + 1, num_rows).astype(np.int32)),
        "window_start_ts": pa.array(rng.integers(0, 10**12, num_rows)),
    }
    columns["visitorid"] = pa.array(columns["customer_idx"].to_numpy().astype(np.int64) + 1_000_000)
    for prefix, lengths in (("history", hist_len), ("window", win_len)):
        total = int(lengths.sum())
        items = rng.integers(1, num_items + 1, total)
        columns[f"{prefix}_item"] = _list_column(lengths, items, pa.int32())
        columns[f"{prefix}_category"] = _list_column(lengths, items % 100 + 1, pa.int32())
        columns[f"{prefix}_root"] = _list_column(lengths, items % 10 + 1, pa.int32())
        columns[f"{prefix}_action"] = _list_column(lengths, rng.choice([4, 4, 4, 2, 1], total), pa.int8())
        columns[f"{prefix}_ts"] = _list_column(lengths, rng.integers(0, 10**12, total), pa.int64())
    # Candidates: the window's items as they are (random items rarely repeat within a window).
    for name, src in (("candidate_item", "window_item"), ("candidate_category", "window_category"),
                      ("candidate_root", "window_root"), ("candidate_label", "window_action")):
        columns[name] = columns[src]
    train = pa.table({f.name: columns[f.name] for f in EXAMPLE_SCHEMA}, schema=EXAMPLE_SCHEMA)
    item_idx = np.arange(1, num_items + 1)
    items = pa.table({
        "item_idx": item_idx.astype(np.int32), "itemid": item_idx * 7 + 3, "categoryid": item_idx % 100 + 1,
        "root_categoryid": item_idx % 10 + 1, "available": np.ones(num_items, np.int8),
        "n_events": rng.zipf(1.5, num_items).clip(1, 10**6), "n_train_events": rng.zipf(1.5, num_items).clip(1, 10**6),
    }, schema=ITEMS_SCHEMA)
    cust = np.arange(1, num_customers + 1)
    customers = pa.table({"customer_idx": cust.astype(np.int32), "visitorid": cust + 1_000_000,
                          "n_events": np.full(num_customers, 10), "n_steps": np.full(num_customers, 10),
                          "in_training": np.ones(num_customers, bool)}, schema=CUSTOMERS_SCHEMA)
    out = Path(root) / "sequences"
    _write(items, out / "items", None)
    _write(customers, out / "customers", None)
    _write(train, out / "train", rows_per_file)
    for split in ("val", "test"):
        _write(train.slice(0, 0), out / split, None)
    (out / "meta.json").write_text(json.dumps({"train_end_ts": 10**12, "val_end_ts": 10**12}))
    return out
