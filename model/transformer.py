"""A Grok-style transformer in Haiku: pre- and post-RMSNorm around every sub-block,
grouped-query attention with rotary positions and soft-capped logits, gated-GELU feed-forward.

Mixed precision: parameters are float32; `Dense` casts inputs and weights to the compute dtype
for the matmul (bfloat16 on accelerators); norms, softmax, the residual stream and everything
returned are float32. Every weight uses a variance-scaling truncated-normal init and norm
scales start at 1, so gradients reach every parameter from the first step.
"""
from __future__ import annotations

import math

import haiku as hk
import jax
import jax.numpy as jnp

from model.config import ModelConfig

MASKED_LOGIT = -1e30


def dense_init(scale: float = 1.0) -> hk.initializers.Initializer:
    """Fan-in variance scaling, truncated normal (LeCun-style)."""
    return hk.initializers.VarianceScaling(scale, "fan_in", "truncated_normal")


class Dense(hk.Module):
    """y = x @ w (+ b), float32 params, matmul in `compute_dtype`, output in `compute_dtype`."""

    def __init__(self, output_size: int, *, use_bias: bool = False, compute_dtype: jnp.dtype = jnp.float32,
                 w_init: hk.initializers.Initializer | None = None, name: str | None = None):
        super().__init__(name=name)
        self.output_size = output_size
        self.use_bias = use_bias
        self.compute_dtype = compute_dtype
        self.w_init = w_init or dense_init()

    def __call__(self, x: jax.Array) -> jax.Array:
        w = hk.get_parameter("w", [x.shape[-1], self.output_size], jnp.float32, init=self.w_init)
        y = jnp.dot(x.astype(self.compute_dtype), w.astype(self.compute_dtype))
        if self.use_bias:
            b = hk.get_parameter("b", [self.output_size], jnp.float32, init=jnp.zeros)
            y = y + b.astype(self.compute_dtype)
        return y


def weight_decay_mask(params: hk.Params) -> hk.Params:
    """True on weight matrices and embedding tables (ndim >= 2), False on norm scales, biases and
    scalars such as the retrieval temperature, which weight decay would drag toward 0 / 1."""
    return hk.data_structures.map(lambda module, name, value: value.ndim >= 2, params)


class RMSNorm(hk.Module):
    """x / rms(x) * scale, computed in float32 (scale starts at 1)."""

    def __init__(self, eps: float = 1e-6, name: str | None = None):
        super().__init__(name=name)
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        scale = hk.get_parameter("scale", [x.shape[-1]], jnp.float32, init=jnp.ones)
        x = x.astype(jnp.float32)
        return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.eps) * scale


def soft_cap(logits: jax.Array, cap: float) -> jax.Array:
    """cap * tanh(logits / cap): ~identity for small logits, bounded by +-cap."""
    return cap * jnp.tanh(logits / cap)


def apply_rotary(x: jax.Array, positions: jax.Array, max_wavelength: float = 10_000.0) -> jax.Array:
    """Rotary position embedding of x [B, T, ..., K] at integer positions [T] or [B, T]."""
    half = x.shape[-1] // 2
    inv_freq = max_wavelength ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [(B,) T, K/2]
    if angles.ndim == 2:
        angles = angles[None]
    angles = angles.reshape(angles.shape[:2] + (1,) * (x.ndim - 3) + (half,))
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x.dtype)


def attention_logits(query: jax.Array, key: jax.Array, cap: float) -> jax.Array:
    """Soft-capped scaled dot products, float32.

    query [B, T, Hkv, G, K] (G query heads per kv head), key [B, S, Hkv, K] -> [B, Hkv, G, T, S].
    """
    batch, num_queries, kv_heads, groups, key_size = query.shape
    # One [G*T, K] x [K, S] matmul per (batch, kv head): much faster on CPU than a 5-D einsum.
    folded = query.transpose(0, 2, 3, 1, 4).reshape(batch, kv_heads, groups * num_queries, key_size)
    key = key.transpose(0, 2, 1, 3)  # [B, Hkv, S, K]: batch dims leading keeps XLA's dots fast
    logits = jnp.einsum("bhqk,bhsk->bhqs", folded, key, preferred_element_type=jnp.float32)
    logits = logits.reshape(batch, kv_heads, groups, num_queries, key.shape[2])
    return soft_cap(logits / math.sqrt(key_size), cap)


class GroupedQueryAttention(hk.Module):
    """Multi-head attention where groups of query heads share one key/value head."""

    def __init__(self, num_q_heads: int, num_kv_heads: int, key_size: int, *, attn_logit_cap: float = 30.0,
                 rope_max_wavelength: float = 10_000.0, compute_dtype: jnp.dtype = jnp.float32,
                 name: str | None = None):
        super().__init__(name=name)
        if num_kv_heads < 1 or num_q_heads % num_kv_heads:
            raise ValueError(f"num_q_heads={num_q_heads} must be a positive multiple of num_kv_heads={num_kv_heads}")
        self.num_q_heads = num_q_heads
        self.num_kv_heads = num_kv_heads
        self.key_size = key_size
        self.attn_logit_cap = attn_logit_cap
        self.rope_max_wavelength = rope_max_wavelength
        self.compute_dtype = compute_dtype

    def __call__(self, x: jax.Array, mask: jax.Array, positions: jax.Array, num_candidates: int = 0) -> jax.Array:
        """x [B, T, D], mask bool [B, 1, T, T], positions [T] or [B, T] -> [B, T, D] float32.

        num_candidates > 0 declares the last C tokens isolated candidates (each attends to the
        first T - C tokens and itself only, as `mask` says): their attention is then computed
        against the context keys plus one self column, O(C * (T - C)) instead of O(T^2), with the
        same result (the candidate-by-candidate block of the mask is diagonal).
        """
        batch, num_tokens, model_dim = x.shape
        groups = self.num_q_heads // self.num_kv_heads
        dense = lambda size, name: Dense(size, compute_dtype=self.compute_dtype, name=name)  # noqa: E731
        query = dense(self.num_q_heads * self.key_size, "query")(x)
        key = dense(self.num_kv_heads * self.key_size, "key")(x)
        value = dense(self.num_kv_heads * self.key_size, "value")(x)
        query = query.reshape(batch, num_tokens, self.num_kv_heads, groups, self.key_size)
        key = key.reshape(batch, num_tokens, self.num_kv_heads, self.key_size)
        value = value.reshape(batch, num_tokens, self.num_kv_heads, self.key_size)
        query = apply_rotary(query, positions, self.rope_max_wavelength)
        key = apply_rotary(key, positions, self.rope_max_wavelength)

        context = num_tokens - num_candidates
        out = self._attend(query[:, :context], key[:, :context], value[:, :context],
                           mask[:, :, :context, :context])  # [B, T-C, Hq * K]
        if num_candidates:
            out = jnp.concatenate([out, self._attend_candidates(
                query[:, context:], key, value, mask[:, :, context:], context)], axis=1)
        return dense(model_dim, "output")(out).astype(jnp.float32)

    def _attend(self, query: jax.Array, key: jax.Array, value: jax.Array, mask: jax.Array) -> jax.Array:
        """Masked softmax attention: query [B, T, Hkv, G, K] over key/value [B, S, Hkv, K] -> [B, T, Hq * K]."""
        batch, num_queries, kv_heads, groups, key_size = query.shape
        logits = attention_logits(query, key, self.attn_logit_cap)  # [B, Hkv, G, T, S]
        logits = jnp.where(mask[:, :, None], logits, MASKED_LOGIT)  # mask [B, 1, 1, T, S]
        weights = jax.nn.softmax(logits, axis=-1).astype(self.compute_dtype)
        weights = weights.reshape(batch, kv_heads, groups * num_queries, key.shape[1])
        out = jnp.einsum("bhqs,bhsk->bhqk", weights, value.transpose(0, 2, 1, 3))  # [B, Hkv, G*T, K]
        out = out.reshape(batch, kv_heads, groups, num_queries, key_size).transpose(0, 3, 1, 2, 4)
        return out.reshape(batch, num_queries, self.num_q_heads * key_size)

    def _attend_candidates(self, query: jax.Array, key: jax.Array, value: jax.Array, mask: jax.Array,
                           context: int) -> jax.Array:
        """Candidate queries [B, C, Hkv, G, K] over the context keys and their own key only."""
        batch, num_candidates, kv_heads, groups, key_size = query.shape
        ctx_logits = attention_logits(query, key[:, :context], self.attn_logit_cap)  # [B, Hkv, G, C, S]
        ctx_logits = jnp.where(mask[:, :, None, :, :context], ctx_logits, MASKED_LOGIT)
        own_key, own_value = key[:, context:], value[:, context:]  # [B, C, Hkv, K]
        self_logits = jnp.einsum("bchgk,bchk->bhgc", query, own_key, preferred_element_type=jnp.float32)
        self_logits = soft_cap(self_logits / math.sqrt(key_size), self.attn_logit_cap)
        diagonal = jnp.diagonal(mask[:, 0, :, context:], axis1=1, axis2=2)  # [B, C]
        self_logits = jnp.where(diagonal[:, None, None, :], self_logits, MASKED_LOGIT)
        weights = jax.nn.softmax(jnp.concatenate([ctx_logits, self_logits[..., None]], axis=-1), axis=-1)
        weights = weights.astype(self.compute_dtype)
        ctx_w = weights[..., :context].reshape(batch, kv_heads, groups * num_candidates, context)
        out = jnp.einsum("bhqs,bhsk->bhqk", ctx_w, value[:, :context].transpose(0, 2, 1, 3))
        out = out.reshape(batch, kv_heads, groups, num_candidates, key_size)
        out = out + weights[..., context][..., None] * own_value.transpose(0, 2, 1, 3)[:, :, None]
        out = out.transpose(0, 3, 1, 2, 4)  # [B, C, Hkv, G, K]
        return out.reshape(batch, num_candidates, self.num_q_heads * key_size)


def ffn_size(model_dim: int, widening_factor: float) -> int:
    """Hidden width of the gated feed-forward, rounded up to a multiple of 8."""
    return 8 * math.ceil(model_dim * widening_factor / 8)


class GatedGeluFeedForward(hk.Module):
    """down(gelu(gate(x)) * up(x))."""

    def __init__(self, widening_factor: float, *, compute_dtype: jnp.dtype = jnp.float32, name: str | None = None):
        super().__init__(name=name)
        self.widening_factor = widening_factor
        self.compute_dtype = compute_dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        hidden = ffn_size(x.shape[-1], self.widening_factor)
        gate = Dense(hidden, compute_dtype=self.compute_dtype, name="gate")(x)
        up = Dense(hidden, compute_dtype=self.compute_dtype, name="up")(x)
        hidden_act = jax.nn.gelu(gate, approximate=False) * up  # exact erf GELU: also faster on CPU
        out = Dense(x.shape[-1], compute_dtype=self.compute_dtype, name="down")(hidden_act)
        return out.astype(jnp.float32)


class Transformer(hk.Module):
    """Stack of (pre-norm -> attention -> post-norm -> +residual, same with the FFN), final norm."""

    def __init__(self, *, num_layers: int, num_q_heads: int, num_kv_heads: int, key_size: int,
                 widening_factor: float, attn_logit_cap: float = 30.0, rope_max_wavelength: float = 10_000.0,
                 compute_dtype: str = "float32", name: str = "transformer"):
        super().__init__(name=name)
        if num_kv_heads < 1 or num_q_heads % num_kv_heads:
            raise ValueError(f"num_q_heads={num_q_heads} must be a positive multiple of num_kv_heads={num_kv_heads}")
        self.num_layers = num_layers
        self.num_q_heads = num_q_heads
        self.num_kv_heads = num_kv_heads
        self.key_size = key_size
        self.widening_factor = widening_factor
        self.attn_logit_cap = attn_logit_cap
        self.rope_max_wavelength = rope_max_wavelength
        self.compute_dtype = jnp.dtype(compute_dtype)

    @classmethod
    def from_config(cls, config: ModelConfig, name: str = "transformer") -> "Transformer":
        """The transformer a ModelConfig describes."""
        return cls(num_layers=config.num_layers, num_q_heads=config.num_q_heads, num_kv_heads=config.num_kv_heads,
                   key_size=config.key_size, widening_factor=config.widening_factor,
                   attn_logit_cap=config.attn_logit_cap, rope_max_wavelength=config.rope_max_wavelength,
                   compute_dtype=config.compute_dtype, name=name)

    def __call__(self, x: jax.Array, mask: jax.Array, positions: jax.Array, num_candidates: int = 0) -> jax.Array:
        """x [B, T, D] -> [B, T, D] float32 (final-normed); mask bool [B, 1, T, T]; positions [T] or [B, T].

        num_candidates: the last C tokens are isolated candidates (see GroupedQueryAttention).
        """
        h = x.astype(jnp.float32)
        for layer in range(self.num_layers):
            with hk.name_scope(f"layer_{layer}"):
                attn = GroupedQueryAttention(
                    self.num_q_heads, self.num_kv_heads, self.key_size, attn_logit_cap=self.attn_logit_cap,
                    rope_max_wavelength=self.rope_max_wavelength, compute_dtype=self.compute_dtype,
                    name="attention")
                a = attn(RMSNorm(name="pre_attention_norm")(h), mask, positions, num_candidates)
                h = h + RMSNorm(name="post_attention_norm")(a)
                ffn = GatedGeluFeedForward(self.widening_factor, compute_dtype=self.compute_dtype, name="ffn")
                f = ffn(RMSNorm(name="pre_ffn_norm")(h))
                h = h + RMSNorm(name="post_ffn_norm")(f)
        return RMSNorm(name="final_norm")(h)
