"""Batch containers fed to the models: NamedTuples, hence JAX pytrees, jit-able as they are.

All ids are the ORIGINAL Retail Rocket ids (visitorid, itemid, categoryid, root categoryid);
the models hash them (0 = padding / unknown), so the dense warehouse indices never leak into
weights and a re-mapped vocabulary does not invalidate a checkpoint.

Sequences are LEFT-padded: the most recent step sits at the last index, so positions
anchored to the most recent step do not move with the amount of padding.

Actions are a bitmask per step: bit 0 = transaction, bit 1 = addtocart, bit 2 = view
(ACTION_NAMES order), the same encoding as the parquet sequence tables.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

ACTION_NAMES = ("transaction", "addtocart", "view")
TRANSACTION, ADDTOCART, VIEW = 1, 2, 4


class History(NamedTuple):
    """A customer and their steps, oldest first, left-padded to length L."""

    customer_id: np.ndarray  # int32 [B]
    item_id: np.ndarray  # int32 [B, L]  0 = padding
    category_id: np.ndarray  # int32 [B, L]
    root_id: np.ndarray  # int32 [B, L]  root of the category tree ("surface")
    action: np.ndarray  # int32 [B, L]  bitmask


class Items(NamedTuple):
    """Items to embed (candidates or retrieval targets); any leading shape."""

    item_id: np.ndarray  # int32 [..., C]  0 = padding slot
    category_id: np.ndarray  # int32 [..., C]
    root_id: np.ndarray  # int32 [..., C]


class RetrievalBatch(NamedTuple):
    """Causal next-step training: position t of `history` predicts `target` t.

    history is [customer | history steps | window steps] minus the last step; target is the
    step that follows each position (0 where there is none or it is not to be trained).
    """

    history: History  # [B, L]
    target: Items  # [B, L]


class RankingBatch(NamedTuple):
    """Ranking: a history and C isolated candidates with their features and labels."""

    history: History  # [B, H]
    candidates: Items  # [B, C]
    features: np.ndarray  # float32 [B, C, F] model.candidates.FEATURE_NAMES
    target: np.ndarray  # float32 [B, C] 1 at the slot of the next event's item (all 0: not among them)
    labels: np.ndarray  # int32 [B, C] bitmask of the customer's actions on the candidate from the case on


def action_multi_hot(action: np.ndarray) -> np.ndarray:
    """Bitmask [...] -> float32 multi-hot [..., 3] in ACTION_NAMES order (numpy or jax)."""
    bits = np.array([TRANSACTION, ADDTOCART, VIEW], dtype=np.int32)
    return ((action[..., None] & bits) > 0).astype(np.float32)
