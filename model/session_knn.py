"""VSTAN-style session-based kNN (Ludewig et al. 2021; STAN: Garg et al., SIGIR 2019).

Same conventions as `model.baselines.ItemKNN`: left-padded item_idx rows [N, T] (0 = padding,
items 1..num_items), dense float32 scores [N, num_items + 1] with column 0 = -inf.

For a current session (the query) with L real steps:
- position weight of each distinct item (STAN lambda_spw): w(i) = exp(-a(i) / lambda_spw), a(i)
  = number of steps after the item's last occurrence (0 = the newest step); 1 when None;
  times idf(i) when `idf_similarity`;
- similarity to a past session s (cosine of the weighted query with s's item indicator):
  sim(s) = sum_{i in q & s} w(i) / (||w|| * sqrt(|s|)), |s| = distinct items of s, times the
  neighbour recency weight (STAN lambda_snh, in days) exp(-max(t_query - t_s, 0) / lambda_snh)
  when both timestamps are known;
- candidates: the past sessions sharing an item with the query; only the `sample_size` most
  recent of them (by timestamp, else by row order) when sample_size > 0 (VSKNN's sampling);
  the `k` most similar are the neighbours;
- item score (VSTAN): for every item j of every neighbour s,
  sim(s) * exp(-|p_s(j) - p_s*| / lambda_inh) * (1 + lambda_idf * idf(j)) * exp(-a_s / lambda_ipw)
  summed over neighbours, where p_s(j) is j's last position in s, p_s* the last position in s
  of an item of the query (STAN lambda_inh), a_s the steps after the newest query step whose
  item is in s (VSTAN lambda_ipw); each factor is 1 when its lambda is None (or idf 0);
  idf(j) = log(#sessions / #events of j) over the fitted sessions;
- `remind=False` drops the query's own items (VSTAN `remind`);
- each row's scores are divided by its best one (so the best neighbourhood score is 1: a
  row-wise constant, it changes no order), then `popularity_weight * count(j) / max count` is
  added to every item seen in training (orders the items no neighbour scores); items never
  seen in training score -inf.
Defaults: tuned on a validation split of the real Retail Rocket train sessions (the last 10%
of load_sessions' train sessions predicting their last item, fitted on the first 90%; never the
test sessions) by a coordinate search from session-rec's VSTAN defaults, `bench/session_knn.py
--tune`. Validation Recall@20 / MRR@20: 0.582 / 0.341 at session-rec's defaults (k=500,
sample 5000, spw 1.02, snh 5 days, inh 2.05, ipw 1.02, idf 5), 0.664 / 0.388 tuned. Validation
Recall@20 with one value changed from the tuned ones: off on this data are the position weight
of the current session (spw 1.02: 0.649; 8: 0.664, no better) and the neighbour recency (snh
80 days: 0.662, 5 days: 0.589; the file's timestamps are regular, 30 s steps and sessions
starting at an even rate, so a session's age is only its rank); inh off 0.661, ipw off 0.656,
idf off 0.661, idf_similarity off 0.660; k 50-2000 and sample_size 0-10000 within 0.01.
Scoring the current items matters most (remind=False: 0.200; half of the targets were seen
earlier in their session). popularity_weight 1e-6 ties with 0 and orders the fill items.

Vectorised with scipy.sparse: sessions x items CSR, query weights CSR, query @ (item x session),
top-k per row with np.partition over the CSR rows; chunks of query rows, no loop over query
sessions. The sampling first cuts each item's session list to its sample_size most recent
(exact, and it bounds the candidates of queries holding very popular items).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import scipy.sparse as sp

DAY_MS = 86_400_000


def _rows_in_chunks(n: int, chunk_rows: int):
    for start in range(0, n, chunk_rows):
        yield start, min(start + chunk_rows, n)


def _last_occurrences(h: np.ndarray):
    """Distinct (row, item) of left-padded rows `h` with, for each, the item's last occurrence:
    (row, item, steps after it (0 = newest step), 1-based position among the row's real steps).

    Sorted by row then item.
    """
    real = h > 0
    after = np.cumsum(real[:, ::-1], axis=1)[:, ::-1] - 1
    pos = np.cumsum(real, axis=1)
    rows, cols = np.nonzero(real)
    items = h[rows, cols].astype(np.int64)
    a, p = after[rows, cols], pos[rows, cols]
    order = np.lexsort((a, items, rows))  # by row, item, then newest occurrence first
    rows, items, a, p = rows[order], items[order], a[order], p[order]
    first = np.r_[True, (rows[1:] != rows[:-1]) | (items[1:] != items[:-1])]
    return rows[first], items[first], a[first], p[first]


def _rank_in_rows(indptr: np.ndarray, order: np.ndarray) -> np.ndarray:
    """0-based rank of each element of a per-row ordering `order` (a permutation grouping rows)."""
    lengths = np.diff(indptr)
    return np.arange(len(order)) - np.repeat(indptr[:-1], lengths)


def _top_per_row(indptr: np.ndarray, values: np.ndarray, k: int, ties: np.ndarray | None = None) -> np.ndarray:
    """Positions of the k largest `values` in each CSR row, grouped by row, best first
    (ties: smaller `ties` first, default the position)."""
    lengths = np.diff(indptr)
    row = np.repeat(np.arange(len(lengths)), lengths)
    ties = np.arange(len(values)) if ties is None else ties
    order = np.lexsort((ties, -values, row))
    return order[_rank_in_rows(indptr, order) < k]


def _keep_top_per_row(indptr: np.ndarray, values: np.ndarray, k: int, cells: int = 1 << 22) -> np.ndarray:
    """Mask of the k largest `values` in each CSR row (ties: the row's later entries first).

    Rows longer than k are laid out densely (about `cells` values per block of rows) and cut at
    their k-th largest value with np.partition: linear in the entries, no sort.
    """
    lengths = np.diff(indptr)
    keep = np.ones(len(values), bool)
    long_rows = np.flatnonzero(lengths > k)
    if len(long_rows) == 0:
        return keep
    if k <= 0:
        return ~keep
    width = int(lengths[long_rows].max())
    per_block = max(1, cells // width)
    for b in range(0, len(long_rows), per_block):
        rows = long_rows[b:b + per_block]
        row_len = lengths[rows]
        first = np.cumsum(row_len) - row_len
        slot = np.repeat(np.arange(len(rows)), row_len)
        col = np.arange(int(row_len.sum())) - first[slot]
        where = indptr[rows][slot] + col
        v = values[where]
        dense = np.full((len(rows), int(row_len.max())), -np.inf)
        dense[slot, col] = v
        kth = np.partition(dense, dense.shape[1] - k, axis=1)[:, dense.shape[1] - k][slot]
        above = v > kth
        tie = v == kth
        need = k - np.bincount(slot, above, minlength=len(rows)).astype(np.int64)
        ties_here_on = np.r_[np.cumsum(tie[::-1])[::-1], 0]  # ties from each entry to the block's end
        ties_to_row_end = ties_here_on[:-1] - ties_here_on[(first + row_len)[slot]]
        keep[where] = above | (tie & (ties_to_row_end <= need[slot]))
    return keep


@dataclasses.dataclass
class SessionKNN:
    """VSTAN session-kNN over fitted past sessions (see the module docstring for the formulas)."""

    num_items: int
    k: int = 200
    sample_size: int = 5000
    lambda_spw: float | None = None
    lambda_snh: float | None = None  # days
    lambda_inh: float | None = 2.05
    lambda_ipw: float | None = 4.0
    lambda_idf: float | None = 10.0
    idf_similarity: bool = True
    remind: bool = True
    popularity_weight: float = 1e-6
    # Fitted state: sessions sorted by time; data = the item's last 1-based position in the session.
    positions: sp.csr_matrix | None = dataclasses.field(default=None, repr=False)
    session_ts: np.ndarray | None = dataclasses.field(default=None, repr=False)
    session_row: np.ndarray | None = dataclasses.field(default=None, repr=False)
    idf: np.ndarray | None = dataclasses.field(default=None, repr=False)
    popularity: np.ndarray | None = dataclasses.field(default=None, repr=False)

    # ---------------------------------------------------------------------------------- fit
    def fit(self, sequences: np.ndarray, timestamps: np.ndarray | None = None) -> SessionKNN:
        """Fit on past sessions [N, T] (left-padded item_idx) with each one's time in ms (e.g.
        its last event), or None (row order is then the recency order, no time decay)."""
        seqs = np.asarray(sequences)
        size = self.num_items + 1
        if seqs.ndim != 2 or (seqs.size and (seqs.min() < 0 or seqs.max() >= size)):
            raise ValueError("sequences must be [N, T] item_idx in 0..num_items")
        keep = (seqs > 0).any(axis=1)
        order = np.flatnonzero(keep)
        if timestamps is not None:
            ts = np.asarray(timestamps, np.float64)
            if ts.shape != (len(seqs),):
                raise ValueError("timestamps must be [N], one per sequence")
            order = order[np.argsort(ts[order], kind="stable")]
            self.session_ts = ts[order]
        else:
            self.session_ts = None
        self.session_row = order
        rows, items, _, pos = _last_occurrences(seqs[order])
        self.positions = sp.csr_matrix((pos.astype(np.float64), (rows, items)), shape=(len(order), size))
        self.positions.sort_indices()
        self._by_item = self.positions.T.tocsr()  # item x session indicator, sessions in time order
        self._by_item.data[:] = 1.0
        self._by_item.sort_indices()
        self._postings = {}
        self._distinct = np.diff(self.positions.indptr).astype(np.float64)
        events = np.bincount(seqs[keep][seqs[keep] > 0], minlength=size)[:size].astype(np.float64)
        with np.errstate(divide="ignore"):
            self.idf = np.where(events > 0, np.log(max(len(order), 1) / np.maximum(events, 1.0)), 0.0)
        self.idf = np.maximum(self.idf, 0.0)
        self.popularity = events / max(events.max(initial=0.0), 1.0)
        self._trained = events > 0
        # Items filling rows with few scored items, best first: popularity, then item_idx.
        trained = np.flatnonzero(self._trained)
        self._fill_order = trained[np.lexsort((trained, -self.popularity[trained]))]
        return self

    # ----------------------------------------------------------------------------- queries
    def _query(self, h: np.ndarray):
        """Query weights as CSR [n, I+1] plus, aligned with its data, steps after each item's last occurrence."""
        n = len(h)
        rows, items, after, _ = _last_occurrences(h)
        w = np.exp(-after / self.lambda_spw) if self.lambda_spw else np.ones(len(after))
        if self.idf_similarity:
            w = w * self.idf[items]
        q = sp.csr_matrix((w, items, np.r_[0, np.cumsum(np.bincount(rows, minlength=n))]),
                          shape=(n, self.num_items + 1))
        return q, after

    def _neighbours(self, h: np.ndarray, query_ts: np.ndarray | None):
        """(query row, fitted session (time-sorted index), similarity) of each query's neighbours, by row."""
        if self.positions is None:
            raise RuntimeError("SessionKNN used before fit")
        q, after = self._query(h)
        norm = np.sqrt(np.asarray(q.multiply(q).sum(axis=1)).ravel())
        s = (q @ self._recent_postings(self.sample_size)).tocsr()
        s.sort_indices()  # columns = sessions in time order: the most recent last in each row
        lengths = np.diff(s.indptr)
        row = np.repeat(np.arange(len(h)), lengths)
        col, val = s.indices, s.data
        if self.sample_size and lengths.max(initial=0) > self.sample_size:
            from_end = np.repeat(s.indptr[1:], lengths) - 1 - np.arange(len(col))
            recent = from_end < self.sample_size
            row, col, val = row[recent], col[recent], val[recent]
        sim = val / (norm[row] * np.sqrt(self._distinct[col]))
        if self.lambda_snh and self.session_ts is not None and query_ts is not None:
            qts = np.asarray(query_ts, np.float64)
            age = np.maximum(qts[row] - self.session_ts[col], 0.0)
            sim = sim * np.exp(-age / (self.lambda_snh * DAY_MS))
        positive = sim > 0
        row, col, sim = row[positive], col[positive], sim[positive]
        indptr = np.r_[0, np.cumsum(np.bincount(row, minlength=len(h)))]
        # Ties: the more recent session first (columns ascend in time within each row).
        top = _keep_top_per_row(indptr, sim, self.k)
        row, col, sim = row[top], col[top], sim[top]
        return row, col, sim, q, after

    def _recent_postings(self, m: int) -> sp.csr_matrix:
        """Item x session indicator keeping each item's m most recent sessions (all when m = 0).

        Exact for the sampling: a session among the m most recent of those sharing an item with
        the query is, for each item it shares, among that item's m most recent sessions.
        """
        full = self._by_item
        lengths = np.diff(full.indptr)
        if not m or lengths.max(initial=0) <= m:
            return full
        if m not in self._postings:
            from_end = np.repeat(full.indptr[1:], lengths) - 1 - np.arange(full.nnz)
            keep = from_end < m
            indptr = np.r_[0, np.cumsum(np.minimum(lengths, m))]
            self._postings = {m: sp.csr_matrix((full.data[keep], full.indices[keep], indptr), shape=full.shape)}
        return self._postings[m]

    def neighbours(self, histories: np.ndarray, query_ts: np.ndarray | None = None):
        """Per query row: (fitted row indices of its neighbours, their similarities), most similar first."""
        h = np.asarray(histories)
        row, col, sim, _, _ = self._neighbours(h, query_ts)
        indptr = np.r_[0, np.cumsum(np.bincount(row, minlength=len(h)))]
        order = _top_per_row(indptr, sim, self.k, ties=-col)
        fitted_row, sim = self.session_row[col[order]], sim[order]
        return [(fitted_row[a:b], sim[a:b]) for a, b in zip(indptr[:-1], indptr[1:])]

    def _knn_scores(self, h: np.ndarray, query_ts: np.ndarray | None) -> sp.csr_matrix:
        """Neighbourhood item scores [n, I+1] (float64 CSR, only items of some neighbour)."""
        size = self.num_items + 1
        row, col, sim, q, after = self._neighbours(h, query_ts)
        pos = self.positions
        lengths = np.diff(pos.indptr)[col]
        seg = np.cumsum(lengths) - lengths
        pair = np.repeat(np.arange(len(col)), lengths)
        flat = np.repeat(pos.indptr[col], lengths) + np.arange(int(lengths.sum())) - np.repeat(seg, lengths)
        item, p = pos.indices[flat].astype(np.int64), pos.data[flat]
        qrow = np.repeat(np.arange(len(h)), np.diff(q.indptr))
        qkeys = qrow * size + q.indices  # sorted: rows ascending, indices sorted within rows
        keys = row[pair] * size + item
        loc = np.minimum(np.searchsorted(qkeys, keys), max(len(qkeys) - 1, 0))
        in_query = (qkeys[loc] == keys) if len(qkeys) else np.zeros(len(keys), bool)
        value = sim[pair]
        if len(pair) and self.lambda_inh:
            star = np.maximum.reduceat(np.where(in_query, p, -np.inf), seg)  # every neighbour shares an item
            value = value * np.exp(-np.abs(p - star[pair]) / self.lambda_inh)
        if len(pair) and self.lambda_ipw:
            newest = np.minimum.reduceat(np.where(in_query, after[loc], np.inf), seg)
            value = value * np.exp(-newest / self.lambda_ipw)[pair]
        if self.lambda_idf:
            value = value * (1.0 + self.lambda_idf * self.idf[item])
        if not self.remind:
            value, pair, item = value[~in_query], pair[~in_query], item[~in_query]
        scores = sp.coo_matrix((value, (row[pair], item)), shape=(len(h), size)).tocsr()
        scores.sum_duplicates()
        # Each row's best score becomes 1: the time decay multiplies a whole row by
        # exp(-age of its newest neighbour / lambda_snh), which would otherwise underflow
        # float32 and drown in the popularity term for queries far from the fitted sessions.
        lengths = np.diff(scores.indptr)
        if scores.nnz:
            filled = lengths > 0
            best = np.maximum.reduceat(scores.data, scores.indptr[:-1][filled])
            scores.data /= np.repeat(best, lengths[filled])
        return scores

    # ------------------------------------------------------------------------------- scores
    def neighbourhood_scores(self, histories: np.ndarray, query_ts: np.ndarray | None = None) -> sp.csr_matrix:
        """Sparse [n, I+1] neighbourhood scores (each row's best = 1, no popularity term), sorted
        indices: the candidate source / feature form of `score`."""
        out = self._knn_scores(np.asarray(histories), query_ts)
        out.sort_indices()
        return out

    def score(self, histories: np.ndarray, query_ts: np.ndarray | None = None, chunk_rows: int = 512) -> np.ndarray:
        """Dense float32 scores [n, I+1]: column 0 and items never seen in training -inf."""
        h = np.asarray(histories)
        out = np.empty((len(h), self.num_items + 1), np.float32)
        untrained = ~self._trained
        untrained[0] = True
        pop = self.popularity_weight * self.popularity
        for a, b in _rows_in_chunks(len(h), chunk_rows):
            knn = self._knn_scores(h[a:b], None if query_ts is None else np.asarray(query_ts)[a:b])
            dense = knn.toarray()
            dense += pop[None, :]
            dense[:, untrained] = -np.inf
            out[a:b] = dense
        return out

    def top_candidates(self, histories: np.ndarray, k: int, query_ts: np.ndarray | None = None,
                       chunk_rows: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """(item_idx [n, k], float32 score [n, k]) best first (ties: lower item_idx first), as
        `score` would rank them, without a dense [n, I] array. Rows run out of items only when
        k exceeds the trained items: the rest is item 0 with score -inf."""
        h = np.asarray(histories)
        size = self.num_items + 1
        items = np.zeros((len(h), k), np.int64)
        values = np.full((len(h), k), -np.inf, np.float32)
        fill = self._fill_order[:k]  # beats every unscored item outside it (scores are >= 0)
        for a, b in _rows_in_chunks(len(h), chunk_rows):
            knn = self._knn_scores(h[a:b], None if query_ts is None else np.asarray(query_ts)[a:b])
            n = b - a
            knn_row = np.repeat(np.arange(n), np.diff(knn.indptr))
            keys = knn_row * size + knn.indices
            fill_row, fill_item = np.repeat(np.arange(n), len(fill)), np.tile(fill, n)
            fill_keys = fill_row * size + fill_item
            loc = np.minimum(np.searchsorted(keys, fill_keys), max(len(keys) - 1, 0))
            extra = keys[loc] != fill_keys if len(keys) else np.ones(len(fill_keys), bool)  # keys are sorted
            row = np.r_[knn_row, fill_row[extra]]
            item = np.r_[knn.indices, fill_item[extra]].astype(np.int64)
            value = np.r_[knn.data, np.zeros(int(extra.sum()))] + self.popularity_weight * self.popularity[item]
            trained = self._trained[item]
            row, item, value = row[trained], item[trained], value[trained].astype(np.float32)
            order = np.lexsort((item, -value, row))
            row, item, value = row[order], item[order], value[order]
            indptr = np.r_[0, np.cumsum(np.bincount(row, minlength=n))]
            rank = _rank_in_rows(indptr, np.arange(len(row)))
            top = rank < k
            items[a + row[top], rank[top]] = item[top]
            values[a + row[top], rank[top]] = value[top]
        return items, values

    def topk(self, histories: np.ndarray, k: int, query_ts: np.ndarray | None = None) -> np.ndarray:
        """Top-k item_idx per row, best first."""
        return self.top_candidates(histories, k, query_ts)[0]


# --------------------------------------------------------------------------------------------
# Session timestamps for model.baselines.load_sessions' rows
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class SessionTimes:
    """Per-session times (ms) aligned with load_sessions' train rows and test rows."""

    train_last: np.ndarray  # [S_train] last event of each train session (its time as a neighbour)
    train_query: np.ndarray  # [S_train] its last-but-one event (the time when its last item is predicted)
    test_query: np.ndarray  # [S_test] last event of each test history (the time of the prediction)


def load_session_times(path: str | Path, test_fraction: float = 0.1) -> SessionTimes:
    """Times of the sessions in `model.baselines.load_sessions`' order (session start, visitorid)."""
    import duckdb

    rows = duckdb.sql(f"""
        WITH e AS (
            SELECT visitorid, timestamp,
                   min(timestamp) OVER (PARTITION BY visitorid) AS session_start,
                   row_number() OVER (PARTITION BY visitorid ORDER BY timestamp DESC) AS from_end
            FROM read_csv('{Path(path)}'))
        SELECT visitorid, min(session_start) AS session_start,
               max(timestamp) AS last_ts,
               coalesce(max(timestamp) FILTER (WHERE from_end = 2), max(timestamp)) AS query_ts
        FROM e GROUP BY visitorid ORDER BY session_start, visitorid
    """).fetchnumpy()
    last, query = np.asarray(rows["last_ts"], np.int64), np.asarray(rows["query_ts"], np.int64)
    n_test = int(round(len(last) * test_fraction))
    n_train = len(last) - n_test
    return SessionTimes(last[:n_train], query[:n_train], query[n_train:])
