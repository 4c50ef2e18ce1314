"""Transfer to a new catalogue: which parameters carry over, and the two training stages.

A trained model's parameters split cleanly by Haiku module path (`split_transferable`):

- id tables, made fresh for the new catalogue: the hashed embedding tables of customers, items
  and categories (`model.embeddings.SHARED_EMBEDDING_MODULES`; roots share the category table).
  Their rows are hash buckets of the OLD shop's ids: in another shop the same bucket holds
  unrelated ids, so a copied row would be noise, not knowledge. The model has no separate author
  table; a future `<entity>_embedding` module is an id table too (`is_id_table`).
- everything else carries over: the transformer blocks, the parts that read actions, positions
  and recency (the history-step projection, whose action rows are catalogue-independent, the
  candidate-recency and candidate-type embeddings, the user token), the ranker's candidate-feature
  MLP and action head, the retrieval user projection, item tower and temperature. Rotary
  positions have no parameters.

Stage 1 (`EMBEDDINGS`) trains the fresh tables only, everything carried over frozen, so the new
tables learn to speak the language the trained transformer already reads; stage 2 (`FINETUNE`)
trains everything at a lower learning rate.
"""
from __future__ import annotations

from typing import Any, Callable

import haiku as hk
import jax

from model.embeddings import SHARED_EMBEDDING_MODULES

ID_TABLE_MODULES = SHARED_EMBEDDING_MODULES  # customer, item, category (and root) tables
ID_TABLE_SUFFIX = "_embedding"  # HashEmbedding modules are named <entity>_embedding
EMBEDDINGS, FINETUNE = "embeddings", "finetune"
STAGES = (EMBEDDINGS, FINETUNE)


def is_id_table(module: str) -> bool:
    """True for a hashed id table's module (a top-level `<entity>_embedding` module)."""
    top = module.split("/", 1)[0]
    return top in ID_TABLE_MODULES or top.endswith(ID_TABLE_SUFFIX)


def split_transferable(params: hk.Params) -> tuple[hk.Params, hk.Params]:
    """(carried, id_tables): every leaf of `params` in exactly one of the two."""
    id_tables, carried = hk.data_structures.partition(lambda module, name, value: is_id_table(module), params)
    return carried, id_tables


def id_table_mask(params: hk.Params) -> hk.Params:
    """Same structure as params: True on the id tables' leaves."""
    return hk.data_structures.map(lambda module, name, value: is_id_table(module), params)


def transfer_params(fresh: hk.Params, source: hk.Params) -> hk.Params:
    """`fresh` (a new initialisation for the new catalogue) with every carried-over leaf taken
    from `source` (the trained model); the id tables stay as `fresh` made them.

    Raises ValueError when the carried parts differ in modules, names or shapes (the source was
    trained with another architecture: transfer needs the same profile).
    """
    carried_new, tables = split_transferable(fresh)
    carried_old, _ = split_transferable(source)
    missing = sorted(set(carried_new) - set(carried_old))
    extra = sorted(set(carried_old) - set(carried_new))
    if missing or extra:
        raise ValueError(f"the source model's modules differ from this architecture's (missing {missing}, "
                         f"unexpected {extra}): transfer needs the source's profile")
    out: dict[str, dict[str, Any]] = {}
    for module, values in carried_new.items():
        old = carried_old[module]
        if set(old) != set(values):
            raise ValueError(f"{module}: parameters {sorted(old)} != {sorted(values)}")
        for name, value in values.items():
            if old[name].shape != value.shape:
                raise ValueError(f"{module}/{name}: source shape {old[name].shape} != {value.shape}")
        out[module] = dict(old)
    for module, values in tables.items():
        out[module] = dict(values)
    return {module: out[module] for module in fresh}  # fresh's module order


def stage_trainable(stage: str) -> Callable[[hk.Params], Any] | None:
    """The trainable mask of a stage (params -> pytree of bool; None = everything trains)."""
    if stage not in STAGES:
        raise ValueError(f"unknown transfer stage {stage!r}; choose one of {STAGES}")
    return id_table_mask if stage == EMBEDDINGS else None


def leaves_equal(a: hk.Params, b: hk.Params) -> bool:
    """Exactly equal leaves (same structure): what a frozen stage must leave untouched."""
    import numpy as np

    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return (jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
            and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb)))
