"""The data path into the trainers: parquet sequence tables -> dense numpy -> Grain batches.

`SequenceTables.load` reads `warehouse/sequences/` once into left-padded numpy arrays
(vectorised: pyarrow list flatten + numpy scatter, no per-row Python). Batch sources return a
WHOLE batch per `__getitem__(step)` (numpy fancy indexing over a batch costs ~1 us per row,
one Grain record ~50 us), and every batch is a pure function of (seed, step):

    epoch = step // batches_per_epoch
    rows  = default_rng([seed, epoch]).permutation(N)[b * B:(b + 1) * B]   (last partial dropped)

so a trainer can resume either from its step counter (`make_loader(..., start_step=step)`) or
from the Grain iterator state saved beside the model (`save_iterator_state`, or
`grain.checkpoint.CheckpointSave(iterator)` as an item of an Orbax Composite).

With several JAX processes (multi-host data parallelism, model/parallel.py) each process's
loader computes only its block of every global batch's rows (`ShardByJaxProcess`): the same
steps in every process, shard i of n holding rows [i * B/n, (i + 1) * B/n) of step s, so the
global batch is the one a single process computes.

Arrays keep dense `item_idx`; batches carry ORIGINAL ids (itemid via `item_ids`, visitorid,
original category / root ids), 0 = padding, left-padded, int32 (see model/batch.py).
"""
from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from model.batch import History, Items, RetrievalBatch

DEFAULT_HISTORY_LEN = 64
SPLITS = ("train", "val", "test")
STEP_FIELDS = ("item", "category", "root", "action")
POPULARITY_EXPONENT = 0.75
# Columns the loader needs (per-step timestamps are not used by the models: skip reading them).
SPLIT_COLUMNS = ["customer_idx", "visitorid", "window_start_ts"] + [
    f"{prefix}_{field}" for prefix in ("history", "window") for field in STEP_FIELDS] + [
    f"candidate_{field}" for field in ("item", "category", "root", "label")]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def _list_lengths(column: pa.ChunkedArray) -> np.ndarray:
    """Per-row list length (null lists count as empty)."""
    return pc.fill_null(pc.list_value_length(column), 0).to_numpy().astype(np.int64)


@dataclasses.dataclass
class _PadLayout:
    """Where a list column's flattened values land in a left-padded [N, width] array.

    Shared by sibling columns (item/category/root/action have the same lengths), so the
    layout is computed once per list group.
    """

    mask: np.ndarray  # bool [N, width]: True where a kept value goes (row-major = flatten order)
    keep: np.ndarray | None  # bool per flattened value; None = all kept (no row longer than width)
    lengths: np.ndarray  # int32 [N] kept lengths


def _pad_layout(column: pa.ChunkedArray, width: int) -> _PadLayout:
    """Layout of a list column keeping each row's last `width` values, right-aligned."""
    lengths = _list_lengths(column)
    kept = np.minimum(lengths, width)
    mask = np.arange(width)[None, :] >= (width - kept)[:, None]
    keep = None
    if len(lengths) and lengths.max() > width:  # drop values before each row's last `width`
        starts = np.cumsum(lengths) - lengths
        pos_in_row = np.arange(int(lengths.sum())) - np.repeat(starts, lengths)
        keep = pos_in_row >= np.repeat(lengths - kept, lengths)
    return _PadLayout(mask, keep, kept.astype(np.int32))


def _scatter(column: pa.ChunkedArray, layout: _PadLayout, dtype: Any) -> np.ndarray:
    """Fill a left-padded [N, width] array from a list column with the given layout.

    Boolean-mask assignment fills True cells in row-major order, which is exactly the
    flattened list order: no index arrays needed.
    """
    values = pc.list_flatten(column).to_numpy(zero_copy_only=False)
    out = np.zeros(layout.mask.shape, dtype=dtype)
    out[layout.mask] = values if layout.keep is None else values[layout.keep]
    return out


def left_pad_lists(column: pa.ChunkedArray | pa.Array, width: int, dtype: Any = np.int32) -> tuple[np.ndarray, np.ndarray]:
    """A list column -> (left-padded [N, width] array keeping each row's LAST `width` values, kept lengths [N]).

    Vectorised: flatten the lists once, compute each value's flat destination from the row
    lengths, and scatter; values before a row's last `width` are dropped.
    """
    if isinstance(column, pa.Array):
        column = pa.chunked_array([column])
    layout = _pad_layout(column, width)
    return _scatter(column, layout, dtype), layout.lengths


@dataclasses.dataclass
class StepArrays:
    """Steps of N rows, left-padded to width W (dense item_idx, original category/root ids)."""

    item: np.ndarray  # int32 [N, W] item_idx, 0 = padding
    category: np.ndarray  # int32 [N, W]
    root: np.ndarray  # int32 [N, W]
    action: np.ndarray  # int8 [N, W] bitmask
    length: np.ndarray  # int32 [N] number of non-padding steps (after truncation)


def _load_steps(table: pa.Table, prefix: str, width: int) -> StepArrays:
    """The `{prefix}_item/category/root/action` list columns as left-padded StepArrays (one layout for all)."""
    layout = _pad_layout(table.column(f"{prefix}_item"), width)
    get = lambda field, dtype: _scatter(table.column(f"{prefix}_{field}"), layout, dtype)
    return StepArrays(get("item", np.int32), get("category", np.int32), get("root", np.int32),
                      get("action", np.int8), layout.lengths)


def _max_list_length(table: pa.Table, column: str) -> int:
    """Longest list in a column (0 for an empty table)."""
    lengths = _list_lengths(table.column(column))
    return int(lengths.max()) if lengths.size else 0


@dataclasses.dataclass
class SplitArrays:
    """One split (train/val/test) as dense arrays; row i = parquet example i."""

    customer_idx: np.ndarray  # int32 [N]
    visitorid: np.ndarray  # int64 [N]
    window_start_ts: np.ndarray  # int64 [N]
    history: StepArrays  # [N, H]
    window: StepArrays  # [N, M]
    candidate_item: np.ndarray  # int32 [N, C] item_idx, left-padded, first-seen order
    candidate_category: np.ndarray  # int32 [N, C]
    candidate_root: np.ndarray  # int32 [N, C]
    candidate_label: np.ndarray  # int8 [N, C] bitmask (OR of the window's actions on the item)

    def __len__(self) -> int:
        return len(self.customer_idx)


def _read_table(directory: Path, columns: list[str] | None = None) -> pa.Table:
    """All parquet files of one sequence table directory, in file-name order."""
    files = sorted(str(p) for p in directory.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no parquet files in {directory}: run `recs build` first")
    return pads.dataset(files, format="parquet").to_table(columns=columns)


def load_split(directory: Path, history_len: int, window_len: int | None = None) -> SplitArrays:
    """Read one split directory into SplitArrays (history truncated to its last `history_len` steps)."""
    table = _read_table(directory, SPLIT_COLUMNS)
    m = window_len or max(_max_list_length(table, "window_item"), 1)
    c = max(_max_list_length(table, "candidate_item"), 1)
    layout = _pad_layout(table.column("candidate_item"), c)
    cand_item, cand_cat, cand_root, cand_label = (
        _scatter(table.column(f"candidate_{field}"), layout, dtype)
        for field, dtype in (("item", np.int32), ("category", np.int32), ("root", np.int32), ("label", np.int8)))
    return SplitArrays(
        customer_idx=table.column("customer_idx").to_numpy().astype(np.int32),
        visitorid=table.column("visitorid").to_numpy().astype(np.int64),
        window_start_ts=table.column("window_start_ts").to_numpy().astype(np.int64),
        history=_load_steps(table, "history", history_len),
        window=_load_steps(table, "window", m),
        candidate_item=cand_item, candidate_category=cand_cat, candidate_root=cand_root,
        candidate_label=cand_label,
    )


def _as_int32_ids(values: np.ndarray, what: str) -> np.ndarray:
    """Original ids as int32 (the batch dtype), failing loudly rather than wrapping around."""
    if values.size and (values.max() > np.iinfo(np.int32).max or values.min() < 0):
        raise ValueError(f"{what} outside int32 range: the batch pytrees carry int32 ids")
    return values.astype(np.int32)


@dataclasses.dataclass
class SequenceTables:
    """A warehouse's `sequences/` as dense numpy arrays, loaded once.

    Lookups are indexed by item_idx (row 0 = padding, all zeros). Pickles as its load spec
    (path + arguments) and reloads on unpickling, so Grain worker processes never receive
    gigabytes of arrays through a pipe.
    """

    root: Path
    history_len: int
    window_len: int | None
    split_names: tuple[str, ...]
    popularity_column: str
    meta: dict
    item_ids: np.ndarray  # int32 [I+1] original itemid by item_idx
    item_category: np.ndarray  # int32 [I+1] latest categoryid
    item_root: np.ndarray  # int32 [I+1] latest root categoryid
    item_popularity: np.ndarray  # int64 [I+1] n_train_events (or popularity_column; 0 for padding)
    customer_visitorid: np.ndarray  # int64 [K+1] visitorid by customer_idx
    splits: dict[str, SplitArrays]
    _id_order: np.ndarray | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def load(cls, sequences: str | Path, *, splits: tuple[str, ...] = SPLITS,
             history_len: int = DEFAULT_HISTORY_LEN, window_len: int | None = None,
             popularity: str = "n_train_events") -> SequenceTables:
        """Load items, customers and the given splits from a `sequences/` directory.

        history_len: H, histories keep their most recent H steps. window_len: M, default the
        longest window in each split. popularity: the items column behind negative sampling
        (`n_events` when refitting on all data).
        """
        root = Path(sequences)
        meta_path = root / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        items = _read_table(root / "items")
        idx = items.column("item_idx").to_numpy().astype(np.int64)
        size = int(idx.max()) + 1 if idx.size else 1
        lookups = {}
        for name, column in (("ids", "itemid"), ("category", "categoryid"), ("root", "root_categoryid")):
            arr = np.zeros(size, np.int64)
            arr[idx] = pc.fill_null(items.column(column), 0).to_numpy()
            lookups[name] = _as_int32_ids(arr, f"items.{column}")
        counts = np.zeros(size, np.int64)
        counts[idx] = pc.fill_null(items.column(popularity), 0).to_numpy()
        customers = _read_table(root / "customers", ["customer_idx", "visitorid"])
        cidx = customers.column("customer_idx").to_numpy().astype(np.int64)
        visitor = np.zeros(int(cidx.max()) + 1 if cidx.size else 1, np.int64)
        visitor[cidx] = customers.column("visitorid").to_numpy()
        return cls(
            root=root, history_len=history_len, window_len=window_len, split_names=tuple(splits),
            popularity_column=popularity, meta=meta,
            item_ids=lookups["ids"], item_category=lookups["category"], item_root=lookups["root"],
            item_popularity=counts, customer_visitorid=visitor,
            splits={s: load_split(root / s, history_len, window_len) for s in splits},
        )

    @property
    def num_items(self) -> int:
        """Largest item_idx (score arrays are [N, num_items + 1], column 0 = padding)."""
        return len(self.item_ids) - 1

    def split(self, name: str) -> SplitArrays:
        """The arrays of one loaded split."""
        if name not in self.splits:
            raise KeyError(f"split {name!r} not loaded (loaded: {sorted(self.splits)})")
        return self.splits[name]

    def item_idx_of(self, item_ids: np.ndarray) -> np.ndarray:
        """Original itemids -> item_idx (0 for padding and unknown ids)."""
        if self._id_order is None:
            self._id_order = np.argsort(self.item_ids, kind="stable")
        order = self._id_order
        sorted_ids = self.item_ids[order]
        query = np.asarray(item_ids)
        pos = np.searchsorted(sorted_ids, query).clip(0, len(sorted_ids) - 1)
        found = (sorted_ids[pos] == query) & (query != 0)
        return np.where(found, order[pos], 0).astype(np.int32)

    def __getstate__(self) -> dict:
        return {"root": self.root, "history_len": self.history_len, "window_len": self.window_len,
                "split_names": self.split_names, "popularity": self.popularity_column}

    def __setstate__(self, state: dict) -> None:
        loaded = SequenceTables.load(state["root"], splits=state["split_names"],
                                     history_len=state["history_len"], window_len=state["window_len"],
                                     popularity=state["popularity"])
        self.__dict__.update(loaded.__dict__)


# --------------------------------------------------------------------------------------------
# Batch construction (pure functions of rows + rng)
# --------------------------------------------------------------------------------------------

def history_batch(tables: SequenceTables, steps: StepArrays, customer_id: np.ndarray, rows: np.ndarray) -> History:
    """History pytree of `rows` with original ids (int32)."""
    return History(
        customer_id=_as_int32_ids(np.asarray(customer_id)[rows], "visitorid"),
        item_id=tables.item_ids[steps.item[rows]],
        category_id=steps.category[rows].astype(np.int32),
        root_id=steps.root[rows].astype(np.int32),
        action=steps.action[rows].astype(np.int32),
    )


def _concat_steps(split: SplitArrays, rows: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """history ++ window steps of `rows`, padding dropped, left-padded to T = H + M.

    Returns per-field [B, T] arrays and the window length w: the window occupies the last w
    positions, the history the h positions before them.
    """
    hist, win = split.history, split.window
    width_h, width_m = hist.item.shape[1], win.item.shape[1]
    total = width_h + width_m
    h = hist.length[rows][:, None].astype(np.int64)
    w = win.length[rows][:, None].astype(np.int64)
    j = np.arange(total)[None, :]
    r = j - (total - (h + w))  # index into the unpadded sequence
    valid = r >= 0
    source = np.where(r < h, width_h - h + r, width_h + width_m - w + (r - h))
    source = np.where(valid, source, 0)
    out = {}
    for field in STEP_FIELDS:
        both = np.concatenate([getattr(hist, field)[rows], getattr(win, field)[rows]], axis=1)
        out[field] = np.where(valid, np.take_along_axis(both, source, axis=1), 0).astype(np.int32)
    return out, w[:, 0]


def retrieval_batch(tables: SequenceTables, split: SplitArrays, rows: np.ndarray,
                    width: int | None = None) -> RetrievalBatch:
    """Causal next-step batch: S = history ++ window, input = S[:-1] ([B, H+M-1]), target t = S[t+1].

    Targets are kept only where S[t+1] is a window step and the input at t is a real step,
    so each window step is trained exactly once per epoch (a window step with no preceding
    step at all, the first step of a customer's first window, has no target). width: keep only
    the last `width` steps of S (rows are left-padded, so shorter rows lose only padding).
    """
    seq, w = _concat_steps(split, rows)
    if width is not None and width < seq["item"].shape[1]:
        seq = {k: v[:, -width:] for k, v in seq.items()}
        w = np.minimum(w, width)
    total = seq["item"].shape[1]
    j = np.arange(total - 1)[None, :]
    is_window_target = (j + 1) >= (total - w[:, None])
    keep = is_window_target & (seq["item"][:, :-1] != 0)
    history = History(
        customer_id=_as_int32_ids(split.visitorid[rows], "visitorid"),
        item_id=tables.item_ids[seq["item"][:, :-1]],
        category_id=seq["category"][:, :-1],
        root_id=seq["root"][:, :-1],
        action=seq["action"][:, :-1],
    )
    target = Items(
        item_id=np.where(keep, tables.item_ids[seq["item"][:, 1:]], 0).astype(np.int32),
        category_id=np.where(keep, seq["category"][:, 1:], 0).astype(np.int32),
        root_id=np.where(keep, seq["root"][:, 1:], 0).astype(np.int32),
    )
    return RetrievalBatch(history=history, target=target)


def sampling_probabilities(tables: SequenceTables, exponent: float = POPULARITY_EXPONENT) -> np.ndarray:
    """p(item_idx) proportional to n_train_events ** exponent; padding gets 0.

    Items with no train events count as one event so that they keep a finite logQ when they
    show up as targets (e.g. when refitting on all data).
    """
    counts = np.maximum(tables.item_popularity.astype(np.float64), 1.0) ** exponent
    counts[0] = 0.0
    return counts / counts.sum()


def _draw(cdf: np.ndarray, rng: np.random.Generator, size: Any) -> np.ndarray:
    """Inverse-CDF draws of item_idx (cdf[0] = 0, so padding is never drawn)."""
    return np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right").astype(np.int32)


# --------------------------------------------------------------------------------------------
# Batch sources (Grain random-access sources whose records are whole batches)
# --------------------------------------------------------------------------------------------

class _EpochBatchSource:
    """Step -> rows of the batch: deterministic global shuffle per epoch, last partial batch dropped."""

    def __init__(self, tables: SequenceTables, split: str, batch_size: int, *, seed: int = 0,
                 num_epochs: int | None = 1, num_steps: int | None = None):
        self.tables, self.split_name, self.batch_size, self.seed = tables, split, batch_size, seed
        n = len(tables.split(split))
        self.batches_per_epoch = n // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"split {split!r} has {n} rows, fewer than one batch of {batch_size}")
        self.num_steps = num_steps if num_steps is not None else self.batches_per_epoch * (num_epochs or 1)
        self._perm: tuple[int, np.ndarray] | None = None
        self.shard_options: Any = None  # grain ShardOptions of a `sharded` view; None = every row

    @property
    def split(self) -> SplitArrays:
        return self.tables.split(self.split_name)

    def __len__(self) -> int:
        return self.num_steps

    def rows(self, step: int) -> np.ndarray:
        """Example indices of batch `step` (epoch permutation cached; one tuple swap, thread-safe)."""
        if not 0 <= step < self.num_steps:
            raise IndexError(f"step {step} outside [0, {self.num_steps})")
        epoch, within = divmod(int(step), self.batches_per_epoch)
        cached = self._perm
        if cached is None or cached[0] != epoch:
            cached = (epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.split)))
            self._perm = cached
        return cached[1][within * self.batch_size:(within + 1) * self.batch_size]

    def _step_rng(self, step: int) -> np.random.Generator:
        """Per-step randomness (negatives, slot order), independent of the epoch permutation."""
        return np.random.default_rng([self.seed, int(step), 1])

    def sharded(self, shard_options: Any) -> _EpochBatchSource:
        """A view of this source whose batches hold only shard `shard_index` of `shard_count` of
        every global batch's rows (a contiguous block; the same steps, the same per-step draws)."""
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__, shard_options=shard_options)
        return view

    def local_rows(self, rows: np.ndarray) -> np.ndarray:
        """This view's block of a global batch's rows (all of them when not sharded)."""
        shard = self.shard_options
        if shard is None or shard.shard_count == 1:
            return rows
        if len(rows) % shard.shard_count:
            raise ValueError(f"a batch of {len(rows)} rows does not split evenly over {shard.shard_count} "
                             "processes: use a batch size that is a multiple of the device count")
        n = len(rows) // shard.shard_count
        return rows[shard.shard_index * n:(shard.shard_index + 1) * n]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_perm"] = None
        return state


def length_buckets(lengths: np.ndarray, max_width: int, smallest: int = 4) -> np.ndarray:
    """Bucket widths 4, 8, 16, ... (then max_width) that cover `lengths`; one compiled shape each."""
    widths, w = [], smallest
    top = int(min(max(lengths.max(initial=1), 1), max_width))
    while w < top:
        widths.append(w)
        w *= 2
    return np.array(widths + [min(w, max_width)], np.int64)


class RetrievalBatchSource(_EpochBatchSource):
    """`source[step] -> RetrievalBatch` of numpy arrays; len = number of steps.

    With tokens_per_batch, rows are bucketed by their length (history + window steps) and each
    step draws one bucket (with probability proportional to its window steps, i.e. its targets)
    and tokens_per_batch // width rows of it, with replacement, as a pure function of
    (seed, step). Short session rows then cost their own length, not H + M. row_multiple: that
    row count is rounded down to a multiple of it (the device count, so that every batch splits
    evenly over the devices; 1 = as is).
    """

    def __init__(self, tables: SequenceTables, split: str, batch_size: int, *, seed: int = 0,
                 num_epochs: int | None = 1, num_steps: int | None = None, tokens_per_batch: int | None = None,
                 row_multiple: int = 1):
        super().__init__(tables, split, batch_size, seed=seed, num_epochs=num_epochs, num_steps=num_steps)
        self.tokens_per_batch, self.row_multiple = tokens_per_batch, max(1, int(row_multiple))
        if tokens_per_batch:
            arrays = self.split
            lengths = arrays.history.length.astype(np.int64) + arrays.window.length
            total = arrays.history.item.shape[1] + arrays.window.item.shape[1]
            self.widths = length_buckets(lengths, total)
            bucket = np.searchsorted(self.widths, np.minimum(lengths, total))
            self.bucket_rows = [np.flatnonzero(bucket == b) for b in range(len(self.widths))]
            weight = np.array([arrays.window.length[r].sum() for r in self.bucket_rows], np.float64)
            self.bucket_p = weight / max(weight.sum(), 1.0)

    def rows_and_width(self, step: int) -> tuple[np.ndarray, int | None]:
        """Example indices of batch `step` and the width its rows are cut to."""
        if not self.tokens_per_batch:
            return self.rows(step), None
        if not 0 <= step < self.num_steps:
            raise IndexError(f"step {step} outside [0, {self.num_steps})")
        rng = np.random.default_rng([self.seed, int(step), 3])
        b = int(rng.choice(len(self.widths), p=self.bucket_p))
        width = int(self.widths[b])
        size = max(1, self.tokens_per_batch // width)
        size = max(self.row_multiple, size - size % self.row_multiple)
        rows = self.bucket_rows[b][rng.integers(0, len(self.bucket_rows[b]), size)]
        return rows, width

    def __getitem__(self, step: int) -> RetrievalBatch:
        rows, width = self.rows_and_width(step)
        return retrieval_batch(self.tables, self.split, self.local_rows(rows), width)


class NegativeSampler:
    """Popularity-sampled retrieval negatives (n_train_events ** 0.75), deterministic per step.

    `sampler(step) -> (Items [num_negatives], logq [num_negatives])`, drawn with replacement.
    `item_logq[item_idx]` and `logq_of(item_ids)` (original ids) give log p of in-batch
    targets under the same distribution, for logQ correction (padding / unknown -> 0).
    """

    def __init__(self, tables: SequenceTables, num_negatives: int, seed: int = 0,
                 exponent: float = POPULARITY_EXPONENT):
        self.tables, self.num_negatives, self.seed = tables, num_negatives, seed
        probs = sampling_probabilities(tables, exponent)
        self.cdf = np.cumsum(probs)
        self.item_logq = np.where(probs > 0, np.log(np.where(probs > 0, probs, 1.0)), 0.0).astype(np.float32)

    def __call__(self, step: int) -> tuple[Items, np.ndarray]:
        idx = _draw(self.cdf, np.random.default_rng([self.seed, int(step), 2]), self.num_negatives)
        t = self.tables
        items = Items(item_id=t.item_ids[idx], category_id=t.item_category[idx], root_id=t.item_root[idx])
        return items, self.item_logq[idx]

    def logq_of(self, item_ids: np.ndarray) -> np.ndarray:
        """log p of original itemids (0 for padding and unknown ids)."""
        return self.item_logq[self.tables.item_idx_of(np.asarray(item_ids))]


def negative_sampler(tables: SequenceTables, num_negatives: int, seed: int = 0) -> NegativeSampler:
    """A NegativeSampler: call it with the train step for that step's negatives and their logQ."""
    return NegativeSampler(tables, num_negatives, seed)


# --------------------------------------------------------------------------------------------
# Grain loader
# --------------------------------------------------------------------------------------------

def _ensure_absl_flags() -> None:
    """mp_prefetch reads absl flags; parse defaults when the host program did not."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS(sys.argv[:1])


def make_loader(source: _EpochBatchSource, *, start_step: int = 0, prefetch: int = 2, worker_count: int = 0,
                shard_options: Any = None):
    """A Grain iterator over `source[start_step:]`, yielding one batch per step.

    prefetch: batches computed ahead in one background thread (0 = synchronous).
    worker_count > 0: batches computed in that many spawned processes instead (each
    reloads the tables from parquet; per-worker buffer = max(prefetch, 1)).
    shard_options (grain.sharding.ShardOptions, default ShardByJaxProcess()): with more than one
    shard, every batch holds only this shard's rows (`source.sharded`); one shard = all rows.
    The iterator's `get_state()` / `set_state()` (or save_/restore_iterator_state) resume it
    exactly; its state counts steps from `start_step`.
    """
    import grain

    shard = grain.sharding.ShardByJaxProcess() if shard_options is None else shard_options
    if shard.shard_count > 1:
        if not hasattr(source, "sharded"):
            raise TypeError(f"{type(source).__name__} cannot be split by process: it needs a "
                            "`sharded(shard_options)` method (see _EpochBatchSource)")
        source = source.sharded(shard)
    ds = grain.MapDataset.source(source)
    if start_step:
        ds = ds.slice(slice(start_step, None))
    if worker_count > 0:
        _ensure_absl_flags()
        it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count,
                                                               per_worker_buffer_size=max(prefetch, 1)))
    else:
        threads = 1 if prefetch > 0 else 0
        it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch))
    return iter(it_ds)


def save_iterator_state(iterator: Any, path: str | Path) -> None:
    """Write a Grain iterator's state as JSON (same format as grain.checkpoint.CheckpointHandler)."""
    Path(path).write_text(json.dumps(iterator.get_state(), indent=2))


def restore_iterator_state(iterator: Any, path: str | Path) -> Any:
    """Set a fresh iterator (same source and make_loader arguments) to a saved state; returns it."""
    iterator.set_state(json.loads(Path(path).read_text()))
    return iterator


# --------------------------------------------------------------------------------------------
# Evaluation and serving inputs
# --------------------------------------------------------------------------------------------

class EvalArrays(NamedTuple):
    """Inputs for offline metrics on one split (row i = parquet example i)."""

    history: History  # [N, H] original ids
    next_item_idx: np.ndarray  # int32 [N] item_idx of the first window step
    candidates: Items  # [N, C] original ids, 0 = padding slot
    labels: np.ndarray  # int32 [N, C] bitmask


def eval_arrays(tables: SequenceTables, split: str) -> EvalArrays:
    """History, next item and the window's own candidates (all positives, left-padded
    [N, C_max]) of every row of `split`. Dense item_idx views for baselines: `tables.split(split)`."""
    arrays = tables.split(split)
    rows = np.arange(len(arrays))
    win = arrays.window
    next_item = win.item[rows, win.item.shape[1] - np.maximum(win.length, 1)] * (win.length > 0)
    history = history_batch(tables, arrays.history, arrays.visitorid, rows)
    candidates = Items(item_id=tables.item_ids[arrays.candidate_item],
                       category_id=arrays.candidate_category.astype(np.int32),
                       root_id=arrays.candidate_root.astype(np.int32))
    labels = arrays.candidate_label.astype(np.int32)
    return EvalArrays(history, next_item.astype(np.int32), candidates, labels)


class ServingChunk(NamedTuple):
    """A chunk of `sequences/serving` customers (empty histories are all padding)."""

    customer_idx: np.ndarray  # int32 [n]
    visitorid: np.ndarray  # int64 [n]
    history: History  # [n, H] original ids
    history_item_idx: np.ndarray  # int32 [n, H] dense item_idx (for baselines)


def serving_histories(tables: SequenceTables, *, chunk_rows: int = 65_536,
                      history_len: int | None = None,
                      customer_range: tuple[int, int] | None = None) -> Iterator[ServingChunk]:
    """Stream every customer of `sequences/serving` in chunks of <= chunk_rows rows; with
    customer_range (lo, hi), only those with lo <= customer_idx < hi (a scoring shard: the rows
    are in customer_idx order, so the parquet statistics skip the other row groups)."""
    width = history_len or tables.history_len
    files = sorted(str(p) for p in (tables.root / "serving").glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no parquet files in {tables.root / 'serving'}")
    dataset = pads.dataset(files, format="parquet")
    where = None
    if customer_range is not None:
        where = (pc.field("customer_idx") >= customer_range[0]) & (pc.field("customer_idx") < customer_range[1])
    for batch in dataset.to_batches(batch_size=chunk_rows, filter=where):
        if batch.num_rows == 0:
            continue
        table = pa.Table.from_batches([batch])
        steps = _load_steps(table, "history", width)
        visitorid = table.column("visitorid").to_numpy().astype(np.int64)
        rows = np.arange(table.num_rows)
        yield ServingChunk(
            customer_idx=table.column("customer_idx").to_numpy().astype(np.int32),
            visitorid=visitorid,
            history=history_batch(tables, steps, visitorid, rows),
            history_item_idx=steps.item,
        )
