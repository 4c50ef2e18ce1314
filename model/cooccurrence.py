"""Item co-occurrence: the neighbour index behind the item-kNN baseline and a candidate source.

`ItemKNN.fit` counts items that occur within `window` steps of each other in customers'
sequences (distance-decayed, both directions), normalises by asymmetric cosine and keeps each
item's top `neighbours`. Scoring a history sums its last steps' neighbour rows with a recency
decay (STAN-style: the most recent steps say most about the next one). Serving uses the sparse
forms (`neighbour_scores`, `top_neighbours`, `lookup`) so no [n, num_items] array is built;
the baseline adds a repeat boost and a popularity tie-break over the dense scores.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

from model.metrics import top_k


def rows_in_chunks(n: int, chunk_rows: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive row chunks."""
    for start in range(0, n, chunk_rows):
        yield start, min(start + chunk_rows, n)


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
        return self.fit_splits(tables, (split,), chunk_rows)

    def fit_splits(self, tables, splits: tuple[str, ...], chunk_rows: int = 65_536) -> ItemKNN:
        """Fit on the windows of several splits (each step counted once, in the window holding it)."""
        from model.data import _concat_steps

        parts, firsts = [], []
        width = 0
        for split in splits:
            arrays = tables.split(split)
            for start, stop in rows_in_chunks(len(arrays), chunk_rows):
                seq, w = _concat_steps(arrays, np.arange(start, stop))
                parts.append(seq["item"])
                firsts.append(seq["item"].shape[1] - w)
                width = max(width, seq["item"].shape[1])
        if not parts:
            return self.fit(np.zeros((0, 1), np.int32))
        # Left-pad every part to one width (splits may differ in window width).
        pad = [width - p.shape[1] for p in parts]
        seqs = np.concatenate([np.pad(p, ((0, 0), (d, 0))) for p, d in zip(parts, pad)])
        return self.fit(seqs, np.concatenate([f + d for f, d in zip(firsts, pad)]))

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
        for start, stop in rows_in_chunks(len(h), chunk_rows):
            out[start:stop] = self._score_chunk(h[start:stop])
        return out

    def neighbour_scores(self, histories: np.ndarray) -> sp.csr_matrix:
        """Sparse [n, I+1]: the recency-weighted co-occurrence score of every neighbour of the
        last `last_n` steps (no repeat boost, no popularity), sorted indices per row."""
        if self.sim is None:
            raise RuntimeError("ItemKNN.neighbour_scores before fit")
        out = (self._seed_matrix(np.asarray(histories), self.last_n, self.recency_decay) @ self.sim).tocsr()
        out.sort_indices()
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
        for start, stop in rows_in_chunks(len(h), chunk_rows):
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


def top_per_row(matrix: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(column [n, k], value [n, k]) of each CSR row's k largest entries, best first; missing
    slots are column 0, value 0. Ties go to the smaller column."""
    matrix = matrix.tocsr()
    n = matrix.shape[0]
    cols = np.zeros((n, k), np.int64)
    vals = np.zeros((n, k), np.float32)
    lengths = np.diff(matrix.indptr)
    if k <= 0 or not matrix.nnz:
        return cols, vals
    if not matrix.has_sorted_indices:
        matrix = matrix.copy()
        matrix.sort_indices()
    row = np.repeat(np.arange(n), lengths)
    # Two stable sorts instead of a 3-key lexsort (3x faster): by value descending (entries
    # of equal value keep their row-major, column-ascending order), then by row.
    order = np.argsort(-matrix.data, kind="stable")
    order = order[np.argsort(row[order], kind="stable")]
    rank = np.arange(len(order)) - np.repeat(matrix.indptr[:-1], lengths)
    keep = order[rank < k]
    r, slot = row[keep], rank[rank < k]
    cols[r, slot] = matrix.indices[keep]
    vals[r, slot] = matrix.data[keep]
    return cols, vals


def lookup(matrix: sp.csr_matrix, columns: np.ndarray) -> np.ndarray:
    """float32 [n, C]: matrix[i, columns[i, c]] for a CSR matrix with sorted indices (0 where absent)."""
    n, c = columns.shape
    width = np.int64(matrix.shape[1])
    if not matrix.nnz or not c:
        return np.zeros((n, c), np.float32)
    row_of_entry = np.repeat(np.arange(n, dtype=np.int64), np.diff(matrix.indptr))
    keys = row_of_entry * width + matrix.indices.astype(np.int64)  # increasing: rows in order, indices sorted
    query = np.arange(n, dtype=np.int64)[:, None] * width + columns.astype(np.int64)
    pos = np.searchsorted(keys, query).clip(0, len(keys) - 1)
    found = keys[pos] == query
    return np.where(found, matrix.data[pos], 0.0).astype(np.float32)
