"""Prefect flow `score_all`: nightly top-N recommendations for every customer.

Reads the warehouse read-only, scores in batches (jit-compiled, bucketed by history length),
writes parquet shards and publishes the run in one short transaction: readers of
`latest_recommendations` see the previous run until the new one is complete.
"""
from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows._common import is_transient, publish_markdown
from model.candidates import CandidateConfig


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=is_transient, cache_policy=NONE)
def score_and_publish(warehouse_dir: str, checkpoint_dir: str, top_n: int, action_weights: list[float],
                      retrieve_k: int, recent_k: int, exclude_unavailable: bool, exclude_bought: bool,
                      trending_days: float, keep_runs: int, cooc_k: int = CandidateConfig.cooc_k,
                      session_k: int = CandidateConfig.session_k,
                      keep_model: bool = False) -> dict:
    """Score every customer and publish the run atomically (a retry starts a fresh run id)."""
    from recs.scoring import score_all_customers

    return score_all_customers(warehouse_dir, checkpoint_dir, top_n=top_n, action_weights=tuple(action_weights),
                               retrieve_k=retrieve_k, recent_k=recent_k, cooc_k=cooc_k, session_k=session_k,
                               exclude_unavailable=exclude_unavailable, exclude_bought=exclude_bought,
                               trending_days=trending_days, keep_runs=keep_runs, keep_model=keep_model)


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
        f"- duration: {summary['duration_s']} s, model `{summary['model_version']}`",
        "", "```sql", "SELECT * FROM latest_recommendations WHERE customer_id = <visitorid> ORDER BY rank;", "```"])


@flow(name="score_all")
def score_all(warehouse_dir: str = "warehouse", checkpoint_dir: str = "checkpoints", top_n: int = 20,
              action_weights: list[float] = [1.0, 0.5, 1.0], retrieve_k: int = CandidateConfig.retrieve_k,  # noqa: B006
              recent_k: int = CandidateConfig.recent_k,
              exclude_unavailable: bool = True, exclude_bought: bool = True, trending_days: float = 7.0,
              keep_runs: int = 3, cooc_k: int = CandidateConfig.cooc_k, session_k: int = CandidateConfig.session_k,
              keep_model: bool = False) -> dict:
    """Top-N for every customer into `recommendations` / `latest_recommendations`.

    keep_model: publish the model's lists even when a baseline beats it on validation (the run
    still records the warning); by default the better strategy is published (recs/guard.py)."""
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
