"""Offline ranking metrics (vectorised numpy).

Next-item metrics take the 1-based rank of the single true item per row; rank 0 (or inf)
means "not retrieved" and scores as a miss at every K. Ranks come from `rank_of_targets`,
which breaks ties pessimistically (the true item is placed after every item scoring the
same), so a constant scorer cannot look good.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from model.batch import TRANSACTION


def _hits(ranks: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ranks as float with misses = inf, boolean hit@k)."""
    r = np.asarray(ranks, dtype=np.float64)
    r = np.where((r <= 0) | np.isnan(r), np.inf, r)
    return r, r <= k


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Share of rows whose true item ranks within the top k (HitRate@k for one relevant item)."""
    _, hit = _hits(ranks, k)
    return float(hit.mean()) if hit.size else float("nan")


def mrr_at_k(ranks: np.ndarray, k: int) -> float:
    """Mean of 1/rank where rank <= k, else 0."""
    r, hit = _hits(ranks, k)
    return float(np.where(hit, 1.0 / r, 0.0).mean()) if hit.size else float("nan")


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """NDCG@k with one relevant item: 1 / log2(rank + 1) where rank <= k, else 0 (ideal DCG = 1)."""
    r, hit = _hits(ranks, k)
    return float(np.where(hit, 1.0 / np.log2(np.where(hit, r, 1.0) + 1.0), 0.0).mean()) if hit.size else float("nan")


def rank_of_targets(scores: np.ndarray, target: np.ndarray, *, valid: np.ndarray | None = None,
                    chunk_rows: int = 256) -> np.ndarray:
    """1-based pessimistic rank of `target[i]` (an item_idx column) among `scores[i]` [N, I+1].

    rank = 1 + #(other columns scoring >= the target's score). Column 0 (padding) never
    competes, nor do columns where `valid` ([I+1] or [N, I+1]) is False. Rows whose target is
    0 or invalid, or whose target score is not finite, get rank 0 (= not retrieved).
    Rows are processed in chunks of `chunk_rows` to bound the [chunk, I] temporaries.
    """
    scores = np.asarray(scores)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    target = np.asarray(target).astype(np.int64)
    n, width = scores.shape
    keep = np.ones(width, bool)
    keep[0] = False
    keep = keep if valid is None else np.asarray(valid, bool) & keep
    ranks = np.zeros(n, np.int64)
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        v = np.broadcast_to(keep, scores.shape)[start:stop]
        s = np.where(v, scores[start:stop], -np.inf)
        t = target[start:stop]
        rows = np.arange(stop - start)
        ok = (t > 0) & (t < width)
        t_safe = np.where(ok, t, 0)
        ok &= v[rows, t_safe]
        t_score = s[rows, t_safe]
        ok &= np.isfinite(t_score)
        ahead = (s >= t_score[:, None]).sum(axis=1)  # includes the target itself
        ranks[start:stop] = np.where(ok, ahead, 0)
    return ranks


def ranks_in_chunks(score_fn: Callable[[int, int], np.ndarray], target: np.ndarray, *, k: int | None = None,
                    chunk_rows: int = 256, valid: np.ndarray | None = None) -> np.ndarray:
    """Ranks of targets for a corpus too big to score at once: `score_fn(start, stop) -> [stop-start, I]`.

    Only one chunk of scores lives in memory. With k set, ranks beyond k are reported as 0
    (not retrieved), as a top-k retrieval would.
    """
    target = np.asarray(target)
    out = np.zeros(len(target), np.int64)
    for start in range(0, len(target), chunk_rows):
        stop = min(start + chunk_rows, len(target))
        out[start:stop] = rank_of_targets(score_fn(start, stop), target[start:stop], valid=valid, chunk_rows=chunk_rows)
    if k is not None:
        out = np.where(out <= k, out, 0)
    return out


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k best scores per row, best first (ties: lower index first)."""
    scores = np.asarray(scores)
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    return np.take_along_axis(part, order, axis=1)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney U with average ranks for ties); nan when a class is absent."""
    y = np.asarray(labels).ravel().astype(bool)
    s = np.asarray(scores).ravel().astype(np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    # Average rank of each tie group: ranks are 1-based positions in ascending order.
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg_rank_per_group = first + (counts + 1) / 2.0
    ranks = np.empty_like(s)
    ranks[order] = np.repeat(avg_rank_per_group, counts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def hit_rate_at_k(scores: np.ndarray, relevant: np.ndarray, k: int, valid: np.ndarray | None = None) -> float:
    """Among rows with at least one relevant valid slot: share whose top k (by score) holds one.

    Ties are pessimistic: a row hits iff fewer than k valid NON-relevant slots score >= its
    best relevant slot. `scores`, `relevant`, `valid` are [N, C] (valid default: all).
    """
    scores = np.asarray(scores, dtype=np.float64)
    valid = np.ones(scores.shape, bool) if valid is None else np.asarray(valid, bool)
    rel = np.asarray(relevant, bool) & valid
    has_rel = rel.any(axis=1)
    if not has_rel.any():
        return float("nan")
    best_rel = np.where(rel, scores, -np.inf).max(axis=1)
    beating = (valid & ~rel & (scores >= best_rel[:, None])).sum(axis=1)
    return float((beating[has_rel] < k).mean())


def purchase_rate_at_k(scores: np.ndarray, labels: np.ndarray, k: int, valid: np.ndarray | None = None) -> float:
    """Hit rate@k of purchases: among rows with a purchased candidate (label bit 0), the share
    whose top k by score contains a purchased one (ties pessimistic, see hit_rate_at_k)."""
    return hit_rate_at_k(scores, (np.asarray(labels) & TRANSACTION) > 0, k, valid)
