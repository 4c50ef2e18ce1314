"""Next-event cases: what a nightly list faces, taken from the sequence tables.

Every step of a split's windows whose customer has at least one earlier step (in any split) is
a case: its history is everything before it (the window's history ++ the window's earlier steps,
the last H of them), its target is the step itself. That is exactly what a list published the
moment before that event had to contain, so evaluation and model selection measure the product's
job; on session-shaped data a window's first step usually has no history, and cases keep the
steps inside the window that do.

`future_*` are the steps from the case on to the end of its window (the target first): the
cart / purchase labels of the ranker's other heads ("will this customer cart or buy the item
soon") come from them.
"""
from __future__ import annotations

import dataclasses


import numpy as np

from model.data import STEP_FIELDS, SequenceTables, SplitArrays, StepArrays, _concat_steps


@dataclasses.dataclass(frozen=True)
class Cases:
    """N next-event cases (row i of every array), dense item_idx, histories left-padded to H."""

    customer_idx: np.ndarray  # int32 [N]
    visitorid: np.ndarray  # int64 [N]
    history: StepArrays  # [N, H] the steps before the case
    target_idx: np.ndarray  # int32 [N] item_idx of the case's event
    target_action: np.ndarray  # int8 [N] its action bit
    ts: np.ndarray  # int64 [N] ms of the case's event (window_start_ts for the first step)
    future_item: np.ndarray  # int32 [N, M] item_idx of this and the later steps of its window, 0-padded right
    future_action: np.ndarray  # int8 [N, M]
    is_last: np.ndarray  # bool [N] the customer's last case in this split

    def __len__(self) -> int:
        return len(self.target_idx)

    def take(self, rows: np.ndarray) -> "Cases":
        """The cases at `rows` (is_last keeps its meaning within the whole split)."""
        return Cases(self.customer_idx[rows], self.visitorid[rows],
                     StepArrays(*(getattr(self.history, f)[rows] for f in ("item", "category", "root", "action",
                                                                            "length"))),
                     self.target_idx[rows], self.target_action[rows], self.ts[rows], self.future_item[rows],
                     self.future_action[rows], self.is_last[rows])


def next_event_cases(tables: SequenceTables, split: str, history_len: int | None = None,
                     window_ts: np.ndarray | None = None) -> Cases:
    """Every next-event case of a loaded split, in (example, position) order.

    window_ts: per-example, per-window-step ms [N, M] (left-padded like the window); None uses
    the window start for every step (the loader does not read per-step times).
    """
    arrays = tables.split(split)
    return cases_from_split(arrays, history_len or tables.history_len, window_ts)


def cases_from_split(arrays: SplitArrays, history_len: int, window_ts: np.ndarray | None = None) -> Cases:
    """`next_event_cases` on one SplitArrays (vectorised: no loop over examples)."""
    n = len(arrays)
    rows = np.arange(n)
    seq, w = _concat_steps(arrays, rows)  # [N, T] left-padded history ++ window; window = last w columns
    total = seq["item"].shape[1] if n else 0
    m = arrays.window.item.shape[1]
    h_len = arrays.history.length.astype(np.int64)
    # Case (row, j): window position j, history = the h + j steps before it.
    row_of = np.repeat(rows, w)
    j = np.arange(int(w.sum())) - np.repeat(np.cumsum(w) - w, w)
    keep = (h_len[row_of] + j) > 0
    row_of, j = row_of[keep], j[keep]
    col = total - w[row_of] + j  # column of the target in seq
    # History columns: the last H before `col`.
    hist_cols = col[:, None] - history_len + np.arange(history_len)[None, :]
    first_real = total - (h_len[row_of] + w[row_of])  # first non-padding column of the row
    valid = hist_cols >= first_real[:, None]
    hist_cols = np.clip(hist_cols, 0, max(total - 1, 0))
    history = {f: np.where(valid, seq[f][row_of[:, None], hist_cols], 0) for f in STEP_FIELDS}
    # Future: window positions j .. w-1, left-aligned into [N, M].
    fut_cols = col[:, None] + np.arange(m)[None, :]
    fut_valid = fut_cols < total
    fut_cols = np.clip(fut_cols, 0, max(total - 1, 0))
    future_item = np.where(fut_valid, seq["item"][row_of[:, None], fut_cols], 0)
    future_action = np.where(fut_valid, seq["action"][row_of[:, None], fut_cols], 0)
    if window_ts is not None and len(row_of):
        ts = window_ts[row_of, m - w[row_of] + j]
    else:
        ts = arrays.window_start_ts[row_of]
    customer = arrays.customer_idx[row_of]
    # Last case per customer: rows are in (customer, time) order within a split.
    is_last = np.ones(len(customer), bool)
    if len(customer):
        is_last[:-1] = customer[1:] != customer[:-1]
    return Cases(
        customer_idx=customer.astype(np.int32),
        visitorid=arrays.visitorid[row_of].astype(np.int64),
        history=StepArrays(history["item"].astype(np.int32), history["category"].astype(np.int32),
                           history["root"].astype(np.int32), history["action"].astype(np.int8),
                           valid.sum(axis=1).astype(np.int32)),
        target_idx=seq["item"][row_of, col].astype(np.int32),
        target_action=seq["action"][row_of, col].astype(np.int8),
        ts=np.asarray(ts, np.int64),
        future_item=future_item.astype(np.int32),
        future_action=future_action.astype(np.int8),
        is_last=is_last,
    )


def holdout_customers(customer_idx: np.ndarray, share: float, seed: int = 0) -> np.ndarray:
    """bool [N]: cases whose customer falls in a deterministic `share` of customers (by a hash of
    the id), so a customer's cases are all on one side of a train / selection split."""
    x = (customer_idx.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(31)
    return (x % np.uint64(1_000_003)).astype(np.float64) / 1_000_003 < share
