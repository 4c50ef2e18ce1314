"""Transfer to a new catalogue: the parameter split, the frozen stage, `recs transfer` end to end."""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from model.batch import History, Items, RetrievalBatch
from model.config import PROFILES
from model.meta import read_checkpoint_meta
from model.retrieval import make_retrieval_model
from model.train import OptimConfig, load_best_params, make_optimizer
from model.transfer import id_table_mask, is_id_table, leaves_equal, split_transferable, transfer_params
from tests.test_cli import run_main
from tests.trained_fixtures import (TINY_MIN_ITEM_EVENTS, TINY_MIN_USER_EVENTS, TinyTrained,  # noqa: F401
                                    tiny_trained, tiny_warehouse)

TINY = PROFILES["tiny"]
WITH_CUSTOMER_IDS = dataclasses.replace(TINY.model, use_customer_id=True)


def _batch(seed: int = 0, b: int = 4, length: int = 6) -> RetrievalBatch:
    rng = np.random.default_rng(seed)
    ids = lambda hi, *shape: rng.integers(1, hi, shape).astype(np.int32)  # noqa: E731
    history = History(ids(500, b), ids(10_000, b, length), ids(300, b, length), ids(20, b, length),
                      ids(8, b, length))
    return RetrievalBatch(history, Items(ids(10_000, b, length), ids(300, b, length), ids(20, b, length)))


@functools.lru_cache(maxsize=None)
def _model(config):
    model = make_retrieval_model(config)
    return model, jax.jit(model.init)  # jitted: an eager Haiku init compiles op by op


def _params(config=WITH_CUSTOMER_IDS, seed: int = 0):
    model, init = _model(config)
    return model, init(jax.random.PRNGKey(seed), _batch())


def _leaf_paths(params) -> set[tuple[str, str]]:
    return {(module, name) for module, values in params.items() for name in values}


def test_split_puts_every_leaf_in_exactly_one_group():
    _, params = _params()
    carried, tables = split_transferable(params)
    assert _leaf_paths(carried) | _leaf_paths(tables) == _leaf_paths(params)
    assert not _leaf_paths(carried) & _leaf_paths(tables)
    assert set(tables) == {"customer_embedding", "item_embedding", "category_embedding"}
    assert any(m.startswith("transformer/layer_0/attention") for m in carried)
    for kept in ("history_step_projection", "user_projection", "temperature", "~"):
        assert kept in carried
    # The leaves are the same arrays, not copies.
    assert all(tables[m][n] is params[m][n] for m, n in _leaf_paths(tables))
    mask = id_table_mask(params)
    assert {(m, n) for m, v in mask.items() for n, flag in v.items() if flag} == _leaf_paths(tables)
    assert is_id_table("author_embedding") and not is_id_table("candidate_feature_hidden")


def test_ranker_split_keeps_the_action_and_recency_parts():
    from model.candidates import NUM_FEATURES
    from model.batch import RankingBatch
    from model.ranking import make_ranking_model

    b, length, c = 2, 5, 3
    ones = lambda *s: np.ones(s, np.int32)  # noqa: E731
    batch = RankingBatch(History(ones(b), ones(b, length), ones(b, length), ones(b, length), ones(b, length)),
                         Items(ones(b, c), ones(b, c), ones(b, c)), np.zeros((b, c, NUM_FEATURES), np.float32),
                         np.zeros((b, c), np.float32), np.zeros((b, c), np.int32))
    params = jax.jit(make_ranking_model(PROFILES["tiny"].ranker).init)(jax.random.PRNGKey(0), batch)
    carried, tables = split_transferable(params)
    assert set(tables) == {"item_embedding", "category_embedding"}
    assert {"action_head", "candidate_feature_hidden", "candidate_feature_out"} <= set(carried)
    assert "candidate_recency" in carried["~"] and "candidate_type" in carried["~"]


def test_transfer_params_takes_carried_parts_from_the_source_and_tables_from_the_fresh_init():
    _, source = _params(seed=1)
    _, fresh = _params(seed=2)
    out = transfer_params(fresh, source)
    carried, tables = split_transferable(out)
    assert leaves_equal(carried, split_transferable(source)[0])
    assert leaves_equal(tables, split_transferable(fresh)[1])
    assert not leaves_equal(tables, split_transferable(source)[1])
    _, other = _params(dataclasses.replace(WITH_CUSTOMER_IDS, emb_dim=24, key_size=8))
    with pytest.raises(ValueError, match="shape"):
        transfer_params(fresh, other)


@pytest.mark.parametrize("frozen", [True, False])
def test_the_frozen_stage_changes_the_tables_and_nothing_else(frozen):
    """With the mask, AdamW updates (and weight-decays) only the id tables; without it the same
    steps move the transformer too, so the assertion below can fail."""
    model, params = _params()
    tx = make_optimizer(OptimConfig(steps=5, learning_rate=1e-2, warmup_steps=1, weight_decay=0.1),
                        id_table_mask(params) if frozen else None)
    negatives = Items(*(np.arange(1, 33, dtype=np.int32) for _ in range(3)))

    @jax.jit
    def step_fn(p, opt_state, batch):
        updates, opt_state = tx.update(jax.grad(lambda q: model.loss(q, batch, negatives)[0])(p), opt_state, p)
        return optax.apply_updates(p, updates), opt_state

    state, new = tx.init(params), params
    for step in range(5):
        new, state = step_fn(new, state, _batch(step))
    carried_before, tables_before = split_transferable(params)
    carried_after, tables_after = split_transferable(new)
    for module, values in tables_after.items():
        assert all(not np.array_equal(v, tables_before[module][n]) for n, v in values.items()), module
    assert leaves_equal(carried_after, carried_before) == frozen


# ----------------------------------------------------------------------------------------------
# `recs transfer` end to end: tiny source models, another tiny catalogue (other seed, other ids)
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def target_data(tmp_path_factory) -> Path:
    from recs.generate import generate

    out = tmp_path_factory.mktemp("transfer_target") / "data"
    generate(out, scale="tiny", seed=1, id_offset=1_000_000)
    return out


@pytest.fixture(scope="module")
def transferred(prefect_harness, tiny_trained: TinyTrained, target_data, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("transferred")
    argv = ["transfer", "--from", tiny_trained.checkpoint_dir, "--data", target_data, "--warehouse",
            root / "warehouse", "--checkpoints", root / "checkpoints", "--min-user-events", TINY_MIN_USER_EVENTS,
            "--min-item-events", TINY_MIN_ITEM_EVENTS, "--frozen-steps", 6, "--finetune-steps", 6]
    from recs.cli import main

    code = main([str(a) for a in argv])
    return code, root


def test_recs_transfer_writes_checkpoints_that_name_their_source(transferred, tiny_trained: TinyTrained):  # noqa: F811
    import duckdb

    code, root = transferred
    assert code == 0
    with duckdb.connect(str(root / "warehouse" / "recs.duckdb"), read_only=True) as con:
        assert con.execute("SELECT min(itemid) FROM events").fetchone()[0] > 1_000_000  # the new catalogue
    for model in ("retrieval", "ranking"):
        source_dir = tiny_trained.checkpoint_dir / model
        source_version = read_checkpoint_meta(source_dir)["model_version"]
        for variant, stage in ((f"{model}_embeddings", "embeddings"), (model, "finetune")):
            meta = read_checkpoint_meta(root / "checkpoints" / variant)
            assert meta["step"] == 6
            origin = meta["transfer"]
            assert origin["stage"] == stage
            assert origin["source_checkpoint"] == str(source_dir.resolve())
            assert origin["source_model_version"] == source_version
            assert meta["model_version"] != source_version
        assert origin["from_stage_model_version"] == read_checkpoint_meta(
            root / "checkpoints" / f"{model}_embeddings")["model_version"]


def test_stage_one_kept_the_source_transformer_and_stage_two_moved_it(transferred, tiny_trained: TinyTrained):  # noqa: F811
    _, root = transferred
    for model in ("retrieval", "ranking"):
        source, _ = load_best_params(tiny_trained.checkpoint_dir / model)
        first, _ = load_best_params(root / "checkpoints" / f"{model}_embeddings")
        second, _ = load_best_params(root / "checkpoints" / model)
        (kept_source, tables_source), (kept_first, tables_first) = split_transferable(source), split_transferable(first)
        assert leaves_equal(kept_first, kept_source), model  # frozen: bit-identical
        assert not leaves_equal(tables_first, tables_source), model  # fresh tables, trained
        kept_second, tables_second = split_transferable(second)
        assert not leaves_equal(kept_second, kept_first) and not leaves_equal(tables_second, tables_first), model
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(second))


def test_rerunning_the_transfer_resumes_instead_of_retraining(transferred, tiny_trained: TinyTrained,  # noqa: F811
                                                             target_data):
    from model.transfer_task import transfer_models

    _, root = transferred
    before = {v: read_checkpoint_meta(root / "checkpoints" / v)["model_version"]
              for v in ("retrieval_embeddings", "retrieval", "ranking_embeddings", "ranking")}
    out = transfer_models(root / "warehouse", root / "checkpoints", tiny_trained.checkpoint_dir, frozen_steps=6,
                          finetune_steps=6, progress=False)
    assert {s["model_version"] for s in out.values()} == set(before.values())
    assert all(s["resumed_from"] == 6 for s in out.values())


@pytest.mark.parametrize("case", ["missing", "no_ranker", "same_dir", "bad_steps"])
def test_bad_transfer_input_is_one_line_and_exit_2(case, tiny_trained: TinyTrained, target_data, tmp_path,  # noqa: F811
                                                   capsys):
    import shutil

    source, checkpoints, extra = tiny_trained.checkpoint_dir, tmp_path / "checkpoints", []
    if case == "missing":
        source = tmp_path / "no_such_dir"
    elif case == "no_ranker":
        source = tmp_path / "only_retrieval"
        shutil.copytree(tiny_trained.checkpoint_dir / "retrieval", source / "retrieval")
    elif case == "same_dir":
        checkpoints = source
    else:
        extra = ["--frozen-steps", "0"]
    code, err, _ = run_main(["transfer", "--from", source, "--data", target_data, "--warehouse",
                             tmp_path / "warehouse", "--checkpoints", checkpoints, *extra], capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("recs transfer: error:")
    expected = {"missing": "no such checkpoint directory", "no_ranker": "no trained ranking checkpoint",
                "same_dir": "overwrite the source", "bad_steps": "--frozen-steps must be >= 1"}[case]
    assert expected in err[0]
    assert not (tmp_path / "warehouse").exists()  # rejected before anything was written
