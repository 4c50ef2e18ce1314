"""Candidates for the ranker, and their features: the same code for training cases and serving.

Four sources, as nightly scoring uses them:
- **recent**: the customer's own distinct recent items, newest first (20% of next events on the
  real sessions repeat the previous item, 38% an item seen earlier in the visit);
- **co-occurrence**: neighbours of the last steps (model.cooccurrence.ItemKNN, recency-weighted);
- **similar sessions**: items of the most similar past windows (model.session_knn.SessionKNN,
  VSTAN-style position weighting), when a session index is given;
- **retrieval**: the two-tower model's top K over the whole corpus.
The union (first occurrence wins, in that order) is one row of up to R + 3K item_idx.

Every feature depends only on the customer and the candidate itself (ranks and gaps are taken
against each source's list over the whole corpus, not against the other candidates), so the
ranker's candidate isolation holds: a candidate's score does not depend on what else is scored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from model.batch import ADDTOCART, TRANSACTION, VIEW
from model.cooccurrence import ItemKNN, lookup, top_per_row

SOURCE_RECENT, SOURCE_COOCCURRENCE, SOURCE_RETRIEVAL, SOURCE_SESSIONS = 1, 2, 4, 8
SOURCE_BITS = ((SOURCE_RECENT, "recent"), (SOURCE_COOCCURRENCE, "cooccurrence"), (SOURCE_RETRIEVAL, "retrieval"),
               (SOURCE_SESSIONS, "similar_sessions"))
FEATURE_NAMES = (
    "retrieval_logit", "retrieval_gap", "retrieval_rank",
    "cooc_score", "cooc_gap", "cooc_rank", "session_score", "session_rank",
    "times_seen", "seen", "steps_since", "is_last", "viewed", "carted", "bought", "repeat_score",
    "popularity", "history_length", "distinct_share",
)
NUM_FEATURES = len(FEATURE_NAMES)
REPEAT_DECAY = 0.95  # per step back, as the item-kNN baseline's repeat boost


@dataclass(frozen=True)
class CandidateConfig:
    """How many candidates each source offers."""

    # The one place these defaults live (serving, scoring and the flows read them from here).
    # Measured on the real sessions: candidates past rank ~60 of a source rarely reach a top 20,
    # and the ranker's cost grows with the union (~200 slots at 100 / 100 / 50).
    retrieve_k: int = 64
    cooc_k: int = 64
    recent_k: int = 32
    session_k: int = 40  # used when the generator has a session index

    @property
    def width(self) -> int:
        return self.recent_k + self.cooc_k + self.retrieve_k + self.session_k


class Retrieved(NamedTuple):
    """The retrieval source's output for n customers (numpy)."""

    user_vectors: np.ndarray  # float32 [n, D] unit vectors
    item_idx: np.ndarray  # int [n, K] top K over the corpus, best first
    logits: np.ndarray  # float32 [n, K] their logits (cosine / temperature)


class CandidateSet(NamedTuple):
    """Candidates of n customers: slots in source order, empty slots (item 0) last."""

    item_idx: np.ndarray  # int32 [n, C]
    features: np.ndarray  # float32 [n, C, NUM_FEATURES]
    source: np.ndarray  # int8 [n, C] SOURCE_* bit flags


def source_name(flags: int) -> str:
    """'recent+cooccurrence' and the like for a SOURCE_* bitmask."""
    return "+".join(name for bit, name in SOURCE_BITS if flags & bit)


def recent_items(history_idx: np.ndarray, k: int) -> np.ndarray:
    """int32 [n, k]: distinct items of left-padded histories, newest first, 0-padded."""
    h = np.asarray(history_idx)[:, ::-1]  # newest first
    n, t = h.shape
    earlier = np.tril(np.ones((t, t), bool), k=-1)
    dup = ((h[:, :, None] == h[:, None, :]) & earlier[None]).any(axis=2)
    keep = (h > 0) & ~dup
    order = np.argsort(~keep, axis=1, kind="stable")
    out = np.where(np.take_along_axis(keep, order, axis=1), np.take_along_axis(h, order, axis=1), 0)
    if out.shape[1] < k:
        out = np.pad(out, ((0, 0), (0, k - out.shape[1])))
    return out[:, :k].astype(np.int32)


def union_first(parts: list[np.ndarray], flags: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise union of item lists (first occurrence keeps its slot order), 0 = empty, moved last.

    Returns (item_idx [n, sum widths], source flags OR-ed over every list holding the item)."""
    cand = np.concatenate([np.asarray(p, np.int64) for p in parts], axis=1)
    n, c = cand.shape
    slot_flag = np.concatenate([np.full(p.shape[1], f, np.int8) for p, f in zip(parts, flags)])
    order = np.lexsort((np.broadcast_to(np.arange(c), (n, c)), cand), axis=1)  # by item, then slot
    sorted_items = np.take_along_axis(cand, order, axis=1)
    new_group = np.ones((n, c), bool)
    new_group[:, 1:] = sorted_items[:, 1:] != sorted_items[:, :-1]
    group_id = np.cumsum(new_group, axis=1) - 1
    # OR of the flags of each item's slots, given back to its first slot.
    sorted_flags = np.broadcast_to(slot_flag, (n, c))[np.arange(n)[:, None], order]
    group_flags = np.zeros((n, c), np.int8)
    np.bitwise_or.at(group_flags, (np.broadcast_to(np.arange(n)[:, None], (n, c)), group_id), sorted_flags)
    first = np.zeros((n, c), bool)
    first[np.arange(n)[:, None], order] = new_group
    flags_out = np.zeros((n, c), np.int8)
    flags_out[np.arange(n)[:, None], order] = np.take_along_axis(group_flags, group_id, axis=1)
    keep = first & (cand > 0)
    compact = np.argsort(~keep, axis=1, kind="stable")
    items = np.where(np.take_along_axis(keep, compact, axis=1), np.take_along_axis(cand, compact, axis=1), 0)
    flags_out = np.where(items > 0, np.take_along_axis(flags_out, compact, axis=1), 0)
    return items.astype(np.int32), flags_out.astype(np.int8)


def _rank_in(lists: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """1-based position of each candidate in its row's list (len + 1 when absent)."""
    n, k = lists.shape
    if k == 0:
        return np.ones(cand.shape, np.int64)
    # Sorted (row, item) keys of the lists, then one searchsorted for every candidate: O(n C log k)
    # instead of an [n, C, k] comparison. The first occurrence of a repeated item wins.
    width = np.int64(max(int(lists.max(initial=0)), int(cand.max(initial=0))) + 1)
    keys = (np.arange(n, dtype=np.int64)[:, None] * width + lists).ravel()
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    query = np.arange(n, dtype=np.int64)[:, None] * width + cand
    pos = np.searchsorted(sorted_keys, query).clip(0, len(keys) - 1)
    found = (sorted_keys[pos] == query) & (cand > 0)
    return np.where(found, order[pos] % k + 1, k + 1)


def history_features(history_idx: np.ndarray, history_action: np.ndarray, cand: np.ndarray) -> dict[str, np.ndarray]:
    """Repeat features of each candidate against its customer's (left-padded) history."""
    h = np.asarray(history_idx)
    n, t = h.shape
    match = (cand[:, :, None] == h[:, None, :]) & (cand[:, :, None] > 0)  # [n, C, T]
    steps_back = (t - np.arange(t))[None, None, :]  # newest = 1
    count = match.sum(axis=2)
    nearest = np.where(match, steps_back, t + 1).min(axis=2)
    action = np.bitwise_or.reduce(np.where(match, np.asarray(history_action)[:, None, :], 0), axis=2)
    repeat = (match * REPEAT_DECAY ** (steps_back - 1)).sum(axis=2)
    length = (h > 0).sum(axis=1)
    last = h[:, -1]
    distinct = _distinct_counts(h)
    log_t = np.log1p(t)
    return {
        "times_seen": np.log1p(count) / log_t,
        "seen": (count > 0).astype(np.float32),
        "steps_since": np.where(count > 0, np.log1p(nearest) / log_t, 1.0),
        "is_last": ((cand == last[:, None]) & (cand > 0)).astype(np.float32),
        "viewed": ((action & VIEW) > 0).astype(np.float32),
        "carted": ((action & ADDTOCART) > 0).astype(np.float32),
        "bought": ((action & TRANSACTION) > 0).astype(np.float32),
        "repeat_score": repeat / 5.0,
        "history_length": np.broadcast_to((np.log1p(length) / log_t)[:, None], cand.shape),
        "distinct_share": np.broadcast_to((distinct / np.maximum(length, 1))[:, None], cand.shape),
    }


def _distinct_counts(h: np.ndarray) -> np.ndarray:
    """Distinct non-zero items per row (vectorised)."""
    s = np.sort(h, axis=1)
    new = np.ones_like(s, bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    return (new & (s > 0)).sum(axis=1)


class CandidateGenerator:
    """Host-side candidate generation and features, given the retrieval source's output.

    item_vectors: float32 [I+1, D] retrieval item vectors by item_idx (zero rows outside the
    corpus); temperature: the retrieval softmax temperature; cooc: a fitted ItemKNN;
    popularity: float [I+1] counts; eligible: bool [I+1] items that may be offered at all.
    """

    def __init__(self, item_vectors: np.ndarray, temperature: float, cooc: ItemKNN, popularity: np.ndarray,
                 eligible: np.ndarray, config: CandidateConfig = CandidateConfig(), sessions=None):
        self.sessions = sessions  # model.session_knn.SessionKNN or None
        self.item_vectors = np.asarray(item_vectors, np.float32)
        self.temperature = float(temperature)
        self.cooc = cooc
        self.log_popularity = (np.log1p(np.asarray(popularity, np.float64))
                               / max(np.log1p(float(np.max(popularity, initial=1.0))), 1e-9)).astype(np.float32)
        self.eligible = np.asarray(eligible, bool)
        self.config = config

    def generate(self, history_idx: np.ndarray, history_action: np.ndarray, retrieved: Retrieved | None
                 ) -> CandidateSet:
        """Candidates and features of n customers (histories [n, H] of item_idx, left-padded)."""
        cfg = self.config
        h = np.asarray(history_idx)
        n = len(h)
        neighbours = self.cooc.neighbour_scores(h)
        neighbours = neighbours.multiply(self.eligible[None, :]).tocsr()
        neighbours.eliminate_zeros()
        neighbours.sort_indices()
        cooc_idx, cooc_val = top_per_row(neighbours, cfg.cooc_k)
        recent = recent_items(h, cfg.recent_k)
        recent = np.where(self.eligible[recent], recent, 0)
        parts, flags = [recent, cooc_idx], [SOURCE_RECENT, SOURCE_COOCCURRENCE]
        session_scores = None
        if self.sessions is not None and cfg.session_k > 0:
            session_scores = self.sessions.neighbourhood_scores(h).multiply(self.eligible[None, :]).tocsr()
            session_scores.eliminate_zeros()
            session_scores.sort_indices()
            session_idx, session_val = top_per_row(session_scores, cfg.session_k)
            parts.append(session_idx)
            flags.append(SOURCE_SESSIONS)
        if retrieved is not None:
            parts.append(np.where(self.eligible[retrieved.item_idx], retrieved.item_idx, 0))
            flags.append(SOURCE_RETRIEVAL)
        cand, source = union_first(parts, flags)
        feats = np.zeros(cand.shape + (NUM_FEATURES,), np.float32)
        col = {name: k for k, name in enumerate(FEATURE_NAMES)}
        if retrieved is not None:
            logits = np.einsum("nd,ncd->nc", retrieved.user_vectors, self.item_vectors[cand]) / self.temperature
            top = retrieved.logits[:, :1]
            k = retrieved.item_idx.shape[1]
            feats[..., col["retrieval_logit"]] = logits / 10.0
            feats[..., col["retrieval_gap"]] = (logits - top) / 10.0
            feats[..., col["retrieval_rank"]] = np.log1p(_rank_in(retrieved.item_idx, cand)) / np.log(k + 2)
        else:
            feats[..., col["retrieval_rank"]] = 1.0
        cooc = np.log1p(100.0 * lookup(neighbours, cand)) / 5.0
        feats[..., col["cooc_score"]] = cooc
        feats[..., col["cooc_gap"]] = cooc - (np.log1p(100.0 * cooc_val[:, :1]) / 5.0)
        feats[..., col["cooc_rank"]] = np.log1p(_rank_in(np.where(cooc_val > 0, cooc_idx, 0), cand)) / np.log(cfg.cooc_k + 2)
        if session_scores is not None:
            feats[..., col["session_score"]] = lookup(session_scores, cand)
            feats[..., col["session_rank"]] = (np.log1p(_rank_in(np.where(session_val > 0, session_idx, 0), cand))
                                               / np.log(cfg.session_k + 2))
        else:
            feats[..., col["session_rank"]] = 1.0
        for name, values in history_features(h, history_action, cand).items():
            feats[..., col[name]] = values
        feats[..., col["popularity"]] = self.log_popularity[cand]
        feats[cand == 0] = 0.0
        return CandidateSet(cand, feats, source)
