"""Ranking: [customer | history | candidates] through the transformer with candidate isolation
-> per-action logits (transaction, addtocart, view) for every candidate.

Each candidate attends to the customer, the valid history and itself only, and all candidates
share one position (one past the newest step), so a candidate's logits do not depend on the
other candidates nor on its slot: scores are consistent and cacheable per (customer, item).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import haiku as hk
import jax
import jax.numpy as jnp

from model.batch import ACTION_NAMES, History, Items, RankingBatch, action_multi_hot
from model.config import ModelConfig
from model.embeddings import SHARED_EMBEDDING_MODULES, InputEmbedder
from model.losses import weighted_binary_cross_entropy
from model.mask import attention_mask, token_positions
from model.transformer import Dense, Transformer

DEFAULT_ACTION_WEIGHTS = (10.0, 3.0, 1.0)


class RankingModel(NamedTuple):
    """Pure functions of the ranking model (all jit-able; batches are pytrees).

    init(rng, batch: RankingBatch) -> params
    logits(params, history: History [B, H], candidates: Items [B, C]) -> float32 [B, C, 3]
        in ACTION_NAMES order (transaction, addtocart, view)
    loss(params, batch, action_weights=(10, 3, 1)) -> (scalar loss, metrics dict)
    """

    init: Callable[..., hk.Params]
    logits: Callable[..., jax.Array]
    loss: Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
    # Serving: candidate tokens depend on the item alone, so a scorer computes them once per item
    # (candidate_tokens(params, items) -> [..., D]) and reuses them for every customer:
    # logits_with_tokens(params, history, candidates, tokens) == logits(params, history, candidates).
    candidate_tokens: Callable[..., jax.Array]
    logits_with_tokens: Callable[..., jax.Array]


def make_ranking_model(config: ModelConfig) -> RankingModel:
    """Build the ranking model's pure functions (see `RankingModel`)."""

    def build():
        embedder = InputEmbedder(config)
        transformer = Transformer.from_config(config)
        action_head = Dense(len(ACTION_NAMES), use_bias=True, name="action_head")  # float32 head

        def candidate_tokens(candidates: Items) -> jax.Array:
            return embedder.candidate_tokens(candidates)

        def logits(history: History, candidates: Items) -> jax.Array:
            return logits_with_tokens(history, candidates, None)

        def logits_with_tokens(history: History, candidates: Items, candidate_base: jax.Array | None) -> jax.Array:
            hist_len, num_candidates = history.item_id.shape[1], candidates.item_id.shape[1]
            customer = embedder.customer_token(history.customer_id)
            steps = embedder.history_tokens(history)
            if candidate_base is None:  # created after the history modules: keeps Haiku's init order
                candidate_base = embedder.candidate_tokens(candidates)
            tokens = jnp.concatenate([customer, steps,
                                      candidate_base + embedder.candidate_context(candidates, history)], axis=1)
            mask = attention_mask(history.item_id != 0, candidates.item_id != 0)
            positions = token_positions(hist_len, num_candidates, config.history_len)
            states = transformer(tokens, mask, positions, num_candidates)[:, 1 + hist_len:]
            return action_head(states).astype(jnp.float32)

        def loss(batch: RankingBatch, action_weights: Sequence[float] = DEFAULT_ACTION_WEIGHTS
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
            out = logits(batch.history, batch.candidates)
            return weighted_binary_cross_entropy(out, action_multi_hot(batch.labels), batch.candidates.item_id != 0,
                                                 jnp.asarray(action_weights, jnp.float32))

        def init(batch: RankingBatch) -> None:
            logits(batch.history, batch.candidates)

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
    missing = [m for m in SHARED_EMBEDDING_MODULES if m not in shared]
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
