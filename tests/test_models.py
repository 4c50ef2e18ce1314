"""Retrieval and ranking models: hashing, gradients, isolation, padding invariance, losses, training."""
from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import logsumexp

from model.batch import History, Items, RankingBatch, RetrievalBatch, action_multi_hot
from model.candidates import NUM_FEATURES
from model.config import PROFILES, ModelConfig, Profile
from model.embeddings import SHARED_EMBEDDING_MODULES
from model.embeddings import hash_ids as eager_hash_ids
from model.ranking import embedding_param_mask, make_ranking_model, transplant_embeddings
from model.retrieval import TEMPERATURE_MIN, make_retrieval_model, select_targets
from model.transformer import weight_decay_mask

TINY = PROFILES["tiny"].model
B, L, C, N = 4, 7, 5, 12


def make_items(rng: np.random.Generator, shape: tuple[int, ...], valid: np.ndarray | None = None) -> Items:
    """Items with Retail-Rocket-like original ids; 0 wherever `valid` is False."""
    item = rng.integers(1, 466_000, shape)
    category = item % 1_600 + 1
    root = category % 25 + 1
    keep = np.ones(shape, bool) if valid is None else valid
    return Items(*(np.where(keep, x, 0).astype(np.int32) for x in (item, category, root)))


def make_history(rng: np.random.Generator, lengths: list[int], width: int) -> History:
    """Left-padded histories of the given real lengths."""
    valid = np.arange(width)[None, :] >= width - np.asarray(lengths)[:, None]
    steps = make_items(rng, valid.shape, valid)
    action = np.where(valid, rng.choice([1, 2, 4, 6, 7], valid.shape), 0).astype(np.int32)
    customer = rng.integers(1, 1_400_000, len(lengths)).astype(np.int32)
    return History(customer, steps.item_id, steps.category_id, steps.root_id, action)


def left_pad(history: History, extra: int) -> History:
    """The same histories with `extra` more padding slots on the left."""
    pad = lambda x: np.pad(x, ((0, 0), (extra, 0)))  # noqa: E731
    return History(history.customer_id, *(pad(x) for x in history[1:]))


# Test-only: XLA's backend optimisation level 0 halves compile time on CPU (same semantics).
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def jit(fn):
    return jax.jit(fn, compiler_options=FAST_COMPILE)


hash_ids = jax.jit(eager_hash_ids, static_argnums=(1, 2))


def jitted(model):
    """The model's NamedTuple of pure functions, each jit-compiled (eager Haiku is slow)."""
    return type(model)(*(jit(fn) for fn in model))


# Learning rate inside the optimiser state, so tests with different rates share one compiled step.
OPTIMIZER = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
init_optimizer = jax.jit(OPTIMIZER.init)  # one compile instead of many eager ops


def train_step_fn(loss_fn, optimizer=OPTIMIZER):
    """One jitted step: value_and_grad + optimiser update; returns the grads too."""
    @jit
    def step(params, opt_state, *args):
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, *args)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, metrics, grads
    return step


@pytest.fixture(scope="module")
def retrieval_setup():
    rng = np.random.default_rng(0)
    history = make_history(rng, [7, 3, 1, 5], L)
    target = make_items(rng, (B, L), history.item_id != 0)
    target.item_id[0, 2] = target.item_id[1, 5]  # an in-batch accidental hit
    negatives = make_items(rng, (N,))
    negatives.item_id[0] = target.item_id[3, 6]  # a sampled negative equal to a positive
    for field in negatives:
        field[1] = 0  # a padded negative slot
    batch = RetrievalBatch(history, target)
    model = jitted(make_retrieval_model(TINY))
    params = model.init(jax.random.PRNGKey(0), batch)
    return model, params, batch, negatives


@pytest.fixture(scope="module")
def retrieval_train_step():
    """The jitted adam step of the tiny retrieval model (shared: compiling it is the slow part)."""
    return train_step_fn(make_retrieval_model(TINY).loss)


@pytest.fixture(scope="module")
def retrieval_step(retrieval_setup, retrieval_train_step):
    """One jitted adam step of the retrieval loss (uniform logQ): (new params, loss, metrics, grads)."""
    _, params, batch, negatives = retrieval_setup
    new, _, loss, metrics, grads = retrieval_train_step(
        params, init_optimizer(params), batch, negatives, np.full(N, -5.0, np.float32),
        np.full((B, L), -5.0, np.float32))
    return new, loss, metrics, grads


@pytest.fixture(scope="module")
def ranking_setup():
    rng = np.random.default_rng(1)
    history = make_history(rng, [7, 2, 0, 4], L)  # one customer without history
    candidate_valid = np.ones((B, C), bool)
    candidate_valid[1, 3:] = False
    candidates = make_items(rng, (B, C), candidate_valid)
    labels = np.where(candidate_valid, rng.choice([0, 1, 2, 3, 4, 6, 7], (B, C)), 0).astype(np.int32)
    features = np.where(candidate_valid[..., None], rng.normal(size=(B, C, NUM_FEATURES)), 0).astype(np.float32)
    target = np.zeros((B, C), np.float32)
    target[[0, 1, 3], [2, 1, 4]] = 1.0  # row 2: the next event is not among the candidates
    batch = RankingBatch(history, candidates, features, target, labels)
    model = jitted(make_ranking_model(TINY))
    params = model.init(jax.random.PRNGKey(1), batch)
    return model, params, batch


@pytest.fixture(scope="module")
def ranking_step(ranking_setup):
    """Two jitted adam steps of the ranking loss: (params after one step, losses, grads of the first)."""
    _, params, batch = ranking_setup
    step = train_step_fn(make_ranking_model(TINY).loss)
    new, state, first_loss, _, grads = step(params, init_optimizer(params), batch)
    second_loss = step(new, state, batch)[2]
    return new, (float(first_loss), float(second_loss)), grads


# --- hashing ---------------------------------------------------------------------------------

def test_hash_ids_properties() -> None:
    ids = jnp.arange(0, 20_000, dtype=jnp.int32)
    rows = np.asarray(hash_ids(ids, 50_000, 2))
    assert rows.shape == (20_000, 2) and rows.dtype == np.int32
    np.testing.assert_array_equal(rows[0], [0, 0])  # padding -> reserved row 0
    assert rows[1:].min() >= 1 and rows[1:].max() < 50_000  # real ids never hit row 0
    assert np.mean(rows[1:, 0] == rows[1:, 1]) < 0.001  # two different functions
    assert len({tuple(r) for r in rows[1:]}) == 19_999  # no two ids share both rows
    assert len(np.unique(rows[1:, 0])) > 0.8 * 19_999  # well spread (expected ~82% distinct)
    big = np.array([1_407_579, 466_866, 7], np.int64)  # int64 input hashes like int32
    np.testing.assert_array_equal(hash_ids(big, 1_000, 2), hash_ids(big.astype(np.int32), 1_000, 2))
    small = np.asarray(hash_ids(ids, 7, 3))
    assert small.shape == (20_000, 3) and small[1:].min() == 1 and small.max() == 6


# --- gradients -------------------------------------------------------------------------------

def assert_every_leaf_has_gradient(grads) -> None:
    for module, leaves in grads.items():
        for name, grad in leaves.items():
            assert np.abs(np.asarray(grad)).max() > 0, f"{module}/{name} has zero gradient"


def assert_table_rows_in_use_have_gradient(grads, config: ModelConfig, ids_by_module: dict) -> None:
    rows_of = {"customer_embedding": config.customer_hash_rows, "item_embedding": config.item_hash_rows,
               "category_embedding": config.category_hash_rows}
    for module, ids in ids_by_module.items():
        table_grad = np.asarray(grads[module]["table"])
        used = np.asarray(hash_ids(np.unique(ids[ids != 0]), rows_of[module], config.num_hashes)).ravel()
        assert (np.abs(table_grad[used]).sum(axis=1) > 0).all(), module
        assert not table_grad[0].any(), f"{module}: padding row 0 must get no gradient"
        assert not np.delete(table_grad, used, axis=0).any(), f"{module}: unused rows got gradient"


def test_every_retrieval_parameter_gets_gradient(retrieval_setup, retrieval_step) -> None:
    _, _, batch, negatives = retrieval_setup
    grads = retrieval_step[3]
    assert_every_leaf_has_gradient(grads)
    h, t = batch.history, batch.target
    assert_table_rows_in_use_have_gradient(grads, TINY, {
        "item_embedding": np.concatenate([h.item_id.ravel(), t.item_id.ravel(), negatives.item_id]),
        "category_embedding": np.concatenate([x.ravel() for x in (h.category_id, h.root_id, t.category_id,
                                                                  t.root_id, negatives.category_id,
                                                                  negatives.root_id)]),
    })


def test_every_ranking_parameter_gets_gradient(ranking_setup, ranking_step) -> None:
    batch = ranking_setup[2]
    grads = ranking_step[2]
    assert_every_leaf_has_gradient(grads)
    h, c = batch.history, batch.candidates
    assert_table_rows_in_use_have_gradient(grads, TINY, {
        "item_embedding": np.concatenate([h.item_id.ravel(), c.item_id.ravel()]),
        "category_embedding": np.concatenate([x.ravel() for x in (h.category_id, h.root_id, c.category_id,
                                                                  c.root_id)]),
    })


# --- ranking: isolation and padding ----------------------------------------------------------

def test_candidate_logits_do_not_depend_on_co_candidates_or_slot(ranking_setup) -> None:
    model, params, batch = ranking_setup
    logits = model.logits
    base = np.asarray(logits(params, batch.history, batch.candidates, batch.features))
    assert base.shape == (B, C, 3) and base.dtype == np.float32

    # Other candidates (items and features) replaced: slot 0 keeps its logits.
    rng = np.random.default_rng(7)
    others = make_items(rng, (B, C))
    changed = Items(*(np.concatenate([x[:, :1], y[:, 1:]], axis=1) for x, y in zip(batch.candidates, others)))
    features = np.concatenate([batch.features[:, :1], rng.normal(size=(B, C - 1, NUM_FEATURES))], axis=1)
    np.testing.assert_allclose(np.asarray(logits(params, batch.history, changed, features))[:, 0], base[:, 0],
                               atol=1e-5)

    # Permuted candidates: logits permute with them.
    perm = np.array([3, 0, 4, 1, 2])
    permuted = Items(*(x[:, perm] for x in batch.candidates))
    np.testing.assert_allclose(np.asarray(logits(params, batch.history, permuted, batch.features[:, perm])),
                               base[:, perm], atol=1e-5)

    # Slot 0's item alone, moved to the last slot of a longer, mostly padded candidate list.
    moved = Items(*(np.pad(x[:, :1], ((0, 0), (C + 1, 0))) for x in batch.candidates))
    moved_features = np.pad(batch.features[:, :1], ((0, 0), (C + 1, 0), (0, 0)))
    np.testing.assert_allclose(np.asarray(logits(params, batch.history, moved, moved_features))[:, -1], base[:, 0],
                               atol=1e-5)

    # The features matter: changing slot 0's features changes slot 0's logits.
    bumped = batch.features.copy()
    bumped[:, 0] += 3.0
    assert np.abs(np.asarray(logits(params, batch.history, batch.candidates, bumped))[:, 0] - base[:, 0]).max() > 1e-3


def test_ranking_logits_invariant_to_extra_left_padding(ranking_setup) -> None:
    model, params, batch = ranking_setup
    base = np.asarray(model.logits(params, batch.history, batch.candidates, batch.features))
    padded = np.asarray(model.logits(params, left_pad(batch.history, 6), batch.candidates, batch.features))
    np.testing.assert_allclose(padded, base, atol=1e-5)
    # and history steps really matter: dropping the oldest real step of row 0 changes its scores
    shorter = batch.history._replace(**{f: np.where(np.arange(L) == 0, 0, getattr(batch.history, f))
                                        for f in ("item_id", "category_id", "root_id", "action")})
    assert np.abs(np.asarray(model.logits(params, shorter, batch.candidates, batch.features))[0]
                  - base[0]).max() > 1e-4


def test_ranking_loss_is_next_event_softmax_plus_weighted_future_bce(ranking_setup) -> None:
    """loss = softmax CE of the next event's slot over the valid candidates (rows without it
    skipped) + BCE of the purchase / cart heads on what the customer did later, weighted."""
    model, params, batch = ranking_setup
    weights = (10.0, 3.0, 1.0)
    loss, metrics = model.loss(params, batch, weights)
    logits = np.asarray(model.logits(params, batch.history, batch.candidates, batch.features), np.float64)
    valid = batch.candidates.item_id != 0
    view = np.where(valid, logits[..., 2], -np.inf)
    rows = [0, 1, 3]
    slots = batch.target[rows].argmax(axis=1)
    ce = np.mean([logsumexp(view[r]) - view[r, s] for r, s in zip(rows, slots)])
    labels = np.asarray(action_multi_hot(batch.labels), np.float64)
    bce = np.logaddexp(0.0, logits) - logits * labels
    per_action = bce[valid].mean(axis=0)
    expected = ce + float(per_action[:2] @ [10.0, 3.0] / 13.0)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(metrics["next_event_ce"]) == pytest.approx(ce, rel=1e-5)
    assert float(metrics["rows_with_target"]) == 3
    assert float(metrics["bce_transaction"]) == pytest.approx(per_action[0], rel=1e-5)
    # Labels and targets on padded slots are ignored.
    noisy = batch._replace(labels=np.where(valid, batch.labels, 7), target=np.where(valid, batch.target, 1.0))
    assert float(model.loss(params, noisy, weights)[0]) == pytest.approx(float(loss), rel=1e-6)


# --- retrieval -------------------------------------------------------------------------------

def test_user_vectors_shape_norm_and_padding_invariance(retrieval_setup) -> None:
    model, params, batch, negatives = retrieval_setup
    users = np.asarray(model.user_vectors(params, batch.history))
    assert users.shape == (B, L, TINY.retrieval_dim)
    np.testing.assert_allclose(np.linalg.norm(users, axis=-1), 1.0, atol=1e-5)
    padded = np.asarray(model.user_vectors(params, left_pad(batch.history, 5)))
    np.testing.assert_allclose(padded[:, 5:], users, atol=1e-5)
    serving = np.asarray(model.serving_user_vector(params, batch.history))
    np.testing.assert_allclose(serving, users[:, -1], atol=1e-6)
    # causal: the state after step t does not see step t + 1
    changed = batch.history._replace(item_id=batch.history.item_id.copy())
    changed.item_id[0, -1] += 1
    moved = np.asarray(model.user_vectors(params, changed))
    np.testing.assert_allclose(moved[0, :-1], users[0, :-1], atol=1e-5)
    assert np.abs(moved[0, -1] - users[0, -1]).max() > 1e-4
    items = np.asarray(model.item_vectors(params, negatives))
    assert items.shape == (N, TINY.retrieval_dim)
    np.testing.assert_allclose(np.linalg.norm(items, axis=-1), np.where(negatives.item_id != 0, 1.0, 0.0), atol=1e-5)


def reference_retrieval_loss(users, targets, target_id, target_logq, negs, neg_id, neg_logq, temperature) -> float:
    """Sampled softmax written row by row with explicit candidate lists."""
    losses = []
    for p in np.flatnonzero(target_id):
        pos = users[p] @ targets[p] / temperature - target_logq[p]
        others = [users[p] @ targets[q] / temperature - target_logq[q]
                  for q in np.flatnonzero(target_id) if target_id[q] != target_id[p]]
        others += [users[p] @ negs[j] / temperature - neg_logq[j]
                   for j in range(len(neg_id)) if neg_id[j] not in (0, target_id[p])]
        losses.append(logsumexp([pos] + others) - pos)
    return float(np.mean(losses))


def test_retrieval_loss_matches_reference(retrieval_setup) -> None:
    model, params, batch, negatives = retrieval_setup
    rng = np.random.default_rng(3)
    target_logq = rng.uniform(-9, -3, (B, L)).astype(np.float32)
    neg_logq = rng.uniform(-9, -3, N).astype(np.float32)
    loss, metrics = model.loss(params, batch, negatives, neg_logq, target_logq)
    raw = make_retrieval_model(TINY)
    users, targets, negs, temperature = (np.asarray(x, np.float64) for x in jit(lambda p: (
        raw.user_vectors(p, batch.history), raw.item_vectors(p, batch.target), raw.item_vectors(p, negatives),
        raw.temperature(p)))(params))
    temperature = float(temperature)
    want = reference_retrieval_loss(users.reshape(B * L, -1), targets.reshape(B * L, -1),
                                    batch.target.item_id.ravel(), target_logq.ravel(),
                                    negs, negatives.item_id, neg_logq, temperature)
    assert float(loss) == pytest.approx(want, rel=1e-4)
    assert float(metrics["num_targets"]) == (batch.target.item_id != 0).sum() == 16
    assert temperature == pytest.approx(0.05)

    # A cap that still holds every valid target (16 of B * L = 28) gives the same loss.
    capped = jitted(make_retrieval_model(TINY, max_targets=16)).loss(params, batch, negatives, neg_logq, target_logq)
    assert float(capped[0]) == pytest.approx(float(loss), rel=1e-5)
    assert float(capped[1]["num_targets"]) == 16 and float(capped[1]["targets_dropped"]) == 0


def test_select_targets_takes_newest_valid_targets_of_every_row_first() -> None:
    valid = np.array([[False, True, True, True],
                      [False, False, False, True],
                      [False, False, True, True]])
    assert select_targets(valid, None) is None and select_targets(valid, 12) is None
    # flat index = row * 4 + column; newest column of each row first, then the one before
    np.testing.assert_array_equal(select_targets(valid, 5), [3, 7, 11, 2, 10])
    np.testing.assert_array_equal(jax.jit(lambda: select_targets(valid, 5))(), [3, 7, 11, 2, 10])  # constant input
    np.testing.assert_array_equal(select_targets(valid, 7), [3, 7, 11, 2, 10, 1, 6])  # then padding, newest first


def test_weight_decay_mask_spares_norms_biases_and_temperature(retrieval_setup) -> None:
    mask = weight_decay_mask(retrieval_setup[1])
    assert mask["item_embedding"]["table"] and mask["transformer/layer_0/ffn/up"]["w"]
    assert not mask["temperature"]["log_temperature"] and not mask["user_projection"]["b"]
    assert not mask["transformer/final_norm"]["scale"]


def test_temperature_is_clipped(retrieval_setup) -> None:
    model, params, _, _ = retrieval_setup
    cold = {**params, "temperature": {"log_temperature": jnp.asarray(-20.0)}}
    assert float(model.temperature(cold)) == pytest.approx(TEMPERATURE_MIN)


def test_jitted_train_steps_on_batch_pytrees(retrieval_setup, retrieval_step, ranking_setup, ranking_step) -> None:
    r_params = retrieval_setup[1]
    new, loss, metrics, _ = retrieval_step
    assert np.isfinite(float(loss)) and set(metrics) >= {"loss", "accuracy", "temperature", "num_targets"}
    assert not np.allclose(new["item_embedding"]["table"], r_params["item_embedding"]["table"])
    first, second = ranking_step[1]
    assert np.isfinite(first) and second < first


def test_retrieval_learns_next_item(retrieval_setup, retrieval_train_step) -> None:
    """Synthetic task: the next item is always item + 1 (mod 40); the loss must fall fast.

    Same batch shapes as the other tests, so the compiled train step is reused.
    """
    model, _, _, _ = retrieval_setup
    rng = np.random.default_rng(5)
    vocab = 40
    ones = np.ones((B, L), np.int32)

    def sample() -> tuple[RetrievalBatch, Items]:
        seq = ((rng.integers(0, vocab, (B, 1)) + np.arange(L + 1)) % vocab + 1).astype(np.int32)
        history = History(rng.integers(1, 1_000, B).astype(np.int32), seq[:, :-1], ones, ones, 4 * ones)
        negatives = rng.choice(vocab, N, replace=False).astype(np.int32) + 1
        neg_ones = np.ones(N, np.int32)
        return RetrievalBatch(history, Items(seq[:, 1:], ones, ones)), Items(negatives, neg_ones, neg_ones)

    params = model.init(jax.random.PRNGKey(3), sample()[0])
    opt_state = init_optimizer(params)
    opt_state.hyperparams["learning_rate"] *= 10.0  # 1e-2; stays weakly typed, so no recompile
    uniform = np.full((B, L), -np.log(vocab), np.float32), np.full(N, -np.log(N / vocab), np.float32)
    losses, accuracy = [], []
    for _ in range(50):
        batch, negatives = sample()
        params, opt_state, loss, metrics, _ = retrieval_train_step(params, opt_state, batch, negatives,
                                                                   uniform[1], uniform[0])
        losses.append(float(loss))
        accuracy.append(float(metrics["accuracy"]))
    assert np.mean(losses[-5:]) < 0.4 * np.mean(losses[:5]), losses
    assert np.mean(accuracy[-5:]) > 0.5, accuracy


# --- sharing embeddings ----------------------------------------------------------------------

def test_transplant_and_freeze_embeddings(retrieval_setup, ranking_setup, ranking_step) -> None:
    _, r_params, _, _ = retrieval_setup
    _, k_params, _ = ranking_setup
    merged = transplant_embeddings(k_params, r_params)
    mask = embedding_param_mask(merged)
    shared = sorted(m for m in mask if all(mask[m].values()))
    # The tiny config has no customer table (a learned user token instead): item and category.
    assert shared == sorted(m for m in SHARED_EMBEDDING_MODULES if m in merged) == ["category_embedding",
                                                                                  "item_embedding"]
    assert not any(any(mask[m].values()) for m in mask if m not in shared)
    for module in mask:
        source = r_params if module in shared else k_params
        for name in merged[module]:
            np.testing.assert_array_equal(merged[module][name], source[module][name])

    # Freezing with the mask: an optimiser step leaves the tables exactly as transplanted.
    labels = jax.tree_util.tree_map(lambda frozen: "freeze" if frozen else "train", mask)
    optimizer = optax.multi_transform({"train": optax.adam(1e-2), "freeze": optax.set_to_zero()}, labels)
    grads = ranking_step[2]
    new = jit(lambda g, p: optax.apply_updates(p, optimizer.update(g, optimizer.init(p), p)[0]))(grads, merged)
    np.testing.assert_array_equal(new["item_embedding"]["table"], r_params["item_embedding"]["table"])
    assert not np.allclose(new["action_head"]["w"], merged["action_head"]["w"])

    resized = {**r_params, "item_embedding": {"table": jnp.zeros((999, TINY.emb_dim))}}
    with pytest.raises(ValueError, match="item_embedding"):
        transplant_embeddings(k_params, resized)


def test_bfloat16_ranking_keeps_float32_params_and_logits(ranking_setup) -> None:
    model, params, batch = ranking_setup
    bf16 = jitted(make_ranking_model(dataclasses.replace(TINY, compute_dtype="bfloat16")))
    logits = bf16.logits(params, batch.history, batch.candidates, batch.features)  # same float32 params
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, model.logits(params, batch.history, batch.candidates, batch.features),
                               atol=0.1)


# --- config ----------------------------------------------------------------------------------

def test_profiles_round_trip_through_json() -> None:
    assert {"tiny", "cpu", "gpu"} <= set(PROFILES)
    for profile in PROFILES.values():
        data = json.loads(json.dumps(profile.to_dict()))
        assert Profile.from_dict(data) == profile
    gpu = PROFILES["gpu"]
    assert (gpu.model.emb_dim, gpu.model.num_layers, gpu.model.num_q_heads, gpu.model.num_kv_heads) == (128, 4, 4, 2)
    assert (gpu.retrieval.batch_size, gpu.ranking.batch_size, gpu.model.compute_dtype) == (256, 128, "bfloat16")
    data = PROFILES["tiny"].to_dict()
    data["model"]["no_such_field"] = 1
    with pytest.raises(TypeError):
        Profile.from_dict(data)


def test_recency_bucket_counts_steps_back_from_newest_and_ignores_padding():
    from model.embeddings import recency_bucket

    history = jnp.array([[0, 0, 5, 7, 5, 9], [0, 0, 0, 0, 0, 0]])
    candidates = jnp.array([[9, 5, 7, 3, 0], [9, 5, 7, 3, 0]])
    # 9 is the newest step (1 back), 5 two back (its older occurrence is ignored), 7 three back.
    np.testing.assert_array_equal(recency_bucket(candidates, history), [[1, 2, 3, 0, 0], [0, 0, 0, 0, 0]])
    padded = jnp.concatenate([jnp.zeros((2, 40), history.dtype), history], axis=1)
    np.testing.assert_array_equal(recency_bucket(candidates, padded), recency_bucket(candidates, history))
    long_ago = jnp.concatenate([jnp.array([[4]]), jnp.ones((1, 39), history.dtype) * 8], axis=1)
    assert int(recency_bucket(jnp.array([[4]]), long_ago)[0, 0]) == 7  # 40 steps back: the last bucket


def test_precomputed_candidate_tokens_give_the_same_logits():
    """Serving computes candidate tokens once per item; the logits must not change."""
    from model.config import PROFILES
    from model.ranking import make_ranking_model

    rng = np.random.default_rng(1)
    b, h, c = 3, 6, 5
    history = History(jnp.asarray(rng.integers(1, 99, b), jnp.int32),
                      jnp.asarray(rng.integers(0, 50, (b, h)), jnp.int32),
                      jnp.asarray(rng.integers(1, 9, (b, h)), jnp.int32),
                      jnp.asarray(rng.integers(1, 3, (b, h)), jnp.int32), jnp.full((b, h), 4, jnp.int32))
    candidates = Items(jnp.asarray(rng.integers(0, 50, (b, c)), jnp.int32),
                       jnp.asarray(rng.integers(1, 9, (b, c)), jnp.int32),
                       jnp.asarray(rng.integers(1, 3, (b, c)), jnp.int32))
    model = make_ranking_model(PROFILES["tiny"].model)
    features = jnp.asarray(rng.normal(size=(b, c, NUM_FEATURES)), jnp.float32)
    zeros = jnp.zeros((b, c), jnp.int32)
    params = model.init(jax.random.PRNGKey(0), RankingBatch(history, candidates, features, zeros, zeros))
    direct = model.logits(params, history, candidates, features)
    cached = model.logits_with_tokens(params, history, candidates, features,
                                      model.candidate_tokens(params, candidates))
    np.testing.assert_allclose(np.asarray(cached), np.asarray(direct), atol=1e-6)
