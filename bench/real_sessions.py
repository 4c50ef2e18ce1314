"""Benchmark: the product end to end on REAL Retail Rocket sessions, beside the strongest baselines.

Data: ../shared/data/retailrocket-sessions/events.csv.gz (relative to the repo; 686K genuine
views, one visitorid per 30-minute session, 126K sessions in time order; events only).
Protocol (the one of the published figures): sessions are ordered by their first event and the
last 10% are held out; every event of the other sessions and all but the last event of each
held-out session go into `events.csv`; the last event of each held-out session is the target.
The product runs as a user would run it, `recs run --data <that dir> --min-user-events 2` (a
subprocess, timed: `run_wall_s`), and is scored on `latest_recommendations` (top 20): a hit is
the target among the customer's published items.

Beside it, on the same held-out cases and from the same events.csv (each held-out session's
history = its events in events.csv, all in time order):
- popularity (the most frequent items), S-POP (the session's own items, most frequent first,
  then popular), item-kNN with a repeat boost (model.cooccurrence.ItemKNN), a VSTAN-style
  session kNN (model.session_knn.SessionKNN), each fitted on every session of events.csv;
- each model alone: the product's two-tower retrieval (its checkpoint, exact top 20 over the
  corpus) and the ranker over its candidates without business rules or fallback.
Published figures for reference (GRU4Rec official code, 24 min of CPU training): 0.68 / 0.37.

Ends with one line:
    product_recall20=<r> product_mrr20=<m> best_baseline_recall20=<r> best_baseline_mrr20=<m> run_wall_s=<s>
(best baseline = the best non-product row on each metric separately).

    .venv/bin/python bench/real_sessions.py            # the full run (about 15 minutes on 2 cores)
    .venv/bin/python bench/real_sessions.py --reuse    # score an existing run again (no recs run)
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_OUT, REPO, cpu_note, format_table, log, timer  # noqa: E402

SESSIONS = Path(os.path.relpath(REPO.parent / "shared" / "data" / "retailrocket-sessions" / "events.csv.gz"))
K = 20
HISTORY = 64
PUBLISHED = (("published GRU4Rec (24 min CPU)", 0.68, 0.37),)


def prepare(sessions: Path, out: Path, test_fraction: float = 0.1) -> dict:
    """Write out/data/events.csv (train sessions + held-out prefixes) and out/targets.parquet."""
    import duckdb

    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"""CREATE TABLE e AS SELECT *, min(timestamp) OVER (PARTITION BY visitorid) AS session_start,
        row_number() OVER (PARTITION BY visitorid ORDER BY timestamp DESC) AS from_end
        FROM read_csv('{sessions}')""")
    [(n,)] = con.execute("SELECT count(DISTINCT visitorid) FROM e").fetchall()
    n_test = round(n * test_fraction)
    con.execute(f"""CREATE TABLE held AS SELECT visitorid FROM (
        SELECT visitorid, row_number() OVER (ORDER BY min(session_start), visitorid) AS r FROM e GROUP BY 1)
        WHERE r > {n - n_test}""")
    con.execute(f"""COPY (SELECT timestamp, visitorid, event, itemid, transactionid FROM e
        WHERE NOT (visitorid IN (SELECT visitorid FROM held) AND from_end = 1) ORDER BY timestamp, visitorid)
        TO '{data / "events.csv"}' (HEADER)""")
    con.execute(f"""COPY (SELECT visitorid, itemid AS target FROM e
        WHERE visitorid IN (SELECT visitorid FROM held) AND from_end = 1 ORDER BY visitorid)
        TO '{out / "targets.parquet"}'""")
    return {"sessions": int(n), "held_out": int(n_test)}


def session_rows(events_csv: Path) -> dict:
    """Every session of events.csv as a left-padded item row (dense ids = the file's item ids)."""
    import duckdb

    from model.baselines import _left_pad

    rows = duckdb.sql(f"""SELECT visitorid, itemid, min(timestamp) OVER (PARTITION BY visitorid) AS s
        FROM read_csv('{events_csv}') ORDER BY s, visitorid, timestamp""").fetchnumpy()
    visitor, items = rows["visitorid"], rows["itemid"].astype(np.int32)
    starts = np.flatnonzero(np.r_[True, visitor[1:] != visitor[:-1]])
    lengths = np.diff(np.r_[starts, len(visitor)])
    return {"visitorid": visitor[starts], "rows": _left_pad(items, lengths, HISTORY),
            "num_items": int(items.max()), "items": items}


def baseline_lists(sessions: dict, query: np.ndarray) -> dict[str, np.ndarray]:
    """Top-20 lists (file item ids) of every baseline for the held-out histories."""
    from model.baselines import Popularity, SessionPopularity
    from model.cooccurrence import ItemKNN
    from model.session_knn import SessionKNN

    n_items = sessions["num_items"]
    out = {}
    pop = Popularity.fit(sessions["items"], n_items)
    with timer() as t:
        out["popularity"] = pop.topk(query, K)
        out["s_pop"] = np.argsort(-SessionPopularity(pop.counts).score(query), axis=1, kind="stable")[:, :K]
        out["item_knn"] = ItemKNN(n_items).fit(sessions["rows"]).topk(query, K)
        out["session_knn (VSTAN-style)"] = SessionKNN(n_items).fit(sessions["rows"]).topk(query, K)
    log(f"baselines in {t():.1f}s")
    return out


def product_lists(warehouse: Path, visitorids: np.ndarray) -> tuple[np.ndarray, dict]:
    """([n, 20] item ids of latest_recommendations for each visitor (0 = none), the run's
    recommendation_runs row: strategy and validation figures of the publishing guard)."""
    import duckdb

    con = duckdb.connect(str(warehouse / "recs.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT customer_id, rank, item_id FROM latest_recommendations WHERE rank <= ?",
                           [K]).fetchnumpy()
        run = con.execute("SELECT * FROM recommendation_runs ORDER BY published_at DESC LIMIT 1").fetchdf()
    finally:
        con.close()
    out = np.zeros((len(visitorids), K), np.int64)
    pos = np.searchsorted(visitorids, rows["customer_id"])
    ok = (pos < len(visitorids)) & (visitorids[np.minimum(pos, len(visitorids) - 1)] == rows["customer_id"])
    out[pos[ok], rows["rank"][ok] - 1] = rows["item_id"][ok]
    return out, run.iloc[0].to_dict()


def model_alone_lists(warehouse: Path, checkpoints: Path, visitorids: np.ndarray) -> dict[str, np.ndarray]:
    """Top-20 of the two-tower model alone and of the ranker over its candidates (no rules):
    the serving recommender nightly scoring builds (recs.scoring.load_scorer), rules off."""
    from model.data import serving_histories
    from recs.scoring import load_scorer

    scorer = load_scorer(warehouse, checkpoints, top_n=K, exclude_unavailable=False, exclude_bought=False)
    tables, recommender = scorer.tables, scorer.recommender
    chunks = list(serving_histories(tables, chunk_rows=1 << 18))
    visitor = np.concatenate([c.visitorid for c in chunks])
    pick = np.searchsorted(visitor, visitorids) if np.all(np.diff(visitor) > 0) else None
    order = np.argsort(visitor) if pick is None else None
    if pick is None:
        pick = order[np.searchsorted(visitor[order], visitorids)]
    history = type(chunks[0].history)(*(np.concatenate([getattr(c.history, f) for c in chunks])[pick]
                                        for f in chunks[0].history._fields))
    history_idx = np.concatenate([c.history_item_idx for c in chunks])[pick]
    # Retrieval's top K (K <= retrieve_k) over the whole corpus, as the retrieval source sees it.
    two_tower = tables.item_ids[recommender.retriever(history).item_idx[:, :K]]
    ranked = recommender.recommend(history, history_idx, history.action, top_n=K)
    return {"two_tower alone": two_tower, "ranker over its candidates": tables.item_ids[ranked.item_idx]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(DEFAULT_OUT / "real_sessions"))
    parser.add_argument("--reuse", action="store_true", help="score the existing run in --out (no recs run)")
    parser.add_argument("--profile", default="cpu")
    args = parser.parse_args()
    if not SESSIONS.exists():
        sys.exit(f"real_sessions: {SESSIONS} not found (run from the repo; the data lives in ../shared)")
    out = Path(args.out)
    warehouse, checkpoints = out / "warehouse", out / "checkpoints"
    run_wall = float("nan")
    if not args.reuse:
        shutil.rmtree(out, ignore_errors=True)
        log(f"held-out split: {prepare(SESSIONS, out)}")
        command = [sys.executable, "-m", "recs.cli", "run", "--data", str(out / "data"), "--warehouse",
                   str(warehouse), "--checkpoints", str(checkpoints), "--min-user-events", "2",
                   "--profile", args.profile]
        log("running: " + " ".join(command))
        started = time.perf_counter()
        subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        run_wall = time.perf_counter() - started
        (out / "run_wall_s.txt").write_text(f"{run_wall:.1f}\n")
    elif (out / "run_wall_s.txt").exists():
        run_wall = float((out / "run_wall_s.txt").read_text())

    import pyarrow.parquet as pq

    targets = pq.read_table(out / "targets.parquet").to_pydict()
    visitorids, target = np.asarray(targets["visitorid"], np.int64), np.asarray(targets["target"], np.int64)
    sessions = session_rows(out / "data" / "events.csv")
    pos = np.searchsorted(sessions["visitorid"], visitorids) if np.all(np.diff(sessions["visitorid"]) > 0) else None
    if pos is None:
        order = np.argsort(sessions["visitorid"])
        pos = order[np.searchsorted(sessions["visitorid"][order], visitorids)]
    query = sessions["rows"][pos]
    published, run = product_lists(warehouse, visitorids)
    lists = {"product (latest_recommendations)": published}
    lists.update(model_alone_lists(warehouse, checkpoints, visitorids))
    lists.update(baseline_lists(sessions, query))
    repeat = target == query[:, -1]

    from model.evaluation import list_ranks
    from model.metrics import mrr_at_k, recall_at_k

    rows, figures = [], {}
    for name, top in lists.items():
        ranks = list_ranks(np.asarray(top)[:, :K], target)
        figures[name] = (recall_at_k(ranks, K), mrr_at_k(ranks, K))
        rows.append([name, *figures[name], recall_at_k(ranks[~repeat], K)])
    for name, r, m in PUBLISHED:
        rows.append([name, r, m, None])
    print(f"Retail Rocket sessions, {len(target):,} held-out sessions (last event each), "
          f"{repeat.mean():.1%} repeat the previous event  {cpu_note()}")
    print(f"recs run --min-user-events 2: {run_wall:.0f} s wall")
    print(f"published strategy: {run.get('strategy')}; validation R@20/MRR@20 {run.get('val_recall20')} / "
          f"{run.get('val_mrr20')}; best baseline {run.get('baseline')} {run.get('baseline_val_recall20')} / "
          f"{run.get('baseline_val_mrr20')}; warning: {run.get('guard_warning')}")
    print()
    print(format_table(["system", "Recall@20", "MRR@20", "non-repeat Recall@20"], rows))
    product = figures["product (latest_recommendations)"]
    baselines = [v for k, v in figures.items() if k in ("popularity", "s_pop", "item_knn", "session_knn (VSTAN-style)")]
    best_r, best_m = max(v[0] for v in baselines), max(v[1] for v in baselines)
    print()
    print(f"product_recall20={product[0]:.4f} product_mrr20={product[1]:.4f} best_baseline_recall20={best_r:.4f} "
          f"best_baseline_mrr20={best_m:.4f} run_wall_s={run_wall:.1f}")


if __name__ == "__main__":
    main()
