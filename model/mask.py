"""Attention mask and token positions for the sequence [customer | history (L) | candidates (C)].

Token 0 is the customer, tokens 1..L the history steps (left-padded, newest last), tokens
L+1..L+C the ranking candidates.

Why customer + history is CAUSAL (not bidirectional): the retrieval user tower trains every
history position t against the step that follows it, so position t may only see steps <= t or
it would read its own target. The ranking model reuses the same encoder and mask over its
history, so a history token means the same thing in both models (and ranking can start from
retrieval's weights); only the candidates are added on top.

Candidates are ISOLATED: each sees the customer, the valid history and itself, never another
candidate, so its score does not depend on which other items were scored with it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def attention_mask(history_valid: jax.Array, candidate_valid: jax.Array | None = None) -> jax.Array:
    """Boolean mask [B, 1, T, T] (query, key), T = 1 + L + C; True = may attend.

    history_valid: bool [B, L] (False = padding); candidate_valid: bool [B, C] or None (C = 0).
    Padding keys are masked everywhere except on the diagonal: a padded query still attends to
    itself (and the customer), so no softmax row is empty; padded outputs are never read.
    """
    history_valid = jnp.asarray(history_valid, dtype=bool)
    batch, hist_len = history_valid.shape
    if candidate_valid is None:
        candidate_valid = jnp.zeros((batch, 0), dtype=bool)
    candidate_valid = jnp.asarray(candidate_valid, dtype=bool)
    num_tokens = 1 + hist_len + candidate_valid.shape[1]

    key_valid = jnp.concatenate([jnp.ones((batch, 1), dtype=bool), history_valid, candidate_valid], axis=1)
    query = jnp.arange(num_tokens)[:, None]
    key = jnp.arange(num_tokens)[None, :]
    key_is_candidate = key > hist_len
    query_is_candidate = query > hist_len
    # Non-candidate queries: causal over customer + history (key <= query never reaches a
    # candidate). Candidate queries: every non-candidate key.
    structural = jnp.where(query_is_candidate, ~key_is_candidate, key <= query)
    allowed = structural[None] & key_valid[:, None, :]
    allowed = allowed | jnp.eye(num_tokens, dtype=bool)[None]
    return allowed[:, None]


def token_positions(hist_len: int, num_candidates: int, anchor: int) -> jax.Array:
    """Rotary positions [T] that do not move with padding.

    The customer token sits at 0; the newest history step (last index) at `anchor`, each older
    step one less (left padding only adds slots further back, so real steps keep their
    positions); every candidate at `anchor + 1`, one past the newest step, so a candidate's
    position does not depend on its slot.
    """
    history = anchor - (hist_len - 1) + jnp.arange(hist_len)
    return jnp.concatenate([
        jnp.zeros((1,), jnp.int32), history.astype(jnp.int32),
        jnp.full((num_candidates,), anchor + 1, jnp.int32),
    ])
