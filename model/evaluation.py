"""Offline evaluation: the next-event protocol through the nightly serving path, beside baselines.

Rows of the result are `(model, split, section, metric, k, value)`; the flow adds a run_id and
writes them to the warehouse table `eval_metrics`.

Sections:
- `next_event`: every event of the split whose customer has an earlier event is a case
  (model.cases); the list is what nightly scoring would have published just before it: the
  serving code (model.serving.Recommender: candidate sources, ranking, business rules) topped up
  with popularity as served. Recall / MRR / NDCG @ 10, 20, 50 and Purchase Rate@10 (among cases
  whose event is a transaction, the share whose item is in the top 10 of the list) for
  `shipped`, each model alone (`two_tower`: retrieval's exact top K; `ranker`: the ranker over
  its candidates, no rules, no fallback) and the baselines (`popularity`, `s_pop`, `item_knn`,
  `session_knn`).
- `next_event_last`: the same on each customer's last case of the split.
- `window`: the earlier window metric (first step of each window, over the whole corpus).
- `ranking`: AUC per action of the ranker over its candidates (view = the next event's slot;
  transaction / addtocart = what the customer did to the item from the case to its window's
  end), and their mean, beside the item-kNN and popularity scores of the same slots.
- `week` (purchase-only data such as H&M's, or `week_map=True`): the H&M competition's metric,
  MAP@12 over the week after the period before the split (val: the week after the train
  period; test: the week after validation). A case is an in-training customer with a purchase
  in that week; the truth is the distinct items bought that week; the list is made from the
  customer's history just before the week (the split's first window's history, the last H
  steps). Models: `shipped` (as served, rules and fallback), `two_tower`; baselines
  `repurchase_popular` (the history's purchases, newest first, then the week-before's most
  bought items) and `popularity` (the week-before's most bought items).

What each model saw: the co-occurrence and session indexes and the popularity counts are fitted
on the splits before the evaluated one (test: train + val; val: train), so nothing of the
evaluated period leaks in; the ranker trained on validation cases, so `val` is measured on the
customers held out from its training (model.ranking_task.SELECTION_SHARE). Model selection uses
`val` only; `test` is reported.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from model.baselines import Popularity, SessionPopularity
from model.batch import TRANSACTION
from model.cases import Cases, holdout_customers, next_event_cases
from model.data import SequenceTables, history_batch
from model.metrics import mrr_at_k, ndcg_at_k, recall_at_k, top_k
from model.ranking import make_ranking_model
from model.ranking_data import build_ranking_cases
from model.ranking_task import SELECTION_SHARE, action_aucs, fit_cooccurrence, fit_session_index, ranking_outputs
from model.retrieval import Retriever, make_retrieval_model
from model.serving import (DEFAULT_ACTION_WEIGHTS, Recommender, ServingConfig, bought_in_history, knn_scores,
                           purchases_only, resolve_exclude_bought)
from model.tasks import (checkpoint_path, checkpoint_version, combined_version, corpus_mask, get_profile, load_tables,
                         retrieval_ranks)
from model.train import load_best_params
from recs.scoring import fill_from_fallback

KS = (10, 20, 50)
MAP_K = 12  # the H&M competition's list length
WEEK_MS = 7 * 86_400_000
LIST_LEN = max(KS)
MAX_CASES = 10_000  # cases per section (a deterministic sample beyond that: about +-0.5 points at 10K)
STAGE_ONE_SPLITS = {"val": ("train",), "test": ("train", "val")}


def list_ranks(top: np.ndarray, target: np.ndarray) -> np.ndarray:
    """1-based rank of each target in its list (0 = absent)."""
    hit = (top == target[:, None]) & (target[:, None] > 0)
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)


def list_rows(model: str, section: str, top: np.ndarray, cases: Cases) -> list[dict]:
    """Recall / MRR / NDCG @ KS and Purchase Rate@10 of top lists [N, >= 50] (item_idx)."""
    ranks = list_ranks(top, cases.target_idx)
    rows = []
    for k in KS:
        rows += [{"model": model, "section": section, "metric": "recall", "k": k, "value": recall_at_k(ranks, k)},
                 {"model": model, "section": section, "metric": "mrr", "k": k, "value": mrr_at_k(ranks, k)},
                 {"model": model, "section": section, "metric": "ndcg", "k": k, "value": ndcg_at_k(ranks, k)}]
    bought = (cases.target_action & TRANSACTION) > 0
    value = recall_at_k(ranks[bought], 10) if bought.any() else float("nan")
    rows.append({"model": model, "section": section, "metric": "purchase_rate", "k": 10, "value": value})
    return rows


def sample_cases(cases: Cases, limit: int, seed: int = 0) -> Cases:
    """All cases, or a deterministic sample of `limit` of them (kept in order)."""
    if len(cases) <= limit:
        return cases
    rows = np.sort(np.random.default_rng([seed, 17]).choice(len(cases), limit, replace=False))
    return cases.take(rows)


def baseline_lists(tables: SequenceTables, cases: Cases, cooc, sessions, popularity: Popularity,
                   valid: np.ndarray, chunk: int = 512) -> dict[str, np.ndarray]:
    """Top-50 item_idx of every baseline for every case (restricted to the corpus)."""
    h = cases.history.item
    out: dict[str, list] = {"popularity": [], "s_pop": [], "item_knn": [], "session_knn": []}
    spop = SessionPopularity(popularity.counts)
    # Popularity's list is the same for everyone: once, not per case.
    popular = top_k(np.where(valid, popularity.score(h[:1])[0], -np.inf)[None, :], LIST_LEN)
    for start in range(0, len(cases), chunk):
        part = h[start:start + chunk]
        out["popularity"].append(np.repeat(popular, len(part), axis=0))
        for name, scorer in (("s_pop", spop), ("item_knn", cooc)):
            out[name].append(top_k(np.where(valid[None, :], scorer.score(part), -np.inf), LIST_LEN))
        top = sessions.topk(part, LIST_LEN)
        out["session_knn"].append(np.where(valid[top], top, 0))
    return {k: np.concatenate(v) if v else np.zeros((0, LIST_LEN), np.int64) for k, v in out.items()}


def average_precision(top: np.ndarray, truth: np.ndarray, k: int = MAP_K) -> np.ndarray:
    """AP@k of each list top [N, >= k] (item_idx, 0 = empty) against truth [N, T] (distinct
    item_idx bought, 0-padded): sum over hits of precision at the hit, / min(|truth|, k)."""
    top = top[:, :k]
    hit = ((top[:, :, None] == truth[:, None, :]) & (truth[:, None, :] > 0)).any(axis=2)
    precision = np.cumsum(hit, axis=1) / np.arange(1, k + 1)
    n_truth = np.minimum((truth > 0).sum(axis=1), k)
    return (precision * hit).sum(axis=1) / np.maximum(n_truth, 1)


def distinct_first(lists: np.ndarray) -> np.ndarray:
    """Each row's items with later repeats blanked (0) and the rest moved left, order kept."""
    out = lists.copy()
    for col in range(1, lists.shape[1]):
        out[:, col] = np.where((lists[:, :col] == lists[:, col:col + 1]).any(axis=1), 0, lists[:, col])
    order = np.argsort(out == 0, axis=1, kind="stable")
    return np.take_along_axis(out, order, axis=1)


def append_popular(lists: np.ndarray, popular: np.ndarray, k: int) -> np.ndarray:
    """[N, k]: each row's items (0-padded), then the `popular` items it lacks, in order."""
    merged = np.concatenate([lists, np.broadcast_to(popular, (len(lists), len(popular)))], axis=1)
    return distinct_first(merged)[:, :k]


def week_split_cases(tables: SequenceTables, split: str) -> dict:
    """The `week` section's cases of a split: first-window row per customer with a purchase in
    the week after the split starts, the distinct items bought then, and the items bought most
    in the week before (for the baselines), from the split's parquet (per-step times)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    start = int(tables.meta["train_end_ts" if split == "val" else "val_end_ts"])
    arrays = tables.split(split)

    def steps_of(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        files = sorted(str(p) for p in (tables.root / name).glob("*.parquet"))
        table = pads.dataset(files, format="parquet").to_table(
            columns=["customer_idx", "window_item", "window_action", "window_ts"])
        lengths = pc.list_value_length(table.column("window_item")).to_numpy(zero_copy_only=False)
        customer = np.repeat(table.column("customer_idx").to_numpy(), lengths)
        flat = [pc.list_flatten(table.column(c)).to_numpy() for c in ("window_item", "window_action", "window_ts")]
        return customer, *flat

    customer, item, action, ts = steps_of(split)
    bought = ((action & TRANSACTION) > 0) & (ts < start + WEEK_MS)
    pairs = np.unique(np.stack([customer[bought], item[bought]], axis=1), axis=0)
    customers, first = np.unique(pairs[:, 0], return_index=True) if len(pairs) else (np.zeros(0, int),) * 2
    counts = np.diff(np.append(first, len(pairs)))
    width = int(counts.max()) if len(counts) else 1
    truth = np.zeros((len(customers), width), np.int64)
    if len(pairs):
        slot = np.arange(len(pairs)) - np.repeat(first, counts)
        truth[np.repeat(np.arange(len(customers)), counts), slot] = pairs[:, 1]
    # First window of each customer of the split (rows are in (customer, time) order).
    is_first = np.ones(len(arrays), bool)
    is_first[1:] = arrays.customer_idx[1:] != arrays.customer_idx[:-1]
    first_rows = np.flatnonzero(is_first)
    row_of = first_rows[np.searchsorted(arrays.customer_idx[first_rows], customers)] if len(customers) else first_rows[:0]
    # The week before: from the steps of the splits up to this one.
    before = np.zeros(tables.num_items + 1)
    for name in STAGE_ONE_SPLITS[split]:
        _, b_item, b_action, b_ts = steps_of(name)
        keep = ((b_action & TRANSACTION) > 0) & (b_ts >= start - WEEK_MS) & (b_ts < start)
        before += np.bincount(b_item[keep], minlength=tables.num_items + 1)
    before[0] = -1
    popular = np.argsort(-before, kind="stable")[:MAP_K + 64]
    return {"rows": row_of, "truth": truth, "popular": popular[before[popular] > 0]}


def week_rows(tables: SequenceTables, recommender: Recommender, retriever, config: ServingConfig,
              fallback: np.ndarray, split: str, max_cases: int, seed: int) -> list[dict]:
    """MAP@12 of the shipped lists, two-tower and the baselines over the week after `split` starts."""
    cases = week_split_cases(tables, split)
    rows, truth = cases["rows"], cases["truth"]
    if len(rows) > max_cases:
        keep = np.sort(np.random.default_rng([seed, 12]).choice(len(rows), max_cases, replace=False))
        rows, truth = rows[keep], truth[keep]
    if not len(rows):
        return []
    arrays = tables.split(split)
    h = arrays.history
    history = history_batch(tables, h, arrays.visitorid, rows)
    h_item, h_action = h.item[rows], h.action[rows]
    bought = bought_in_history(h_item, h_action, config.max_bought)
    shipped = recommender.recommend(history, h_item, h_action, bought, top_n=MAP_K)
    served, _ = fill_from_fallback(shipped.item_idx, fallback.astype(np.int32),
                                   bought if config.exclude_bought else np.zeros_like(bought), MAP_K)
    popular = cases["popular"]
    newest_bought = bought_in_history(h_item, h_action, h_item.shape[1])
    lists = {
        "shipped": served,
        "two_tower": retriever(history).item_idx,
        "repurchase_popular": append_popular(distinct_first(newest_bought), popular, MAP_K),
        "popularity": append_popular(np.zeros((len(rows), 0), np.int64), popular, MAP_K),
    }
    return [{"model": name, "section": "week", "metric": "map", "k": MAP_K,
             "value": float(average_precision(top, truth).mean())} for name, top in lists.items()]



@dataclasses.dataclass(frozen=True)
class SplitServing:
    """The serving path as it stood before a split began: indexes and popularity fitted on the
    earlier splits only (STAGE_ONE_SPLITS), availability ignored (unknown at that time)."""

    corpus: np.ndarray  # bool [I+1]
    cooc: object  # model.cooccurrence.ItemKNN
    sessions: object  # model.session_knn index
    counts: np.ndarray  # float [I+1] events per item in the earlier splits
    config: ServingConfig  # top_n = LIST_LEN
    recommender: Recommender
    fallback: np.ndarray  # ranked item_idx the lists are topped up from (popularity as served)


def split_serving(tables: SequenceTables, profile, retrieval_params, ranking_params, split: str, *,
                  action_weights=DEFAULT_ACTION_WEIGHTS, serving: ServingConfig | None = None,
                  strategy: str = "model") -> SplitServing:
    """The recommender (and its inputs) that lists for the cases of `split` are made with."""
    fit_splits = STAGE_ONE_SPLITS[split]
    corpus = corpus_mask(tables)
    cooc = fit_cooccurrence(tables, fit_splits)
    sessions = fit_session_index(tables, fit_splits)
    counts = np.zeros(tables.num_items + 1)
    for s in fit_splits:
        arrays = tables.split(s)
        counts += np.bincount(arrays.window.item[arrays.window.item > 0], minlength=tables.num_items + 1)
    config = serving or ServingConfig(top_n=LIST_LEN, action_weights=tuple(action_weights),
                                      exclude_bought=resolve_exclude_bought(None, tables))
    config = ServingConfig(**{**config.__dict__, "top_n": LIST_LEN, "exclude_unavailable": False})
    recommender = Recommender(profile, retrieval_params, ranking_params, tables=tables, cooc=cooc, corpus=corpus,
                              available=np.ones_like(corpus), config=config, sessions=sessions, strategy=strategy)
    fallback = np.argsort(-np.where(corpus, counts, -1.0), kind="stable")[:LIST_LEN + config.max_bought]
    return SplitServing(corpus, cooc, sessions, counts, config, recommender, fallback)


def evaluate_split(tables: SequenceTables, profile, retrieval_params, ranking_params, split: str, *,
                   action_weights=DEFAULT_ACTION_WEIGHTS, seed: int = 0, max_cases: int = MAX_CASES,
                   serving: ServingConfig | None = None, week_map: bool | None = None) -> list[dict]:
    """Every next-event, window and ranking metric of one split (rows as dicts)."""
    cases = next_event_cases(tables, split)
    if split == "val":  # the ranker trained on the other validation customers
        cases = cases.take(np.flatnonzero(holdout_customers(cases.customer_idx, SELECTION_SHARE, seed)))
    last = cases.take(np.flatnonzero(cases.is_last))
    cases, last = sample_cases(cases, max_cases, seed), sample_cases(last, max_cases, seed)
    stage = split_serving(tables, profile, retrieval_params, ranking_params, split, action_weights=action_weights,
                          serving=serving)
    corpus, cooc, sessions, counts = stage.corpus, stage.cooc, stage.sessions, stage.counts
    config, recommender, fallback = stage.config, stage.recommender, stage.fallback
    popularity = Popularity(counts)
    retriever = Retriever.over_corpus(make_retrieval_model(profile.model), retrieval_params, tables, corpus,
                                      k=LIST_LEN)
    results: list[dict] = []
    for section, part in (("next_event", cases), ("next_event_last", last)):
        if not len(part):
            continue
        history = history_batch(tables, part.history, part.visitorid, np.arange(len(part)))
        bought = bought_in_history(part.history.item, part.history.action, config.max_bought)
        shipped = recommender.recommend(history, part.history.item, part.history.action, bought, top_n=LIST_LEN)
        served, _ = fill_from_fallback(shipped.item_idx, fallback.astype(np.int32),
                                       bought if config.exclude_bought else np.zeros_like(bought), LIST_LEN)
        results += list_rows("shipped", section, served, part)
        # Without purchases in the histories the rules remove nothing: the same lists (saves a pass).
        bare = (shipped if not bought.any() else
                recommender.recommend(history, part.history.item, part.history.action, None, top_n=LIST_LEN))
        results += list_rows("ranker", section, bare.item_idx, part)
        results += list_rows("two_tower", section, retriever(history).item_idx, part)
        for name, top in baseline_lists(tables, part, cooc, sessions, popularity, corpus).items():
            results += list_rows(name, section, top, part)
    if week_map or (week_map is None and purchases_only(tables, split)):
        results += week_rows(tables, recommender, Retriever.over_corpus(
            make_retrieval_model(profile.model), retrieval_params, tables, corpus, k=MAP_K), config, fallback, split,
            max_cases, seed)
    # The earlier window metric: each window's first step over the whole corpus.
    arrays = tables.split(split)
    rows = np.arange(min(len(arrays), max_cases))
    if len(rows):
        ranks = retrieval_ranks(make_retrieval_model(profile.model), retrieval_params, tables, split, rows)
        for k in KS:
            results.append({"model": "two_tower", "section": "window", "metric": "recall", "k": k,
                            "value": recall_at_k(ranks, k)})
    # Per-action AUC of the ranker over its candidates.
    if len(cases):
        ranking = make_ranking_model(profile.ranker)
        rc = build_ranking_cases(tables, sample_cases(cases, min(max_cases, 5_000), seed), recommender.generator,
                                 recommender.retriever, seed=seed)
        _, logits, valid = ranking_outputs(ranking, ranking_params, tables, rc, action_weights)
        results += [{"model": "ranker", "section": "ranking", "metric": k, "k": None, "value": v}
                    for k, v in action_aucs(logits, rc, valid).items()]
        for name, scores in (("item_knn", knn_scores(cooc, rc.history_idx, rc.item_idx)),
                             ("popularity", counts[rc.item_idx].astype(np.float32))):
            as_logits = np.repeat(scores[..., None], 3, axis=-1)  # one score for every action
            results += [{"model": name, "section": "ranking", "metric": k, "k": None, "value": v}
                        for k, v in action_aucs(as_logits, rc, valid).items()]
    for r in results:
        r["split"] = split
        r["value"] = float(r["value"])
    return results


def evaluate_all(warehouse_dir: str | Path, checkpoint_dir: str | Path, profile: str = "cpu",
                 splits: tuple[str, ...] = ("val", "test"), seed: int = 0, max_cases: int = MAX_CASES,
                 action_weights=DEFAULT_ACTION_WEIGHTS, week_map: bool | None = None) -> list[dict]:
    """Every metric of the models and baselines on each split (rows as dicts). Each row's
    `model_version` names the checkpoints measured (`<retrieval version>+<ranking version>`).
    week_map: add the `week` section's MAP@12 (None: when the data holds purchases only)."""
    prof = get_profile(profile)
    tables = load_tables(warehouse_dir, prof)
    retrieval_dir, ranking_dir = checkpoint_path(checkpoint_dir, "retrieval"), checkpoint_path(checkpoint_dir, "ranking")
    retrieval_params, retrieval_meta = load_best_params(retrieval_dir)
    ranking_params, ranking_meta = load_best_params(ranking_dir)
    version = combined_version(checkpoint_version(retrieval_meta, retrieval_dir, "retrieval"),
                               checkpoint_version(ranking_meta, ranking_dir, "ranking"))
    rows: list[dict] = []
    for split in splits:
        rows += evaluate_split(tables, prof, retrieval_params, ranking_params, split, seed=seed,
                               max_cases=max_cases, action_weights=action_weights, week_map=week_map)
    for r in rows:
        r["model_version"] = version
    return rows


def metrics_markdown(rows: list[dict], split: str | None = "test") -> str:
    """The evaluation as a markdown table: one line per (section, metric, k), one column per model."""
    rows = [r for r in rows if split is None or r.get("split") == split]
    models = list(dict.fromkeys(r["model"] for r in rows))
    keys = list(dict.fromkeys((r["section"], r["metric"], r["k"]) for r in rows))
    value = {(r["section"], r["metric"], r["k"], r["model"]): r["value"] for r in rows}
    lines = ["| section | metric | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for section, metric, k in keys:
        name = f"{metric}@{k}" if k else metric
        cells = [value.get((section, metric, k, m)) for m in models]
        lines.append(f"| {section} | {name} | " + " | ".join("" if c is None else f"{c:.4f}" for c in cells) + " |")
    return "\n".join(lines)


