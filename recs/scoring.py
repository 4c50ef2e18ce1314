"""Nightly batch scoring: a top-N list for EVERY customer in the warehouse, published atomically.

Customers with usable history (at least one step on an item the models embed, whether or not
they passed the training filters) get retrieval + their recent items, ranked in one isolated
pass (model/serving.py). Customers without usable history get the popularity fallback: items
trending over the last `trending_days` of the log, marked `source = 'popularity'`. Lists that
the rules leave short are topped up from the same fallback, so everyone gets `top_n` items.

The warehouse is opened read-only for the inputs and closed before scoring; shards are written
as parquet; one short transaction publishes the run (recs/publish.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from model.candidates import CandidateConfig
from recs.publish import connect_with_retry, new_run_id, publish_run, write_shard
from recs.warehouse import sequences_dir

DAY_MS = 86_400_000


def load_serving_models(checkpoint_dir: str | Path):
    """(profile, retrieval params, ranking params, model_version) of the checkpoints scoring uses;
    model_version joins the two checkpoints' unique training-run versions with '+'.

    Retrieval: its refit on all data when present (model.tasks.serving_checkpoint); ranking: the
    stacked ranker selected on validation (it has no refit)."""
    from model.config import ARCHITECTURE_VERSION, Profile
    from model.tasks import checkpoint_path, checkpoint_version, combined_version, serving_checkpoint
    from model.train import load_best_params

    ret_dir, rank_dir = serving_checkpoint(checkpoint_dir, "retrieval"), checkpoint_path(checkpoint_dir, "ranking")
    retrieval_params, ret_meta = load_best_params(ret_dir)
    ranking_params, rank_meta = load_best_params(rank_dir)
    for directory, meta in ((ret_dir, ret_meta), (rank_dir, rank_meta)):
        if meta.get("architecture_version") != ARCHITECTURE_VERSION:
            raise ValueError(f"{directory} was trained by another model version "
                             f"({meta.get('architecture_version')} != {ARCHITECTURE_VERSION}): retrain with `recs run`")
    profile = Profile.from_dict(ret_meta["profile"])
    if Profile.from_dict(rank_meta["profile"]).ranker != profile.ranker:
        raise ValueError(f"{ret_dir} and {rank_dir} were trained with different model configs: retrain both")
    # The training runs' unique versions (checkpoint meta), e.g.
    # retrieval_serving-20261201T221012Z-1a2b3c4d+ranking-20261201T220512Z-5e6f7a8b.
    version = combined_version(checkpoint_version(ret_meta, ret_dir, "retrieval"),
                               checkpoint_version(rank_meta, rank_dir, "ranking"))
    return profile, retrieval_params, ranking_params, version


def warehouse_inputs(warehouse_dir: str | Path, tables, trending_days: float) -> dict:
    """Everything scoring reads from DuckDB, read-only, connection closed on return.

    available: bool [I+1] latest availability; bought: (customer_idx, item_idx) purchase pairs,
    oldest first; trending: item_idx by descending count over the last `trending_days`.
    """
    con = connect_with_retry(warehouse_dir, read_only=True)
    try:
        items = con.execute("SELECT item_idx, available FROM item_index").fetchnumpy()
        bought = con.execute(
            "SELECT c.customer_idx, i.item_idx FROM events e "
            "JOIN customer_index c USING (visitorid) JOIN item_index i USING (itemid) "
            "WHERE e.event = 'transaction' ORDER BY e.timestamp").fetchnumpy()
        trending = con.execute(
            "WITH last AS (SELECT max(timestamp) AS t FROM events) "
            "SELECT i.item_idx, count(*) AS n FROM events e JOIN item_index i USING (itemid), last "
            "WHERE e.timestamp >= last.t - ? GROUP BY 1 ORDER BY n DESC, 1", [int(trending_days * DAY_MS)]).fetchnumpy()
    finally:
        con.close()
    available = np.zeros(tables.num_items + 1, bool)
    idx = items["item_idx"].astype(np.int64)
    available[idx] = np.asarray(items["available"]).astype(np.int64) != 0
    return {"available": available,
            "bought": (np.asarray(bought["customer_idx"], np.int64), np.asarray(bought["item_idx"], np.int32)),
            "trending": np.asarray(trending["item_idx"], np.int32)}


def fill_from_fallback(chosen: np.ndarray, fallback: np.ndarray, excluded: np.ndarray, top_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Append fallback items to each row's list until it has top_n items.

    chosen [n, top_n] item_idx (0 = empty, filled slots first); fallback [P] ranked item_idx;
    excluded [n, B] item_idx never to add (bought). Returns (filled [n, top_n], from_fallback bool).
    """
    n = len(chosen)
    taken = np.concatenate([chosen, excluded], axis=1)
    # Position of each item in the fallback list (-1 = not in it): O(n * taken) instead of an
    # [n, P, taken] comparison.
    position = np.full(int(max(fallback.max(initial=0), taken.max(initial=0))) + 1, -1, np.int64)
    position[fallback] = np.arange(len(fallback))
    usable = np.ones((n, len(fallback)), bool)
    hit_rows, hit_cols = np.nonzero((taken > 0) & (position[taken] >= 0))
    usable[hit_rows, position[taken[hit_rows, hit_cols]]] = False
    need = top_n - (chosen > 0).sum(axis=1)
    order = np.cumsum(usable, axis=1)  # k-th usable fallback item has order k
    filled, from_fb = chosen.copy(), np.zeros_like(chosen, bool)
    have = (chosen > 0).sum(axis=1)
    for slot in range(top_n):
        k = slot - have + 1  # which usable fallback item goes to this slot (1-based)
        rows = np.flatnonzero((slot >= have) & (k <= need))
        if len(rows) == 0:
            continue
        pos = np.argmax((order[rows] == k[rows, None]) & usable[rows], axis=1)
        ok = usable[rows, pos] & (order[rows, pos] == k[rows])
        filled[rows[ok], slot] = fallback[pos[ok]]
        from_fb[rows[ok], slot] = True
    return filled, from_fb


def source_labels(strategy: str) -> np.ndarray:
    """object [17]: `source` value per candidate-source bitmask (0 = empty slot); index 16 =
    popularity fallback. Lists ranked by the item-kNN strategy say so instead."""
    from model.candidates import source_name

    names = [""] + [source_name(flags) if strategy == "model" else strategy for flags in range(1, 16)]
    return np.array([*names, "popularity"], dtype=object)


@dataclass
class Scorer:
    """Everything a scoring run holds in memory: sequence tables, both models behind the rules,
    the warehouse inputs and the ranked popularity fallback."""

    tables: Any  # model.data.SequenceTables (items, customers and every split)
    recommender: Any  # model.serving.Recommender
    config: Any  # model.serving.ServingConfig
    inputs: dict  # warehouse_inputs(): available, bought, trending
    fallback: np.ndarray  # int32 ranked item_idx the lists are topped up from
    model_version: str
    source_names: np.ndarray  # object [17]: source_labels()

    def fallback_rows(self, visitorid: np.ndarray, run_id: str, generated_at: datetime) -> pa.Table:
        """The popularity fallback list (source 'popularity', no scores) for each of `visitorid`."""
        top_n = min(self.config.top_n, len(self.fallback))
        n = len(visitorid)
        return pa.table({
            "run_id": pa.array(np.full(n * top_n, run_id, dtype=object), pa.string()),
            "customer_id": np.repeat(np.asarray(visitorid, np.int64), top_n),
            "rank": np.tile(np.arange(1, top_n + 1, dtype=np.int32), n),
            "item_id": np.tile(self.tables.item_ids[self.fallback[:top_n]].astype(np.int64), n),
            **{c: pa.nulls(n * top_n, pa.float64()) for c in ("score", "p_transaction", "p_addtocart", "p_view")},
            "source": pa.array(np.full(n * top_n, self.source_names[-1], dtype=object), pa.string()),
            "model_version": pa.array(np.full(n * top_n, self.model_version, dtype=object), pa.string()),
            "generated_at": pa.array(np.full(n * top_n, np.datetime64(generated_at, "us"))),
        })

    def score_chunk(self, chunk, run_id: str, generated_at: datetime) -> tuple[pa.Table, int]:
        """Recommendation rows of one `ServingChunk` (RECOMMENDATION_SCHEMA columns) and the
        number of its customers without usable history (all on the fallback)."""
        from model.serving import bought_matrix

        config, tables, top_n = self.config, self.tables, self.config.top_n
        n = len(chunk.customer_idx)
        bought = (bought_matrix(chunk.customer_idx, self.inputs["bought"], config.max_bought) if config.exclude_bought
                  else np.zeros((n, 1), np.int32))
        recs = self.recommender.recommend(chunk.history, chunk.history_item_idx, chunk.history.action, bought,
                                          top_n=top_n)
        items, from_fb = fill_from_fallback(recs.item_idx, self.fallback, bought, top_n)
        has_history = (chunk.history_item_idx > 0).any(axis=1)
        source = np.where(from_fb, len(self.source_names) - 1, recs.source.astype(np.int64) & 15)
        valid = items > 0
        rows, slots = np.nonzero(valid)
        probs = np.where(from_fb[..., None], np.nan, recs.probs)
        score = np.where(from_fb, np.nan, recs.score)
        table = pa.table({
            "run_id": pa.array(np.full(len(rows), run_id, dtype=object), pa.string()),
            "customer_id": chunk.visitorid[rows],
            "rank": (np.cumsum(valid, axis=1)[rows, slots]).astype(np.int32),
            "item_id": tables.item_ids[items[rows, slots]].astype(np.int64),
            "score": pa.array(score[rows, slots].astype(np.float64), from_pandas=True),
            "p_transaction": pa.array(probs[rows, slots, 0].astype(np.float64), from_pandas=True),
            "p_addtocart": pa.array(probs[rows, slots, 1].astype(np.float64), from_pandas=True),
            "p_view": pa.array(probs[rows, slots, 2].astype(np.float64), from_pandas=True),
            "source": pa.array(self.source_names[source[rows, slots]], pa.string()),
            "model_version": pa.array(np.full(len(rows), self.model_version, dtype=object), pa.string()),
            "generated_at": pa.array(np.full(len(rows), np.datetime64(generated_at, "us"))),
        })
        return table, int((~has_history).sum())


def listed_without_events(warehouse_dir: str | Path, tables) -> np.ndarray:
    """visitorid of the customers the current data lists (customer_keys.in_data) that have no
    row in the sequence tables' customers (no clean event), ascending; empty without customer_keys."""
    con = connect_with_retry(warehouse_dir, read_only=True)
    try:
        if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'customer_keys'"
                           ).fetchone()[0]:
            return np.zeros(0, np.int64)
        listed = con.execute("SELECT visitorid FROM customer_keys WHERE in_data ORDER BY visitorid").fetchnumpy()
    finally:
        con.close()
    listed = np.asarray(listed["visitorid"], np.int64)
    return listed[~np.isin(listed, tables.customer_visitorid)]


def load_scorer(warehouse_dir: str | Path = "warehouse", checkpoint_dir: str | Path = "checkpoints", *,
                top_n: int = 20, action_weights: tuple[float, float, float] | None = None,
                retrieve_k: int = CandidateConfig.retrieve_k, recent_k: int = CandidateConfig.recent_k,
                cooc_k: int = CandidateConfig.cooc_k, session_k: int = CandidateConfig.session_k,
                exclude_unavailable: bool = True, exclude_bought: bool | None = None, trending_days: float = 7.0,
                batch_size: int = 256, strategy: str = "model") -> Scorer:
    """Load the serving checkpoints, the sequence tables and the warehouse inputs (read-only);
    the co-occurrence and similar-session indexes are fitted on every split (all history)."""
    from model.data import SPLITS
    from model.ranking_task import fit_cooccurrence, fit_session_index
    from model.serving import DEFAULT_ACTION_WEIGHTS, Recommender, ServingConfig, resolve_exclude_bought
    from model.tasks import corpus_mask, load_tables

    if top_n < 1:
        raise ValueError("top_n must be >= 1")
    profile, retrieval_params, ranking_params, model_version = load_serving_models(checkpoint_dir)
    tables = load_tables(warehouse_dir, profile, refit=True)
    inputs = warehouse_inputs(warehouse_dir, tables, trending_days)
    exclude_bought = resolve_exclude_bought(exclude_bought, tables)
    config = ServingConfig(retrieve_k=retrieve_k, recent_k=recent_k, cooc_k=cooc_k, session_k=session_k, top_n=top_n,
                           action_weights=tuple(action_weights or DEFAULT_ACTION_WEIGHTS),
                           exclude_unavailable=exclude_unavailable, exclude_bought=exclude_bought,
                           batch_size=batch_size)
    corpus = corpus_mask(tables)
    cooc = fit_cooccurrence(tables, SPLITS)
    sessions = fit_session_index(tables, SPLITS) if session_k > 0 else None
    recommender = Recommender(profile, retrieval_params, ranking_params, tables=tables, cooc=cooc, corpus=corpus,
                              available=inputs["available"], config=config, strategy=strategy, sessions=sessions)
    eligible = corpus & (inputs["available"] if exclude_unavailable else True)
    fallback = inputs["trending"][eligible[inputs["trending"]]]
    if len(fallback) < top_n:  # a quiet last week: top up with all-time popularity
        extra = np.argsort(-tables.item_popularity, kind="stable")
        fallback = np.concatenate([fallback, extra[eligible[extra] & ~np.isin(extra, fallback)]])
    fallback = fallback[: max(top_n * 4, top_n + config.max_bought)].astype(np.int32)
    if strategy != "model":
        model_version = f"{strategy} (guard; models {model_version})"
    return Scorer(tables, recommender, config, inputs, fallback, model_version, source_labels(strategy))


def score_all_customers(warehouse_dir: str | Path = "warehouse", checkpoint_dir: str | Path = "checkpoints", *,
                        top_n: int = 20, action_weights: tuple[float, float, float] | None = None,
                        retrieve_k: int = CandidateConfig.retrieve_k, recent_k: int = CandidateConfig.recent_k,
                cooc_k: int = CandidateConfig.cooc_k, session_k: int = CandidateConfig.session_k,
                        exclude_unavailable: bool = True, exclude_bought: bool | None = None, trending_days: float = 7.0,
                        keep_runs: int = 3, chunk_rows: int = 65_536, batch_size: int = 256,
                        run_id: str | None = None, keep_model: bool = False, progress: bool = True) -> dict:
    """Score every customer and publish the run; returns the run summary (with the guard's
    decision: `strategy`, validation figures, `guard_warning`)."""
    from model.data import serving_histories
    from recs.guard import decide, validation_figures

    if top_n < 1:
        raise ValueError("top_n must be >= 1")
    started = time.perf_counter()
    generated_at = datetime.now(timezone.utc).replace(tzinfo=None)
    run_id = run_id or new_run_id()
    decision = decide(validation_figures(warehouse_dir), keep_model=keep_model)
    scorer = load_scorer(warehouse_dir, checkpoint_dir, top_n=top_n, action_weights=action_weights,
                         retrieve_k=retrieve_k, recent_k=recent_k, cooc_k=cooc_k, session_k=session_k,
                         exclude_unavailable=exclude_unavailable, exclude_bought=exclude_bought,
                         trending_days=trending_days, batch_size=batch_size, strategy=decision.strategy)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=int(scorer.tables.meta.get("n_serving", 0)) or None, desc="score", unit="customer",
                   mininterval=1.0)
    n_customers = n_fallback = n_rows = 0
    shard = -1
    for shard, chunk in enumerate(serving_histories(scorer.tables, chunk_rows=chunk_rows)):
        table, chunk_fallback = scorer.score_chunk(chunk, run_id, generated_at)
        write_shard(table, warehouse_dir, run_id, shard)
        n = len(chunk.customer_idx)
        n_customers += n
        n_fallback += chunk_fallback
        n_rows += table.num_rows
        if bar is not None:
            bar.update(n)
    if bar is not None:
        bar.close()
    # Customers the data lists without any event (H&M's customers.csv): the popularity fallback.
    listed = listed_without_events(warehouse_dir, scorer.tables)
    if len(listed):
        table = scorer.fallback_rows(listed, run_id, generated_at)
        write_shard(table, warehouse_dir, run_id, shard + 1)
        n_customers += len(listed)
        n_fallback += len(listed)
        n_rows += table.num_rows
    duration = time.perf_counter() - started
    summary = {"run_id": run_id, "generated_at": generated_at, "model_version": scorer.model_version,
               "n_customers": n_customers, "share_fallback": n_fallback / max(n_customers, 1),
               "duration_s": round(duration, 2), "top_n": top_n, **decision.as_row()}
    published = publish_run(warehouse_dir, run_id, summary, keep_runs=keep_runs)
    return {**summary, "n_rows": published["n_rows"], "customers_per_s": round(n_customers / max(duration, 1e-9), 1)}
