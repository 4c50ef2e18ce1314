"""`recs`: the command line. Each subcommand is one stage; most run a Prefect flow.

Imports are lazy so `recs --help` is instant and `recs generate` never loads JAX.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

DESCRIPTION = """Batch e-commerce recommender on Retail Rocket data.

Stages (each also a Prefect flow in flows/):
  generate         write Retail Rocket-format CSVs (the embedded default data)
  ingest           load CSVs into the DuckDB warehouse, quarantining bad rows
  build            filtered, temporally split parquet sequence tables
  train-retrieval  two-tower retrieval model (JAX/Haiku, Grain, Orbax)
  train-ranking    candidate-isolated ranking transformer
  evaluate         metrics on the test split beside popularity and item-kNN
  score            top-N recommendations for every customer into the warehouse
  run              all of the above, end to end
  recommend        one customer's history and list
  deploy           serve Prefect deployments (nightly scoring, weekly retrain)
"""


def _add_warehouse(p: argparse.ArgumentParser) -> None:
    p.add_argument("--warehouse", default="warehouse", help="warehouse directory (default: warehouse)")


def _add_checkpoints(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoints", default="checkpoints", help="checkpoint directory (default: checkpoints)")


def _add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-user-events", type=int, default=10, help="keep customers with at least N events (default 10)")
    p.add_argument("--min-item-events", type=int, default=1, help="keep items with at least N events (default 1: rare items are still re-shown and co-occur)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recs", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("generate", help="write Retail Rocket-format CSVs with learnable structure",
                       description="Deterministic generator of events.csv, item_properties_part1/2.csv and category_tree.csv in the Kaggle formats.")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--scale", choices=["tiny", "small", "full"], default="small", help="tiny (tests), small (~150K events), full (Retail Rocket size)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("ingest", help="load the CSVs into the DuckDB warehouse",
                       description="Load events.csv (required), item_properties_part1/2.csv and category_tree.csv (optional, plain or .gz) into warehouse/recs.duckdb. Bad rows go to quarantine_events with a reason.")
    p.add_argument("--data", required=True, help="directory holding the Retail Rocket CSVs")
    _add_warehouse(p)

    p = sub.add_parser("build", help="build parquet sequence tables from the warehouse",
                       description="Filter customers/items, turn events into steps (one per event unless --collapse-repeats), split in time, and write warehouse/sequences/{train,val,test,serving}/ parquet.")
    p.add_argument("--data", default=None, help="if given, ingest this directory first")
    _add_warehouse(p)
    _add_filters(p)
    p.add_argument("--history-len", type=int, default=64)
    p.add_argument("--max-candidates", type=int, default=16)
    p.add_argument("--train-quantile", type=float, default=0.8)
    p.add_argument("--val-quantile", type=float, default=0.9)
    p.add_argument("--collapse-repeats", action="store_true",
                   help="merge consecutive events on the same item into one step (default: one step per event)")

    for name, helptext in (("train-retrieval", "train the two-tower retrieval model"),
                           ("train-ranking", "train the candidate-isolated ranking model")):
        p = sub.add_parser(name, help=helptext, description=helptext + " from the parquet sequence tables (Grain -> JAX), checkpointed with Orbax; resumes after a kill.")
        _add_warehouse(p)
        _add_checkpoints(p)
        p.add_argument("--profile", choices=["tiny", "cpu", "gpu"], default="cpu")
        p.add_argument("--steps", type=int, default=None, help="override the profile's number of train steps")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--refit", action="store_true", help="train on all data up to the last event (serving model) instead of the train split")
        if name == "train-ranking":
            p.add_argument("--init-from-retrieval", action="store_true", help="start item/customer tables from the retrieval checkpoint")
            p.add_argument("--freeze-embeddings", action="store_true", help="with --init-from-retrieval: keep those tables frozen")

    p = sub.add_parser("evaluate", help="evaluate models and baselines on the test split",
                       description="Retrieval Recall/MRR/NDCG@K, ranking AUC per action, Purchase Rate@10, end-to-end; beside popularity and item-kNN. Writes eval_metrics.")
    _add_warehouse(p)
    _add_checkpoints(p)
    p.add_argument("--profile", choices=["tiny", "cpu", "gpu"], default="cpu")

    p = sub.add_parser("score", help="write top-N recommendations for every customer",
                       description="Retrieve + rank for every customer, popularity fallback for those without usable history, atomic publish into recommendations / latest_recommendations.")
    _add_warehouse(p)
    _add_checkpoints(p)
    p.add_argument("--top-n", type=int, default=20)
    p.add_argument("--keep-model", action="store_true",
                   help="publish the model's lists even when a baseline beats it on validation (the run records the warning)")

    p = sub.add_parser("run", help="the whole pipeline, end to end, as one Prefect flow",
                       description="ingest, build, train retrieval, train ranking, evaluate, refit, score. Without --data, generates the embedded default (small) first.")
    p.add_argument("--data", default=None, help="Retail Rocket CSV directory (default: generate the embedded default)")
    _add_warehouse(p)
    _add_checkpoints(p)
    p.add_argument("--profile", choices=["tiny", "cpu", "gpu"], default="cpu")
    _add_filters(p)
    p.add_argument("--top-n", type=int, default=20)
    p.add_argument("--keep-model", action="store_true",
                   help="publish the model's lists even when a baseline beats it on validation (the run records the warning)")

    p = sub.add_parser("recommend", help="one customer's recent history and recommendations")
    p.add_argument("--customer-id", type=int, required=True, help="original visitorid")
    p.add_argument("--top-n", type=int, default=20)
    _add_warehouse(p)
    _add_checkpoints(p)

    p = sub.add_parser("deploy", help="serve Prefect deployments (nightly scoring, weekly retrain)")
    p.add_argument("--cron", default="0 2 * * *", help="nightly scoring schedule (default 02:00)")
    p.add_argument("--retrain-cron", default="0 3 * * 0", help="weekly retrain + score schedule")
    p.add_argument("--timezone", default="UTC", help="IANA timezone of both schedules (default UTC)")
    p.add_argument("--data", default=None, help="CSV directory the weekly retrain re-ingests (default: keep the warehouse's events)")
    p.add_argument("--profile", choices=["tiny", "cpu", "gpu"], default="cpu", help="model size profile of the weekly retrain")
    _add_warehouse(p)
    _add_checkpoints(p)
    return parser


def _print_result(result) -> None:
    if result is not None:
        print(json.dumps(result, indent=2, default=str))


# Bad input: the CLI prints these as one line and exits 2 (anything else keeps its traceback).
EXPECTED_ERRORS = (FileNotFoundError, ValueError)
FLOW_COMMANDS = {"ingest", "build", "train-retrieval", "train-ranking", "evaluate", "score", "run"}


def _require_warehouse(warehouse_dir: str) -> None:
    from recs.warehouse import db_path

    if not db_path(warehouse_dir).exists():
        raise FileNotFoundError(f"no warehouse at {db_path(warehouse_dir)}: run `recs ingest` first")


def _require_sequences(warehouse_dir: str) -> None:
    from recs.sequences import read_meta

    _require_warehouse(warehouse_dir)
    read_meta(warehouse_dir)  # FileNotFoundError naming `recs build` when missing


def _require_checkpoint(checkpoint_dir: str, model: str, variants: tuple[str, ...]) -> None:
    """A `<checkpoint_dir>/<variant>/{best,latest}` must exist for one of the variants."""
    root = Path(checkpoint_dir)
    if not any((root / v / sub).exists() for v in variants for sub in ("best", "latest")):
        raise FileNotFoundError(f"no {model} checkpoint under {root / variants[0]}: run `recs train-{model}` first")


def _require_positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def validate_args(args: argparse.Namespace) -> None:
    """Check what a stage needs before its flow starts: a flow that fails on bad input logs pages
    (and starting Prefect costs seconds) for what one line can say."""
    cmd = args.command
    if cmd == "ingest" or (cmd in ("build", "run") and args.data):
        from recs.ingest import locate_inputs

        locate_inputs(Path(args.data))  # FileNotFoundError naming events.csv
    if cmd == "build":
        from recs.sequences import validate_params

        if not args.data:
            _require_warehouse(args.warehouse)
        validate_params(min_user_events=args.min_user_events, min_item_events=args.min_item_events,
                        history_len=args.history_len, max_candidates=args.max_candidates,
                        train_quantile=args.train_quantile, val_quantile=args.val_quantile)
    elif cmd == "run":
        _require_positive("--min-user-events", args.min_user_events)
        _require_positive("--min-item-events", args.min_item_events)
        _require_positive("--top-n", args.top_n)
    elif cmd in ("train-retrieval", "train-ranking"):
        _require_sequences(args.warehouse)
        _require_positive("--steps", args.steps)
        if cmd == "train-ranking" and args.freeze_embeddings and not args.init_from_retrieval:
            raise ValueError("--freeze-embeddings needs --init-from-retrieval (frozen random tables learn nothing)")
        if cmd == "train-ranking":  # stacked on the retrieval model selected on validation
            _require_checkpoint(args.checkpoints, "retrieval", ("retrieval",))
    elif cmd == "evaluate":
        _require_sequences(args.warehouse)
        for model in ("retrieval", "ranking"):
            _require_checkpoint(args.checkpoints, model, (model,))
    elif cmd == "score":
        _require_sequences(args.warehouse)
        _require_positive("--top-n", args.top_n)
        for model in ("retrieval", "ranking"):
            _require_checkpoint(args.checkpoints, model, (f"{model}_serving", model))
    elif cmd == "recommend":
        _require_positive("--top-n", args.top_n)


class _OneLineExpectedErrors(logging.Filter):
    """On the console handler only: drop the traceback of an expected bad-input error from a
    Prefect log record (the CLI prints the error itself, as one line). The API log handler sits
    on the flow/task-run loggers, so it formats the record first: the Prefect UI keeps the
    full traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], EXPECTED_ERRORS):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_expected_tracebacks() -> None:
    """Install the filter on Prefect's console handler(s) (idempotent)."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()  # the handlers exist from here on (`import prefect` alone defers this)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(
                isinstance(f, _OneLineExpectedErrors) for f in handler.filters):
            handler.addFilter(_OneLineExpectedErrors())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cmd = args.command
    try:
        validate_args(args)
        if cmd in FLOW_COMMANDS:
            quiet_expected_tracebacks()
        if cmd == "generate":
            from recs.generate import generate

            _print_result(generate(Path(args.out), scale=args.scale, seed=args.seed))
        elif cmd == "ingest":
            from flows.ingest import ingest

            _print_result(ingest(data_dir=args.data, warehouse_dir=args.warehouse))
        elif cmd == "build":
            from flows.build_sequences import build_sequences

            if args.data:
                from flows.ingest import ingest

                ingest(data_dir=args.data, warehouse_dir=args.warehouse)
            _print_result(build_sequences(
                warehouse_dir=args.warehouse, min_user_events=args.min_user_events,
                min_item_events=args.min_item_events, history_len=args.history_len,
                max_candidates=args.max_candidates, train_quantile=args.train_quantile,
                val_quantile=args.val_quantile, collapse_repeats=args.collapse_repeats))
        elif cmd == "train-retrieval":
            from flows.train_retrieval import train_retrieval

            _print_result(train_retrieval(warehouse_dir=args.warehouse, checkpoint_dir=args.checkpoints,
                                          profile=args.profile, steps=args.steps, seed=args.seed, refit=args.refit))
        elif cmd == "train-ranking":
            from flows.train_ranking import train_ranking

            _print_result(train_ranking(warehouse_dir=args.warehouse, checkpoint_dir=args.checkpoints,
                                        profile=args.profile, steps=args.steps, seed=args.seed, refit=args.refit,
                                        init_from_retrieval=args.init_from_retrieval,
                                        freeze_embeddings=args.freeze_embeddings))
        elif cmd == "evaluate":
            from flows.evaluate import evaluate

            _print_result(evaluate(warehouse_dir=args.warehouse, checkpoint_dir=args.checkpoints, profile=args.profile,
                                    splits=["val", "test"]))
        elif cmd == "score":
            from flows.score_all import score_all

            _print_result(score_all(warehouse_dir=args.warehouse, checkpoint_dir=args.checkpoints, top_n=args.top_n,
                                    keep_model=args.keep_model))
        elif cmd == "run":
            from flows.run import run

            run(data_dir=args.data, warehouse_dir=args.warehouse, checkpoint_dir=args.checkpoints,
                profile=args.profile, min_user_events=args.min_user_events,
                min_item_events=args.min_item_events, top_n=args.top_n, keep_model=args.keep_model)
        elif cmd == "recommend":
            from recs.recommend import recommend_for_customer, format_recommendation

            print(format_recommendation(recommend_for_customer(
                warehouse_dir=args.warehouse, checkpoint_dir=args.checkpoints,
                customer_id=args.customer_id, top_n=args.top_n)))
        elif cmd == "deploy":
            from flows.deploy import serve_deployments

            serve_deployments(cron=args.cron, retrain_cron=args.retrain_cron, timezone=args.timezone,
                              warehouse_dir=args.warehouse, checkpoint_dir=args.checkpoints,
                              data_dir=args.data, profile=args.profile)
    except EXPECTED_ERRORS as exc:
        # Bad input: one clear line, no traceback; nothing has been published.
        message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"recs {cmd}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
