"""Non-learned baselines over dense item_idx: popularity and a repeat-aware item-kNN.

Both score a batch of left-padded item_idx histories [N, T] (0 = padding) into dense
[N, num_items + 1] float32 scores whose column 0 (padding) is -inf, so they plug into
`model.metrics.rank_of_targets` and `top_k` like the learned models.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import scipy.sparse as sp

from model.metrics import top_k

DAY_MS = 86_400_000


def _rows_in_chunks(n: int, chunk_rows: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive row chunks."""
    for start in range(0, n, chunk_rows):
        yield start, min(start + chunk_rows, n)


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
class ItemKNN:
    """Repeat-aware sequential item-kNN.

    fit: co-occurrence of items within `window` steps of each other in train sequences,
    a pair at distance d weighing `distance_decay ** (d - 1)` (forward pairs a -> b by
    `forward_weight`, backward by `backward_weight`), asymmetric-cosine normalised
    sim(a, b) = co(a, b) / (n_a ** alpha * n_b ** (1 - alpha)), keeping each item's top
    `neighbours`. Self-pairs are dropped: repeats are the repeat term's job.
    score(candidate | history) = sum over the last `last_n` steps (k = 0 most recent) of
    `recency_decay ** k * sim(step, candidate)`
    + `repeat_boost * sum over history occurrences of repeat_decay ** k` (recently seen items
    are often seen again) + `popularity_weight * popularity share` (orders cold rows).
    Defaults tuned on the real Retail Rocket sessions (README).
    """

    num_items: int
    window: int = 8
    distance_decay: float = 0.5
    forward_weight: float = 1.0
    backward_weight: float = 1.0
    alpha: float = 0.7
    neighbours: int = 200
    last_n: int = 10
    recency_decay: float = 0.5
    repeat_boost: float = 1.0
    repeat_decay: float = 0.95
    popularity_weight: float = 1e-3
    sim: sp.csr_matrix | None = dataclasses.field(default=None, repr=False)
    popularity: np.ndarray | None = dataclasses.field(default=None, repr=False)

    def fit(self, sequences: np.ndarray, first_counted: np.ndarray | None = None) -> ItemKNN:
        """Fit on left-padded item_idx sequences [N, T] (0 = padding).

        first_counted [N] (optional): count a pair (and an occurrence) only when its later
        step sits at position >= first_counted[row], so overlapping examples (history ++
        window rows) count each step once.
        """
        seqs = np.asarray(sequences)
        size = self.num_items + 1
        n, t = seqs.shape
        counted = np.ones_like(seqs, dtype=bool) if first_counted is None else (
            np.arange(t)[None, :] >= np.asarray(first_counted)[:, None])
        occurrences = np.bincount(seqs[(seqs > 0) & counted], minlength=size)[:size].astype(np.float64)
        co = sp.csr_matrix((size, size), dtype=np.float64)
        for d in range(1, self.window + 1):
            if d >= t:
                break
            a, b = seqs[:, :-d], seqs[:, d:]
            ok = (a > 0) & (b > 0) & (a != b) & counted[:, d:]
            weight = self.distance_decay ** (d - 1)
            fwd = sp.coo_matrix((np.full(int(ok.sum()), weight), (a[ok], b[ok])), shape=(size, size)).tocsr()
            co = co + self.forward_weight * fwd + self.backward_weight * fwd.T.tocsr()
        co = co.tocoo()
        norm = np.maximum(occurrences, 1.0)
        values = co.data / (norm[co.row] ** self.alpha * norm[co.col] ** (1.0 - self.alpha))
        self.sim = _keep_top_per_row(sp.csr_matrix((values, (co.row, co.col)), shape=(size, size)), self.neighbours)
        self.popularity = (occurrences / max(occurrences.sum(), 1.0)).astype(np.float32)
        return self

    def fit_tables(self, tables, split: str = "train", chunk_rows: int = 65_536) -> ItemKNN:
        """Fit on a SequenceTables split: rows = history ++ window, counting window steps only."""
        from model.data import _concat_steps

        arrays = tables.split(split)
        parts, firsts = [], []
        for start, stop in _rows_in_chunks(len(arrays), chunk_rows):
            seq, w = _concat_steps(arrays, np.arange(start, stop))
            parts.append(seq["item"])
            firsts.append(seq["item"].shape[1] - w)
        return self.fit(np.concatenate(parts), np.concatenate(firsts))

    def _seed_matrix(self, histories: np.ndarray, last_n: int, decay: float) -> sp.csr_matrix:
        """Sparse [N, I+1]: sum of decay**k over each row's last_n real steps (k = 0 most recent)."""
        h = np.asarray(histories)
        n, t = h.shape
        real = h > 0
        # k = number of real steps after this one (left padding keeps real steps at the end).
        k = np.cumsum(real[:, ::-1], axis=1)[:, ::-1] - 1
        use = real & (k < last_n)
        rows = np.broadcast_to(np.arange(n)[:, None], h.shape)[use]
        return sp.csr_matrix((decay ** k[use].astype(np.float64), (rows, h[use])), shape=(n, self.num_items + 1))

    def score(self, histories: np.ndarray, chunk_rows: int = 512) -> np.ndarray:
        """Dense float32 scores [N, I+1] (padding column -inf); rows computed in chunks."""
        if self.sim is None:
            raise RuntimeError("ItemKNN.score before fit")
        h = np.asarray(histories)
        out = np.empty((len(h), self.num_items + 1), np.float32)
        for start, stop in _rows_in_chunks(len(h), chunk_rows):
            out[start:stop] = self._score_chunk(h[start:stop])
        return out

    def _score_chunk(self, h: np.ndarray) -> np.ndarray:
        """Scores of one chunk of histories."""
        seeds = self._seed_matrix(h, self.last_n, self.recency_decay)
        scores = (seeds @ self.sim).toarray().astype(np.float32)
        if self.repeat_boost:
            repeats = self._seed_matrix(h, h.shape[1], self.repeat_decay)
            scores += self.repeat_boost * repeats.toarray().astype(np.float32)
        scores += self.popularity_weight * self.popularity[None, :]
        scores[:, 0] = -np.inf
        return scores

    def topk(self, histories: np.ndarray, k: int, chunk_rows: int = 512) -> np.ndarray:
        """Top-k item_idx per row, best first."""
        h = np.asarray(histories)
        out = np.zeros((len(h), min(k, self.num_items + 1)), np.int64)
        for start, stop in _rows_in_chunks(len(h), chunk_rows):
            out[start:stop] = top_k(self._score_chunk(h[start:stop]), k)
        return out


def _keep_top_per_row(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the k largest entries of each CSR row (vectorised over the flat data)."""
    matrix = matrix.tocsr()
    matrix.sum_duplicates()
    lengths = np.diff(matrix.indptr)
    if k <= 0 or lengths.max(initial=0) <= k:
        return matrix
    row = np.repeat(np.arange(matrix.shape[0]), lengths)
    order = np.lexsort((-matrix.data, row))  # by row, then value descending
    rank_in_row = np.arange(len(order)) - np.repeat(matrix.indptr[:-1], lengths)
    keep = order[rank_in_row < k]
    return sp.csr_matrix((matrix.data[keep], (row[keep], matrix.indices[keep])), shape=matrix.shape)


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
