"""Retrieve + rank for many customers at once: the core of nightly scoring and end-to-end evaluation.

For a batch of histories, one jit-compiled function does everything on the device:
1. user tower -> exact dot products against the whole item corpus -> top-K (default 100);
2. the customer's own recent items join as a second candidate source (people come back to what
   they viewed), duplicates removed;
3. the ranking model scores ALL candidates in one pass (candidate isolation makes a candidate's
   score independent of the others, so one pass equals one pass per candidate);
4. final score = weighted sum of the action probabilities (10 / 3 / 1 by default);
5. business rules: unavailable items and items the customer bought are never returned.
Histories are bucketed by length so short histories are not padded to H.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from model.batch import History, Items
from model.config import Profile
from model.ranking import make_ranking_model
from model.retrieval import make_retrieval_model

SOURCE_RETRIEVAL, SOURCE_RECENT, SOURCE_BOTH = 1, 2, 3
SOURCE_NAMES = {SOURCE_RETRIEVAL: "retrieval", SOURCE_RECENT: "recent", SOURCE_BOTH: "retrieval+recent"}


@dataclass(frozen=True)
class ServingConfig:
    """Knobs of candidate generation, scoring and business rules."""

    retrieve_k: int = 100
    recent_k: int = 16  # last history steps offered as candidates
    top_n: int = 20
    action_weights: tuple[float, float, float] = (10.0, 3.0, 1.0)
    exclude_unavailable: bool = True
    exclude_bought: bool = True
    batch_size: int = 256
    max_bought: int = 32  # bought items considered per customer (most recent)


class ItemLookups(NamedTuple):
    """Per item_idx device arrays (row 0 = padding)."""

    item_id: jax.Array  # int32 [I+1] original itemid
    category_id: jax.Array  # int32 [I+1]
    root_id: jax.Array  # int32 [I+1]
    eligible: jax.Array  # bool [I+1] may be recommended (in corpus, and available if the rule is on)


class Recommendations(NamedTuple):
    """Top-N per customer (numpy). item_idx 0 marks an empty slot."""

    item_idx: np.ndarray  # int32 [n, N]
    score: np.ndarray  # float32 [n, N]
    probs: np.ndarray  # float32 [n, N, 3] (transaction, addtocart, view)
    source: np.ndarray  # int8 [n, N] SOURCE_* flags


def length_buckets(history_len: int) -> list[int]:
    """Bucket widths 1, 2, 4, ... up to history_len (one compiled shape each)."""
    widths, w = [], 1
    while w < history_len:
        widths.append(w)
        w *= 2
    return widths + [history_len]


class Recommender:
    """Both models' parameters, the item corpus and the rules, ready to score batches."""

    def __init__(self, profile: Profile, retrieval_params, ranking_params, *, item_ids: np.ndarray,
                 item_category: np.ndarray, item_root: np.ndarray, corpus: np.ndarray, available: np.ndarray,
                 config: ServingConfig = ServingConfig()):
        self.profile, self.config = profile, config
        self.retrieval = make_retrieval_model(profile.model)
        self.ranking = make_ranking_model(profile.model)
        self.retrieval_params = retrieval_params
        eligible = corpus.astype(bool) & (available.astype(bool) if config.exclude_unavailable else True)
        eligible[0] = False
        self.lookups = ItemLookups(jnp.asarray(item_ids, jnp.int32), jnp.asarray(item_category, jnp.int32),
                                   jnp.asarray(item_root, jnp.int32), jnp.asarray(eligible))
        self.corpus_idx = jnp.asarray(np.flatnonzero(corpus.astype(bool) & (np.arange(len(corpus)) > 0)), jnp.int32)
        corpus_items = Items(*(x[self.corpus_idx] for x in self.lookups[:3]))
        self.corpus_vectors = jax.jit(self.retrieval.item_vectors)(retrieval_params, corpus_items)
        # Candidate tokens depend on the item alone: compute them once per item (row 0 = padding),
        # not once per (customer, candidate) pair.
        all_items = Items(*self.lookups[:3])
        token_fn = jax.jit(self.ranking.candidate_tokens)
        chunk = 16_384
        self.candidate_token_table = jnp.concatenate([
            token_fn(ranking_params, Items(*(x[i:i + chunk] for x in all_items)))
            for i in range(0, len(item_ids), chunk)])
        self.num_items = len(item_ids) - 1
        self._score = jax.jit(self._score_batch, static_argnames=("top_n", "retrieve_k"))
        self.ranking_inputs = (ranking_params, self.candidate_token_table)

    # -- the compiled core ---------------------------------------------------------------------
    def _score_batch(self, retrieval_params, ranking_inputs, corpus_vectors, history: History,
                     history_idx: jax.Array, bought_idx: jax.Array, *, top_n: int, retrieve_k: int):
        lk, cfg = self.lookups, self.config
        users = self.retrieval.serving_user_vector(retrieval_params, history)  # [n, D]
        corpus_ok = lk.eligible[self.corpus_idx]
        scores = jnp.where(corpus_ok[None, :], users @ corpus_vectors.T, -jnp.inf)
        k = min(retrieve_k, scores.shape[1])
        _, top = jax.lax.top_k(scores, k)
        retrieved = self.corpus_idx[top]  # [n, K] item_idx
        recent = history_idx[:, -min(cfg.recent_k, history_idx.shape[1]):]  # [n, R], newest last
        cand = jnp.concatenate([recent[:, ::-1], retrieved], axis=1)  # recent first: they win the dedupe
        c = cand.shape[1]
        earlier = jnp.tril(jnp.ones((c, c), bool), k=-1)
        same = (cand[:, :, None] == cand[:, None, :]) & earlier[None]
        dup = same.any(axis=2)
        in_recent = (cand[:, :, None] == recent[:, None, :]).any(axis=2)
        in_retrieved = (cand[:, :, None] == retrieved[:, None, :]).any(axis=2)
        source = jnp.where(in_recent, SOURCE_RECENT, 0) + jnp.where(in_retrieved, SOURCE_RETRIEVAL, 0)
        valid = (cand > 0) & ~dup & lk.eligible[cand]
        if cfg.exclude_bought:
            valid &= ~(cand[:, :, None] == bought_idx[:, None, :]).any(axis=2) | (cand == 0)
        items = Items(lk.item_id[cand] * valid, lk.category_id[cand] * valid, lk.root_id[cand] * valid)
        ranking_params, token_table = ranking_inputs
        tokens = jnp.where(valid[..., None], token_table[cand], 0.0)  # = candidate_tokens(items)
        logits = self.ranking.logits_with_tokens(ranking_params, history, items, tokens)  # [n, C, 3]
        probs = jax.nn.sigmoid(logits)
        weights = jnp.asarray(cfg.action_weights, jnp.float32)
        final = jnp.where(valid, probs @ weights, -jnp.inf)
        n = min(top_n, c)
        best_score, best = jax.lax.top_k(final, n)
        take = lambda a: jnp.take_along_axis(a, best, axis=1)  # noqa: E731
        chosen = jnp.where(jnp.isfinite(best_score), take(cand), 0)
        return (chosen, jnp.where(jnp.isfinite(best_score), best_score, 0.0),
                jnp.take_along_axis(probs, best[..., None], axis=1), jnp.where(chosen > 0, take(source), 0))

    # -- host side ---------------------------------------------------------------------------
    def recommend(self, history: History, history_idx: np.ndarray, bought_idx: np.ndarray | None = None,
                  top_n: int | None = None) -> Recommendations:
        """Top-N for every row (rows with an empty history get empty slots: use a fallback).

        history: [n, H] original ids, left-padded; history_idx: the same steps as item_idx;
        bought_idx: [n, B] item_idx the customer bought (0 = padding) or None.
        """
        cfg = self.config
        top_n = top_n or cfg.top_n
        n = len(history_idx)
        bought_idx = np.zeros((n, 1), np.int32) if bought_idx is None else bought_idx
        lengths = (history_idx > 0).sum(axis=1)
        out = Recommendations(np.zeros((n, top_n), np.int32), np.zeros((n, top_n), np.float32),
                              np.zeros((n, top_n, 3), np.float32), np.zeros((n, top_n), np.int8))
        width_of = np.array(length_buckets(history_idx.shape[1]))
        bucket = np.searchsorted(width_of, lengths)  # smallest width >= length
        for b, width in enumerate(width_of):
            rows = np.flatnonzero((bucket == b) & (lengths > 0))
            for start in range(0, len(rows), cfg.batch_size):
                part = rows[start:start + cfg.batch_size]
                pad = cfg.batch_size - len(part)  # always full batches: one compile per width
                idx = np.concatenate([part, np.repeat(part[-1:], pad)])
                hist = History(*(x[idx] if x.ndim == 1 else x[idx][:, -width:] for x in history))
                res = self._score(self.retrieval_params, self.ranking_inputs, self.corpus_vectors, hist,
                                  jnp.asarray(history_idx[idx][:, -width:]), jnp.asarray(bought_idx[idx]),
                                  top_n=top_n, retrieve_k=cfg.retrieve_k)
                m = len(part)
                got = [np.asarray(a)[:m] for a in res]
                width_n = got[0].shape[1]
                out.item_idx[part, :width_n] = got[0]
                out.score[part, :width_n] = got[1]
                out.probs[part, :width_n] = got[2]
                out.source[part, :width_n] = got[3]
        return out


def bought_matrix(customer_rows: np.ndarray, bought_pairs: tuple[np.ndarray, np.ndarray], max_bought: int) -> np.ndarray:
    """[n, max_bought] item_idx bought by each of `customer_rows` (customer_idx), 0-padded.

    bought_pairs: (customer_idx, item_idx) arrays, most recent purchase last.
    """
    cust, item = bought_pairs
    out = np.zeros((len(customer_rows), max_bought), np.int32)
    if len(cust) == 0:
        return out
    order = np.argsort(cust, kind="stable")
    cust, item = cust[order], item[order]
    lo = np.searchsorted(cust, customer_rows, side="left")
    hi = np.searchsorted(cust, customer_rows, side="right")
    for j in range(max_bought):  # newest first, vectorised over customers
        pos = hi - 1 - j
        ok = pos >= lo
        out[ok, j] = item[pos[ok]]
    return out
