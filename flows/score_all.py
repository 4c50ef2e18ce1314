"""Prefect flow `score_all`: nightly top-N recommendations for every customer.

Reads the warehouse read-only, scores in batches (jit-compiled, bucketed by history length),
writes parquet shards and publishes the run in one short transaction: readers of
`latest_recommendations` see the previous run until the new one is complete.

With shards > 1 (or a dask_address) the customers are split into that many shards
(recs/sharding.py), each scored by a `score_shard` task on a `prefect_dask.DaskTaskRunner`: a
LocalCluster of dask_workers processes, or the running cluster at dask_address. The tasks get
paths and ids only; each writes its parquet parts; a failed or killed shard is retried alone
(retries on the task; Dask reruns a task whose worker died); `publish_scored_shards` checks
every shard and publishes once. A shard that failed for good publishes nothing.
"""
from __future__ import annotations

import os

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows._common import is_transient, publish_markdown
from model.candidates import CandidateConfig


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=is_transient, cache_policy=NONE)
def score_and_publish(warehouse_dir: str, checkpoint_dir: str, top_n: int, action_weights: list[float],
                      retrieve_k: int, recent_k: int, exclude_unavailable: bool, exclude_bought: bool | None,
                      trending_days: float, keep_runs: int, cooc_k: int = CandidateConfig.cooc_k,
                      session_k: int = CandidateConfig.session_k,
                      keep_model: bool = False) -> dict:
    """Score every customer and publish the run atomically (a retry starts a fresh run id)."""
    from recs.scoring import score_all_customers

    return score_all_customers(warehouse_dir, checkpoint_dir, top_n=top_n, action_weights=tuple(action_weights),
                               retrieve_k=retrieve_k, recent_k=recent_k, cooc_k=cooc_k, session_k=session_k,
                               exclude_unavailable=exclude_unavailable, exclude_bought=exclude_bought,
                               trending_days=trending_days, keep_runs=keep_runs, keep_model=keep_model)


@task(cache_policy=NONE)
def plan_scoring_run(warehouse_dir: str, keep_model: bool) -> dict:
    """Run id, time, the guard's decision and the build every shard scores (recs.sharding.plan_run)."""
    from recs.sharding import plan_run

    return plan_run(warehouse_dir, keep_model=keep_model)


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=is_transient, cache_policy=NONE)
def score_shard(warehouse_dir: str, checkpoint_dir: str, run_id: str, shard: int, shards: int, n_customers: int,
                sequences_version: str, generated_at: str, strategy: str, scorer_params: dict) -> dict:
    """One shard's customers into parquet parts and its completion marker (on a Dask worker)."""
    from recs.sharding import score_shard as score

    return score(warehouse_dir, checkpoint_dir, run_id=run_id, shard=shard, shards=shards, n_customers=n_customers,
                 sequences_version=sequences_version, generated_at=generated_at, strategy=strategy, **scorer_params)


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=is_transient, cache_policy=NONE)
def publish_scored_shards(warehouse_dir: str, plan: dict, shards: int, top_n: int, keep_runs: int) -> dict:
    """Check every shard is complete and consistent, then publish the run atomically."""
    from recs.sharding import publish_shards

    return publish_shards(warehouse_dir, plan, shards, top_n, keep_runs=keep_runs)


@flow(name="score_shards")
def score_shards(warehouse_dir: str, checkpoint_dir: str, shards: int, scorer_params: dict, keep_runs: int = 3,
                 keep_model: bool = False) -> dict:
    """The sharded run; score_all calls it with a DaskTaskRunner attached (`dask_task_runner`)."""
    from recs.sharding import ShardsFailed, discard_run

    logger = get_run_logger()
    plan = plan_scoring_run(warehouse_dir, keep_model)
    run_id = plan["run_id"]
    futures = [score_shard.submit(warehouse_dir, checkpoint_dir, run_id, s, shards, plan["n_customers"],
                                  plan["sequences_version"], plan["generated_at"], plan["decision"]["strategy"],
                                  scorer_params) for s in range(shards)]
    failed = {}
    for s, future in enumerate(futures):
        try:
            done = future.result()
            logger.info("shard %d/%d: %d customers, %d rows (load %.1f s, score %.1f s, pid %d)", s + 1, shards,
                        done["n_customers"], done["n_rows"], done["load_s"], done["score_s"], done["pid"])
        except Exception as exc:  # noqa: BLE001 - a task's error, or the cluster's (KilledWorker)
            failed[s] = f"{type(exc).__name__}: {exc}"
    if failed:
        discard_run(warehouse_dir, run_id)
        raise ShardsFailed(f"run {run_id} published nothing (the previous run stays latest): "
                           + "; ".join(f"shard {s} of {shards} failed: {why}" for s, why in failed.items()))
    return publish_scored_shards(warehouse_dir, plan, shards, scorer_params["top_n"], keep_runs)


def dask_task_runner(shards: int, dask_address: str | None = None, dask_workers: int | None = None):
    """The cluster the shards run on: the scheduler at dask_address, else a LocalCluster of
    dask_workers worker processes (default: one per shard, at most one per core), one thread
    each (JAX/XLA already uses the cores of its process)."""
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    workers = dask_workers or max(1, min(shards, os.cpu_count() or 1))
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None})


def worker_api_url() -> str | None:
    """The Prefect API the Dask workers report their task runs to: PREFECT_API_URL, else this
    process's temporary server (workers would otherwise each start their own)."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return PREFECT_API_URL.value()
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    return server.api_url if server.running else None


def score_on_dask(warehouse_dir: str, checkpoint_dir: str, shards: int, dask_address: str | None,
                  dask_workers: int | None, scorer_params: dict, keep_runs: int, keep_model: bool) -> dict:
    """score_shards with the Dask task runner, its workers pointed at this run's Prefect API."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = worker_api_url()
    if dask_address and url and ("127.0.0.1" in url or "localhost" in url):
        get_run_logger().warning("the Prefect API is %s: Dask workers on other machines cannot reach it; start a "
                                 "server (`prefect server start --host 0.0.0.0`) and set PREFECT_API_URL", url)
    runner = dask_task_runner(shards, dask_address, dask_workers)
    flow_fn = score_shards.with_options(task_runner=runner)
    updates = {PREFECT_API_URL: url} if url else {}
    with temporary_settings(updates=updates):
        return flow_fn(warehouse_dir, checkpoint_dir, shards, scorer_params, keep_runs=keep_runs,
                       keep_model=keep_model)


def guard_lines(summary: dict) -> list[str]:
    """The publishing guard's part of the summary: strategy, validation figures, warning."""
    def fmt(x):
        return "n/a" if x is None else f"{x:.4f}"

    lines = [f"- published strategy: `{summary.get('strategy', 'model')}`; validation Recall@20 / MRR@20 "
             f"{fmt(summary.get('val_recall20'))} / {fmt(summary.get('val_mrr20'))}, best baseline "
             f"`{summary.get('baseline')}` {fmt(summary.get('baseline_val_recall20'))} / "
             f"{fmt(summary.get('baseline_val_mrr20'))}"]
    if summary.get("guard_warning"):
        lines.append(f"- **WARNING**: {summary['guard_warning']}")
    return lines


def summary_markdown(summary: dict) -> str:
    return "\n".join([
        f"# Scoring run `{summary['run_id']}`",
        *guard_lines(summary),
        f"- customers scored: {summary['n_customers']:,} ({summary['customers_per_s']:,} / s)",
        f"- share on popularity fallback: {summary['share_fallback']:.2%}",
        f"- rows: {summary['n_rows']:,}, top-N {summary['top_n']}",
        f"- duration: {summary['duration_s']} s, model `{summary['model_version']}`"
        + (f", {summary['shards']} shards on Dask" if summary.get("shards") else ""),
        "", "```sql", "SELECT * FROM latest_recommendations WHERE customer_id = <visitorid> ORDER BY rank;", "```"])


@flow(name="score_all")
def score_all(warehouse_dir: str = "warehouse", checkpoint_dir: str = "checkpoints", top_n: int = 20,
              action_weights: list[float] = [1.0, 0.5, 1.0], retrieve_k: int = CandidateConfig.retrieve_k,  # noqa: B006
              recent_k: int = CandidateConfig.recent_k,
              exclude_unavailable: bool = True, exclude_bought: bool | None = None, trending_days: float = 7.0,
              keep_runs: int = 3, cooc_k: int = CandidateConfig.cooc_k, session_k: int = CandidateConfig.session_k,
              keep_model: bool = False, shards: int = 1, dask_address: str | None = None,
              dask_workers: int | None = None) -> dict:
    """Top-N for every customer into `recommendations` / `latest_recommendations`.

    keep_model: publish the model's lists even when a baseline beats it on validation (the run
    still records the warning); by default the better strategy is published (recs/guard.py).
    shards: score the customers in this many shards on Dask (1 without dask_address: in this
    process); dask_address: a running Dask scheduler (tcp://host:8786), else a LocalCluster of
    dask_workers processes (default min(shards, cores))."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    if shards > 1 or dask_address:
        scorer_params = {"top_n": top_n, "action_weights": list(action_weights), "retrieve_k": retrieve_k,
                         "recent_k": recent_k, "cooc_k": cooc_k, "session_k": session_k,
                         "exclude_unavailable": exclude_unavailable, "exclude_bought": exclude_bought,
                         "trending_days": trending_days}
        summary = score_on_dask(str(warehouse_dir), str(checkpoint_dir), shards, dask_address, dask_workers,
                                scorer_params, keep_runs, keep_model)
    else:
        summary = score_and_publish(str(warehouse_dir), str(checkpoint_dir), top_n, list(action_weights), retrieve_k,
                                    recent_k, exclude_unavailable, exclude_bought, trending_days, keep_runs,
                                    cooc_k, session_k, keep_model)
    if summary.get("guard_warning"):
        get_run_logger().warning("publishing guard: %s", summary["guard_warning"])
    get_run_logger().info("scored %d customers in %.1f s (%.1f%% fallback), run %s", summary["n_customers"],
                          summary["duration_s"], 100 * summary["share_fallback"], summary["run_id"])
    publish_markdown(summary_markdown(summary), "scoring-run", "Nightly scoring summary")
    return summary


if __name__ == "__main__":
    score_all()
