"""Pure loss functions (float32): sampled softmax with logQ correction, weighted per-action BCE."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from model.batch import ACTION_NAMES

MASKED = -1e9  # finite, so masked columns give exactly zero probability and no NaN gradients


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / ||x|| along the last axis, in float32."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + eps)


def sampled_softmax_loss(
    query: jax.Array, positive: jax.Array, positive_id: jax.Array, positive_logq: jax.Array,
    valid: jax.Array, shared: jax.Array, shared_id: jax.Array, shared_logq: jax.Array,
    temperature: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """InfoNCE of each query against its positive and a shared set of candidate items.

    query, positive [P, D] (unit vectors); positive_id, positive_logq, valid [P];
    shared [S, D] with shared_id, shared_logq [S] (in-batch targets and sampled negatives).
    Logits are cosine / temperature minus log Q (the log probability the item was sampled as a
    candidate), which makes the sampled softmax an unbiased-ish estimate of the full one
    (Yi et al. 2019). A shared column is masked when it is padding (id 0) or the same item as the
    row's positive (an accidental hit, including the row's own in-batch column). Invalid rows
    (target 0) do not count. Returns (mean loss over valid rows, metrics).
    """
    query = query.astype(jnp.float32)
    pos_logit = jnp.sum(query * positive.astype(jnp.float32), axis=-1) / temperature - positive_logq
    shared_logits = (query @ shared.astype(jnp.float32).T) / temperature - shared_logq[None, :]
    keep = (shared_id[None, :] != 0) & (shared_id[None, :] != positive_id[:, None])
    shared_logits = jnp.where(keep, shared_logits, MASKED)

    logits = jnp.concatenate([pos_logit[:, None], shared_logits], axis=1)
    per_row = jax.nn.logsumexp(logits, axis=1) - pos_logit
    weight = valid.astype(jnp.float32)
    count = jnp.maximum(jnp.sum(weight), 1.0)
    loss = jnp.sum(per_row * weight) / count
    hit = pos_logit >= jnp.max(shared_logits, axis=1)
    metrics = {
        "loss": loss,
        "accuracy": jnp.sum(hit * weight) / count,  # positive ranked above every kept candidate
        "num_targets": jnp.sum(weight),
        "num_candidates": jnp.sum(keep * weight[:, None]) / count,
        "temperature": jnp.asarray(temperature, jnp.float32),
    }
    return loss, metrics


def weighted_binary_cross_entropy(
    logits: jax.Array, labels: jax.Array, valid: jax.Array, action_weights: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Per-action sigmoid cross-entropy, weighted by action and averaged over valid slots.

    logits, labels [B, C, A] (labels 0/1, A in ACTION_NAMES order), valid [B, C], action_weights [A].
    loss = sum_slots sum_a w_a * bce_a / (num_valid_slots * sum_a w_a), so the scale does not
    depend on the weights' magnitude. Metrics: `bce_<action>`, the unweighted mean BCE per action.
    """
    logits = logits.astype(jnp.float32)
    labels = labels.astype(jnp.float32)
    weights = jnp.asarray(action_weights, jnp.float32)
    bce = jnp.maximum(logits, 0.0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))  # stable
    mask = valid.astype(jnp.float32)[..., None]
    count = jnp.maximum(jnp.sum(mask), 1.0)
    per_action = jnp.sum(bce * mask, axis=(0, 1)) / count  # [A]
    loss = jnp.sum(per_action * weights) / jnp.sum(weights)
    metrics = {"loss": loss, "num_candidates": jnp.sum(mask)}
    metrics.update({f"bce_{name}": per_action[a] for a, name in enumerate(ACTION_NAMES[:weights.shape[0]])})
    return loss, metrics
