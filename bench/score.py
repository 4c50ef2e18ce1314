"""Benchmark: nightly scoring of EVERY customer at Retail Rocket scale, and the one-pass ranking speedup.

On `full` generated data (bench/out/data_full_0, generated when missing: ~2.76M events, ~1.4M
customers; ingested and built with the default parameters into bench/out/warehouse_full_0), both
models are trained briefly (profile cpu, --train-steps each, ranking initialised from retrieval as
`recs run` does; quality is irrelevant here, speed is) into bench/out/checkpoints_full_0, then:

1. scoring: recs.scoring.score_all_customers (load, retrieve 100 + recent, rank, rules, fallback,
   shards, atomic publish) is timed for ALL customers. With --max-customers N it instead scores
   a random sample of N customers through the same pieces (load_scorer, Scorer.score_chunk,
   write_shard, publish_run) and EXTRAPOLATES: fixed costs (load, reading every serving chunk,
   XLA compiles measured as cold pass minus warm pass) + per-customer scoring time x all
   customers + per-row publish time x all rows. The output says when figures are extrapolated.
   Goal: <= 20 minutes for everyone on 2 cores.
2. isolated pass: the ranking model's logits for B customers x 100 retrieved candidates in ONE
   pass ([B, 100], candidate isolation) vs 100 passes of [B, 1] through the same jitted function,
   histories at full width H (and, for context, at width 2), then over the REAL distribution of
   history lengths (a uniform sample of customers bucketed by length as serving batches them,
   each bucket weighted by its share). The logits must agree to 1e-4. Goal:
   isolated_pass_speedup >= 20 (at width H); isolated_pass_speedup_real_lengths is what a
   nightly run gets.

Ends with one line:
    customers_per_s=<x> full_minutes=<y> isolated_pass_speedup=<z> isolated_pass_speedup_real_lengths=<r> [extrapolated_from=<n>]

With --shards N (instead of 1. and 2.): sharded scoring on Dask (flow score_all, shards=N) of
every customer of the bench warehouse, on a LocalCluster of 1 worker process and then of 2
(--workers), one thread each, the cluster started before the timed run. Prints customers/s
end to end (plan, shards, checks, publish) beside the in-process path measured in the same
run, the per-worker scoring rate (customers / the shards' scoring seconds), and a PROJECTION
of the wall time for 10M customers on W workers from the 1-worker rate: per-worker fixed
load + 10M / (W x rate) + publish time per row x rows. Ends with one line:
    sharded_customers_per_s_1w=<a> sharded_customers_per_s_2w=<b> per_worker_rate=<r> projected_10M_minutes_32w=<m>
    .venv/bin/python bench/score.py --scale small --shards 4

Full run (the lead's; trains 2 x 30 steps, then scores ~1.4M customers):
    .venv/bin/python bench/score.py
Smoke test (~2 minutes the first time, which also generates and builds the data; 10 steps,
20,000 sampled customers, extrapolated):
    .venv/bin/python bench/score.py --quick
"""
from __future__ import annotations

import argparse
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_OUT, cpu_note, ensure_generated, ensure_warehouse, format_table, log, timer  # noqa: E402

NUM_CANDIDATES = 100
TOLERANCE = 1e-4


# ----------------------------------------------------------------------------------------------
# Training (brief)
# ----------------------------------------------------------------------------------------------

def train_briefly(warehouse: Path, ckpt_dir: Path, steps: int, seed: int, retrain: bool) -> dict[str, float]:
    """Both models, cpu profile, `steps` each (an existing complete checkpoint of the same data is reused)."""
    from model.ranking_task import train_ranking_model
    from model.tasks import train_retrieval_model

    if retrain:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    seconds = {}
    with timer() as t:
        train_retrieval_model(warehouse, ckpt_dir, profile="cpu", steps=steps, seed=seed, progress=False)
    seconds["retrieval"] = t()
    with timer() as t:
        train_ranking_model(warehouse, ckpt_dir, profile="cpu", steps=steps, seed=seed,
                            progress=False)
    seconds["ranking"] = t()
    return seconds


# ----------------------------------------------------------------------------------------------
# Scoring everyone (measured) or a sample (extrapolated)
# ----------------------------------------------------------------------------------------------

def score_everyone(warehouse: Path, ckpt_dir: Path) -> dict:
    """score_all_customers for every customer, as the nightly flow runs it."""
    from recs.scoring import score_all_customers

    with timer() as t:
        summary = score_all_customers(warehouse, ckpt_dir, progress=True)
    return {"n_total": summary["n_customers"], "seconds": t(), "n_rows": summary["n_rows"],
            "share_fallback": summary["share_fallback"], "extrapolated_from": None}


def _take(chunk, rows: np.ndarray):
    """Rows of a ServingChunk."""
    from model.batch import History

    return type(chunk)(chunk.customer_idx[rows], chunk.visitorid[rows],
                       History(*(x[rows] for x in chunk.history)), chunk.history_item_idx[rows])


def _concat(chunks: list):
    """One ServingChunk of several."""
    from model.batch import History

    first = chunks[0]
    return type(first)(np.concatenate([c.customer_idx for c in chunks]),
                       np.concatenate([c.visitorid for c in chunks]),
                       History(*(np.concatenate([c.history[i] for c in chunks]) for i in range(len(first.history)))),
                       np.concatenate([c.history_item_idx for c in chunks]))


def score_sample(warehouse: Path, ckpt_dir: Path, max_customers: int, chunk_rows: int = 65_536,
                 seed: int = 0) -> dict:
    """Score a uniform sample of customers with score_all_customers' pieces; extrapolate to everyone."""
    from model.data import serving_histories
    from recs.publish import new_run_id, publish_run, write_shard
    from recs.scoring import load_scorer

    with timer() as t_load:
        scorer = load_scorer(warehouse, ckpt_dir)
    n_total = int(scorer.tables.meta["n_serving"])
    frac = min(1.0, max_customers / n_total)
    rng = np.random.default_rng([seed, 11])
    parts = []
    with timer() as t_read:  # every chunk is read in a full run, so this is a fixed cost
        for chunk in serving_histories(scorer.tables, chunk_rows=chunk_rows):
            parts.append(_take(chunk, np.flatnonzero(rng.random(len(chunk.customer_idx)) < frac)))
    sample = _concat(parts)
    n = len(sample.customer_idx)
    # The sample is scored in chunks of chunk_rows as a full run would (same batch shapes).
    chunks = [_take(sample, np.arange(a, min(a + chunk_rows, n))) for a in range(0, n, chunk_rows)]
    run_id, generated_at = new_run_id(), datetime.now(timezone.utc).replace(tzinfo=None)
    with timer() as t_cold:  # includes one XLA compile per history-length bucket and batch shape
        for chunk in chunks:
            scorer.score_chunk(chunk, run_id, generated_at)
    n_fallback = n_rows = 0
    score_s = 0.0
    with timer() as t_warm:
        for shard, chunk in enumerate(chunks):
            with timer() as t_chunk:
                table, fallback = scorer.score_chunk(chunk, run_id, generated_at)
            score_s += t_chunk()
            write_shard(table, warehouse, run_id, shard)
            n_fallback += fallback
            n_rows += table.num_rows
    with timer() as t_publish:
        publish_run(warehouse, run_id, {"generated_at": generated_at, "model_version": scorer.model_version,
                                        "n_customers": n, "share_fallback": n_fallback / max(n, 1),
                                        "duration_s": t_warm(), "top_n": scorer.config.top_n})
    compile_s = max(t_cold() - score_s, 0.0)
    scale = n_total / max(n, 1)
    seconds = t_load() + t_read() + compile_s + t_warm() * scale + t_publish() * scale
    print(f"sample: {n:,} of {n_total:,} customers ({frac:.2%}); load {t_load():.1f}s, reading all serving "
          f"chunks {t_read():.1f}s, compiles ~{compile_s:.1f}s, scoring + shards {t_warm():.1f}s "
          f"({n / max(t_warm(), 1e-9):,.0f} customers/s warm), publish {t_publish():.1f}s for {n_rows:,} rows")
    print(f"EXTRAPOLATED to all {n_total:,} customers: {t_load():.1f} + {t_read():.1f} + {compile_s:.1f} "
          f"+ {t_warm():.1f} x {scale:.1f} + {t_publish():.1f} x {scale:.1f} = {seconds:.0f}s")
    return {"n_total": n_total, "seconds": seconds, "n_rows": int(n_rows * scale),
            "share_fallback": n_fallback / max(n, 1), "extrapolated_from": n}


# ----------------------------------------------------------------------------------------------
# One isolated pass vs one pass per candidate
# ----------------------------------------------------------------------------------------------

def isolated_pass(warehouse: Path, ckpt_dir: Path, batch_size: int, repeats: int, short_width: int = 2) -> list[dict]:
    """Time ranking logits of [B, 100] retrieved candidates in one pass vs 100 passes of [B, 1].

    At the full history width H of the trained profile first, then at `short_width`.
    """
    import jax
    import jax.numpy as jnp

    from model.batch import History, Items
    from model.data import SequenceTables, serving_histories
    from model.candidates import NUM_FEATURES
    from model.ranking import make_ranking_model
    from model.retrieval import make_retrieval_model
    from model.tasks import corpus_mask
    from recs.scoring import load_serving_models
    from recs.warehouse import sequences_dir

    profile, retrieval_params, ranking_params, _ = load_serving_models(ckpt_dir)
    tables = SequenceTables.load(sequences_dir(warehouse), splits=(), history_len=profile.model.history_len)
    retrieval, ranking = make_retrieval_model(profile.model), make_ranking_model(profile.ranker)
    corpus = np.flatnonzero(corpus_mask(tables)).astype(np.int32)
    corpus_items = Items(tables.item_ids[corpus], tables.item_category[corpus], tables.item_root[corpus])
    corpus_vecs = jax.jit(retrieval.item_vectors)(retrieval_params, corpus_items)
    # The customers with the longest histories (a full-width serving batch).
    chunk = next(serving_histories(tables, chunk_rows=200_000))
    lengths = (chunk.history_item_idx > 0).sum(axis=1)
    rows = np.argsort(-lengths, kind="stable")[:batch_size]
    full = History(*(x[rows] for x in chunk.history))
    # As serving does: candidate tokens depend on the item alone and are computed once per item
    # (Recommender.candidate_token_table), outside the per-customer pass being timed.
    logits_fn = jax.jit(ranking.logits_with_tokens)
    token_fn = jax.jit(ranking.candidate_tokens)

    def time_pass(history: History) -> dict:
        """One [B, 100] pass vs 100 [B, 1] passes for these histories (ms per batch)."""
        users = jax.jit(retrieval.serving_user_vector)(retrieval_params, history)
        _, top = jax.lax.top_k(users @ corpus_vecs.T, NUM_CANDIDATES)
        idx = corpus[np.asarray(top)]
        cands = Items(tables.item_ids[idx], tables.item_category[idx], tables.item_root[idx])
        tokens = token_fn(ranking_params, cands)
        # Candidate features (model.candidates) do not change the cost of the pass: zeros here.
        feats = jnp.zeros(idx.shape + (NUM_FEATURES,), jnp.float32)
        singles = [(Items(*(x[:, j:j + 1] for x in cands)), feats[:, j:j + 1], tokens[:, j:j + 1])
                   for j in range(NUM_CANDIDATES)]
        one = logits_fn(ranking_params, history, cands, feats, tokens).block_until_ready()  # compile [B, 100]
        logits_fn(ranking_params, history, *singles[0]).block_until_ready()  # compile [B, 1]
        with timer() as t_one:
            for _ in range(repeats):
                one = logits_fn(ranking_params, history, cands, feats, tokens)
            one.block_until_ready()
        with timer() as t_many:
            for _ in range(repeats):
                many = [logits_fn(ranking_params, history, *s) for s in singles]
            jax.block_until_ready(many)
        diff = float(jnp.max(jnp.abs(one - jnp.concatenate(many, axis=1))))
        return {"one_ms": 1e3 * t_one() / repeats, "many_ms": 1e3 * t_many() / repeats, "max_abs_diff": diff,
                "real_steps": float((history.item_id > 0).sum(axis=1).mean())}

    results = []
    for width in (profile.model.history_len, short_width):
        history = History(full.customer_id, *(x[:, -width:] for x in full[1:]))
        results.append({"width": str(width), **time_pass(history)})
    # The real distribution of history lengths: a uniform sample of customers with a history,
    # bucketed by length as serving batches them (model.data.length_buckets); each bucket's
    # per-customer time is weighted by its share of the sample.
    from model.data import length_buckets

    rng = np.random.default_rng(0)
    with_history = np.flatnonzero(lengths > 0)
    sample = rng.choice(with_history, min(len(with_history), 4 * batch_size), replace=False)
    widths = length_buckets(lengths[sample], profile.model.history_len)
    bucket = widths[np.searchsorted(widths, np.minimum(lengths[sample], widths[-1]))]
    one_mix = many_mix = 0.0
    worst = 0.0
    for w in widths:
        members = sample[bucket == w]
        if not len(members):
            continue
        rows_b = np.resize(members, batch_size)  # a full serving batch of this bucket
        history = History(*(x[rows_b] for x in chunk.history))
        history = History(history.customer_id, *(x[:, -int(w):] for x in history[1:]))
        timed = time_pass(history)
        share = len(members) / len(sample)
        one_mix += share * timed["one_ms"]
        many_mix += share * timed["many_ms"]
        worst = max(worst, timed["max_abs_diff"])
    results.append({"width": "real mix", "one_ms": one_mix, "many_ms": many_mix, "max_abs_diff": worst,
                    "real_steps": float(lengths[sample].mean())})
    return results


def sharded_runs(warehouse: Path, ckpt_dir: Path, shards: int, workers: list[int]) -> dict:
    """score_all with `shards` shards on a LocalCluster of each worker count, and in-process."""
    import os

    from distributed import LocalCluster

    from flows.score_all import score_all

    runs = {}
    with timer() as t:
        single = score_all(warehouse_dir=str(warehouse), checkpoint_dir=str(ckpt_dir))
    runs["in-process"] = {"seconds": t(), "summary": single}
    for w in workers:
        with timer() as t_start:
            cluster = LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=None)
        try:
            with timer() as t:
                summary = score_all(warehouse_dir=str(warehouse), checkpoint_dir=str(ckpt_dir), shards=shards,
                                    dask_address=cluster.scheduler_address)
            runs[f"{w} worker{'s' if w > 1 else ''}"] = {"seconds": t(), "summary": summary, "workers": w,
                                                          "cluster_start_s": t_start()}
        finally:
            cluster.close()
    log(f"cpus={os.cpu_count()}: every worker process shares this machine's cores")
    return runs


def report_sharded(runs: dict, target: int = 10_000_000,
                   worker_counts=(1, 2, 4, 8, 16, 32)) -> tuple[str, float, dict[int, float]]:
    """(text: the measured table and the projection for `target` customers, the per-worker rate,
    {W: projected minutes})."""
    rows = []
    for name, run in runs.items():
        s = run["summary"]
        stats = s.get("shard_stats") or []
        score_s = sum(x["score_s"] for x in stats)
        rows.append([name, s["n_customers"], run["seconds"], s["n_customers"] / run["seconds"],
                     (s["n_customers"] / score_s) if score_s else None,
                     max((x["load_s"] for x in stats), default=None), s.get("publish_s"),
                     run.get("cluster_start_s")])
    lines = [format_table(["run", "customers", "wall s", "customers/s", "per-worker scoring rate /s",
                           "max shard load s", "publish s", "cluster start s"], rows)]
    one = next(r for r in runs.values() if r.get("workers") == 1)
    s1 = one["summary"]
    stats = s1["shard_stats"]
    rate = s1["n_customers"] / sum(x["score_s"] for x in stats)
    load = max(x["load_s"] for x in stats)
    rows_per_customer = s1["n_rows"] / max(s1["n_customers"], 1)
    publish_per_row = s1["publish_s"] / max(s1["n_rows"], 1)
    publish = publish_per_row * rows_per_customer * target
    lines.append(f"\nPROJECTION (not measured) for {target:,} customers, from the 1-worker run: per-worker rate "
                 f"{rate:,.0f} customers/s, shard load {load:.1f} s (at this data size; grows with the tables), "
                 f"publish {publish_per_row * 1e6:.2f} s per million rows x {rows_per_customer:.0f} rows per customer "
                 f"= {publish:,.0f} s (one DuckDB writer: does not shrink with workers). Each worker like one "
                 f"process of this machine, no contention between workers:")
    proj = [[w, (load + target / (w * rate) + publish) / 60, (load + target / (w * rate)) / 60] for w in worker_counts]
    lines.append(format_table(["workers W", "projected wall min", "of which scoring min"], proj))
    return "\n".join(lines), rate, {w: m for w, m, _ in proj}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-customers", type=int, default=None,
                        help="score a random sample of this many customers and extrapolate (default: everyone)")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="steps per model (default 30, --quick 10; quality is irrelevant here)")
    parser.add_argument("--retrain", action="store_true", help="discard existing bench checkpoints first")
    parser.add_argument("--batch-size", type=int, default=256, help="customers per isolated-pass batch (serving's)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats of each isolated-pass variant (default 5, --quick 2)")
    parser.add_argument("--skip-scoring", action="store_true", help="only the isolated-pass measurement")
    parser.add_argument("--scale", default="full", choices=["tiny", "small", "full"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--quick", action="store_true", help="10 steps, 20,000 sampled customers, 2 repeats")
    parser.add_argument("--shards", type=int, default=None,
                        help="measure sharded scoring on Dask with this many shards (1 vs 2 workers) and project "
                             "to 10M customers, instead of the in-process figures and the isolated pass")
    parser.add_argument("--workers", default="1,2", help="with --shards: LocalCluster sizes to measure")
    args = parser.parse_args()
    if args.train_steps is None:
        args.train_steps = 10 if args.quick else 30
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.quick and args.max_customers is None:
        args.max_customers = 20_000

    out = Path(args.out)
    data_dir = ensure_generated(out, args.scale, args.seed)
    warehouse = out / f"warehouse_{args.scale}_{args.seed}"
    ckpt_dir = out / f"checkpoints_{args.scale}_{args.seed}"
    meta = ensure_warehouse(data_dir, warehouse)["meta"]
    print(f"data: {data_dir.name}  customers {meta['n_serving']:,}  items {meta['n_items']:,}  train windows "
          f"{meta['n_train']:,}  {cpu_note()}" + ("  [--quick]" if args.quick else ""))
    log(f"training both models ({args.train_steps} steps each, reused when already trained)")
    train_s = train_briefly(warehouse, ckpt_dir, args.train_steps, args.seed, args.retrain)
    print(f"training: retrieval {train_s['retrieval']:.1f}s, ranking {train_s['ranking']:.1f}s "
          f"(cpu profile, {args.train_steps} steps; near zero = reused checkpoint)")

    if args.shards:
        log(f"sharded scoring: {args.shards} shards on {args.workers} worker(s), and in-process")
        runs = sharded_runs(warehouse, ckpt_dir, args.shards, [int(w) for w in args.workers.split(",")])
        text, rate, projected = report_sharded(runs)
        print(text)
        measured = {r.get("workers"): r["summary"]["n_customers"] / r["seconds"] for r in runs.values()}
        print("\n" + " ".join(f"sharded_customers_per_s_{w}w={v:.0f}" for w, v in measured.items() if w)
              + f" in_process_customers_per_s={measured[None]:.0f} per_worker_rate={rate:.0f} "
              f"projected_10M_minutes_32w={projected[32]:.1f} (projection)")
        return

    scored = None
    if not args.skip_scoring:
        log("scoring" + (f" a sample of {args.max_customers:,} customers" if args.max_customers else " everyone"))
        scored = (score_sample(warehouse, ckpt_dir, args.max_customers, seed=args.seed) if args.max_customers
                  else score_everyone(warehouse, ckpt_dir))
        minutes = scored["seconds"] / 60
        what = "extrapolated" if scored["extrapolated_from"] else "measured"
        print(f"scoring all {scored['n_total']:,} customers ({what}): {minutes:.1f} min, "
              f"{scored['n_total'] / scored['seconds']:,.0f} customers/s, {scored['n_rows']:,} rows, "
              f"{scored['share_fallback']:.1%} on the popularity fallback  (goal <= 20 min)")

    log("isolated pass vs one pass per candidate")
    iso = isolated_pass(warehouse, ckpt_dir, args.batch_size, args.repeats)
    print(f"\nranking {NUM_CANDIDATES} candidates for {args.batch_size} customers ({args.repeats} repeats):")
    print(format_table(["history width", "mean real steps", "1 pass [B,100] ms", "100 passes [B,1] ms", "speedup",
                        "max |diff|"],
                       [[r["width"], r["real_steps"], r["one_ms"], r["many_ms"], r["many_ms"] / r["one_ms"],
                         f"{r['max_abs_diff']:.1e}"] for r in iso]))
    bad = [r for r in iso if not r["max_abs_diff"] <= TOLERANCE]
    if bad:
        print(f"LOGITS DISAGREE beyond {TOLERANCE}: widths {[r['width'] for r in bad]} (candidate isolation broken)")
    speedup = iso[0]["many_ms"] / iso[0]["one_ms"]
    real_mix = iso[-1]["many_ms"] / iso[-1]["one_ms"]
    print()
    line = f"isolated_pass_speedup={speedup:.1f} isolated_pass_speedup_real_lengths={real_mix:.1f}"
    if scored is not None:
        line = (f"customers_per_s={scored['n_total'] / scored['seconds']:.0f} "
                f"full_minutes={scored['seconds'] / 60:.2f} " + line)
        if scored["extrapolated_from"]:
            line += f" extrapolated_from={scored['extrapolated_from']}"
    print(line)
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
