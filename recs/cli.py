"""`recs`: the command line. Each subcommand is one stage; most run a Prefect flow.

Imports are lazy so `recs --help` is instant and `recs generate` never loads JAX.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

DESCRIPTION = """Batch e-commerce recommender on Retail Rocket data.

Stages (each also a Prefect flow in flows/):
  generate         write Retail Rocket-format CSVs (the embedded default data)
  ingest           load CSVs into the DuckDB warehouse, quarantining bad rows
  build            filtered, temporally split parquet sequence tables
  train-retrieval  two-tower retrieval model (JAX/Haiku, Grain, Orbax)
  train-ranking    candidate-isolated ranking transformer
  transfer         start a new catalogue's models from trained ones (keep the transformer)
  evaluate         metrics on validation and test beside the baselines
  score            top-N recommendations for every customer into the warehouse
  run              all of the above, end to end
  recommend        one customer's history and list
  personas         probe ours, the incumbent and popularity with synthetic personas
  deploy           serve Prefect deployments (nightly scoring, weekly retrain)
  status           what the warehouse and checkpoints hold, and what is stale
  compare          our published lists against an incumbent's (a shop's files or a baseline)
  ui               the side-by-side page: the incumbent's lists beside ours, with ratings

Every parameter can also come from a TOML file (`recs --config recs.toml COMMAND`, or
$RECS_CONFIG): one [section] per flow, keys named like its parameters, e.g.
  [score_all]
  top_n = 20
The command line wins over the file; the file over the flows' defaults.
Errors print one line (exit 2 for bad input, 1 otherwise); --debug adds the traceback.
"""


# The function each command calls and the config-file section its parameters come from. Every
# option's dest is a parameter name of that function: its default lives in the signature alone
# (options default to "not given"; `--help` shows the signature's default).
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("recs.generators:generate_data", "generate"),
    "ingest": ("flows.ingest:ingest", "ingest"),
    "build": ("flows.build_sequences:build_sequences", "build_sequences"),
    "train-retrieval": ("flows.train_retrieval:train_retrieval", "train_retrieval"),
    "train-ranking": ("flows.train_ranking:train_ranking", "train_ranking"),
    "transfer": ("flows.transfer:transfer", "transfer"),
    "evaluate": ("flows.evaluate:evaluate", "evaluate"),
    "score": ("flows.score_all:score_all", "score_all"),
    "run": ("flows.run:run", "run"),
    "recommend": ("recs.recommend:recommend_for_customer", "recommend"),
    "personas": ("flows.personas:personas", "personas"),
    "deploy": ("flows.deploy:serve_deployments", "deploy"),
    "status": ("recs.status:collect_status", "status"),
    "compare": ("flows.compare:compare", "compare"),
    "ui": ("recs.ui.launch:serve_ui", "ui"),
}
INGEST_TARGET = "flows.ingest:ingest"
# Sections that configure a flow run by another command: `recs build --data` ingests first
# ([ingest]); the weekly-retrain and nightly-scoring deployments of `recs deploy` take [retrain]
# and [score_all] as their parameters.
EXTRA_SECTIONS = {"retrain": "flows.retrain:retrain"}
SECTION_ALIASES = {"recs_run": "run"}  # the Prefect name of flow `run`
DEPLOY_OWN = ("warehouse_dir", "checkpoint_dir", "data_dir", "profile")  # both deployments get deploy's
CLI_ONLY = {"command", "config", "debug", "json"}  # options that are not parameters of the function


def resolve(target: str):
    """The function behind "module:function" (a Prefect flow's underlying function)."""
    import importlib

    module, name = target.split(":")
    obj = getattr(importlib.import_module(module), name)
    return getattr(obj, "fn", obj)


def signature_defaults(target: str) -> dict:
    """{parameter: default} of the function behind `target` (parameters without one are left out)."""
    import inspect

    return {name: p.default for name, p in inspect.signature(resolve(target)).parameters.items()
            if p.default is not inspect.Parameter.empty}


def signature_params(target: str) -> list[str]:
    import inspect

    return list(inspect.signature(resolve(target)).parameters)


def _help_formatter(targets: tuple[str, ...]):
    """A help formatter that appends each option's default, read from the signature of the
    function(s) behind the command only when help is shown (so `recs --help` stays instant)."""

    class SignatureDefaults(argparse.RawDescriptionHelpFormatter):
        def _get_help_string(self, action: argparse.Action) -> str:
            text = action.help or ""
            if action.option_strings and action.dest not in CLI_ONLY and "(default" not in text:
                for target in targets:
                    defaults = signature_defaults(target)
                    if action.dest in defaults:
                        value = defaults[action.dest]
                        shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else value
                        return f"{text} (default: {shown})".replace("%", "%%").strip()
            return text.replace("%", "%%")

    return SignatureDefaults


def _common_options(p: argparse.ArgumentParser, top_level: bool) -> None:
    """--config and --debug, before or after the command (`recs --debug score` = `recs score --debug`)."""
    default = None if top_level else argparse.SUPPRESS
    p.add_argument("--config", default=default, metavar="FILE",
                   help="TOML file of parameters, one [section] per flow (e.g. [score_all] top_n = 20); "
                        "options given on the command line win. Default: $RECS_CONFIG, if set")
    p.add_argument("--debug", action="store_true", default=False if top_level else argparse.SUPPRESS,
                   help="show the traceback of an error (unexpected errors otherwise print one line)")


S = argparse.SUPPRESS  # an option not given is not passed: the function's own default applies
FLAG = argparse.BooleanOptionalAction  # --x / --no-x, so the command line can undo a config file


def _add_warehouse(p: argparse.ArgumentParser) -> None:
    p.add_argument("--warehouse", dest="warehouse_dir", default=S, help="warehouse directory")


def _add_checkpoints(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoints", dest="checkpoint_dir", default=S, help="checkpoint directory")


def _add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-user-events", type=int, default=S, help="keep customers with at least N events")
    p.add_argument("--min-item-events", type=int, default=S,
                   help="keep items with at least N events (1: rare items are still re-shown and co-occur)")


def _add_quarantine(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-quarantine-share", type=float, default=S, metavar="SHARE",
                   help="fail the ingest, keeping the previous tables, when more than this share of "
                        "events.csv's rows is quarantined (1 = never)")


def _add_profile(p: argparse.ArgumentParser, helptext: str = "model size profile") -> None:
    p.add_argument("--profile", choices=["tiny", "cpu", "gpu"], default=S, help=helptext)


def _add_shards(p: argparse.ArgumentParser, workers: bool = False) -> None:
    p.add_argument("--shards", type=int, default=S, metavar="N",
                   help="score the customers in N shards, one Prefect task each on Dask (1: in this process)")
    p.add_argument("--dask-address", default=S, metavar="tcp://HOST:PORT",
                   help="with --shards: the running Dask scheduler to use (default: a LocalCluster here)")
    if workers:
        p.add_argument("--dask-workers", type=int, default=S, metavar="W",
                       help="without --dask-address: worker processes of the LocalCluster (default: min(N, cores))")


def _add_keep_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep-model", action=FLAG, default=S,
                   help="publish the model's lists even when a baseline beats it on validation (the run records the warning)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recs", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common_options(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, **kw) -> argparse.ArgumentParser:
        targets = (COMMANDS[name][0],) + ((INGEST_TARGET,) if name == "build" else ())
        p = sub.add_parser(name, formatter_class=_help_formatter(targets), **kw)
        _common_options(p, top_level=False)
        return p

    p = add("generate", help="write Retail Rocket- (or H&M-) format CSVs with learnable structure",
            description="Deterministic generator of events.csv, item_properties_part1/2.csv and category_tree.csv in the Kaggle formats (--format hm: transactions_train.csv, articles.csv, customers.csv).")
    p.add_argument("--out", default=S, help="output directory (required)")
    p.add_argument("--scale", choices=["tiny", "small", "full"], default=S, help="tiny (tests), small (~150K events), full (Retail Rocket size)")
    p.add_argument("--seed", type=int, default=S, help="random seed")
    p.add_argument("--format", dest="data_format", choices=["retailrocket", "hm"], default=S,
                   help="retailrocket (events.csv, ...) or hm (H&M: transactions_train.csv, articles.csv, customers.csv)")

    p = add("ingest", help="load the CSVs into the DuckDB warehouse",
            description="Load events.csv (required), item_properties_part1/2.csv and category_tree.csv (optional, plain or .gz) into warehouse/recs.duckdb. Bad rows go to quarantine_events with a reason.")
    p.add_argument("--data", dest="data_dir", default=S, help="directory holding the Retail Rocket CSVs (required)")
    _add_warehouse(p)
    p.add_argument("--plausible-window-days", type=int, default=S, metavar="DAYS",
                   help="quarantine events further than this from the median timestamp (default: 365, H&M 1,100)")
    _add_quarantine(p)
    p.add_argument("--format", dest="data_format", choices=["retailrocket", "hm"], default=S,
                   help="the files' format (default: by name: transactions_train.csv is H&M, events.csv Retail Rocket)")

    p = add("build", help="build parquet sequence tables from the warehouse",
            description="Filter customers/items, turn events into steps (one per event unless --collapse-repeats), split in time, and write warehouse/sequences/{train,val,test,serving}/ parquet.")
    p.add_argument("--data", dest="data_dir", default=S, help="if given, ingest this directory first (with the [ingest] settings)")
    _add_warehouse(p)
    _add_filters(p)
    p.add_argument("--history-len", type=int, default=S, help="steps of history kept per example")
    p.add_argument("--max-candidates", type=int, default=S, help="window steps per example")
    p.add_argument("--train-quantile", type=float, default=S, help="time quantile where the train period ends")
    p.add_argument("--val-quantile", type=float, default=S, help="time quantile where validation ends (test after it)")
    p.add_argument("--collapse-repeats", action=FLAG, default=S,
                   help="merge consecutive events on the same item into one step (default: one step per event)")
    p.add_argument("--plausible-window-days", type=int, default=S, metavar="DAYS", help="with --data: as for `recs ingest`")
    _add_quarantine(p)

    for name, helptext in (("train-retrieval", "train the two-tower retrieval model"),
                           ("train-ranking", "train the candidate-isolated ranking model")):
        p = add(name, help=helptext, description=helptext + " from the parquet sequence tables (Grain -> JAX), checkpointed with Orbax; resumes after a kill. Per-step metrics go to the warehouse table training_metrics, curves to <checkpoints>/<model>/curves.png.")
        _add_warehouse(p)
        _add_checkpoints(p)
        _add_profile(p)
        p.add_argument("--steps", type=int, default=S, help="override the profile's number of train steps")
        p.add_argument("--seed", type=int, default=S, help="random seed")
        p.add_argument("--refit", action=FLAG, default=S, help="train on all data up to the last event (serving model) instead of the train split")
        if name == "train-ranking":
            p.add_argument("--init-from-retrieval", action=FLAG, default=S, help="start item/customer tables from the retrieval checkpoint")
            p.add_argument("--freeze-embeddings", action=FLAG, default=S, help="with --init-from-retrieval: keep those tables frozen")

    p = add("transfer", help="transfer trained models to a new catalogue",
            description="Ingest and build the new catalogue, then for retrieval and the ranker: keep the trained transformer and every id-free part (actions, positions, recency, candidate features), make fresh hashed id tables, train them with the rest frozen (stage 1), fine-tune everything at a lower learning rate (stage 2). Checkpoints go to <checkpoints>/{retrieval,ranking}/ (stage 1: *_embeddings/), their meta names the source checkpoint and its model_version.")
    p.add_argument("--from", dest="source_dir", default=S, metavar="CHECKPOINT_DIR",
                   help="checkpoint directory of the trained source models (required)")
    p.add_argument("--data", dest="data_dir", default=S, help="directory holding the new catalogue's CSVs (required)")
    _add_warehouse(p)
    _add_checkpoints(p)
    _add_filters(p)
    p.add_argument("--frozen-steps", type=int, default=S, help="stage 1 steps per model (default: half the source profile's)")
    p.add_argument("--frozen-learning-rate", type=float, default=S, metavar="LR",
                   help="stage 1 peak learning rate (default: the source profile's)")
    p.add_argument("--finetune-steps", type=int, default=S, help="stage 2 steps per model (default: the other half)")
    p.add_argument("--finetune-learning-rate", type=float, default=S, metavar="LR",
                   help="stage 2 peak learning rate (default: a tenth of the source profile's)")
    p.add_argument("--seed", type=int, default=S, help="random seed")

    p = add("evaluate", help="evaluate models and baselines on validation and test",
            description="Next-event Recall/MRR/NDCG@K and Purchase Rate@10 of the shipped lists, each model and the baselines, ranking AUC per action; on validation and test. Writes eval_metrics and <checkpoints>/evaluation.png.")
    _add_warehouse(p)
    _add_checkpoints(p)
    _add_profile(p)
    p.add_argument("--split", choices=["val", "test"], default=S, help="the split reported in the printed table")
    p.add_argument("--splits", nargs="+", choices=["val", "test"], default=S,
                   help="the splits evaluated (default: val and --split)")
    p.add_argument("--seed", type=int, default=S, help="random seed")
    p.add_argument("--run-id", default=S, help="eval_metrics run id (re-using one replaces its rows; default: the time)")

    p = add("score", help="write top-N recommendations for every customer",
            description="Retrieve + rank for every customer, popularity fallback for those without usable history, atomic publish into recommendations / latest_recommendations.")
    _add_warehouse(p)
    _add_checkpoints(p)
    p.add_argument("--top-n", type=int, default=S, help="items per customer")
    _add_keep_model(p)
    p.add_argument("--action-weights", type=float, nargs=3, default=S, metavar=("BUY", "CART", "VIEW"),
                   help="weights of p(transaction), p(addtocart), p(view) in the served score")
    p.add_argument("--retrieve-k", type=int, default=S, help="candidates from the retrieval model")
    p.add_argument("--recent-k", type=int, default=S, help="candidates from the customer's recent items")
    p.add_argument("--cooc-k", type=int, default=S, help="candidates from item co-occurrence")
    p.add_argument("--session-k", type=int, default=S, help="candidates from similar sessions")
    p.add_argument("--exclude-unavailable", action=FLAG, default=S, help="never recommend unavailable items")
    p.add_argument("--exclude-bought", action=FLAG, default=S,
                   help="never recommend items the customer bought (default: on, except on purchase-only data such as H&M, where buying again is what to predict)")
    p.add_argument("--trending-days", type=float, default=S, help="window of the popularity fallback")
    p.add_argument("--keep-runs", type=int, default=S, help="published runs kept in the warehouse")
    _add_shards(p, workers=True)

    p = add("run", help="the whole pipeline, end to end, as one Prefect flow",
            description="ingest, build, train retrieval, train ranking, evaluate, refit, score. Without --data, generates the embedded default (small) first. Reads the [run] section of the config file.")
    p.add_argument("--data", dest="data_dir", default=S, help="Retail Rocket or H&M CSV directory, recognised by file name (default: generate the embedded default)")
    _add_warehouse(p)
    _add_checkpoints(p)
    _add_profile(p)
    _add_filters(p)
    p.add_argument("--top-n", type=int, default=S, help="items per customer")
    p.add_argument("--seed", type=int, default=S, help="random seed")
    p.add_argument("--steps", type=int, default=S, help="both models' train steps (default: the profile's)")
    p.add_argument("--refit", action=FLAG, default=S, help="also refit retrieval on all data for scoring")
    p.add_argument("--default-scale", choices=["tiny", "small", "full"], default=S,
                   help="without --data: the scale of the generated data")
    _add_keep_model(p)
    _add_quarantine(p)
    p.add_argument("--compare-with", default=S, metavar="INCUMBENT",
                   help="end with `recs compare` against this incumbent (item_knn, popularity or a lists file; none: skip)")
    _add_shards(p)

    p = add("recommend", help="one customer's recent history and list")
    p.add_argument("--customer-id", type=int, default=S, help="original visitorid (required)")
    p.add_argument("--top-n", type=int, default=S, help="items per customer")
    _add_warehouse(p)
    _add_checkpoints(p)

    p = add("personas", help="probe ours, the incumbent and popularity with synthetic personas",
            description="Budget-conscious, brand-loyal, impulse/trending and niche-enthusiast customers built from the catalogue, scored through the nightly serving path by ours, the item-kNN incumbent and popularity; preference metrics into comparison_metrics (segment persona:<name>) and a table.")
    _add_warehouse(p)
    _add_checkpoints(p)
    p.add_argument("--seed", type=int, default=S, help="random seed of the personas' histories")
    p.add_argument("--top-n", type=int, default=S, help="items per list")
    p.add_argument("--incumbent", default=S, help="item_knn (built in, scored live), or an incumbent file's name (not covered)")
    p.add_argument("--trending-days", type=float, default=S, help="window of 'trending' and of the popularity fallback")

    p = add("deploy", help="serve Prefect deployments (nightly scoring, weekly retrain)",
            description="Serve the nightly-scoring and weekly-retrain deployments; their parameters come from the [score_all] and [retrain] sections of the config file.")
    p.add_argument("--cron", default=S, help="nightly scoring schedule")
    p.add_argument("--retrain-cron", default=S, help="weekly retrain + score schedule")
    p.add_argument("--timezone", default=S, help="IANA timezone of both schedules")
    p.add_argument("--data", dest="data_dir", default=S, help="CSV directory the weekly retrain re-ingests (default: keep the warehouse's events)")
    _add_profile(p, "model size profile of the weekly retrain")
    _add_warehouse(p)
    _add_checkpoints(p)

    p = add("status", help="what the warehouse and checkpoints hold, and what is stale",
            description="Last ingest (rows, quarantine by reason), last build, each model (steps, validation metrics, age, model_version), last evaluation, last scoring run (customers, fallback share, coverage, strategy, guard warning) and what is stale. Read-only.")
    _add_warehouse(p)
    _add_checkpoints(p)
    p.add_argument("--json", action="store_true", default=S, help="print the status as JSON")

    p = add("compare", help="compare the published lists with an incumbent's",
            description="Load an incumbent's lists (CSV / parquet file or directory with customer_id, rank, item_id[, score]; "
                        "bad rows are counted by reason and kept out) or export a built-in baseline's (item_knn, popularity), "
                        "then write agreement, beyond-accuracy and test-period accuracy (paired bootstrap 95% interval of "
                        "ours - incumbent) by segment into comparison_metrics.")
    p.add_argument("--incumbent", default=S, metavar="PATH|popularity|item_knn",
                   help="the incumbent's lists: a file or directory, or a built-in baseline")
    p.add_argument("--name", default=S, help="the incumbent's name in the tables (default: the built-in's name or the file's stem)")
    p.add_argument("--k", default=S, metavar="K[,K...]", help="list depths compared, comma-separated")
    _add_warehouse(p)
    _add_checkpoints(p)
    p.add_argument("--seed", type=int, default=S, help="random seed (bootstrap, customer sample)")
    p.add_argument("--bootstrap", type=int, default=S, metavar="N", help="bootstrap resamples of the accuracy difference")
    p.add_argument("--max-accuracy-customers", type=int, default=S, metavar="N",
                   help="test-period customers scored for accuracy (a deterministic sample beyond)")
    p.add_argument("--top-n", type=int, default=S, help="length of a built-in incumbent's lists")

    p = add("ui", help="the side-by-side page: the incumbent's lists beside ours, with ratings",
            description="A Streamlit page: pick a customer, a persona or type a history; the incumbent's list and ours side by side (shared items highlighted), agreement and beyond-accuracy numbers, ratings stored in the warehouse table feedback. Blocks until stopped; never holds the warehouse open.")
    _add_warehouse(p)
    _add_checkpoints(p)
    p.add_argument("--port", type=int, default=S, help="port to serve on")
    p.add_argument("--address", default=S, help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--incumbent", default=S, metavar="NAME", help="incumbent shown first (default: the last loaded)")
    return parser


def _print_result(result) -> None:
    if result is not None:
        print(json.dumps(result, indent=2, default=str))


# Bad input: the CLI prints these as one line and exits 2. Anything else is unexpected: one line
# saying to re-run with --debug (exit 1); with --debug, the traceback too.
EXPECTED_ERRORS = (FileNotFoundError, ValueError)
FLOW_COMMANDS = {"ingest", "build", "train-retrieval", "train-ranking", "evaluate", "score", "run", "compare",
                 "personas", "transfer"}
INGEST_ONLY = {"data_dir", "plausible_window_days", "max_quarantine_share"}  # `recs build`'s ingest options


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _options(sub: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """{dest: action} of a command's options that are parameters of its function(s)."""
    return {a.dest: a for a in sub._actions if a.option_strings and a.dest not in CLI_ONLY and a.dest != "help"}


def _flag(sub: argparse.ArgumentParser, dest: str) -> str:
    action = _options(sub).get(dest)
    return action.option_strings[0] if action else dest


def section_keys(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """{config section: the parameters it may set} (the options of the command it configures)."""
    subs = _subparsers(parser)
    keys = {}
    for cmd, (_, section) in COMMANDS.items():
        dests = list(_options(subs[cmd]))
        keys[section] = [d for d in dests if d not in INGEST_ONLY] if cmd == "build" else dests
    return keys


def load_config(parser: argparse.ArgumentParser, given: str | None) -> tuple[dict, dict[str, dict]]:
    """(top-level settings, {section: settings}) of the config file, checked; ({}, {}) without one."""
    from recs.config import config_path, read_config, split_config

    path = config_path(given)
    if path is None:
        return {}, {}
    data = read_config(path)
    keys = section_keys(parser)
    if "retrain" in data:  # the weekly deployment's parameters: those of flow `retrain`, but for
        # what `recs deploy` sets itself (its [deploy] section / options)
        keys["retrain"] = [k for k in signature_params(EXTRA_SECTIONS["retrain"]) if k not in DEPLOY_OWN]
    top, tables = split_config(data, path, keys, SECTION_ALIASES)
    # Type-check every value against the command-line option of the same parameter.
    subs = _subparsers(parser)
    any_option = {d: a for sub in subs.values() for d, a in _options(sub).items()}
    section_cmd = {section: cmd for cmd, (_, section) in COMMANDS.items()}
    from recs.config import check_value

    for key, value in top.items():
        top[key] = check_value(value, any_option.get(key), f"{path}: {key}")
    for section, table in tables.items():
        options = _options(subs[section_cmd[section]]) if section in section_cmd else any_option
        for key, value in table.items():
            table[key] = check_value(value, options.get(key) or any_option.get(key), f"{path}: [{section}] {key}")
    return top, tables


def merged_params(args: argparse.Namespace, top: dict, table: dict, keys: set[str]) -> dict:
    """The parameters set for a function: top-level config < its section < the command line."""
    given = {k: v for k, v in vars(args).items() if k in keys}
    return {**{k: v for k, v in top.items() if k in keys}, **{k: v for k, v in table.items() if k in keys}, **given}


def _require_params(sub: argparse.ArgumentParser, target: str, section: str, params: dict) -> None:
    import inspect

    for name, p in inspect.signature(resolve(target)).parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is inspect.Parameter.empty and name not in params:
            raise ValueError(f"{_flag(sub, name)} is required (or `{name}` in the [{section}] section of the "
                             "config file)")


def prepare(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """What a command runs with: {"params": the function's parameters (defaults filled in from its
    signature), "ingest": the ingest flow's for `build --data`, "deploy": the deployments'}."""
    cmd = args.command
    target, section = COMMANDS[cmd]
    sub = _subparsers(parser)[cmd]
    top, tables = load_config(parser, args.config)
    options = set(_options(sub))
    own = options - INGEST_ONLY if cmd == "build" else options
    params = merged_params(args, top, tables.get(section, {}), own)
    _require_params(sub, target, section, params)
    out = {"params": {**signature_defaults(target), **params}, "ingest": None, "deploy": {}}
    if cmd == "build" and vars(args).get("data_dir"):  # only `recs build --data DIR` ingests first
        ingest_keys = set(_options(_subparsers(parser)["ingest"]))
        ingest = merged_params(args, top, tables.get("ingest", {}), ingest_keys)
        ingest["warehouse_dir"] = out["params"]["warehouse_dir"]
        out["ingest"] = {**signature_defaults(INGEST_TARGET), **ingest}
    if cmd == "deploy":  # [score_all] and [retrain] become the deployments' parameters
        nightly = {**{k: v for k, v in top.items() if k in section_keys(parser)["score_all"]},
                   **tables.get("score_all", {})}
        retrain_keys = signature_params(EXTRA_SECTIONS["retrain"])
        weekly = {**{k: v for k, v in top.items() if k in retrain_keys}, **tables.get("retrain", {})}
        out["deploy"] = {"nightly_parameters": {k: v for k, v in nightly.items() if k not in DEPLOY_OWN},
                         "weekly_parameters": {k: v for k, v in weekly.items() if k not in DEPLOY_OWN}}
    return out


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


def _require_share(name: str, value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")


def validate_params(cmd: str, p: dict, ingest: dict | None = None) -> None:
    """Check what a stage needs before its flow starts: a flow that fails on bad input logs pages
    (and starting Prefect costs seconds) for what one line can say. `p`: the command's
    parameters (defaults filled in)."""
    data_dir = p.get("data_dir") if cmd in ("ingest", "run", "transfer") else (ingest or {}).get("data_dir")
    if data_dir:
        from recs.ingest import locate_inputs

        locate_inputs(Path(data_dir), p.get("data_format") if cmd == "ingest" else None)  # FileNotFoundError naming events.csv
    for source in (p if cmd in ("ingest", "run") else {}, ingest or {}):
        _require_share("--max-quarantine-share", source.get("max_quarantine_share"))
        _require_positive("--plausible-window-days", source.get("plausible_window_days"))
    if cmd == "build":
        from recs.sequences import validate_params as validate_build

        if not ingest:
            _require_warehouse(p["warehouse_dir"])
        validate_build(**{k: p[k] for k in ("min_user_events", "min_item_events", "history_len", "max_candidates",
                                            "train_quantile", "val_quantile")})
    elif cmd == "run":
        for name in ("min_user_events", "min_item_events", "top_n", "steps", "shards"):
            _require_positive("--" + name.replace("_", "-"), p.get(name))
    elif cmd in ("train-retrieval", "train-ranking"):
        _require_sequences(p["warehouse_dir"])
        _require_positive("--steps", p["steps"])
        if cmd == "train-ranking" and p["freeze_embeddings"] and not p["init_from_retrieval"]:
            raise ValueError("--freeze-embeddings needs --init-from-retrieval (frozen random tables learn nothing)")
        if cmd == "train-ranking":  # stacked on the retrieval model selected on validation
            _require_checkpoint(p["checkpoint_dir"], "retrieval", ("retrieval",))
    elif cmd == "transfer":
        from model.transfer_task import check_source

        check_source(p["source_dir"])  # FileNotFoundError / ValueError naming --from
        if Path(p["source_dir"]).resolve() == Path(p["checkpoint_dir"]).resolve():
            raise ValueError(f"--checkpoints {p['checkpoint_dir']} is the --from directory: transfer would "
                             "overwrite the source models")
        for name in ("min_user_events", "min_item_events", "frozen_steps", "finetune_steps"):
            _require_positive("--" + name.replace("_", "-"), p[name])
        for name in ("frozen_learning_rate", "finetune_learning_rate"):
            if p[name] is not None and not p[name] > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {p[name]}")
    elif cmd == "evaluate":
        _require_sequences(p["warehouse_dir"])
        for model in ("retrieval", "ranking"):
            _require_checkpoint(p["checkpoint_dir"], model, (model,))
    elif cmd == "score":
        _require_sequences(p["warehouse_dir"])
        for name in ("top_n", "keep_runs", "shards", "dask_workers"):
            _require_positive("--" + name.replace("_", "-"), p[name])
        for name in ("retrieve_k", "recent_k", "cooc_k", "session_k"):
            if p[name] < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {p[name]}")
        if p["trending_days"] <= 0:
            raise ValueError(f"--trending-days must be positive, got {p['trending_days']}")
        for model in ("retrieval", "ranking"):
            _require_checkpoint(p["checkpoint_dir"], model, (f"{model}_serving", model))
    elif cmd == "recommend":
        _require_positive("--top-n", p["top_n"])
    elif cmd == "compare":
        from recs.compare import parse_ks
        from recs.incumbent import incumbent_files, is_builtin

        _require_sequences(p["warehouse_dir"])
        parse_ks(p["k"])
        _require_positive("--top-n", p["top_n"])
        _require_positive("--max-accuracy-customers", p["max_accuracy_customers"])
        if p["bootstrap"] < 0:
            raise ValueError(f"--bootstrap must be >= 0, got {p['bootstrap']}")
        if not is_builtin(p["incumbent"]):
            incumbent_files(p["incumbent"])  # FileNotFoundError / ValueError naming the path
        for model in ("retrieval", "ranking"):  # the test-period lists use the models selected on validation
            _require_checkpoint(p["checkpoint_dir"], model, (model,))
    elif cmd == "personas":
        _require_sequences(p["warehouse_dir"])
        _require_positive("--top-n", p["top_n"])
        if p["trending_days"] <= 0:
            raise ValueError(f"--trending-days must be positive, got {p['trending_days']}")
        for model in ("retrieval", "ranking"):
            _require_checkpoint(p["checkpoint_dir"], model, (f"{model}_serving", model))


_SHOW_TRACEBACKS = {"on": False}  # --debug of the current `main` call


class _OneLineExpectedErrors(logging.Filter):
    """On the console handler only: drop the traceback of an error from a Prefect log record
    (the CLI prints the error itself, as one line) unless --debug is on. The API log handler sits
    on the flow/task-run loggers, so it formats the record first: the Prefect UI keeps the
    full traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and not _SHOW_TRACEBACKS["on"]:
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


def _call(target: str, **params):
    """Call the flow (or function) behind "module:function"."""
    import importlib

    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)(**params)


def execute(cmd: str, prepared: dict, as_json: bool = False) -> None:
    """Run a prepared command and print what it returns."""
    target = COMMANDS[cmd][0]
    p = prepared["params"]
    if cmd == "generate":
        _print_result(_call(target, **{**p, "out": Path(p["out"])}))
    elif cmd == "build":
        if prepared["ingest"]:
            _call(INGEST_TARGET, **prepared["ingest"])
        _print_result(_call(target, **p))
    elif cmd in ("run", "personas"):
        _call(target, **p)  # prints its own report
    elif cmd == "compare":
        result = _call(target, **p)
        from flows.compare import validation_lines

        print("\n".join(validation_lines(result["validation"])) + "\n\n" + result["markdown"])
    elif cmd == "recommend":
        from recs.recommend import format_recommendation

        print(format_recommendation(_call(target, **p)))
    elif cmd == "deploy":
        _call(target, **{**p, **prepared["deploy"]})
    elif cmd == "status":
        from recs.status import format_status

        status = _call(target, **p)
        print(json.dumps(status, indent=2, default=str) if as_json else format_status(status))
    else:
        _print_result(_call(target, **p))


def _one_line(exc: BaseException) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cmd, debug = args.command, bool(args.debug)
    _SHOW_TRACEBACKS["on"] = debug
    try:
        prepared = prepare(parser, args)
        validate_params(cmd, prepared["params"], prepared["ingest"])
        if cmd in FLOW_COMMANDS:
            quiet_expected_tracebacks()
        execute(cmd, prepared, as_json=bool(getattr(args, "json", False)))
    except EXPECTED_ERRORS as exc:
        # Bad input: one clear line (the traceback too with --debug); nothing has been published.
        if debug:
            traceback.print_exc()
        print(f"recs {cmd}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug or an environment problem, not bad input
        if debug:
            traceback.print_exc()
            print(f"recs {cmd}: unexpected error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        else:
            print(f"recs {cmd}: unexpected error: {type(exc).__name__}: {_one_line(exc)} "
                  f"(re-run with --debug for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
