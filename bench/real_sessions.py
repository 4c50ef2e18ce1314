"""Benchmark: next-item quality on REAL Retail Rocket sessions, two-tower vs popularity vs item-kNN.

Data: /work/shared/data/retailrocket-sessions/events.csv.gz (genuine views, one visitorid per
30-minute session, 686K events, 126K sessions, items renumbered 1..36,968; events only). It is
symlinked alone into a temporary directory, ingested with recs.ingest.ingest_dir and built with
min_user_events=2, min_item_events=5 into bench/out/warehouse_retailrocket_sessions/; the
retrieval model is trained from scratch with model.tasks.train_retrieval_model (profile `cpu`)
into bench/out/checkpoints_retailrocket_sessions/ and timed.

Two protocols, each with the two-tower model beside popularity and item-kNN:
- temporal: the project's own test split (last 10% of time). Each test window predicts its FIRST
  step from the history before it, ranked over the whole item corpus (model/evaluation.py's
  way: tasks.retrieval_ranks; baselines fit on the train split). Sessions are short and start
  fresh, so most test windows have an empty history: also shown on rows with a history.
- sessions-last: the protocol of the published numbers. model.baselines.load_sessions orders
  sessions by start, keeps the last 10% as test and predicts each test session's LAST item from
  its preceding items (evaluate_on_sessions for the baselines, fit on the first 90% of
  sessions). The two-tower model gets the same preceding items as a left-padded history
  (consecutive repeats collapsed, as the sequence tables and serving have them; actions = view;
  its session's visitorid as customer) and ranks the true last item over its corpus (exact dot
  products). It was trained on the temporal train split (first 80% of time), which ends before
  the test sessions start, so nothing leaks; the baselines see 10% more sessions than it did.
Published bar on sessions-last: item-kNN Recall@20 ~0.66 / MRR@20 ~0.41, GRU4Rec ~0.68 / ~0.37.

Prints a table and the training wall time, then one line:
    two_tower_recall20=<r> two_tower_mrr20=<m> item_knn_recall20=<r> item_knn_mrr20=<m> train_wall_s=<s>
(the sessions-last protocol).

Full run (the lead's; the cpu profile's 400 steps, a few minutes on 2 idle cores):
    .venv/bin/python bench/real_sessions.py
Smoke test (~1-2 minutes; 40 steps, metrics on 3,000 rows per protocol):
    .venv/bin/python bench/real_sessions.py --quick
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_OUT, cpu_note, ensure_warehouse, format_table, log, timer  # noqa: E402

SESSIONS = Path("/work/shared/data/retailrocket-sessions/events.csv.gz")
K = 20
PUBLISHED = (("published item-kNN", 0.66, 0.41), ("published GRU4Rec", 0.68, 0.37))
VIEW = 4  # action bit of a view (model.batch.VIEW)


def build_warehouse(events: Path, warehouse: Path, min_user_events: int, min_item_events: int) -> dict:
    """Ingest a directory holding only `events` (symlinked) and build the sequence tables."""
    with tempfile.TemporaryDirectory(prefix="rr_sessions_") as tmp:
        (Path(tmp) / events.name).symlink_to(events.resolve())
        return ensure_warehouse(Path(tmp), warehouse, min_user_events=min_user_events,
                                min_item_events=min_item_events)


def rank_metrics(ranks: np.ndarray) -> tuple[float, float]:
    from model.metrics import mrr_at_k, recall_at_k

    return recall_at_k(ranks, K), mrr_at_k(ranks, K)


def baseline_ranks(model, histories: np.ndarray, target: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Ranks of `target` under a baseline's scores, restricted to `valid` items (evaluation.py's way)."""
    from model.metrics import ranks_in_chunks

    return ranks_in_chunks(lambda a, b: np.where(valid[None, :], model.score(histories[a:b]), -np.inf), target)


def spread_rows(n: int, limit: int | None) -> np.ndarray:
    """All of range(n), or `limit` rows spread evenly over it (rows are in time order)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).astype(np.int64))


def temporal_protocol(model, params, tables, max_rows: int | None = None) -> dict[str, np.ndarray]:
    """Ranks of each test window's first step for the two-tower model and both baselines."""
    from model.baselines import ItemKNN, Popularity
    from model.data import eval_arrays
    from model.tasks import corpus_mask, retrieval_ranks

    ev = eval_arrays(tables, "test")
    rows = spread_rows(len(ev.next_item_idx), max_rows)
    hist_idx = tables.split("test").history.item[rows]
    target = ev.next_item_idx[rows]
    valid = corpus_mask(tables)
    out = {"has_history": (hist_idx > 0).any(axis=1)}
    with timer() as t:
        out["two_tower"] = retrieval_ranks(model, params, tables, "test", rows)
    log(f"temporal: two-tower ranks of {len(rows)} rows in {t():.1f}s")
    with timer() as t:
        out["popularity"] = baseline_ranks(Popularity.from_tables(tables), hist_idx, target, valid)
    log(f"temporal: popularity in {t():.1f}s")
    with timer() as t:
        knn = ItemKNN(tables.num_items).fit_tables(tables, "train")
    with timer() as t_score:
        out["item_knn"] = baseline_ranks(knn, hist_idx, target, valid)
    log(f"temporal: item-kNN fit {t():.1f}s, ranks {t_score():.1f}s")
    return out


def session_visitorids(path: Path, n_test: int) -> np.ndarray:
    """visitorid of the last n_test sessions in load_sessions' order (session start, visitorid)."""
    import duckdb

    rows = duckdb.sql(f"SELECT visitorid, min(timestamp) AS s FROM read_csv('{path}') "
                      "GROUP BY visitorid ORDER BY s, visitorid").fetchnumpy()
    return np.asarray(rows["visitorid"][len(rows["visitorid"]) - n_test:], np.int64)


def collapse_repeats(histories: np.ndarray, width: int) -> np.ndarray:
    """Left-padded [N, T] item rows -> [N, width] with consecutive repeats collapsed, left-padded."""
    h = np.asarray(histories)
    prev = np.concatenate([np.zeros((len(h), 1), h.dtype), h[:, :-1]], axis=1)
    keep = (h > 0) & (h != prev)
    out = np.zeros((len(h), width), h.dtype)
    # Position of each kept value counted from the row's end (0 = newest).
    from_end = np.cumsum(keep[:, ::-1], axis=1)[:, ::-1] - 1
    take = keep & (from_end < width)
    rows = np.broadcast_to(np.arange(len(h))[:, None], h.shape)[take]
    out[rows, width - 1 - from_end[take]] = h[take]
    return out


def sessions_protocol(model, params, tables, history_len: int, max_rows: int | None = None) -> dict:
    """Ranks of each test session's last item: baselines via evaluate_on_sessions' inputs, two-tower by hand."""
    from model.baselines import ItemKNN, Popularity, load_sessions
    from model.batch import History
    from model.metrics import rank_of_targets, ranks_in_chunks
    from model.tasks import corpus_vectors, dense_scores, item_corpus, user_vectors

    split = load_sessions(SESSIONS)
    rows = spread_rows(len(split.target), max_rows)
    test_history, target = split.test_history[rows], split.target[rows]
    visitorid = session_visitorids(SESSIONS, len(split.target))[rows]
    log(f"sessions-last: {len(split.train)} train / {len(rows)} of {len(split.target)} test sessions")
    ranks = {}
    # evaluate_on_sessions computes exactly these ranks (512-row chunks); kept to slice by target type.
    for name, make in (("popularity", lambda: Popularity.fit(split.train_items, split.num_items)),
                       ("item_knn", lambda: ItemKNN(split.num_items).fit(split.train))):
        with timer() as t:
            baseline = make()
            ranks[name] = np.concatenate([rank_of_targets(baseline.score(test_history[a:a + 512]), target[a:a + 512])
                                          for a in range(0, len(target), 512)])
        log(f"sessions-last: {name} fit + ranks in {t():.1f}s")
    # Two-tower: original ids straight from the file (the warehouse keeps them), no category known.
    with timer() as t:
        items = collapse_repeats(test_history, history_len).astype(np.int32)
        history = History(customer_id=visitorid.astype(np.int32), item_id=items, category_id=np.zeros_like(items),
                          root_id=np.zeros_like(items), action=np.where(items > 0, VIEW, 0).astype(np.int32))
        corpus_idx, corpus_items = item_corpus(tables)
        item_vecs = corpus_vectors(model, params, corpus_items)
        users = user_vectors(model, params, history)
        target_idx = tables.item_idx_of(target)
        ranks["two_tower"] = ranks_in_chunks(
            lambda a, b: dense_scores(users[a:b] @ item_vecs.T, corpus_idx, tables.num_items), target_idx)
    log(f"sessions-last: two-tower ranks in {t():.1f}s")
    return {**ranks, "repeat": target == test_history[:, -1], "out_of_corpus": int((target_idx == 0).sum()),
            "n_test": len(target), "n_test_all": len(split.target), "n_train": len(split.train)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="retrieval training steps (default: the profile's)")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--min-user-events", type=int, default=2)
    parser.add_argument("--min-item-events", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--reuse-checkpoint", action="store_true",
                        help="keep an existing checkpoint (resumes or returns at once; wall time then meaningless)")
    parser.add_argument("--max-rows", type=int, default=None,
                        help="evaluate on this many test rows per protocol, spread evenly (default: all)")
    parser.add_argument("--quick", action="store_true", help="40 training steps, 3,000 test rows (~1-2 minutes)")
    args = parser.parse_args()
    if not SESSIONS.exists():
        sys.exit(f"real_sessions: {SESSIONS} not found")
    steps = 40 if args.quick and args.steps is None else args.steps
    max_rows = 3_000 if args.quick and args.max_rows is None else args.max_rows

    from model.retrieval import make_retrieval_model
    from model.tasks import get_profile, load_tables, train_retrieval_model
    from model.train import load_best_params

    out = Path(args.out)
    warehouse = out / "warehouse_retailrocket_sessions"
    ckpt_dir = out / "checkpoints_retailrocket_sessions"
    built = build_warehouse(SESSIONS, warehouse, args.min_user_events, args.min_item_events)
    meta = built["meta"]
    prof = get_profile(args.profile)
    if not args.reuse_checkpoint:
        shutil.rmtree(ckpt_dir / "retrieval", ignore_errors=True)
    log(f"training retrieval ({args.profile}, {steps or prof.retrieval.steps} steps)")
    with timer() as t_train:
        summary = train_retrieval_model(warehouse, ckpt_dir, profile=args.profile, steps=steps, seed=args.seed)
    params, _ = load_best_params(ckpt_dir / "retrieval")
    model = make_retrieval_model(prof.model)
    tables = load_tables(warehouse, prof)
    with timer() as t_eval:
        temporal = temporal_protocol(model, params, tables, max_rows)
        sessions = sessions_protocol(model, params, tables, prof.model.history_len, max_rows)

    has_hist, repeat = temporal["has_history"], sessions["repeat"]
    print(f"Retail Rocket sessions: {meta['n_filtered_events']:,} filtered events, {meta['n_items']:,} items, "
          f"train/val/test windows {meta['n_train']:,}/{meta['n_val']:,}/{meta['n_test']:,}  {cpu_note()}"
          + ("  [--quick]" if args.quick else ""))
    print(f"two-tower: profile {args.profile}, {summary['steps']} steps, best step "
          f"{(summary['best'] or {}).get('step')}, val_recall@20 {(summary['best'] or {}).get('val_recall@20', float('nan')):.4f}")
    print(f"training wall time: {t_train():.1f}s (fit's own: {summary['seconds']}s, {summary['examples_per_s']:,.0f} "
          f"examples/s incl. compile, validation and checkpoints); evaluation {t_eval():.1f}s")
    print(f"temporal test: {len(has_hist):,} of {meta['n_test']:,} windows, {has_hist.mean():.1%} with a history.  "
          f"sessions-last: {sessions['n_test']:,} of {sessions['n_test_all']:,} test sessions "
          f"(fit on {sessions['n_train']:,}), "
          f"{repeat.mean():.1%} end on a repeat of the previous item, {sessions['out_of_corpus']} targets "
          f"outside the two-tower corpus (counted as misses)")
    print()
    rows = []
    for name in ("two_tower", "popularity", "item_knn"):
        t_all, t_hist, s_all = temporal[name], temporal[name][has_hist], sessions[name]
        rows.append([name, *rank_metrics(t_all), *rank_metrics(t_hist), *rank_metrics(s_all),
                     rank_metrics(s_all[~repeat])[0]])
    for name, recall, mrr in PUBLISHED:
        rows.append([name, None, None, None, None, recall, mrr, None])
    print(format_table(["model", "temporal R@20", "MRR@20", "temporal w/ hist R@20", "MRR@20",
                        "sessions-last R@20", "MRR@20", "non-repeat R@20"], rows))
    tt, knn = rank_metrics(sessions["two_tower"]), rank_metrics(sessions["item_knn"])
    print()
    print(f"two_tower_recall20={tt[0]:.4f} two_tower_mrr20={tt[1]:.4f} item_knn_recall20={knn[0]:.4f} "
          f"item_knn_mrr20={knn[1]:.4f} train_wall_s={t_train():.1f}")


if __name__ == "__main__":
    main()
