"""Candidates -> ranking -> business rules -> top N: the core of nightly scoring AND evaluation.

For a batch of customers:
1. the retrieval model's top K over the whole corpus (exact dot products, on the device);
2. candidates from four sources, with features (model.candidates): the customer's recent
   items, co-occurrence neighbours of their last steps, items of similar past sessions, the
   retrieved items;
3. the ranking model scores ALL candidates in one pass (candidate isolation: one pass equals one
   pass per candidate); final score = action_weights . (p_transaction, p_addtocart, p_view),
   where p_view is the softmax over the candidates of the next-event head and the other two are
   sigmoid "buys / carts soon" probabilities;
4. business rules: unavailable items and items the customer bought are never returned.
Strategy `item_knn` ranks the same candidates by the item-kNN baseline's formula instead (the
run publishes it when the model loses to it on validation); probabilities are then NaN.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from model.batch import History, Items
from model.candidates import CandidateConfig, CandidateGenerator, history_features
from model.config import Profile
from model.cooccurrence import ItemKNN, lookup
from model.ranking import VIEW_HEAD, make_ranking_model
from model.retrieval import Retriever, make_retrieval_model

STRATEGIES = ("model", "item_knn")
DEFAULT_ACTION_WEIGHTS = (1.0, 0.5, 1.0)  # transaction, addtocart, view


@dataclass(frozen=True)
class ServingConfig:
    """Knobs of candidate generation, scoring and business rules."""

    retrieve_k: int = CandidateConfig.retrieve_k
    cooc_k: int = CandidateConfig.cooc_k
    recent_k: int = CandidateConfig.recent_k  # distinct recent items offered as candidates
    session_k: int = CandidateConfig.session_k  # items of similar past sessions (with a session index)
    top_n: int = 20
    action_weights: tuple[float, float, float] = DEFAULT_ACTION_WEIGHTS
    exclude_unavailable: bool = True
    exclude_bought: bool = True
    batch_size: int = 256
    max_bought: int = 32  # bought items considered per customer (most recent)

    @property
    def candidates(self) -> CandidateConfig:
        return CandidateConfig(retrieve_k=self.retrieve_k, cooc_k=self.cooc_k, recent_k=self.recent_k,
                               session_k=self.session_k)


class Recommendations(NamedTuple):
    """Top-N per customer (numpy). item_idx 0 marks an empty slot."""

    item_idx: np.ndarray  # int32 [n, N]
    score: np.ndarray  # float32 [n, N]
    probs: np.ndarray  # float32 [n, N, 3] (transaction, addtocart, view); NaN for item_knn
    source: np.ndarray  # int8 [n, N] model.candidates.SOURCE_* flags


def final_scores(logits: jax.Array, valid: jax.Array, action_weights) -> tuple[jax.Array, jax.Array]:
    """(score [n, C] with -inf on invalid slots, probabilities [n, C, 3]) from ranker logits."""
    view = jax.nn.softmax(jnp.where(valid, logits[..., VIEW_HEAD], -1e30), axis=-1)
    probs = jnp.concatenate([jax.nn.sigmoid(logits[..., :VIEW_HEAD]), view[..., None]], axis=-1)
    score = probs @ jnp.asarray(action_weights, jnp.float32)
    return jnp.where(valid, score, -jnp.inf), probs


def knn_scores(knn: ItemKNN, history_idx: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """The item-kNN baseline's score of each candidate (co-occurrence + repeat boost + popularity)."""
    neighbours = knn.neighbour_scores(history_idx)
    repeat = history_features(history_idx, np.zeros_like(history_idx), cand)["repeat_score"] * 5.0
    return (lookup(neighbours, cand) + knn.repeat_boost * repeat
            + knn.popularity_weight * knn.popularity[cand]).astype(np.float32)


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


def bought_in_history(history_idx: np.ndarray, history_action: np.ndarray, max_bought: int) -> np.ndarray:
    """[n, max_bought] item_idx with a transaction in the history (newest first), 0-padded: the
    exclusion list of a case at evaluation time (serving reads all-time purchases instead)."""
    from model.batch import TRANSACTION

    bought = np.where((np.asarray(history_action) & TRANSACTION) > 0, history_idx, 0)[:, ::-1]
    order = np.argsort(bought == 0, axis=1, kind="stable")
    out = np.take_along_axis(bought, order, axis=1)[:, :max_bought]
    return np.pad(out, ((0, 0), (0, max(0, max_bought - out.shape[1])))).astype(np.int32)


def purchases_only(tables, split: str = "train") -> bool:
    """True when every step of the split is a transaction (H&M-style data)."""
    from model.batch import TRANSACTION

    window = tables.split(split).window
    actions = window.action[window.item > 0]
    return bool(len(actions)) and bool((actions == TRANSACTION).all())


def resolve_exclude_bought(exclude_bought: bool | None, tables) -> bool:
    """The "never re-show bought items" rule: as given, or by default on, except on purchase-only
    data (H&M), where buying again is the behaviour to predict and the rule would remove every
    candidate from the customer's own history."""
    return (not purchases_only(tables)) if exclude_bought is None else bool(exclude_bought)


class Recommender:
    """Both models' parameters, the co-occurrence index, the item corpus and the rules.

    tables: model.data.SequenceTables (item lookups and popularity); corpus: bool [I+1] items
    that may be retrieved; available: bool [I+1] latest availability.
    """

    def __init__(self, profile: Profile, retrieval_params, ranking_params, *, tables, cooc: ItemKNN,
                 corpus: np.ndarray, available: np.ndarray, config: ServingConfig = ServingConfig(),
                 strategy: str = "model", sessions=None):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
        self.profile, self.config, self.strategy, self.tables, self.cooc = profile, config, strategy, tables, cooc
        corpus = np.asarray(corpus, bool)
        eligible = corpus & (np.asarray(available, bool) if config.exclude_unavailable else True)
        eligible[0] = False
        self.eligible = eligible
        self.retriever = None
        item_vectors, temperature = np.zeros((len(corpus), 1), np.float32), 1.0
        if strategy == "model":
            self.retriever = Retriever.over_corpus(make_retrieval_model(profile.model), retrieval_params, tables,
                                                   corpus, k=config.retrieve_k, chunk=config.batch_size)
            item_vectors, temperature = self.retriever.item_vectors, self.retriever.temperature
        self.generator = CandidateGenerator(item_vectors, temperature, cooc, tables.item_popularity, eligible,
                                            config.candidates, sessions)
        if strategy == "model":
            ranking = make_ranking_model(profile.ranker)
            all_items = Items(tables.item_ids, tables.item_category, tables.item_root)
            token_fn = jax.jit(ranking.candidate_tokens)
            chunk = 16_384
            # Candidate item tokens depend on the item alone: once per item, not per (customer, item).
            self.token_table = jnp.concatenate([
                token_fn(ranking_params, Items(*(jnp.asarray(x[i:i + chunk]) for x in all_items)))
                for i in range(0, len(tables.item_ids), chunk)])
            weights = tuple(float(w) for w in config.action_weights)

            def rank(params, token_table, history: History, cand_idx, features, valid):
                items = Items(jnp.asarray(tables.item_ids)[cand_idx] * valid,
                              jnp.asarray(tables.item_category)[cand_idx] * valid,
                              jnp.asarray(tables.item_root)[cand_idx] * valid)
                tokens = jnp.where(valid[..., None], token_table[cand_idx], 0.0)
                logits = ranking.logits_with_tokens(params, history, items, features, tokens)
                return final_scores(logits, valid, weights)

            self._rank = jax.jit(rank)
            self.ranking_params = ranking_params

    def recommend(self, history: History, history_idx: np.ndarray, history_action: np.ndarray,
                  bought_idx: np.ndarray | None = None, top_n: int | None = None) -> Recommendations:
        """Top-N for every row (rows with an empty history get empty slots: use a fallback).

        history: [n, H] original ids, left-padded; history_idx / history_action: the same steps as
        item_idx / action bits; bought_idx: [n, B] item_idx never to return (0 = padding) or None.
        """
        cfg = self.config
        top_n = top_n or cfg.top_n
        n = len(history_idx)
        out = Recommendations(np.zeros((n, top_n), np.int32), np.zeros((n, top_n), np.float32),
                              np.full((n, top_n, 3), np.nan, np.float32), np.zeros((n, top_n), np.int8))
        rows = np.flatnonzero((np.asarray(history_idx) > 0).any(axis=1))
        for start in range(0, len(rows), cfg.batch_size):
            part = rows[start:start + cfg.batch_size]
            m = len(part)
            idx = np.concatenate([part, np.repeat(part[-1:], cfg.batch_size - m)])  # fixed shapes: one compile
            hist = History(*(np.asarray(x)[idx] for x in history))
            h_idx, h_act = np.asarray(history_idx)[idx], np.asarray(history_action)[idx]
            retrieved = self.retriever(hist) if self.retriever is not None else None
            cs = self.generator.generate(h_idx, h_act, retrieved)
            valid = cs.item_idx > 0
            if cfg.exclude_bought and bought_idx is not None:
                b = np.asarray(bought_idx)[idx]
                valid &= ~((cs.item_idx[:, :, None] == b[:, None, :]) & (b[:, None, :] > 0)).any(axis=2)
            if self.strategy == "model":
                score, probs = self._rank(self.ranking_params, self.token_table, hist, jnp.asarray(cs.item_idx),
                                          jnp.asarray(cs.features), jnp.asarray(valid))
                score, probs = np.asarray(score), np.asarray(probs)
            else:
                score = np.where(valid, knn_scores(self.cooc, h_idx, cs.item_idx), -np.inf)
                probs = np.full(cs.item_idx.shape + (3,), np.nan, np.float32)
            k = min(top_n, score.shape[1])
            best = np.argsort(-score, axis=1, kind="stable")[:, :k]
            best_score = np.take_along_axis(score, best, axis=1)
            ok = np.isfinite(best_score)
            out.item_idx[part, :k] = np.where(ok, np.take_along_axis(cs.item_idx, best, axis=1), 0)[:m]
            out.score[part, :k] = np.where(ok, best_score, 0.0)[:m]
            out.probs[part, :k] = np.take_along_axis(probs, best[..., None], axis=1)[:m]
            out.source[part, :k] = np.where(ok, np.take_along_axis(cs.source, best, axis=1), 0)[:m]
        return out
