"""Ranking: [customer | history | candidates] through the transformer with candidate isolation
-> per-action logits (transaction, addtocart, view) for every candidate.

Each candidate attends to the customer, the valid history and itself only, and all candidates
share one position (one past the newest step), so a candidate's logits do not depend on the
other candidates nor on its slot: scores are consistent and cacheable per (customer, item).

A candidate token is its item's embedding (the same projection as a history step), the
recency of the item / category / root in the history, and a projection of the candidate
features (model.candidates: retrieval and co-occurrence scores and ranks, times seen, last
action, ...), so the ranker learns when to re-show an item and when to explore.

Heads and loss: the `view` head is the next event: a softmax over the candidates against the
item the customer touched next (training cases whose next item is not among the candidates
carry no view loss). The `transaction` / `addtocart` heads are sigmoid "buys / carts this item
soon" (the rest of the window), binary cross-entropy weighted by action.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import haiku as hk
import jax
import jax.numpy as jnp

from model.batch import ACTION_NAMES, History, Items, RankingBatch, action_multi_hot
from model.config import ModelConfig
from model.embeddings import SHARED_EMBEDDING_MODULES, InputEmbedder
from model.losses import MASKED, weighted_binary_cross_entropy
from model.mask import attention_mask, token_positions
from model.transformer import Dense, Transformer

DEFAULT_ACTION_WEIGHTS = (10.0, 3.0, 1.0)
VIEW_HEAD = ACTION_NAMES.index("view")


class RankingModel(NamedTuple):
    """Pure functions of the ranking model (all jit-able; batches are pytrees).

    init(rng, batch: RankingBatch) -> params
    logits(params, history [B, H], candidates Items [B, C], features [B, C, F]) -> float32 [B, C, 3]
        in ACTION_NAMES order (transaction, addtocart, view)
    loss(params, batch, action_weights=(10, 3, 1)) -> (scalar loss, metrics dict)
    """

    init: Callable[..., hk.Params]
    logits: Callable[..., jax.Array]
    loss: Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
    # Serving: candidate item tokens depend on the item alone, so a scorer computes them once per
    # item (candidate_tokens(params, items) -> [..., D]) and reuses them for every customer:
    # logits_with_tokens(params, history, candidates, features, tokens) == logits(...).
    candidate_tokens: Callable[..., jax.Array]
    logits_with_tokens: Callable[..., jax.Array]


def next_event_loss(view_logits: jax.Array, target: jax.Array, valid: jax.Array) -> tuple[jax.Array, dict]:
    """Softmax cross-entropy of the next event's slot among the valid candidates.

    view_logits, target (0/1), valid: [B, C]. Rows without a target among the candidates do not
    count. Returns (mean loss, metrics with the share of rows whose target has the top logit).
    """
    logits = jnp.where(valid, view_logits, MASKED)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    has = (jnp.sum(target * valid, axis=-1) > 0).astype(jnp.float32)
    count = jnp.maximum(jnp.sum(has), 1.0)
    per_row = -jnp.sum(target * valid * log_p, axis=-1)
    loss = jnp.sum(per_row * has) / count
    top = jnp.argmax(logits, axis=-1)
    hit = jnp.take_along_axis(target, top[:, None], axis=-1)[:, 0]
    return loss, {"next_event_ce": loss, "next_event_accuracy": jnp.sum(hit * has) / count,
                  "rows_with_target": jnp.sum(has)}


def make_ranking_model(config: ModelConfig, *, future_weight: float = 1.0) -> RankingModel:
    """Build the ranking model's pure functions (see `RankingModel`).

    future_weight scales the cart / purchase heads' loss against the next-event loss.
    """

    def build():
        embedder = InputEmbedder(config)
        transformer = Transformer.from_config(config)
        action_head = Dense(len(ACTION_NAMES), use_bias=True, name="action_head")  # float32 head
        feature_hidden = Dense(2 * config.emb_dim, use_bias=True, name="candidate_feature_hidden")
        feature_out = Dense(config.emb_dim, use_bias=True, name="candidate_feature_out")

        def candidate_tokens(candidates: Items) -> jax.Array:
            return embedder.candidate_tokens(candidates)

        def logits(history: History, candidates: Items, features: jax.Array) -> jax.Array:
            return logits_with_tokens(history, candidates, features, None)

        def logits_with_tokens(history: History, candidates: Items, features: jax.Array,
                               candidate_base: jax.Array | None) -> jax.Array:
            hist_len, num_candidates = history.item_id.shape[1], candidates.item_id.shape[1]
            customer = embedder.customer_token(history.customer_id)
            steps = embedder.history_tokens(history)
            if candidate_base is None:  # created after the history modules: keeps Haiku's init order
                candidate_base = embedder.candidate_tokens(candidates)
            valid = candidates.item_id != 0
            feature_tokens = feature_out(jax.nn.gelu(feature_hidden(features.astype(jnp.float32))))
            cand = candidate_base + embedder.candidate_context(candidates, history) + feature_tokens
            cand = jnp.where(valid[..., None], cand, 0.0)
            tokens = jnp.concatenate([customer, steps, cand], axis=1)
            mask = attention_mask(history.item_id != 0, valid)
            positions = token_positions(hist_len, num_candidates, config.history_len)
            states = transformer(tokens, mask, positions, num_candidates)[:, 1 + hist_len:]
            return action_head(states).astype(jnp.float32)

        def loss(batch: RankingBatch, action_weights: Sequence[float] = DEFAULT_ACTION_WEIGHTS
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
            out = logits(batch.history, batch.candidates, batch.features)
            valid = batch.candidates.item_id != 0
            next_loss, metrics = next_event_loss(out[..., VIEW_HEAD], batch.target.astype(jnp.float32), valid)
            weights = jnp.asarray(action_weights, jnp.float32)
            future = action_multi_hot(batch.labels)
            future_loss, bce = weighted_binary_cross_entropy(out[..., :VIEW_HEAD], future[..., :VIEW_HEAD], valid,
                                                             weights[:VIEW_HEAD])
            metrics.update({k: v for k, v in bce.items() if k.startswith("bce_")})
            return next_loss + future_weight * future_loss, metrics

        def init(batch: RankingBatch) -> None:
            logits(batch.history, batch.candidates, batch.features)

        return init, (logits, loss, candidate_tokens, logits_with_tokens)

    transformed = hk.without_apply_rng(hk.multi_transform(build))
    logits_fn, loss_fn, candidate_tokens_fn, logits_with_tokens_fn = transformed.apply
    return RankingModel(init=transformed.init, logits=logits_fn, loss=loss_fn,
                        candidate_tokens=candidate_tokens_fn, logits_with_tokens=logits_with_tokens_fn)


def _is_shared_embedding(module_name: str) -> bool:
    return any(module_name == m or module_name.startswith(m + "/") for m in SHARED_EMBEDDING_MODULES)


def embedding_param_mask(params: hk.Params) -> hk.Params:
    """Same structure as params, True on the shared embedding modules (tables + projections)."""
    return hk.data_structures.map(lambda module, name, value: _is_shared_embedding(module), params)


def transplant_embeddings(ranking_params: hk.Params, retrieval_params: hk.Params) -> hk.Params:
    """Ranking params with the shared embedding modules copied from the retrieval params.

    Raises ValueError if a shared module is missing or its parameter names / shapes differ
    (the two models must come from the same ModelConfig embedding sizes).
    """
    out = {module: dict(values) for module, values in ranking_params.items()}
    shared = [m for m in ranking_params if _is_shared_embedding(m)]
    missing = [m for m in SHARED_EMBEDDING_MODULES if m not in shared and m in retrieval_params]
    if missing:
        raise ValueError(f"ranking params lack embedding modules {missing}")
    for module in shared:
        source = retrieval_params.get(module)
        if source is None or set(source) != set(ranking_params[module]):
            raise ValueError(f"retrieval params lack or differ in module {module!r}")
        for name, value in source.items():
            if value.shape != ranking_params[module][name].shape:
                raise ValueError(f"{module}/{name}: shape {value.shape} != {ranking_params[module][name].shape}")
            out[module][name] = value
    return out
