"""Transformer building blocks: shapes, dtypes, GQA, soft-capping, rotary positions, masking."""
from __future__ import annotations

import dataclasses

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.config import PROFILES, ModelConfig
from model.mask import attention_mask, token_positions
from model.transformer import (
    GroupedQueryAttention, Transformer, apply_rotary, attention_logits, ffn_size, soft_cap,
)

TINY = PROFILES["tiny"].model
B, L, C = 3, 6, 4


FAST_COMPILE = {"xla_backend_optimization_level": 0}  # test-only: halves CPU compile time


def transformer_fn(config: ModelConfig):
    """(init, apply) of a bare transformer, jit-compiled (eager Haiku is slow)."""
    def forward(x, mask, positions):
        return Transformer.from_config(config)(x, mask, positions)
    model = hk.without_apply_rng(hk.transform(forward))
    return type(model)(*(jax.jit(fn, compiler_options=FAST_COMPILE) for fn in model))


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(B, 1 + L + C, TINY.emb_dim)), jnp.float32)
    history_valid = np.ones((B, L), bool)
    history_valid[1, :2] = False
    history_valid[2, :] = False  # an all-padding history
    candidate_valid = np.ones((B, C), bool)
    candidate_valid[0, -1] = False
    return x, attention_mask(history_valid, candidate_valid), token_positions(L, C, TINY.history_len)


@pytest.fixture(scope="module")
def float32_model(inputs):
    model = transformer_fn(TINY)
    return model, model.init(jax.random.PRNGKey(0), *inputs)


def test_output_shape_dtype_and_param_dtypes(inputs, float32_model) -> None:
    x, mask, pos = inputs
    model, params = float32_model
    out = model.apply(params, x, mask, pos)
    assert out.shape == (B, 1 + L + C, TINY.emb_dim) and out.dtype == jnp.float32
    assert np.isfinite(np.asarray(out)).all()  # padded rows included: no all-masked softmax row
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.float32)}
    # Pre- and post-norm around both sub-blocks in every layer, plus a final norm.
    norms = sorted(m.split("/")[-1] for m in params if m.endswith("norm"))
    assert norms == ["final_norm", "post_attention_norm", "post_ffn_norm", "pre_attention_norm", "pre_ffn_norm"]
    # GQA: keys/values have num_kv_heads heads, queries num_q_heads.
    attn = "transformer/layer_0/attention"
    assert params[f"{attn}/query"]["w"].shape == (TINY.emb_dim, TINY.num_q_heads * TINY.key_size)
    assert params[f"{attn}/key"]["w"].shape == (TINY.emb_dim, TINY.num_kv_heads * TINY.key_size)
    assert params["transformer/layer_0/ffn/gate"]["w"].shape == (TINY.emb_dim, ffn_size(TINY.emb_dim, 2.0))


def test_bfloat16_compute_keeps_float32_params_and_outputs(inputs, float32_model) -> None:
    x, mask, pos = inputs
    f32, params = float32_model  # float32 params drive the bfloat16 model too
    bf16 = transformer_fn(dataclasses.replace(TINY, compute_dtype="bfloat16"))
    out16, out32 = bf16.apply(params, x, mask, pos), f32.apply(params, x, mask, pos)
    assert out16.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out16), np.asarray(out32), atol=0.15)  # bf16 has ~3 digits


def test_gqa_head_counts_must_divide() -> None:
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        ModelConfig(num_q_heads=3, num_kv_heads=2)
    build_attention = hk.transform(lambda: GroupedQueryAttention(num_q_heads=4, num_kv_heads=3, key_size=8))
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        build_attention.init(jax.random.PRNGKey(0))
    build_transformer = hk.transform(
        lambda: Transformer(num_layers=1, num_q_heads=5, num_kv_heads=2, key_size=8, widening_factor=2.0))
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        build_transformer.init(jax.random.PRNGKey(0))


def test_grouped_logits_equal_repeated_kv_heads() -> None:
    rng = np.random.default_rng(1)
    q = rng.normal(size=(2, 5, 2, 3, 8)).astype(np.float32)  # [B, T, Hkv, G, K]
    k = rng.normal(size=(2, 7, 2, 8)).astype(np.float32)  # [B, S, Hkv, K]
    got = np.asarray(attention_logits(jnp.asarray(q), jnp.asarray(k), cap=1e6))
    for h in range(2):
        for g in range(3):
            want = np.einsum("btk,bsk->bts", q[:, :, h, g], k[:, :, h]) / np.sqrt(8)
            np.testing.assert_allclose(got[:, h, g], want, rtol=1e-5, atol=1e-5)


def test_soft_cap_bounds_logits() -> None:
    x = jnp.array([-1e9, -500.0, -1.0, 0.0, 0.5, 500.0, 1e9])
    capped = np.asarray(soft_cap(x, 30.0))
    assert np.all(np.abs(capped) <= 30.0)
    np.testing.assert_allclose(capped[[2, 3, 4]], [-1.0, 0.0, 0.5], atol=1e-3)  # ~identity when small
    assert capped[5] > 29.9 and capped[0] < -29.9
    huge = jnp.full((1, 2, 1, 1, 4), 1e4)
    assert float(jnp.max(jnp.abs(attention_logits(huge, jnp.full((1, 3, 1, 4), 1e4), cap=30.0)))) <= 30.0


def test_rotary_scores_depend_only_on_relative_position() -> None:
    rng = np.random.default_rng(2)
    q = jnp.asarray(rng.normal(size=(1, 1, 1, 8)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(1, 1, 1, 8)), jnp.float32)

    def score(pq: int, pk: int) -> float:
        return float(jnp.sum(apply_rotary(q, jnp.array([pq])) * apply_rotary(k, jnp.array([pk]))))

    assert score(3, 1) == pytest.approx(score(40, 38), abs=1e-4)
    assert score(-5, -9) == pytest.approx(score(4, 0), abs=1e-4)
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)


def test_masked_keys_do_not_influence_outputs(inputs, float32_model) -> None:
    x, mask, pos = inputs
    model, params = float32_model
    base = np.asarray(model.apply(params, x, mask, pos))
    # Perturb the newest history token of row 0: earlier tokens (causal) and the customer must
    # not move; the candidates see it, so they must.
    bumped = np.asarray(model.apply(params, x.at[0, L].add(5.0), mask, pos))
    np.testing.assert_allclose(bumped[0, :L], base[0, :L], atol=1e-5)
    assert np.abs(bumped[0, L + 1:] - base[0, L + 1:]).max() > 1e-3
    # Perturb a padded history token of row 1: no real token may move.
    bumped = np.asarray(model.apply(params, x.at[1, 1].add(5.0), mask, pos))
    np.testing.assert_allclose(np.delete(bumped[1], 1, axis=0), np.delete(base[1], 1, axis=0), atol=1e-5)


def test_candidate_fast_path_equals_dense_attention():
    """Attention of isolated candidates against context + self equals the full masked softmax."""
    import haiku as hk

    from model.mask import attention_mask, token_positions
    from model.transformer import GroupedQueryAttention

    b, hist, c, d = 3, 5, 4, 16
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(b, 1 + hist + c, d)).astype(np.float32))
    history_valid = jnp.asarray([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
    candidate_valid = jnp.asarray([[1, 1, 0, 1], [1, 1, 1, 1], [1, 0, 0, 0]], bool)
    mask = attention_mask(history_valid, candidate_valid)
    positions = token_positions(hist, c, hist)

    def attend(num_candidates):
        return GroupedQueryAttention(4, 2, 8, name="attention")(x, mask, positions, num_candidates)

    fn = hk.without_apply_rng(hk.transform(attend))
    params = fn.init(jax.random.PRNGKey(0), 0)
    dense = fn.apply(params, 0)
    fast = fn.apply(params, c)
    np.testing.assert_allclose(np.asarray(fast), np.asarray(dense), atol=1e-5)
