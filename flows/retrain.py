"""Prefect flow `retrain`: rebuild, retrain, evaluate, refit and rescore (the weekly job).

[ingest data_dir, if given] -> build sequences -> train retrieval (train period) -> train the
ranker on the validation period's candidates (stacked) -> evaluate on val and test -> refit
retrieval on all data for the number of steps validation selected -> score every customer
(the publishing guard picks the strategy from the validation figures). Each stage is its own flow (a subflow here),
so the Prefect UI shows where time went and a failed stage can be re-run alone. `recs_run`
(flows/run.py) is this flow after generating the default data.
"""
from __future__ import annotations

from prefect import flow, get_run_logger

from flows.build_sequences import build_sequences
from flows.evaluate import evaluate
from flows.ingest import ingest
from flows.score_all import score_all
from flows.train_ranking import train_ranking
from flows.train_retrieval import train_retrieval


def selected_steps(summary: dict) -> int:
    """The step the validation selected (the refit trains that long); all steps if none was selected."""
    best = summary.get("best") or {}
    return int(best.get("step") or summary["steps"])


@flow(name="retrain")
def retrain(data_dir: str | None = None, warehouse_dir: str = "warehouse", checkpoint_dir: str = "checkpoints",
            profile: str = "cpu", min_user_events: int = 10, min_item_events: int = 1, top_n: int = 20,
            seed: int = 0, refit: bool = True, steps: int | None = None, keep_model: bool = False,
            max_quarantine_share: float | None = None, shards: int = 1, dask_address: str | None = None) -> dict:
    """Every stage after the data lands; returns each stage's summary.

    data_dir: re-ingest these CSVs first (None: use the warehouse's current events).
    max_quarantine_share: the ingest's limit (None: flow `ingest`'s default).
    refit: also train serving models on all data (scoring prefers them when present).
    steps: override both models' number of training steps (None: the profile's).
    keep_model: publish the model even when a baseline beats it on validation (see recs/guard.py).
    shards / dask_address: score in that many shards on Dask (flow `score_all`).
    """
    logger = get_run_logger()
    ingested = None
    if data_dir is not None:
        limit = {} if max_quarantine_share is None else {"max_quarantine_share": max_quarantine_share}
        ingested = ingest(data_dir=str(data_dir), warehouse_dir=warehouse_dir, **limit)
    built = build_sequences(warehouse_dir=warehouse_dir, min_user_events=min_user_events,
                            min_item_events=min_item_events)
    retrieval = train_retrieval(warehouse_dir=warehouse_dir, checkpoint_dir=checkpoint_dir, profile=profile,
                                steps=steps, seed=seed)
    # The ranker is stacked on the validation period (it has no refit) and has its own, smaller
    # embedding tables: it does not start from retrieval's.
    ranking = train_ranking(warehouse_dir=warehouse_dir, checkpoint_dir=checkpoint_dir, profile=profile,
                            steps=steps, seed=seed)
    evaluation = evaluate(warehouse_dir=warehouse_dir, checkpoint_dir=checkpoint_dir, profile=profile, seed=seed,
                          splits=["val", "test"])
    refits = {}
    if refit:
        refits["retrieval"] = train_retrieval(warehouse_dir=warehouse_dir, checkpoint_dir=checkpoint_dir,
                                              profile=profile, seed=seed, refit=True,
                                              steps=selected_steps(retrieval))
    else:
        logger.info("refit=False: scoring uses the models selected on validation")
    scoring = score_all(warehouse_dir=warehouse_dir, checkpoint_dir=checkpoint_dir, top_n=top_n, keep_model=keep_model,
                        shards=shards, dask_address=dask_address)
    return {"ingest": ingested, "build": built, "retrieval": retrieval, "ranking": ranking,
            "evaluation": {k: v for k, v in evaluation.items() if k != "rows"}, "refit": refits,
            "scoring": scoring}


if __name__ == "__main__":
    retrain()
