"""Hashed input embeddings shared by the retrieval and ranking models.

Original ids (visitorid, itemid, categoryid) are hashed by `num_hashes` different functions into
one table per entity; the looked-up rows are concatenated and projected to emb_dim. Hashing means
no vocabulary in the weights (a new item still gets a - shared - embedding) and two hashes make
a full collision of two ids unlikely. Row 0 is reserved: id 0 (padding / unknown) maps to row 0
and its embedding is masked to zero.

The three entity modules have fixed top-level names (`SHARED_EMBEDDING_MODULES`) in both models,
so ranking can start from (or freeze) retrieval's tables.
"""
from __future__ import annotations

import math

import haiku as hk
import jax
import jax.numpy as jnp

from model.batch import History, Items, action_multi_hot
from model.config import ModelConfig
from model.transformer import Dense

CUSTOMER_EMBEDDING = "customer_embedding"
ITEM_EMBEDDING = "item_embedding"
CATEGORY_EMBEDDING = "category_embedding"
SHARED_EMBEDDING_MODULES = (CUSTOMER_EMBEDDING, ITEM_EMBEDDING, CATEGORY_EMBEDDING)

# Per hash function k: an odd multiplier and an offset (x -> a*x + b is a bijection of uint32),
# followed by the murmur3 finaliser (also a bijection), then reduced to the table's rows.
_HASH_MULTIPLIERS = (0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F, 0x165667B1, 0xD3A2646D, 0xFD7046C5, 0xB55A4F09)
_HASH_OFFSETS = (0x7F4A7C15, 0x1B873593, 0xCC9E2D51, 0xE6546B64, 0x2545F491, 0x68E31DA4, 0xB5297A4D, 0x1B56C4E9)
MAX_HASHES = len(_HASH_MULTIPLIERS)


def _fmix32(h: jax.Array) -> jax.Array:
    """murmur3's 32-bit avalanche finaliser (uint32 arithmetic wraps mod 2**32)."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


RECENCY_BUCKETS = 8  # 0 = not in the history, 1 = newest step, 2 = 2 steps ago, 3 = 3-4, 4 = 5-8, ... 7 = 33+


def recency_bucket(candidate_ids: jax.Array, history_ids: jax.Array) -> jax.Array:
    """int32 [B, C]: how recently each candidate id occurs in the (left-padded) history, log2-bucketed.

    Depends only on the history and the candidate itself (candidate isolation holds) and counts
    steps back from the newest step (extra left padding changes nothing).
    """
    length = history_ids.shape[1]
    match = (candidate_ids[:, :, None] == history_ids[:, None, :]) & (candidate_ids[:, :, None] != 0)
    steps_back = length - jnp.arange(length)  # newest step = 1
    nearest = jnp.min(jnp.where(match, steps_back[None, None, :], length + 1), axis=2)
    bucket = jnp.ceil(jnp.log2(jnp.maximum(nearest, 1).astype(jnp.float32))).astype(jnp.int32) + 1
    return jnp.where(nearest <= length, jnp.minimum(bucket, RECENCY_BUCKETS - 1), 0)


def hash_ids(ids: jax.Array, num_rows: int, num_hashes: int) -> jax.Array:
    """Table rows int32 [..., num_hashes] of ids [...]: id 0 -> row 0, other ids -> rows in [1, num_rows).

    Ids are taken modulo 2**32 (non-negative int32/int64 ids below 2**32 are distinct inputs).
    """
    if not 1 <= num_hashes <= MAX_HASHES:
        raise ValueError(f"num_hashes must be in [1, {MAX_HASHES}]")
    ids = jnp.asarray(ids)
    x = ids.astype(jnp.uint32)
    rows = []
    for k in range(num_hashes):
        h = _fmix32(x * jnp.uint32(_HASH_MULTIPLIERS[k]) + jnp.uint32(_HASH_OFFSETS[k]))
        rows.append((h % jnp.uint32(num_rows - 1)).astype(jnp.int32) + 1)
    rows = jnp.stack(rows, axis=-1)
    return jnp.where((ids == 0)[..., None], 0, rows)


class HashEmbedding(hk.Module):
    """ids [...] -> [..., emb_dim]: the sum of `num_hashes` rows of one table.

    Params: `table` [num_rows, emb_dim]. Summing (not concatenating and projecting) keeps an
    embedding lookup free of matmuls: the item tower embeds thousands of sampled negatives per
    training step, and there the projection cost more than the transformer. Id 0 gives exactly zero.
    """

    def __init__(self, num_rows: int, num_hashes: int, emb_dim: int, *, compute_dtype: str = "float32",
                 name: str | None = None):
        super().__init__(name=name)
        self.num_rows = num_rows
        self.num_hashes = num_hashes
        self.emb_dim = emb_dim

    def __call__(self, ids: jax.Array) -> jax.Array:
        scale = 1.0 / math.sqrt(self.num_hashes)  # unit variance whatever the number of hashes
        table = hk.get_parameter("table", [self.num_rows, self.emb_dim], jnp.float32,
                                 init=hk.initializers.TruncatedNormal(stddev=scale))
        rows = hash_ids(ids, self.num_rows, self.num_hashes)  # [..., K]
        looked_up = table.at[rows].get(mode="promise_in_bounds")  # [..., K, emb_dim]; rows < num_rows
        out = looked_up.sum(axis=-2)
        return jnp.where((jnp.asarray(ids) != 0)[..., None], out, 0.0)


class InputEmbedder:
    """Builds the model's input tokens from batch pytrees (a plain holder of Haiku modules).

    Create it inside the transformed function: it creates the shared entity modules at the top
    level (fixed names) plus the step projection shared by history steps and candidates.
    """

    def __init__(self, config: ModelConfig):
        dtype = config.compute_dtype
        self.customer = (HashEmbedding(config.customer_hash_rows, config.num_hashes, config.emb_dim,
                                       compute_dtype=dtype, name=CUSTOMER_EMBEDDING)
                         if config.use_customer_id else None)
        self.item = (HashEmbedding(config.item_hash_rows, config.num_hashes, config.emb_dim,
                                   compute_dtype=dtype, name=ITEM_EMBEDDING) if config.use_item_ids else None)
        # Roots ("surfaces") are categories too: one table, one id space.
        self.category = HashEmbedding(config.category_hash_rows, config.num_hashes, config.emb_dim,
                                      compute_dtype=dtype, name=CATEGORY_EMBEDDING)
        self.history_projection = Dense(config.emb_dim, use_bias=True, compute_dtype=jnp.dtype(dtype),
                                        name="history_step_projection")
        self.emb_dim = config.emb_dim

    def item_features(self, items: Items | History) -> jax.Array:
        """[..., 3 * emb_dim]: item, category and root-category embeddings side by side."""
        categories = self.category(jnp.stack([items.category_id, items.root_id], axis=-1))  # one lookup
        categories = categories.reshape(categories.shape[:-2] + (-1,))
        if self.item is None:
            return categories
        return jnp.concatenate([self.item(items.item_id), categories], axis=-1)

    def customer_token(self, customer_id: jax.Array) -> jax.Array:
        """[B] -> [B, 1, emb_dim]: a learned user token, plus the hashed id's row when ids are used."""
        user = hk.get_parameter("user_token", [self.emb_dim], jnp.float32,
                                init=hk.initializers.TruncatedNormal(stddev=1.0))
        token = jnp.broadcast_to(user, (customer_id.shape[0], self.emb_dim))
        if self.customer is not None:
            token = token + self.customer(customer_id)
        return token[:, None, :]

    def history_tokens(self, history: History) -> jax.Array:
        """[B, L] steps -> [B, L, emb_dim]: item features + the multi-hot actions; padding -> 0."""
        features = jnp.concatenate([self.item_features(history), action_multi_hot(history.action)], axis=-1)
        tokens = self.history_projection(features).astype(jnp.float32)
        return jnp.where((history.item_id != 0)[..., None], tokens, 0.0)

    def candidate_context(self, candidates: Items, history: History) -> jax.Array:
        """[B, C, emb_dim]: learned embeddings of how recently the candidate item, its category and
        its root occur in the history (repeat views and category loyalty are strong signals in
        e-commerce; attention alone learns them slowly). Per candidate, so isolation holds."""
        buckets = jnp.stack([recency_bucket(candidates.item_id, history.item_id),
                             recency_bucket(candidates.category_id, history.category_id),
                             recency_bucket(candidates.root_id, history.root_id)], axis=-1)  # [B, C, 3]
        table = hk.get_parameter("candidate_recency", [3, RECENCY_BUCKETS, self.emb_dim], jnp.float32,
                                 init=hk.initializers.TruncatedNormal(stddev=0.02))
        out = table[jnp.arange(3), buckets].sum(axis=-2)  # [B, C, emb_dim]
        return jnp.where((candidates.item_id != 0)[..., None], out, 0.0)

    def candidate_tokens(self, candidates: Items) -> jax.Array:
        """[B, C] candidates (no actions) -> [B, C, emb_dim]; padding -> 0.

        A candidate goes through the SAME projection as a history step (with no actions) plus a
        learned candidate-type offset, so an item looks alike as a candidate and in the history:
        attention can match a candidate to the steps it resembles from the first update on.
        """
        features = self.item_features(candidates)
        no_actions = jnp.zeros(features.shape[:-1] + (3,), features.dtype)
        offset = hk.get_parameter("candidate_type", [self.emb_dim], jnp.float32,
                                  init=hk.initializers.TruncatedNormal(stddev=0.02))
        tokens = self.history_projection(jnp.concatenate([features, no_actions], axis=-1)).astype(jnp.float32)
        return jnp.where((candidates.item_id != 0)[..., None], tokens + offset, 0.0)
