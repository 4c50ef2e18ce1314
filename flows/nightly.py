"""Prefect flow `nightly`: tonight's lists from today's behaviour (the nightly deployment).

[ingest data_dir] -> rebuild the sequence tables with the previous build's settings -> score
every customer with the current models -> warn when the models are older than the data.

The shop's export in `data_dir` grows day by day (today's events appended to `events.csv`).
The ingest reloads the whole directory and publishes in one step (idempotent, duplicates
quarantined; under a second at Retail Rocket scale), so tonight's warehouse holds today's
events and nothing of yesterday's is lost. The models are NOT retrained here (the weekly
`retrain` deployment does that): the new events reach tonight's lists through the histories,
the co-occurrence and similar-session indexes and the popularity fallback, all rebuilt from the
new tables. When the serving models were saved more than `max_model_age_days` before this
ingest, the run says so in its log and its artifact.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows._common import publish_markdown
from flows.build_sequences import build_sequences
from flows.ingest import ingest
from flows.score_all import score_all

BUILD_SETTINGS = ("min_user_events", "min_item_events", "history_len", "max_candidates", "train_quantile",
                  "val_quantile", "collapse_repeats")


@task(cache_policy=NONE)
def previous_build_settings(warehouse_dir: str) -> dict:
    """The settings of the last sequence build (sequence_meta), so the nightly rebuild matches
    the tables the models were trained on; {} when there was no build."""
    from recs.publish import connect_with_retry
    from recs.warehouse import table_exists

    con = connect_with_retry(warehouse_dir, read_only=True)
    try:
        if not table_exists(con, "sequence_meta"):
            return {}
        cursor = con.execute(f"SELECT {', '.join(BUILD_SETTINGS)} FROM sequence_meta")
        row = cursor.fetchone()
    finally:
        con.close()
    return dict(zip(BUILD_SETTINGS, row)) if row else {}


def model_age_warning(checkpoint_dir: str, data_at: datetime, max_model_age_days: float) -> str | None:
    """Why the serving models are too old for data that landed at `data_at` (tonight), or None."""
    from model.meta import checkpoint_saved_at
    from model.tasks import serving_checkpoint

    old = []
    for model in ("retrieval", "ranking"):
        ckpt = serving_checkpoint(checkpoint_dir, model)
        saved = checkpoint_saved_at(ckpt)
        if saved is None:
            continue
        age_days = (data_at - saved).total_seconds() / 86_400
        if age_days > max_model_age_days:
            old.append(f"{ckpt.name} was saved {age_days:.1f} days before the data")
    if not old:
        return None
    return (f"models older than the data by more than {max_model_age_days:g} days ({'; '.join(old)}): "
            "tonight's lists use them anyway; run the weekly retrain (`recs run` / the retrain deployment)")


@flow(name="nightly")
def nightly(data_dir: str | None = None, warehouse_dir: str = "warehouse", checkpoint_dir: str = "checkpoints",
            top_n: int | None = None, max_model_age_days: float = 7.0, keep_model: bool | None = None,
            max_quarantine_share: float = 0.05, scoring: dict | None = None, shards: int | None = None,
            dask_address: str | None = None) -> dict:
    """Ingest (when data_dir is given), rebuild with the previous build's settings, score.

    scoring: more parameters of flow `score_all` (the config file's [score_all] section);
    top_n / keep_model / shards / dask_address, when given, override theirs (default: score_all's
    defaults; shards > 1 or a dask_address scores on Dask).
    Returns {ingest, build, scoring, model_age_warning}."""
    logger = get_run_logger()
    ingested = None
    if data_dir is not None:
        ingested = ingest(data_dir=str(data_dir), warehouse_dir=warehouse_dir,
                          max_quarantine_share=max_quarantine_share)
    settings = previous_build_settings(str(warehouse_dir))
    if not settings:
        raise ValueError(f"no sequence build in {Path(warehouse_dir)}: run `recs run` (or `recs build` and train) "
                         "before the nightly job")
    built = build_sequences(warehouse_dir=warehouse_dir, **settings)
    overrides = {k: v for k, v in (("top_n", top_n), ("keep_model", keep_model), ("shards", shards),
                                   ("dask_address", dask_address)) if v is not None}
    scoring = score_all(**{**(scoring or {}), **overrides, "warehouse_dir": warehouse_dir,
                           "checkpoint_dir": checkpoint_dir})
    warning = model_age_warning(str(checkpoint_dir), datetime.now(timezone.utc), max_model_age_days)
    lines = [f"# Nightly run: {scoring['n_customers']:,} customers scored, run `{scoring['run_id']}`",
             f"- ingest: {ingested['rows_loaded']:,} events loaded" if ingested else "- ingest: skipped (no data_dir)",
             f"- sequences rebuilt with {settings}"]
    if warning:
        logger.warning("nightly: %s", warning)
        lines.append(f"- **WARNING**: {warning}")
    publish_markdown("\n".join(lines), "nightly-run", "Nightly ingest, build and scoring")
    return {"ingest": ingested, "build": built, "scoring": scoring, "model_age_warning": warning}


if __name__ == "__main__":
    nightly()
