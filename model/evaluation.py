"""Offline evaluation on the test split, always beside popularity and item-kNN on the same rows.

Rows of the result are `(model, split, metric, k, value)`; the flow adds a run_id and writes
them to the warehouse table `eval_metrics`.

- retrieval: next-item (first step of each test window) Recall / MRR / NDCG @ 10, 20, 50, 100
  over the whole item corpus, for the two-tower model, popularity and item-kNN;
- ranking: AUC per action and their mean, and Purchase Rate@10, on the ranking layout (window
  positives + popularity negatives), for the ranking model, popularity and item-kNN scores;
- end_to_end: retrieve 100 + recent items, rank, top 10 / 20 (topped up with popularity when
  short, as served): Recall, MRR of the next item and Purchase Rate@10 (share of windows with a
  purchase whose top 10 holds a purchased item), beside the baselines' own top lists.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from model.baselines import ItemKNN, Popularity
from model.batch import ACTION_NAMES, TRANSACTION, Items
from model.data import SequenceTables, eval_arrays
from model.metrics import mrr_at_k, ndcg_at_k, purchase_rate_at_k, ranks_in_chunks, recall_at_k
from model.serving import Recommender, ServingConfig
from model.tasks import (checkpoint_path, corpus_mask, get_profile, load_tables, mean_action_auc, ranking_logits,
                         retrieval_ranks)
from model.ranking import make_ranking_model
from model.retrieval import make_retrieval_model
from model.train import load_best_params
from recs.scoring import fill_from_fallback

KS = (10, 20, 50, 100)


def _rank_rows(model: str, ranks: np.ndarray, ks=KS, section: str = "retrieval") -> list[dict]:
    rows = []
    for k in ks:
        rows += [{"model": model, "section": section, "metric": "recall", "k": k, "value": recall_at_k(ranks, k)},
                 {"model": model, "section": section, "metric": "mrr", "k": k, "value": mrr_at_k(ranks, k)},
                 {"model": model, "section": section, "metric": "ndcg", "k": k, "value": ndcg_at_k(ranks, k)}]
    return rows


def _auc_rows(model: str, scores: np.ndarray, labels: np.ndarray, valid: np.ndarray) -> list[dict]:
    """AUC per action from per-action scores [N, C, 3] (or one score broadcast), and Purchase Rate@10."""
    aucs = mean_action_auc(scores, labels, valid)
    rows = [{"model": model, "section": "ranking", "metric": name, "k": None, "value": v} for name, v in aucs.items()]
    purchase_scores = scores[..., 0]
    rows.append({"model": model, "section": "ranking", "metric": "purchase_rate", "k": 10,
                 "value": purchase_rate_at_k(np.where(valid, purchase_scores, -np.inf), labels, 10, valid)})
    return rows


def _top_list_rows(model: str, top: np.ndarray, next_item: np.ndarray, purchased: np.ndarray) -> list[dict]:
    """End-to-end metrics of top lists [N, >=20] of item_idx (0 = empty slot)."""
    rows = []
    hit_pos = np.where(top == next_item[:, None], np.arange(1, top.shape[1] + 1)[None, :], 0)
    ranks = np.where(hit_pos.any(axis=1), hit_pos.max(axis=1), 0)
    for k in (10, 20):
        rows += [{"model": model, "section": "end_to_end", "metric": "recall", "k": k, "value": recall_at_k(ranks, k)},
                 {"model": model, "section": "end_to_end", "metric": "mrr", "k": k, "value": mrr_at_k(ranks, k)}]
    has_purchase = purchased.any(axis=1)
    top10 = top[:, :10]
    hit = (top10[:, :, None] == np.where(purchased, purchased, -1)[:, None, :]).any(axis=(1, 2))
    value = float(hit[has_purchase].mean()) if has_purchase.any() else float("nan")
    rows.append({"model": model, "section": "end_to_end", "metric": "purchase_rate", "k": 10, "value": value})
    return rows


def _chunked_scores(model, histories: np.ndarray, valid: np.ndarray):
    """score_fn(start, stop) for ranks_in_chunks over a baseline, restricted to the corpus."""
    def fn(start: int, stop: int) -> np.ndarray:
        return np.where(valid[None, :], model.score(histories[start:stop]), -np.inf)
    return fn


def _baseline_top(model, histories: np.ndarray, valid: np.ndarray, k: int, chunk: int = 512) -> np.ndarray:
    out = []
    for start in range(0, len(histories), chunk):
        scores = np.where(valid[None, :], model.score(histories[start:start + chunk]), -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        out.append(np.where(np.take_along_axis(scores, order, axis=1) > -np.inf, order, 0))
    return np.concatenate(out) if out else np.zeros((0, k), np.int64)


def evaluate_all(warehouse_dir: str | Path, checkpoint_dir: str | Path, profile: str = "cpu", split: str = "test",
                 seed: int = 0, max_rows: int | None = None) -> list[dict]:
    """Every metric of both models and both baselines on `split` (rows as dicts)."""
    prof = get_profile(profile)
    tables = load_tables(warehouse_dir, prof)
    arrays = tables.split(split)
    n = len(arrays) if max_rows is None else min(len(arrays), max_rows)
    rows_idx = np.arange(n)
    valid_items = corpus_mask(tables)
    hist_idx = arrays.history.item[:n]
    ev = eval_arrays(tables, split)
    next_item = ev.next_item_idx[:n]

    popularity = Popularity.from_tables(tables)
    knn = ItemKNN(tables.num_items).fit_tables(tables, "train")
    retrieval_params, _ = load_best_params(checkpoint_path(checkpoint_dir, "retrieval"))
    ranking_params, _ = load_best_params(checkpoint_path(checkpoint_dir, "ranking"))
    retrieval = make_retrieval_model(prof.model)
    ranking = make_ranking_model(prof.model)

    results: list[dict] = []
    # Retrieval: next item among the whole corpus.
    results += _rank_rows("two_tower", retrieval_ranks(retrieval, retrieval_params, tables, split, rows_idx))
    results += _rank_rows("popularity", ranks_in_chunks(_chunked_scores(popularity, hist_idx, valid_items), next_item))
    results += _rank_rows("item_knn", ranks_in_chunks(_chunked_scores(knn, hist_idx, valid_items), next_item))

    # Ranking: window positives + popularity negatives, the same rows for every scorer.
    ev_rank = eval_arrays(tables, split, num_candidates=prof.model.num_candidates, seed=seed)
    history = type(ev_rank.history)(*(x[:n] for x in ev_rank.history))
    candidates = Items(*(x[:n] for x in ev_rank.candidates))
    labels = ev_rank.labels[:n]
    valid = candidates.item_id != 0
    cand_idx = tables.item_idx_of(candidates.item_id)
    results += _auc_rows("ranker", ranking_logits(ranking, ranking_params, history, candidates), labels, valid)
    pop_scores = popularity.score(hist_idx[:1])[0][cand_idx].astype(np.float32)
    results += _auc_rows("popularity", np.repeat(pop_scores[..., None], len(ACTION_NAMES), axis=-1), labels, valid)
    knn_scores = np.concatenate([np.take_along_axis(knn.score(hist_idx[s:s + 512]), cand_idx[s:s + 512], axis=1)
                                 for s in range(0, n, 512)]) if n else np.zeros((0, cand_idx.shape[1]))
    results += _auc_rows("item_knn", np.repeat(knn_scores[..., None], len(ACTION_NAMES), axis=-1), labels, valid)

    # End to end: retrieve 100 + recent, rank, top 20 (no business rules: pure quality).
    purchased = np.where((arrays.candidate_label[:n] & TRANSACTION) > 0, arrays.candidate_item[:n], 0)
    recommender = Recommender(prof, retrieval_params, ranking_params, item_ids=tables.item_ids,
                              item_category=tables.item_category, item_root=tables.item_root,
                              corpus=valid_items, available=np.ones_like(valid_items),
                              config=ServingConfig(exclude_unavailable=False, exclude_bought=False, top_n=20))
    recs = recommender.recommend(history, hist_idx, top_n=20)
    # As served (recs/scoring.py): lists the models leave short, e.g. no usable history, are
    # topped up with popularity; otherwise those rows would count as misses the customer never sees.
    fallback = _baseline_top(popularity, np.zeros((1, 1), np.int32), valid_items, 40)[0]
    served, _ = fill_from_fallback(recs.item_idx, fallback[fallback > 0].astype(np.int32),
                                   np.zeros((n, 1), np.int32), 20)
    results += _top_list_rows("two_tower+ranker", served, next_item, purchased)
    results += _top_list_rows("popularity", _baseline_top(popularity, hist_idx, valid_items, 20), next_item, purchased)
    results += _top_list_rows("item_knn", _baseline_top(knn, hist_idx, valid_items, 20), next_item, purchased)
    for r in results:
        r["split"] = split
        r["value"] = float(r["value"])
    return results


def metrics_markdown(rows: list[dict]) -> str:
    """The evaluation as a markdown table: one line per (section, metric, k), one column per model."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    keys = list(dict.fromkeys((r["section"], r["metric"], r["k"]) for r in rows))
    value = {(r["section"], r["metric"], r["k"], r["model"]): r["value"] for r in rows}
    lines = ["| section | metric | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for section, metric, k in keys:
        name = f"{metric}@{k}" if k else metric
        cells = [value.get((section, metric, k, m)) for m in models]
        lines.append(f"| {section} | {name} | " + " | ".join("" if c is None else f"{c:.4f}" for c in cells) + " |")
    return "\n".join(lines)


__all__ = ["evaluate_all", "metrics_markdown", "KS"]
