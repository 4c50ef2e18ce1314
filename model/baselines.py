"""Non-learned baselines over dense item_idx: popularity, S-POP and (from model.cooccurrence) a
repeat-aware item-kNN.

Both score a batch of left-padded item_idx histories [N, T] (0 = padding) into dense
[N, num_items + 1] float32 scores whose column 0 (padding) is -inf, so they plug into
`model.metrics.rank_of_targets` and `top_k` like the learned models.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from model.cooccurrence import ItemKNN, rows_in_chunks as _rows_in_chunks  # noqa: F401 - re-exported
from model.metrics import top_k

DAY_MS = 86_400_000


@dataclasses.dataclass
class Popularity:
    """Every customer gets the same scores: item counts (all train, or only the last days).

    Default (`from_tables`): all train-period events (`n_train_events`), the stronger choice
    on the Retail Rocket sessions (see README); `trending_days=7` counts the steps of the last
    7 days before the train cutoff instead.
    """

    counts: np.ndarray  # float [I+1]

    @classmethod
    def fit(cls, items: np.ndarray, num_items: int, *, ts: np.ndarray | None = None,
            cutoff_ts: int | None = None, trending_days: float | None = None) -> Popularity:
        """Counts of flat item_idx `items`; with trending_days, only those with ts in the last days before cutoff_ts."""
        items = np.asarray(items).ravel()
        if trending_days is not None:
            if ts is None:
                raise ValueError("trending popularity needs event timestamps")
            ts = np.asarray(ts).ravel()
            cutoff = int(ts.max()) + 1 if cutoff_ts is None else cutoff_ts
            recent = (ts >= cutoff - trending_days * DAY_MS) & (ts < cutoff)
            items = items[recent]
        counts = np.bincount(items[items > 0], minlength=num_items + 1)[: num_items + 1].astype(np.float64)
        return cls(counts)

    @classmethod
    def from_tables(cls, tables, *, trending_days: float | None = None) -> Popularity:
        """From SequenceTables: n_train_events, or (trending) train-split window steps of the last days."""
        if trending_days is None:
            return cls(tables.item_popularity.astype(np.float64))
        import pyarrow.dataset as pads

        files = sorted(str(p) for p in (Path(tables.root) / "train").glob("*.parquet"))
        table = pads.dataset(files, format="parquet").to_table(columns=["window_item", "window_ts"])
        items = pc.list_flatten(table.column("window_item")).to_numpy()
        ts = pc.list_flatten(table.column("window_ts")).to_numpy()
        cutoff = tables.meta.get("train_end_ts")
        return cls.fit(items, tables.num_items, ts=ts, cutoff_ts=cutoff, trending_days=trending_days)

    def score(self, histories: np.ndarray) -> np.ndarray:
        """[N, I+1] scores (the counts in every row; padding column -inf)."""
        row = self.counts.astype(np.float32).copy()
        row[0] = -np.inf
        return np.broadcast_to(row, (len(histories), len(row))).copy()

    def topk(self, histories: np.ndarray, k: int) -> np.ndarray:
        """Top-k item_idx per row (the same list for everyone)."""
        best = top_k(self.score(np.zeros((1, 1), np.int32)), k)[0]
        return np.broadcast_to(best, (len(histories), len(best))).copy()


@dataclasses.dataclass
class SessionPopularity:
    """S-POP: re-show the customer's own items, most frequent first (ties: most recent first),
    then popular items. The "show them what they looked at" bar every model must clear."""

    popularity: np.ndarray  # float [I+1] counts (tie-break and fill)

    def score(self, histories: np.ndarray) -> np.ndarray:
        """[N, I+1] scores: occurrences in the history + a recency tie-break < 1 + popularity < 1e-3."""
        h = np.asarray(histories)
        n, t = h.shape
        size = len(self.popularity)
        share = self.popularity / max(float(self.popularity.max(initial=0.0)), 1.0)
        out = np.broadcast_to((1e-3 * share).astype(np.float32), (n, size)).copy()
        rows = np.broadcast_to(np.arange(n)[:, None], h.shape)
        real = h > 0
        np.add.at(out, (rows[real], h[real]), 1.0)
        # Recency tie-break: the newest position of each item (left padding: newest = last column).
        recency = np.zeros((n, size), np.float32)
        recency[rows[real], h[real]] = (np.broadcast_to(np.arange(t), h.shape)[real] + 1) / (t + 1)  # later wins
        out += 0.5 * recency
        out[:, 0] = -np.inf
        return out


# --------------------------------------------------------------------------------------------
# Real-data check: next-item prediction on the Retail Rocket sessions slice
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class SessionSplit:
    """Sessions as left-padded item sequences: fit on `train`, predict `target` from `test_history`."""

    num_items: int
    train: np.ndarray  # int [S_train, T] left-padded
    test_history: np.ndarray  # int [S_test, T] all but the last step, left-padded
    target: np.ndarray  # int [S_test] last item of each test session
    train_items: np.ndarray  # flat item ids of train events (popularity)
    train_ts: np.ndarray  # their timestamps (ms)


def _left_pad(items: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """Flat items grouped by consecutive `lengths` -> [len(lengths), width] keeping each group's last width."""
    n = len(lengths)
    out = np.zeros((n, width), np.int32)
    row = np.repeat(np.arange(n), lengths)
    pos = np.arange(len(items)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    col = width - lengths[row] + pos
    keep = col >= 0
    out[row[keep], col[keep]] = items[keep]
    return out


def load_sessions(path: str | Path, test_fraction: float = 0.1, max_len: int = 64) -> SessionSplit:
    """Read the sessions events.csv(.gz) (one visitorid per session, dense itemids 1..I).

    Sessions are ordered by their first event; the last `test_fraction` are the test set.
    """
    import duckdb

    rows = duckdb.sql(f"""
        SELECT visitorid, itemid, timestamp,
               min(timestamp) OVER (PARTITION BY visitorid) AS session_start
        FROM read_csv('{Path(path)}')
        ORDER BY session_start, visitorid, timestamp
    """).fetchnumpy()
    visitor, items, ts = rows["visitorid"], rows["itemid"].astype(np.int32), rows["timestamp"]
    starts = np.flatnonzero(np.r_[True, visitor[1:] != visitor[:-1]])
    lengths = np.diff(np.r_[starts, len(visitor)])
    n_test = int(round(len(starts) * test_fraction))
    n_train = len(starts) - n_test
    split_at = starts[n_train]
    train = _left_pad(items[:split_at], lengths[:n_train], max_len)
    test_len = lengths[n_train:]
    test_items = items[split_at:]
    last = np.cumsum(test_len) - 1
    history_mask = np.ones(len(test_items), bool)
    history_mask[last] = False
    history = _left_pad(test_items[history_mask], test_len - 1, max_len)
    return SessionSplit(int(items.max()), train, history, test_items[last], items[:split_at], ts[:split_at])


def evaluate_on_sessions(split: SessionSplit, model, k: int = 20, chunk_rows: int = 512) -> dict[str, float]:
    """Recall@k and MRR@k of `model.score` predicting each test session's last item."""
    from model.metrics import mrr_at_k, rank_of_targets, recall_at_k

    ranks = np.concatenate([
        rank_of_targets(model.score(split.test_history[a:b]), split.target[a:b])
        for a, b in _rows_in_chunks(len(split.target), chunk_rows)
    ])
    return {f"recall@{k}": recall_at_k(ranks, k), f"mrr@{k}": mrr_at_k(ranks, k)}
