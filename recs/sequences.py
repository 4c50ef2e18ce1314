"""Parquet sequence tables (`warehouse/sequences/`) from the warehouse `events` table.

The README's "Data contract / Sequence tables" section is the specification. DuckDB SQL
(sql/intermediate/seq_*.sql, sql/marts/*.sql) builds the vocabulary and its stable item ids,
sorts every event once into step order, and writes parquet and the published tables. The
collapse into steps, the stable customer ids and the cutting of histories, windows and
candidates run as vectorised numpy segment operations over that sorted stream: a customer's
steps are one contiguous slice, so every list column is a gather by offsets (no per-customer
Python loop, no self-join). The all-SQL version (window functions + list aggregation) took
over twice as long at full scale, mostly in list-of-struct aggregation and sorting lists.

Publishing is atomic: the build runs on a `recs.warehouse.WarehouseWriter`. Parquet goes to a
fresh `.sequences/<version>/` directory nobody refers to yet, item_index / customer_index /
sequence_meta are replaced in one transaction of the writer's private database copy, and the
directory is staged with the writer: when it closes, one rename of the `.current` snapshot
pointer publishes the tables and `sequences/` together. There is no moment (and no crash point)
at which a reader finds the new parquet beside the old tables or the other way round.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import numpy as np
import pyarrow as pa

from recs.warehouse import WarehouseWriter, duckdb_setting, read_sql, run_sql, sequences_dir, table_exists

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# Every directory under sequences/ (each holds *.parquet) besides meta.json.
TABLES = (*SPLITS, "serving", "items", "customers")
META_FILENAME = "meta.json"
PART_FILENAME = "part-0.parquet"

# Action bitmask per event rank (view=0, addtocart=1, transaction=2): 4 >> rank.
_ACTION_OF_RANK = np.array([4, 2, 1], dtype=np.int8)

_NUMPY_DTYPE = {pa.int8(): np.int8, pa.int32(): np.int32, pa.int64(): np.int64}
_INT32_LIST = pa.list_(pa.int32())
_STEP_LISTS = (  # (column suffix, arrow list type)
    ("item", _INT32_LIST),
    ("category", _INT32_LIST),
    ("root", _INT32_LIST),
    ("action", pa.list_(pa.int8())),
    ("ts", pa.list_(pa.int64())),
)
EXAMPLE_SCHEMA = pa.schema(
    [
        ("customer_idx", pa.int32()),
        ("visitorid", pa.int64()),
        ("window_start_ts", pa.int64()),
        *[(f"history_{name}", t) for name, t in _STEP_LISTS],
        *[(f"window_{name}", t) for name, t in _STEP_LISTS],
        ("candidate_item", _INT32_LIST),
        ("candidate_category", _INT32_LIST),
        ("candidate_root", _INT32_LIST),
        ("candidate_label", pa.list_(pa.int8())),
    ]
)
SERVING_SCHEMA = pa.schema(
    [
        ("customer_idx", pa.int32()),
        ("visitorid", pa.int64()),
        *[(f"history_{name}", t) for name, t in _STEP_LISTS],
        ("last_ts", pa.int64()),
    ]
)

# Sorted events per batch collapsed into steps: big enough for numpy to stay efficient, small
# enough that the build never holds the whole sorted event table (2.76M rows at full scale).
STEP_BATCH_ROWS = 1 << 19
# Visitor ranges the sorted events are read in: DuckDB sorts a quarter of them at a time.
STEP_VISITOR_RANGES = 4
SERVING_BATCH_ROWS = 1 << 17  # customers per streamed batch of serving rows

# Temporary tables and registered Arrow views of one build, dropped when it ends.
_TEMP_TABLES = ("seq_item_index_next", "seq_item_ids", "seq_item_counts")
_ARROW_VIEWS = ("seq_customer_rows",)


def split_path(warehouse_dir: str | Path, split: str) -> Path:
    """Directory of one sequence table, e.g. `warehouse/sequences/train` (read `*.parquet` in it).

    `split` is one of train, val, test, serving, items, customers.
    """
    if split not in TABLES:
        raise ValueError(f"unknown sequence table {split!r}; expected one of {', '.join(TABLES)}")
    return sequences_dir(warehouse_dir) / split


def read_meta(warehouse_dir: str | Path, root: Path | None = None) -> dict[str, Any]:
    """The last build's `sequences/meta.json` (cutoffs, parameters, row counts); of `root` (a
    `recs.warehouse.pinned_sequences_dir`) when given."""
    path = (root or sequences_dir(warehouse_dir)) / META_FILENAME
    if not path.exists():
        raise FileNotFoundError(f"no sequence tables at {path.parent}: run `recs build` first")
    return json.loads(path.read_text())


def sequences_fingerprint(warehouse_dir: str | Path) -> str:
    """Identity of the current sequence tables (a hash of their meta: cutoffs, params, counts);
    a checkpoint's `data_fingerprint` is this value for the tables it was trained on."""
    import hashlib

    return hashlib.sha256(json.dumps(read_meta(warehouse_dir), sort_keys=True).encode()).hexdigest()[:16]


def validate_params(
    *,
    min_user_events: int,
    min_item_events: int,
    history_len: int,
    max_candidates: int,
    train_quantile: float,
    val_quantile: float,
) -> None:
    """Raise ValueError naming the first bad build parameter."""
    for name, value in (
        ("min_user_events", min_user_events),
        ("min_item_events", min_item_events),
        ("history_len", history_len),
        ("max_candidates", max_candidates),
    ):
        # bool is an int subclass; True as a length is a bug, not a setting.
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name, value in (("train_quantile", train_quantile), ("val_quantile", val_quantile)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    if not train_quantile < val_quantile:
        raise ValueError(
            f"train_quantile ({train_quantile}) must be smaller than val_quantile ({val_quantile})"
        )


@dataclass(frozen=True)
class CustomerSteps:
    """Every visitor's vocabulary steps: visitors in visitorid order, steps oldest first.

    The steps of visitor v are rows `first[v] : first[v] + count[v]` of the step arrays.
    """

    visitorid: np.ndarray  # int64 [V], every visitor in events
    n_events: np.ndarray  # int32 [V], all events
    n_vocab_events: np.ndarray  # int32 [V], events on vocabulary items
    count: np.ndarray  # int32 [V] (int32: 1.4M visitors at full scale, every byte shows in the peak)
    filtered_ts: np.ndarray  # int64 [F], ms of the vocabulary events of in-training visitors
    item: np.ndarray  # int32 [S] item_idx
    category: np.ndarray  # int32 [S]
    root: np.ndarray  # int32 [S]
    action: np.ndarray  # int8 [S] bitmask
    ts: np.ndarray  # int64 [S] ms

    @functools.cached_property
    def first(self) -> np.ndarray:
        """int64 [V]: each visitor's first step row (steps are grouped like the visitors)."""
        return np.cumsum(self.count, dtype=np.int64) - self.count


def _run_starts(*keys: np.ndarray) -> np.ndarray:
    """Boolean mask: True where any key differs from the previous row (and at row 0)."""
    n = len(keys[0])
    starts = np.zeros(n, dtype=bool)
    if n:
        starts[0] = True
        for key in keys:
            starts[1:] |= key[1:] != key[:-1]
    return starts


def _first_category_root(
    v_keys: tuple[np.ndarray, ...], v_category: np.ndarray, v_root: np.ndarray, step_first: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Category and root of each step's first event under the full order (of each event's own
    position in that order when every event is a step).

    The SQL sort stops at (visitorid, timestamp, event rank, itemid): two more sort keys cost
    ~0.3 s at full scale. Rows tied on those keys (the same item at the same ms; the ASOF
    join gives them the same category anyway) are ordered by (category, root) here instead:
    the first event is the tie group's smallest (category, root) pair.
    """
    is_tie_start = _run_starts(*v_keys)
    tie_start = np.flatnonzero(is_tie_start)
    # (category, root) packed into one int64 that orders like the pair.
    packed = (v_category.astype(np.int64) << 32) | (v_root.astype(np.int64) + 2**31)
    group_of_row = np.cumsum(is_tie_start) - 1
    if len(step_first) == len(packed):  # one step per event: each tie group in (category, root) order
        first = packed[np.lexsort((packed, group_of_row))]
    else:
        group_min = np.minimum.reduceat(packed, tie_start) if len(tie_start) else packed
        first = group_min[group_of_row[step_first]]
    return (first >> 32).astype(np.int32), ((first & 0xFFFFFFFF) - 2**31).astype(np.int32)


def collapse_steps(
    visitorid: np.ndarray,
    timestamp: np.ndarray,
    event_rank: np.ndarray,
    item_idx: np.ndarray,
    categoryid: np.ndarray,
    root_categoryid: np.ndarray,
    min_user_events: int,
    collapse_repeats: bool = False,
) -> CustomerSteps:
    """Turn events sorted by (visitorid, timestamp, event rank, itemid) into steps.

    Events with item_idx 0 (outside the vocabulary) only count towards n_events; every other
    event is one step (its action bit, ts, category and root). With collapse_repeats,
    consecutive events of a visitor on the same item form one step instead, whose action is the
    OR of their bits and whose ts / category / root are the first event's. Off by default:
    a repeat of the previous item is the single most frequent next event (20% on the real
    sessions), so models must see and predict it. Visitors with at least min_user_events
    vocabulary events are in training: their events' ms are filtered_ts.
    """
    visitor_start = np.flatnonzero(_run_starts(visitorid))
    n_events = np.diff(np.append(visitor_start, len(visitorid)))
    vocab_rows = np.flatnonzero(item_idx > 0)
    v_visitor, v_item, v_ts = visitorid[vocab_rows], item_idx[vocab_rows], timestamp[vocab_rows]
    v_rank = event_rank[vocab_rows]
    step_first = (np.flatnonzero(_run_starts(v_visitor, v_item)) if collapse_repeats
                  else np.arange(len(vocab_rows)))  # into vocab_rows
    step_rows = vocab_rows[step_first]  # event row of each step's first event
    action = (
        np.bitwise_or.reduceat(_ACTION_OF_RANK[v_rank], step_first) if len(step_first) else np.zeros(0, np.int8)
    )
    category, root = _first_category_root(
        (v_visitor, v_ts, v_rank, v_item), categoryid[vocab_rows], root_categoryid[vocab_rows], step_first
    )
    # Per-visitor counts as segment sums over the visitor's event rows (no searches).
    is_vocab = np.zeros(len(visitorid), dtype=np.int8)
    is_vocab[vocab_rows] = 1
    is_step = np.zeros(len(visitorid), dtype=np.int8)
    is_step[step_rows] = 1
    if len(visitor_start):
        n_vocab_events = np.add.reduceat(is_vocab, visitor_start, dtype=np.int32)
        count = np.add.reduceat(is_step, visitor_start, dtype=np.int32)
    else:
        n_vocab_events = count = np.zeros(0, np.int32)
    in_training = n_vocab_events >= min_user_events
    return CustomerSteps(
        visitorid=visitorid[visitor_start].astype(np.int64),
        n_events=n_events.astype(np.int32),
        n_vocab_events=n_vocab_events,
        count=count,
        filtered_ts=v_ts[np.repeat(in_training, n_vocab_events)].astype(np.int64),
        item=v_item[step_first].astype(np.int32),
        category=category,
        root=root,
        action=action.astype(np.int8),
        ts=v_ts[step_first].astype(np.int64),
    )


_VISITOR_FIELDS = ("visitorid", "n_events", "n_vocab_events", "count")
_STEPS_DTYPES = {  # the rest are int64
    "n_events": np.int32, "n_vocab_events": np.int32, "count": np.int32,
    "item": np.int32, "category": np.int32, "root": np.int32, "action": np.int8,
}
_STEP_FIELDS = ("item", "category", "root", "action", "ts")


class StepsBuffer:
    """CustomerSteps assembled from parts over consecutive visitor ranges, in preallocated arrays.

    Capacity is the number of events (an upper bound on visitors, steps and filtered events).
    np.empty pages are only touched as far as they are filled, and first touches (page faults)
    are most of the cost of big arrays here: parts are copied in once, never concatenated.
    """

    def __init__(self, capacity: int) -> None:
        self._arrays = {
            name: np.empty(capacity, dtype=_STEPS_DTYPES.get(name, np.int64))
            for name in (*_VISITOR_FIELDS, *_STEP_FIELDS, "filtered_ts")
        }
        self._filled = {"visitors": 0, "steps": 0, "filtered": 0}

    def append(self, part: CustomerSteps) -> None:
        """Copy one part (the visitors after the ones already appended) in."""
        for fields, key, n in (
            (_VISITOR_FIELDS, "visitors", len(part.visitorid)),
            (_STEP_FIELDS, "steps", len(part.item)),
            (("filtered_ts",), "filtered", len(part.filtered_ts)),
        ):
            start = self._filled[key]
            for name in fields:
                self._arrays[name][start:start + n] = getattr(part, name)
            self._filled[key] = start + n

    def steps(self) -> CustomerSteps:
        """The assembled CustomerSteps (views of the buffers)."""
        n = self._filled
        arrays = {name: self._arrays[name][:n["visitors"]] for name in _VISITOR_FIELDS}
        arrays |= {name: self._arrays[name][:n["steps"]] for name in _STEP_FIELDS}
        arrays["filtered_ts"] = self._arrays["filtered_ts"][:n["filtered"]]
        return CustomerSteps(**arrays)


def discrete_quantiles(values: np.ndarray, quantiles: tuple[float, ...]) -> list[int]:
    """DuckDB's quantile_disc: for each q the ceil(q * n)-th smallest value (at least the 1st)."""
    ranks = [max(math.ceil(len(values) * q), 1) - 1 for q in quantiles]
    part = np.partition(values, sorted(set(ranks)))
    return [int(part[k]) for k in ranks]


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """List offsets and the concatenation of arange(s, s + l) for every (s, l)."""
    lengths = lengths.astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    index = np.arange(offsets[-1], dtype=np.int64) + np.repeat(starts.astype(np.int64) - offsets[:-1], lengths)
    return offsets, index


def _arrow(values: np.ndarray, arrow_type: pa.DataType, valid: np.ndarray | None = None) -> pa.Array:
    """Zero-copy Arrow array over a numpy array of a fixed-width type (NULL where not `valid`).

    Built from buffers on purpose: pa.array() probes for pandas, and importing pandas costs
    ~1 s per process, a third of the build's time budget.
    """
    if arrow_type == pa.bool_():  # Arrow booleans are bit-packed
        bits = np.packbits(np.asarray(values, dtype=bool), bitorder="little")
        return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(bits)])
    values = np.ascontiguousarray(values, dtype=_NUMPY_DTYPE[arrow_type])
    bitmap = None
    if valid is not None:
        bitmap = pa.py_buffer(np.packbits(np.asarray(valid, dtype=bool), bitorder="little"))
    return pa.Array.from_buffers(arrow_type, len(values), [bitmap, pa.py_buffer(values)])


def _list_array(values: np.ndarray, offsets: np.ndarray, index: np.ndarray, list_type: pa.DataType) -> pa.Array:
    """Arrow list column whose row r holds values[index[offsets[r]:offsets[r + 1]]]."""
    return pa.ListArray.from_arrays(_arrow(offsets, pa.int32()), _arrow(values[index], list_type.value_type))


def _step_lists(steps: CustomerSteps, prefix: str, starts: np.ndarray, lengths: np.ndarray) -> dict[str, pa.Array]:
    """The five parallel step-list columns (`<prefix>_item`, ...) for contiguous step ranges."""
    offsets, index = _ranges(starts, lengths)
    return {
        f"{prefix}_{name}": _list_array(getattr(steps, name), offsets, index, list_type)
        for name, list_type in _STEP_LISTS
    }


@dataclass(frozen=True)
class Customers:
    """customer_index rows in customer_idx order, with their step ranges in CustomerSteps."""

    customer_idx: np.ndarray  # int32 [C]
    visitorid: np.ndarray  # int64 [C]
    n_events: np.ndarray  # int32 [C], 0 for visitors no longer in events
    in_training: np.ndarray  # bool [C]
    first: np.ndarray  # int64 [C]
    count: np.ndarray  # int32 [C] steps (n_steps), 0 without vocabulary steps


def assign_customers(
    steps: CustomerSteps, in_training: np.ndarray, previous_idx: np.ndarray, previous_visitorid: np.ndarray
) -> Customers:
    """Stable customer ids: previous rows keep theirs; new visitors get max + 1, ... by visitorid.

    `previous_*` are the last build's customer_index in customer_idx order, so previous rows
    followed by the new ones are in customer_idx order. Visitors no longer in events keep
    their row with zero counts and in_training False.
    """
    if not len(previous_visitorid):
        # First build: ids 1, 2, ... in visitorid order, and the visitor arrays serve as they are
        # (no 1.4M-row copies).
        return Customers(
            customer_idx=np.arange(1, len(steps.visitorid) + 1, dtype=np.int32),
            visitorid=steps.visitorid,
            n_events=steps.n_events,
            in_training=in_training,
            first=steps.first,
            count=steps.count,
        )
    new_rows = np.flatnonzero(~np.isin(steps.visitorid, previous_visitorid, assume_unique=True))
    next_idx = int(previous_idx.max()) + 1 if len(previous_idx) else 1
    # Row of each customer in the CustomerSteps visitor arrays (-1: not in events any more).
    prev_pos = np.minimum(np.searchsorted(steps.visitorid, previous_visitorid), max(len(steps.visitorid) - 1, 0))
    if len(steps.visitorid):
        prev_found = steps.visitorid[prev_pos] == previous_visitorid
    else:
        prev_found = np.zeros(len(prev_pos), dtype=bool)
    pos = np.concatenate([np.where(prev_found, prev_pos, -1), new_rows])
    found = pos >= 0

    def per_customer(values: np.ndarray, default: Any) -> np.ndarray:
        return np.where(found, values[np.maximum(pos, 0)] if len(values) else default, default)

    return Customers(
        customer_idx=np.concatenate([previous_idx, np.arange(next_idx, next_idx + len(new_rows))]).astype(np.int32),
        visitorid=np.concatenate([previous_visitorid, steps.visitorid[new_rows]]).astype(np.int64),
        n_events=per_customer(steps.n_events, 0).astype(np.int32),
        in_training=per_customer(in_training, False).astype(bool),
        first=per_customer(steps.first, 0).astype(np.int64),
        count=per_customer(steps.count, 0).astype(np.int32),
    )


def customers_table(customers: Customers) -> pa.Table:
    """The `sequences/customers` rows (and DuckDB customer_index), in customer_idx order."""
    return pa.Table.from_arrays(
        [
            _arrow(customers.customer_idx, pa.int32()),
            _arrow(customers.visitorid, pa.int64()),
            _arrow(customers.n_events, pa.int32()),  # BIGINT in the exports (their SQL casts)
            _arrow(customers.count, pa.int32()),
            _arrow(customers.in_training, pa.bool_()),
        ],
        names=["customer_idx", "visitorid", "n_events", "n_steps", "in_training"],
    )


def serving_table(steps: CustomerSteps, customers: Customers, history_len: int) -> pa.Table:
    """One row per customer: the latest <= history_len steps (oldest first) and last_ts."""
    lengths = np.minimum(customers.count, history_len)
    end = customers.first + customers.count
    has_steps = customers.count > 0
    last_ts = steps.ts[np.maximum(end - 1, 0)] if len(steps.ts) else np.zeros(len(end), np.int64)
    columns = {
        "customer_idx": _arrow(customers.customer_idx, pa.int32()),
        "visitorid": _arrow(customers.visitorid, pa.int64()),
        **_step_lists(steps, "history", end - lengths, lengths),
        "last_ts": _arrow(last_ts, pa.int64(), valid=has_steps),
    }
    return pa.Table.from_arrays([columns[f.name] for f in SERVING_SCHEMA], schema=SERVING_SCHEMA)


def serving_reader(steps: CustomerSteps, customers: Customers, history_len: int) -> pa.RecordBatchReader:
    """serving_table's rows as a one-shot stream of SERVING_BATCH_ROWS customers at a time, so
    the export never holds every customer's history lists at once (1.4M rows at full scale)."""

    def batches():
        for start in range(0, len(customers.customer_idx), SERVING_BATCH_ROWS):
            rows = slice(start, start + SERVING_BATCH_ROWS)
            part = Customers(**{name: getattr(customers, name)[rows] for name in Customers.__dataclass_fields__})
            yield from serving_table(steps, part, history_len).to_batches()

    return pa.RecordBatchReader.from_batches(SERVING_SCHEMA, batches())


class _Windows(NamedTuple):
    """Every window of the in-training customers, in (customer_idx, time) order."""

    g: np.ndarray  # int64 [G]: step row of each in-training step, customers in customer_idx order
    window_id: np.ndarray  # int64 [G]: window of each of those steps
    length: np.ndarray  # int64 [W] steps in the window
    first: np.ndarray  # int64 [W] step row of its first step (a window is a contiguous step range)
    owner: np.ndarray  # int64 [W] row of its customer in `customers`
    split: np.ndarray  # int8 [W] 0 train, 1 val, 2 test
    history_start: np.ndarray  # int64 [W] step rows [history_start, history_end) of its history
    history_end: np.ndarray


def _windows(
    steps: CustomerSteps, customers: Customers, train_end_ts: int, val_end_ts: int, history_len: int,
    max_candidates: int,
) -> _Windows:
    """Cut each in-training customer's steps into windows of <= max_candidates per split.

    Works in "g-space": the in-training customers' steps concatenated in customer_idx order,
    where g[j] is the step row. Splits are contiguous there (steps are in time order). A helper
    of its own so that its many temporaries are freed before the lists are built.
    """
    trained = np.flatnonzero(customers.in_training)
    c_first, c_count = customers.first[trained], customers.count[trained]
    _, g = _ranges(c_first, c_count)
    owner = np.repeat(np.arange(len(trained)), c_count)  # ordinal of the customer in `trained`
    g_ts = steps.ts[g]
    split = (g_ts >= train_end_ts).astype(np.int8) + (g_ts >= val_end_ts).astype(np.int8)
    positions = np.arange(len(g))
    group_start = np.maximum.accumulate(np.where(_run_starts(owner, split), positions, 0))
    starts_window = (positions - group_start) % max_candidates == 0
    ws = np.flatnonzero(starts_window)
    w_owner = owner[ws]
    # History: the <= H steps before the first step sharing the window's start time, so a
    # step at the same ms (tie) never sits in the history of a later window. (In g-space: a
    # customer's steps are contiguous there, so only in-training steps are touched.)
    same_ts_first = np.maximum.accumulate(np.where(_run_starts(owner, g_ts), positions, 0))
    h_end = g[same_ts_first[ws]] if len(ws) else np.zeros(0, np.int64)
    return _Windows(
        g=g,
        window_id=np.cumsum(starts_window) - 1,
        length=np.diff(np.append(ws, len(g))),
        first=g[ws],
        owner=trained[w_owner],
        split=split[ws],
        history_start=np.maximum(c_first[w_owner], h_end - history_len),
        history_end=h_end,
    )


def _candidates(steps: CustomerSteps, windows: _Windows) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Per window: the first occurrence of each of its items, label = OR of the item's actions
    there. Returns (first candidate row per window, count per window, candidate columns)."""
    g, window_id = windows.g, windows.window_id
    g_item = steps.item[g]
    order = np.lexsort((np.arange(len(g)), g_item, window_id))
    pair_start = np.flatnonzero(_run_starts(window_id[order], g_item[order]))
    cand_pos = order[pair_start]
    cand_label = (
        np.bitwise_or.reduceat(steps.action[g][order], pair_start) if len(pair_start) else np.zeros(0, np.int8)
    )
    by_position = np.argsort(cand_pos, kind="stable")  # windows are contiguous: (window, first seen)
    cand_pos, cand_label = cand_pos[by_position], cand_label[by_position]
    cand_count = np.bincount(window_id[cand_pos], minlength=len(windows.first))
    cand_rows = g[cand_pos]
    return np.cumsum(cand_count) - cand_count, cand_count, {
        "candidate_item": steps.item[cand_rows],
        "candidate_category": steps.category[cand_rows],
        "candidate_root": steps.root[cand_rows],
        "candidate_label": cand_label.astype(np.int8),
    }


def example_tables(
    steps: CustomerSteps,
    customers: Customers,
    *,
    train_end_ts: int,
    val_end_ts: int,
    history_len: int,
    max_candidates: int,
) -> dict[str, pa.Table]:
    """Train/val/test examples: windows of in-training customers, rows in (customer_idx, time) order."""
    windows = _windows(steps, customers, train_end_ts, val_end_ts, history_len, max_candidates)
    cand_first, cand_count, candidates = _candidates(steps, windows)
    windows = windows._replace(g=None, window_id=None)  # only the per-window arrays are needed now

    tables = {}
    for code, split_name in enumerate(SPLITS):
        sel = np.flatnonzero(windows.split == code)
        owners = windows.owner[sel]
        cand_offsets, cand_index = _ranges(cand_first[sel], cand_count[sel])
        h_start, w_first = windows.history_start[sel], windows.first[sel]
        columns = {
            "customer_idx": _arrow(customers.customer_idx[owners], pa.int32()),
            "visitorid": _arrow(customers.visitorid[owners], pa.int64()),
            "window_start_ts": _arrow(steps.ts[w_first] if len(sel) else np.zeros(0, np.int64), pa.int64()),
            **_step_lists(steps, "history", h_start, windows.history_end[sel] - h_start),
            **_step_lists(steps, "window", w_first, windows.length[sel]),
            **{
                name: _list_array(values, cand_offsets, cand_index, EXAMPLE_SCHEMA.field(name).type)
                for name, values in candidates.items()
            },
        }
        tables[split_name] = pa.Table.from_arrays([columns[f.name] for f in EXAMPLE_SCHEMA], schema=EXAMPLE_SCHEMA)
        del columns, cand_offsets, cand_index
    return tables


def _require_inputs(con: duckdb.DuckDBPyConnection) -> None:
    """Fail clearly when ingest has not produced the input tables."""
    for table in ("events", "items"):
        if not table_exists(con, table):
            raise FileNotFoundError(f"warehouse table `{table}` not found: run `recs ingest` first")


_ORDERED_EVENT_COLUMNS = ("visitorid", "timestamp", "event_rank", "item_idx", "categoryid", "root_categoryid")


def _numpy(array: pa.Array) -> np.ndarray:
    """Zero-copy numpy view of a fixed-width Arrow array without NULLs (Array.to_numpy imports
    pandas on first use: ~1 s per process)."""
    if array.null_count:
        raise ValueError(f"unexpected NULLs in a {array.type} column")
    dtype = np.dtype(array.type.to_pandas_dtype())
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize)


def collapse_stream(batches: Any, n_events: int, min_user_events: int,
                    collapse_repeats: bool = False) -> CustomerSteps:
    """collapse_steps over a stream of Arrow batches of seq_ordered_events (n_events rows in
    all), a few visitors' events at a time: memory stays at one batch plus the result, not the
    whole sorted event table. A visitor's events may straddle batches: the last visitor of a
    batch is carried over to the next.
    """
    buffer = StepsBuffer(n_events)
    carry: list[np.ndarray] | None = None
    for batch in batches:
        columns = [_numpy(batch.column(name)) for name in _ORDERED_EVENT_COLUMNS]
        if carry is not None:
            columns = [np.concatenate([c, b]) for c, b in zip(carry, columns)]
        visitorid = columns[0]
        if not len(visitorid):
            continue
        changes = np.flatnonzero(visitorid[1:] != visitorid[:-1])
        cut = int(changes[-1]) + 1 if len(changes) else 0  # first row of the batch's last visitor
        if cut:
            buffer.append(collapse_steps(*(c[:cut] for c in columns), min_user_events, collapse_repeats))
        carry = [c[cut:] for c in columns]
    if carry is not None:
        buffer.append(collapse_steps(*carry, min_user_events, collapse_repeats))
    return buffer.steps()


def _visitor_ranges(con: duckdb.DuckDBPyConnection, n_ranges: int) -> tuple[int, list[tuple[int, int]]]:
    """The number of events, and [first, end) visitorid ranges that split them into about
    n_ranges equal parts."""
    fractions = [k / n_ranges for k in range(1, n_ranges)]
    [(n_events, low, high, cuts)] = run_sql(con, "intermediate/seq_visitor_ranges", fractions=fractions).fetchall()
    if low is None:
        return 0, []
    bounds = sorted({int(low), *(int(c) for c in cuts or []), int(high) + 1})
    return int(n_events), list(zip(bounds[:-1], bounds[1:]))


def _load_steps(con: duckdb.DuckDBPyConnection, min_item_events: int, min_user_events: int,
                collapse_repeats: bool) -> CustomerSteps:
    """Vocabulary and stable item ids (SQL), then every event in step order as steps."""
    run_sql(con, "marts/item_index_init")
    run_sql(con, "intermediate/seq_item_counts", min_item_events=min_item_events)
    run_sql(con, "intermediate/seq_item_ids")
    n_events, ranges = _visitor_ranges(con, STEP_VISITOR_RANGES)
    sql = read_sql("intermediate/seq_ordered_events")

    def batches():
        for first, end in ranges:
            # A relation streams Arrow batches (run_sql would materialise the result first).
            relation = con.sql(sql, params={"first_visitorid": first, "end_visitorid": end})
            yield from relation.to_arrow_reader(STEP_BATCH_ROWS)

    return collapse_stream(batches(), n_events, min_user_events, collapse_repeats)


def _assign_customers(con: duckdb.DuckDBPyConnection, steps: CustomerSteps, in_training: np.ndarray) -> Customers:
    """Every visitor with its stable customer_idx, in customer_idx order."""
    run_sql(con, "marts/customer_index_init")
    previous = run_sql(con, "intermediate/seq_previous_customers").fetchnumpy()
    return assign_customers(
        steps, in_training, np.asarray(previous["customer_idx"]), np.asarray(previous["visitorid"])
    )


def _export(con: duckdb.DuckDBPyConnection, statement: str, view: str, rows: Any, out_dir: Path) -> None:
    """COPY Arrow rows (a table or a one-shot reader), registered as `view`, with one
    sql/marts/seq_export_*.sql statement into `out_dir/part-0.parquet`."""
    out_dir.mkdir(parents=True)
    con.register(view, rows)
    try:
        run_sql(con, statement, path=str(out_dir / PART_FILENAME))
    finally:
        con.unregister(view)


def _export_all(
    con: duckdb.DuckDBPyConnection,
    out_dir: Path,
    steps: CustomerSteps,
    customers: Customers,
    **example_params: int,
) -> dict[str, int]:
    """Write every sequence table under out_dir; returns the number of examples per split.

    Serving goes first, streamed: the biggest table, written while no example rows are held;
    each split's example rows are freed once written.
    """
    _export(con, "marts/seq_export_serving", "seq_serving_rows",
            serving_reader(steps, customers, example_params["history_len"]), out_dir / "serving")
    examples = example_tables(steps, customers, **example_params)
    n_examples = {}
    for split in SPLITS:
        rows = examples.pop(split)
        n_examples[split] = rows.num_rows
        _export(con, "marts/seq_export_examples", "seq_examples_split", rows, out_dir / split)
        del rows
    for table in ("items", "customers"):
        (out_dir / table).mkdir(parents=True)
        run_sql(con, f"marts/seq_export_{table}", path=str(out_dir / table / PART_FILENAME))
    return n_examples


def _publish_tables(con: duckdb.DuckDBPyConnection, meta: dict[str, Any]) -> None:
    """Replace item_index, customer_index and sequence_meta in one transaction."""
    con.execute("BEGIN TRANSACTION")
    try:
        run_sql(con, "marts/item_index")
        run_sql(con, "marts/customer_index")
        run_sql(con, "marts/sequence_meta", **meta)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _writer_of(con: duckdb.DuckDBPyConnection, warehouse_dir: str | Path) -> WarehouseWriter:
    """The writer session the build publishes its parquet with (a bare DuckDB connection cannot
    publish the directory and its tables together)."""
    if not isinstance(con, WarehouseWriter):
        raise TypeError("build_sequence_tables needs a warehouse writer, recs.warehouse.connect(warehouse_dir): "
                        "it publishes the parquet directory with the DuckDB tables")
    if os.path.realpath(con.warehouse_dir) != os.path.realpath(warehouse_dir):
        raise ValueError(f"the writer is of {con.warehouse_dir}, not of {warehouse_dir}")
    return con


def _cleanup(con: duckdb.DuckDBPyConnection) -> None:
    """Drop the build's temporary tables and Arrow views (they hold memory)."""
    for view in _ARROW_VIEWS:
        try:
            con.unregister(view)
        except duckdb.Error:
            pass
    for table in _TEMP_TABLES:
        con.execute(f"DROP TABLE IF EXISTS temp.{table}")


def build_sequence_tables(
    con: duckdb.DuckDBPyConnection,
    warehouse_dir: str | Path,
    *,
    min_user_events: int = 10,
    min_item_events: int = 1,
    history_len: int = 64,
    max_candidates: int = 16,
    train_quantile: float = 0.8,
    val_quantile: float = 0.9,
    collapse_repeats: bool = False,
) -> dict[str, Any]:
    """Build `warehouse_dir/sequences/` and the item_index / customer_index / sequence_meta tables.

    `con` is a writer of the warehouse (`recs.warehouse.connect(warehouse_dir)`) holding `events`
    and `items`; the new tables and `sequences/` become visible together when it is closed (a
    reader of this process sees them from then on too). Returns a report: cutoffs, parameters,
    row counts per table and `seconds`. A failure leaves the previous sequence tables and DuckDB
    tables as they were.
    """
    params = dict(
        min_user_events=min_user_events,
        min_item_events=min_item_events,
        history_len=history_len,
        max_candidates=max_candidates,
        train_quantile=train_quantile,
        val_quantile=val_quantile,
    )
    validate_params(**params)
    params["collapse_repeats"] = bool(collapse_repeats)
    _require_inputs(con)
    writer = _writer_of(con, warehouse_dir)
    started = time.perf_counter()
    final_dir = sequences_dir(warehouse_dir)
    tmp_dir = writer.new_sequences_dir()
    staged = False
    # The exports rely on DuckDB keeping the Arrow tables' row order (sorting lists is costly).
    with duckdb_setting(con, "preserve_insertion_order", True):
        try:
            steps = _load_steps(con, min_item_events, min_user_events, params["collapse_repeats"])
            in_training = steps.n_vocab_events >= min_user_events
            filtered_ts = steps.filtered_ts
            if len(filtered_ts) == 0:
                raise ValueError(
                    f"no events left after the filters (min_item_events={min_item_events}, "
                    f"min_user_events={min_user_events}): lower them or ingest more data"
                )
            train_end_ts, val_end_ts = discrete_quantiles(filtered_ts, (train_quantile, val_quantile))
            customers = _assign_customers(con, steps, in_training)
            con.register("seq_customer_rows", customers_table(customers))  # exported and published
            run_sql(con, "intermediate/seq_item_index_next", train_end_ts=train_end_ts)
            # One DuckDB thread for the exports: their rows come from Python (one generator, or
            # Arrow tables already built), and a second writer thread only buffers more row groups
            # (~60 MB for serving) for no gain in time.
            with duckdb_setting(con, "threads", 1):
                n_examples = _export_all(con, tmp_dir, steps, customers, history_len=history_len,
                                         max_candidates=max_candidates, train_end_ts=train_end_ts,
                                         val_end_ts=val_end_ts)
            [(n_items, n_item_ids)] = run_sql(con, "intermediate/seq_item_index_summary").fetchall()
            meta = {
                "train_end_ts": train_end_ts,
                "val_end_ts": val_end_ts,
                **params,
                "n_filtered_events": int(len(filtered_ts)),
                **{f"n_{split}": n_examples[split] for split in SPLITS},
                "n_serving": int(len(customers.customer_idx)),  # one serving row per customer
                "n_items": int(n_items),
                "n_item_ids": int(n_item_ids),
                "n_customers": int(len(customers.customer_idx)),
                "n_in_training": int(customers.in_training.sum()),
            }
            (tmp_dir / META_FILENAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            _publish_tables(con, meta)
            writer.stage_sequences(tmp_dir)  # becomes `sequences/` when the writer publishes
            staged = True
        finally:
            if not staged:
                shutil.rmtree(tmp_dir, ignore_errors=True)
            _cleanup(con)
    report = {**meta, "sequences_dir": str(final_dir), "seconds": round(time.perf_counter() - started, 3)}
    log.info("built sequence tables: %s", report)
    return report
