"""Prefect flow `recs_run`: the whole job, end to end, as one parent flow.

Without `data_dir` it first writes the embedded default (`recs generate --scale small`), then
runs the `retrain` flow (flows/retrain.py) as a subflow: ingest -> build sequences -> train
retrieval -> train ranking (from retrieval's tables) -> evaluate on the test split -> refit both
on all data (same settings, the selected number of steps) -> score every customer, then the
`compare` flow against the built-in item-kNN incumbent (flows/compare.py). Every stage is
idempotent, so a re-run resumes or repeats cleanly. Prints where everything is, the evaluation
table, the comparison table and a query to paste.
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.retrain import retrain, selected_steps  # noqa: F401 - selected_steps: re-exported

DEFAULT_DATA = Path("data") / "generated-small-seed0"


def report_text(paths: dict, evaluation_markdown: str, scoring: dict, comparison: dict | None = None) -> str:
    """What `recs run` prints at the end: where things are, the evaluation, a query to paste."""
    from flows.score_all import guard_lines

    db = paths["warehouse"] / "recs.duckdb"
    guard = "\n".join(guard_lines(scoring))
    compared = "" if comparison is None else (
        f"\nComparison with the built-in incumbent {comparison['incumbent']} (comparison_metrics; "
        f"`recs compare --incumbent PATH` loads a shop's lists):\n{comparison['markdown']}\n")
    return f"""
== recs run: done ==
data:        {paths['data']}
warehouse:   {db}  (tables: events, quarantine_events, items, recommendations, eval_metrics, ...)
sequences:   {paths['warehouse'] / 'sequences'}
checkpoints: {paths['checkpoints']}  (retrieval/, ranking/ selected on validation; *_serving/ refit for scoring)

Evaluation on the test split (eval_metrics):
{evaluation_markdown}

Scoring run {scoring['run_id']}: {scoring['n_customers']:,} customers, {scoring['share_fallback']:.1%} on the popularity fallback, {scoring['duration_s']} s.
{guard}
{compared}
Query it:
  .venv/bin/python -c "import duckdb; print(duckdb.connect('{db}', read_only=True).sql('SELECT customer_id, rank, item_id, round(score, 3) AS score, source FROM latest_recommendations WHERE customer_id = (SELECT min(customer_id) FROM latest_recommendations) ORDER BY rank'))"
  (with the DuckDB CLI: duckdb -readonly {db} "SELECT customer_id, rank, item_id, round(score, 3) AS score, source FROM latest_recommendations WHERE customer_id = (SELECT min(customer_id) FROM latest_recommendations) ORDER BY rank")
"""


@flow(name="recs_run")
def run(data_dir: str | None = None, warehouse_dir: str = "warehouse", checkpoint_dir: str = "checkpoints",
        profile: str = "cpu", min_user_events: int = 10, min_item_events: int = 1, top_n: int = 20, seed: int = 0,
        refit: bool = True, default_scale: str = "small", keep_model: bool = False,
        max_quarantine_share: float | None = None, steps: int | None = None, shards: int = 1,
        dask_address: str | None = None, compare_with: str | None = "item_knn") -> dict:
    """The whole pipeline; returns each stage's summary (max_quarantine_share: the ingest's
    limit, None = flow `ingest`'s default; steps: both models' train steps, None = the profile's;
    shards / dask_address: score in that many shards on Dask, see flow `score_all`;
    compare_with: the incumbent the published lists are compared with at the end, flow `compare`
    (a built-in baseline or a lists file; None or "none": no comparison))."""
    logger = get_run_logger()
    if data_dir is None:
        from recs.generate import generate

        data_dir = str(DEFAULT_DATA if default_scale == "small" else Path("data") / f"generated-{default_scale}-seed{seed}")
        logger.info("no --data: generating the embedded default (%s) into %s", default_scale, data_dir)
        generate(Path(data_dir), scale=default_scale, seed=seed)
    stages = retrain(data_dir=data_dir, warehouse_dir=warehouse_dir, checkpoint_dir=checkpoint_dir, profile=profile,
                     min_user_events=min_user_events, min_item_events=min_item_events, top_n=top_n, seed=seed,
                     refit=refit, keep_model=keep_model, max_quarantine_share=max_quarantine_share, steps=steps,
                     shards=shards, dask_address=dask_address)
    comparison = None
    if compare_with and compare_with.lower() != "none":
        from flows.compare import compare

        comparison = compare(incumbent=compare_with, warehouse_dir=warehouse_dir, checkpoint_dir=checkpoint_dir,
                             seed=seed, top_n=top_n)
    paths = {"data": Path(data_dir), "warehouse": Path(warehouse_dir), "checkpoints": Path(checkpoint_dir)}
    text = report_text(paths, stages["evaluation"]["markdown"], stages["scoring"], comparison)
    print(text)
    return {**stages, "comparison": comparison, "report": text}


if __name__ == "__main__":
    run()
