"""Two-tower retrieval: a causal transformer user tower and an MLP item tower.

User tower: [customer | history] through the transformer with the causal mask, a projection to
retrieval_dim, L2-normalised; the vector at history position t is the customer's state after
step t and is trained to retrieve step t + 1. Item tower: hashed item + category + root
embeddings -> MLP -> L2-normalised. Both towers share the input embedding tables.

Training: sampled softmax over in-batch targets plus popularity-sampled negatives, logQ
corrected, with a learned, clipped temperature (see `model.losses.sampled_softmax_loss`).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from model.batch import History, Items, RetrievalBatch
from model.config import ModelConfig
from model.embeddings import InputEmbedder
from model.losses import l2_normalize, sampled_softmax_loss
from model.mask import attention_mask, token_positions
from model.transformer import Dense, Transformer

# The learned temperature is clipped to this range (log-parameterised, so always positive).
TEMPERATURE_MIN, TEMPERATURE_MAX = 0.01, 1.0


class RetrievalModel(NamedTuple):
    """Pure functions of the retrieval model (all jit-able; batches are pytrees).

    init(rng, batch: RetrievalBatch) -> params
    user_vectors(params, history: History [B, L]) -> [B, L, D] unit vectors, state after each step
    serving_user_vector(params, history) -> [B, D], state after the most recent step (index -1);
        a customer with an empty history gets a vector from the customer token alone
    item_vectors(params, items: Items [...]) -> [..., D] unit vectors (zero for padding, id 0)
    loss(params, batch, negatives: Items [N], negative_logq [N], target_logq [B, L] | None)
        -> (scalar loss, metrics dict); logq = log probability of being sampled (None = 0)
    temperature(params) -> scalar
    """

    init: Callable[..., hk.Params]
    user_vectors: Callable[..., jax.Array]
    serving_user_vector: Callable[..., jax.Array]
    item_vectors: Callable[..., jax.Array]
    loss: Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
    temperature: Callable[..., jax.Array]


class ItemTower(hk.Module):
    """Item features [..., F] -> [..., retrieval_dim] unit vectors (one linear map: the tower runs
    on every sampled negative of every step, so it is kept cheap; the embeddings carry the rest)."""

    def __init__(self, config: ModelConfig, name: str = "item_tower"):
        super().__init__(name=name)
        self.output = Dense(config.retrieval_dim, use_bias=True, compute_dtype=jnp.dtype(config.compute_dtype),
                            name="output")

    def __call__(self, features: jax.Array) -> jax.Array:
        return l2_normalize(self.output(features).astype(jnp.float32))


class LearnedTemperature(hk.Module):
    """exp(clip(log_temperature)); the clip bounds how sharp / flat the softmax can get."""

    def __init__(self, init_value: float, name: str = "temperature"):
        super().__init__(name=name)
        self.init_value = init_value

    def __call__(self) -> jax.Array:
        log_t = hk.get_parameter("log_temperature", [], jnp.float32,
                                 init=hk.initializers.Constant(math.log(self.init_value)))
        return jnp.exp(jnp.clip(log_t, math.log(TEMPERATURE_MIN), math.log(TEMPERATURE_MAX)))


def select_targets(target_valid: jax.Array, max_targets: int | None) -> jax.Array | None:
    """Flat indices [K] (into B * L) of the target positions to train; None = all positions.

    Valid targets come first, the newest step of every row, then the step before, ... so a
    capped selection spans all customers of the batch and drops the oldest targets first.
    """
    target_valid = jnp.asarray(target_valid)  # numpy constants would not index with tracers
    batch, length = target_valid.shape
    if max_targets is None or max_targets >= batch * length:
        return None
    steps_back = jnp.arange(length)[:, None]
    newest_first = (jnp.arange(batch)[None, :] * length + (length - 1 - steps_back)).reshape(-1)
    order = jnp.argsort(~target_valid.reshape(-1)[newest_first], stable=True)
    return newest_first[order[:max_targets]]


def _flat_items(items: Items) -> Items:
    return Items(*(jnp.asarray(x).reshape(-1) for x in items))


def _flat_logq(logq: jax.Array | None, shape: tuple[int, ...]) -> jax.Array:
    """Flattened float32 log sampling probabilities; None = 0 (no correction)."""
    return jnp.zeros(shape, jnp.float32) if logq is None else jnp.asarray(logq, jnp.float32).reshape(shape)


def make_retrieval_model(config: ModelConfig, *, temperature_init: float = 0.05,
                         max_targets: int | None = None) -> RetrievalModel:
    """Build the retrieval model's pure functions (see `RetrievalModel`).

    max_targets: train at most this many target positions per batch (`select_targets`); they are
    also the in-batch negatives, so the loss costs max_targets * (max_targets + N) logits
    instead of (B * L) * (B * L + N). None = all positions.
    """
    if not TEMPERATURE_MIN <= temperature_init <= TEMPERATURE_MAX:
        raise ValueError(f"temperature_init must be in [{TEMPERATURE_MIN}, {TEMPERATURE_MAX}]")

    def build():
        embedder = InputEmbedder(config)
        transformer = Transformer.from_config(config)
        user_projection = Dense(config.retrieval_dim, use_bias=True, name="user_projection")  # float32 head
        item_tower = ItemTower(config)
        temperature = LearnedTemperature(temperature_init)

        def user_vectors(history: History) -> jax.Array:
            tokens = jnp.concatenate([embedder.customer_token(history.customer_id),
                                      embedder.history_tokens(history)], axis=1)
            length = history.item_id.shape[1]
            mask = attention_mask(history.item_id != 0)
            positions = token_positions(length, 0, config.history_len)
            states = transformer(tokens, mask, positions)[:, 1:]
            return l2_normalize(user_projection(states))

        def serving_user_vector(history: History) -> jax.Array:
            return user_vectors(history)[:, -1]

        def item_vectors(items: Items) -> jax.Array:
            vectors = item_tower(embedder.item_features(items))
            return jnp.where((items.item_id != 0)[..., None], vectors, 0.0)  # padding -> zero vector

        def loss(batch: RetrievalBatch, negatives: Items, negative_logq: jax.Array | None = None,
                 target_logq: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
            targets = _flat_items(batch.target)
            target_logq = _flat_logq(target_logq, targets.item_id.shape)
            users = user_vectors(batch.history).reshape(targets.item_id.shape[0], -1)
            rows = select_targets(batch.target.item_id != 0, max_targets)
            if rows is not None:
                users, target_logq = users[rows], target_logq[rows]
                targets = Items(*(x[rows] for x in targets))
            negatives = _flat_items(negatives)
            negative_logq = _flat_logq(negative_logq, negatives.item_id.shape)

            # Targets and negatives go through the item tower in one call.
            num_targets = targets.item_id.shape[0]
            vectors = item_vectors(Items(*(jnp.concatenate(pair) for pair in zip(targets, negatives))))
            value, metrics = sampled_softmax_loss(
                users, vectors[:num_targets], targets.item_id, target_logq, targets.item_id != 0,
                shared=vectors,
                shared_id=jnp.concatenate([targets.item_id, negatives.item_id]),
                shared_logq=jnp.concatenate([target_logq, negative_logq]),
                temperature=temperature())
            metrics["targets_dropped"] = jnp.sum(batch.target.item_id != 0) - metrics["num_targets"]
            return value, metrics

        def init(batch: RetrievalBatch) -> None:
            user_vectors(batch.history)
            item_vectors(batch.target)
            temperature()

        return init, (user_vectors, serving_user_vector, item_vectors, loss, temperature)

    transformed = hk.without_apply_rng(hk.multi_transform(build))
    user_vectors, serving_user_vector, item_vectors, loss, temperature = transformed.apply
    return RetrievalModel(init=transformed.init, user_vectors=user_vectors, serving_user_vector=serving_user_vector,
                          item_vectors=item_vectors, loss=loss, temperature=temperature)


def corpus_items(tables, corpus) -> tuple[np.ndarray, Items]:
    """(item_idx [I'], Items [I'] with original ids) of the items where `corpus` (bool [I+1]) is
    True; ids from `tables` (a model.data.SequenceTables: item_ids / item_category / item_root)."""
    idx = np.flatnonzero(corpus).astype(np.int32)
    return idx, Items(tables.item_ids[idx], tables.item_category[idx], tables.item_root[idx])


def corpus_vectors(model: RetrievalModel, params, items: Items, chunk: int = 8_192) -> np.ndarray:
    """Item-tower vectors of a corpus, in chunks (float32 [I', D])."""
    fn = jax.jit(model.item_vectors)
    out = [np.asarray(fn(params, Items(*(np.asarray(x)[i:i + chunk] for x in items))))
           for i in range(0, len(items.item_id), chunk)]
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


class Retriever:
    """The retrieval candidate source: user vectors and the exact top K of the whole corpus.

    corpus_idx [I'] item_idx of the retrievable items and corpus_items (Items [I'], original ids)
    in the same order; num_items: the largest item_idx. Histories are scored in fixed-size chunks
    (one compile per history width), returning model.candidates.Retrieved with dense item_idx.
    """

    @classmethod
    def over_corpus(cls, model: RetrievalModel, params, tables, corpus, **kwargs) -> "Retriever":
        """A Retriever over the items where `corpus` (bool [I+1]) is True (see corpus_items)."""
        corpus_idx, items = corpus_items(tables, corpus)
        return cls(model, params, corpus_idx, items, tables.num_items, **kwargs)

    def __init__(self, model: RetrievalModel, params, corpus_idx, corpus_items: Items, num_items: int,
                 k: int = 100, chunk: int = 512, vector_chunk: int = 8_192):
        self.model, self.params, self.chunk = model, params, chunk
        self.corpus_idx = np.asarray(corpus_idx, np.int32)
        vectors = corpus_vectors(model, params, corpus_items, vector_chunk)
        self.item_vectors = np.zeros((num_items + 1, vectors.shape[1]), np.float32)  # by item_idx
        self.item_vectors[self.corpus_idx] = vectors
        self.temperature = float(model.temperature(params))
        self.k = min(k, len(self.corpus_idx))
        corpus_dev = jnp.asarray(vectors)
        temperature = self.temperature

        def top(params, history: History):
            users = model.serving_user_vector(params, history)
            logits, pos = jax.lax.top_k((users @ corpus_dev.T) / temperature, self.k)
            return users, pos, logits

        self._top = jax.jit(top)

    def __call__(self, history: History):
        """Retrieved for n histories (numpy in, numpy out)."""
        from model.candidates import Retrieved

        n = len(history.customer_id)
        users, idx, logits = [], [], []
        for start in range(0, n, self.chunk):
            part = [np.asarray(x)[start:start + self.chunk] for x in history]
            m = len(part[0])
            if m < self.chunk:  # fixed shapes: pad with copies of the last row
                part = [np.concatenate([x, np.repeat(x[-1:], self.chunk - m, axis=0)]) for x in part]
            u, p, lg = self._top(self.params, History(*part))
            users.append(np.asarray(u)[:m])
            idx.append(self.corpus_idx[np.asarray(p)[:m]])
            logits.append(np.asarray(lg)[:m])
        if not users:
            d = self.item_vectors.shape[1]
            return Retrieved(np.zeros((0, d), np.float32), np.zeros((0, self.k), np.int32), np.zeros((0, self.k), np.float32))
        return Retrieved(np.concatenate(users), np.concatenate(idx), np.concatenate(logits))
