"""The ranking task: stacked on the validation period, selected on held-out customers.

Stage one is what serving would have had at the start of the validation period: the retrieval
model selected on validation (trained on the train period) and a co-occurrence index fitted on
the train period. Every next-event case of the validation period gets the candidates and
features stage one gives it (model.ranking_data); the cases of a fixed sixth of the customers
select the checkpoint (next-event Recall@20 of the served ordering over ALL candidates), the
rest train. The test period stays untouched for evaluation.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from model.batch import ACTION_NAMES, action_multi_hot
from model.candidates import CandidateConfig, CandidateGenerator
from model.cases import holdout_customers, next_event_cases
from model.config import ARCHITECTURE_VERSION, Profile
from model.cooccurrence import ItemKNN
from model.data import SequenceTables
from model.metrics import mrr_at_k, ndcg_at_k, recall_at_k, roc_auc
from model.ranking import VIEW_HEAD, embedding_param_mask, make_ranking_model, transplant_embeddings
from model.ranking_data import RankingBatchSource, RankingCases, build_ranking_cases, candidate_items
from model.retrieval import Retriever, make_retrieval_model
from model.session_knn import SessionKNN
from model.serving import DEFAULT_ACTION_WEIGHTS, final_scores
from model.train import TrainTask, load_best_params
from model.transformer import weight_decay_mask

SELECTION_SHARE = 1 / 6  # customers whose validation cases select the ranker instead of training it
SELECTION_CASES = 5_000  # at most this many of their cases are scored at each evaluation


def fit_cooccurrence(tables: SequenceTables, splits: tuple[str, ...]) -> ItemKNN:
    """The co-occurrence index over the windows of `splits` (each step counted once)."""
    return ItemKNN(tables.num_items).fit_splits(tables, splits)


def fit_session_index(tables: SequenceTables, splits: tuple[str, ...]) -> SessionKNN:
    """The similar-sessions index: every window of `splits` is one past "session" (a customer's
    up to M consecutive steps; on session data, mostly the session itself)."""
    rows = [tables.split(s).window.item for s in splits if len(tables.split(s))]
    width = max((r.shape[1] for r in rows), default=1)
    seqs = np.concatenate([np.pad(r, ((0, 0), (width - r.shape[1], 0))) for r in rows]) if rows else np.zeros((0, 1))
    return SessionKNN(tables.num_items).fit(seqs.astype(np.int64))


def stage_one(tables: SequenceTables, profile: Profile, retrieval_params, corpus: np.ndarray,
              fit_splits: tuple[str, ...], config: CandidateConfig = CandidateConfig()
              ) -> tuple[Retriever, CandidateGenerator]:
    """The retriever and candidate generator serving would have had after `fit_splits`."""
    retriever = Retriever.over_corpus(make_retrieval_model(profile.model), retrieval_params, tables, corpus,
                                      k=config.retrieve_k)
    cooc = fit_cooccurrence(tables, fit_splits)
    sessions = fit_session_index(tables, fit_splits) if config.session_k > 0 else None
    generator = CandidateGenerator(retriever.item_vectors, retriever.temperature, cooc, tables.item_popularity,
                                   corpus, config, sessions)
    return retriever, generator


def served_ranks(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """1-based rank of the target slot under `scores` [n, C] (0 = not among the candidates);
    ties are broken against the target."""
    t_score = np.where(target > 0, scores, -np.inf).max(axis=1)
    has = (target > 0).any(axis=1) & np.isfinite(t_score)
    ahead = (scores > t_score[:, None]).sum(axis=1) + ((scores == t_score[:, None]) & (target == 0)).sum(axis=1)
    return np.where(has, ahead + 1, 0)


def ranking_outputs(model, params, tables: SequenceTables, cases: RankingCases, action_weights,
                    chunk: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(served scores [N, C], per-action logits [N, C, 3], valid [N, C]) of precomputed cases."""
    weights = tuple(float(w) for w in action_weights)

    @jax.jit
    def fn(params, history, candidates, features):
        logits = model.logits(params, history, candidates, features)
        return final_scores(logits, candidates.item_id != 0, weights)[0], logits

    scores, logits = [], []
    for start in range(0, len(cases), chunk):
        rows = np.arange(start, min(start + chunk, len(cases)))
        m = len(rows)
        rows = np.concatenate([rows, np.repeat(rows[-1:], chunk - m)])
        history = type(cases.history)(*(x[rows] for x in cases.history))
        s, lg = fn(params, history, candidate_items(tables, cases.item_idx[rows]),
                   jnp.asarray(cases.features[rows], jnp.float32))
        scores.append(np.asarray(s)[:m])
        logits.append(np.asarray(lg)[:m])
    if not scores:
        c = cases.item_idx.shape[1]
        return np.zeros((0, c)), np.zeros((0, c, 3)), np.zeros((0, c), bool)
    return np.concatenate(scores), np.concatenate(logits), cases.item_idx > 0


def action_aucs(logits: np.ndarray, cases: RankingCases, valid: np.ndarray) -> dict[str, float]:
    """AUC per action over candidate slots (view: the next event's slot; transaction / addtocart:
    the customer's actions from the case to its window's end), and their mean over defined ones."""
    labels = action_multi_hot(cases.labels)
    labels[..., VIEW_HEAD] = cases.target
    out = {f"auc_{name}": roc_auc(labels[..., a][valid], logits[..., a][valid]) for a, name in enumerate(ACTION_NAMES)}
    defined = [v for v in out.values() if np.isfinite(v)]
    out["mean_auc"] = float(np.mean(defined)) if defined else float("nan")
    return out


def selection_metrics(model, params, tables: SequenceTables, cases: RankingCases, action_weights) -> dict[str, float]:
    """Next-event metrics of the served ordering over all candidates, and the per-action AUCs."""
    scores, logits, valid = ranking_outputs(model, params, tables, cases, action_weights)
    ranks = served_ranks(scores, cases.target)
    out = {f"recall@{k}": recall_at_k(ranks, k) for k in (10, 20, 50)}
    out.update({"mrr@20": mrr_at_k(ranks, 20), "ndcg@20": ndcg_at_k(ranks, 20)})
    out.update(action_aucs(logits, cases, valid))
    return out


def ranking_task(tables: SequenceTables, profile: Profile, selection: RankingCases | None, *, seed: int = 0,
                 retrieval_params=None, freeze_embeddings: bool = False,
                 action_weights=DEFAULT_ACTION_WEIGHTS) -> tuple[TrainTask, object]:
    """TrainTask of the ranking model; optionally starting from (and freezing) retrieval tables."""
    tc = profile.ranking
    model = make_ranking_model(profile.ranker)
    loss_weights = jnp.asarray(tc.action_weights, jnp.float32)

    def loss_fn(params, batch, rng):
        return model.loss(params, batch, loss_weights)

    validate = None
    if selection is not None and len(selection):
        def validate(params) -> dict[str, float]:
            metrics = selection_metrics(model, params, tables, selection, action_weights)
            return {f"val_{k}": v for k, v in metrics.items()}

    init_params = None
    if retrieval_params is not None:
        init_params = lambda params: transplant_embeddings(params, retrieval_params)  # noqa: E731
    trainable = None
    if freeze_embeddings:
        if retrieval_params is None:
            raise ValueError("--freeze-embeddings needs --init-from-retrieval (frozen random tables learn nothing)")
        trainable = lambda params: jax.tree_util.tree_map(lambda m: not m, embedding_param_mask(params))  # noqa: E731
    task = TrainTask("ranking", jax.jit(model.init), loss_fn, validate,  # jitted: see tasks.retrieval_task
                     selection_metric="val_recall@20", trainable=trainable, init_params=init_params,
                     decay_mask=weight_decay_mask,
                     meta={"profile": profile.to_dict(), "model": "ranking",
                           "architecture_version": ARCHITECTURE_VERSION,
                           "init_from_retrieval": retrieval_params is not None,
                           "freeze_embeddings": freeze_embeddings})
    return task, model


def ranking_training_data(tables: SequenceTables, profile: Profile, retrieval_params, corpus: np.ndarray, *,
                          seed: int = 0, config: CandidateConfig = CandidateConfig(), progress: bool = True
                          ) -> tuple[RankingCases, RankingCases]:
    """(training cases with sampled slots, selection cases with every candidate) of the
    validation period, stage one fitted on the train period."""
    retriever, generator = stage_one(tables, profile, retrieval_params, corpus, ("train",), config)
    cases = next_event_cases(tables, "val")
    if not len(cases):
        raise ValueError("the validation period has no next-event cases to train the ranker on: "
                         "ingest more data or lower --min-user-events")
    held = holdout_customers(cases.customer_idx, SELECTION_SHARE, seed)
    rng = np.random.default_rng([seed, 13])
    train_rows = np.flatnonzero(~held)
    if len(train_rows) > profile.ranking.max_cases:
        train_rows = np.sort(rng.choice(train_rows, profile.ranking.max_cases, replace=False))
    select_rows = np.flatnonzero(held)
    if len(select_rows) > SELECTION_CASES:
        select_rows = np.sort(rng.choice(select_rows, SELECTION_CASES, replace=False))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(train_rows) + len(select_rows), desc="ranking cases", unit="case", mininterval=1.0)
    update = bar.update if bar is not None else None
    train = build_ranking_cases(tables, cases.take(train_rows), generator, retriever,
                                keep=profile.ranking.train_candidates, seed=seed, progress=update)
    select = build_ranking_cases(tables, cases.take(select_rows), generator, retriever, seed=seed, progress=update)
    if bar is not None:
        bar.close()
    return train, select


def retrieval_identity(checkpoint: Path) -> dict:
    """What the ranker's training data depends on: the retrieval checkpoint it was stacked on."""
    params_meta = load_best_params(checkpoint)[1]
    return {"step": params_meta.get("step"), "data_fingerprint": params_meta.get("data_fingerprint"),
            "settings": params_meta.get("settings")}


def train_ranking_model(warehouse_dir: str | Path = "warehouse", checkpoint_dir: str | Path = "checkpoints",
                        profile: str | Profile = "cpu", steps: int | None = None, seed: int = 0,
                        refit: bool = False, init_from_retrieval: bool = False, freeze_embeddings: bool = False,
                        progress: bool = True, stop_after: int | None = None,
                        action_weights=DEFAULT_ACTION_WEIGHTS, writer=None) -> dict:
    """Train (or resume) the ranking model on the validation period; returns a summary with the
    best selection metrics and the run's model_version. Needs the retrieval checkpoint selected
    on validation. `writer` (model.train.MetricWriter) receives the metrics."""
    from model.parallel import initialize_distributed
    from model.tasks import (_fit_and_summarize, checkpoint_path, corpus_mask, get_profile, load_tables,
                             optim_config)

    initialize_distributed()  # a multi-host run (model/parallel.py); before any JAX computation
    if refit:
        raise ValueError("the ranker is stacked on the validation period and has no refit: "
                         "train it without --refit (scoring uses it with stage one fitted on all data)")
    if freeze_embeddings and not init_from_retrieval:
        raise ValueError("--freeze-embeddings needs --init-from-retrieval (frozen random tables learn nothing)")
    prof = get_profile(profile)
    tables = load_tables(warehouse_dir, prof)
    retrieval_ckpt = checkpoint_path(checkpoint_dir, "retrieval")
    retrieval_params, _ = load_best_params(retrieval_ckpt)
    train, select = ranking_training_data(tables, prof, retrieval_params, corpus_mask(tables), seed=seed,
                                          progress=progress)
    cfg = optim_config(prof, "ranking", steps, seed)
    task, _ = ranking_task(tables, prof, select, seed=seed,
                           retrieval_params=retrieval_params if init_from_retrieval else None,
                           freeze_embeddings=freeze_embeddings, action_weights=action_weights)
    task.meta["stage_one"] = retrieval_identity(retrieval_ckpt)
    task.meta["action_weights"] = list(action_weights)
    task.meta["cases"] = {"train": len(train), "selection": len(select)}
    batch = min(prof.ranking.batch_size, len(train))
    if batch >= jax.device_count():
        batch -= batch % jax.device_count()  # every batch splits evenly over the devices
    if batch < 1:
        raise ValueError("no ranking training cases: the validation period is too small")
    source = RankingBatchSource(tables, train, batch, seed=seed, num_steps=cfg.steps)
    return _fit_and_summarize(task, cfg, source, warehouse_dir, checkpoint_dir, prof, profile, False,
                              batch, progress, stop_after, writer)
