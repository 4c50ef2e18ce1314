"""The `recs` command line: every subcommand listed, bad input = one clear line and exit 2."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import pytest

from recs.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ["generate", "ingest", "build", "train-retrieval", "train-ranking", "transfer", "evaluate", "score", "run",
               "recommend", "personas", "deploy", "status", "compare", "ui"]


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> SimpleNamespace:
    """Tiny warehouse with events and sequence tables, no models."""
    from recs.generate import generate
    from recs.ingest import ingest_dir
    from recs.sequences import build_sequence_tables
    from recs.warehouse import connect

    root = tmp_path_factory.mktemp("cli")
    generate(root / "data", scale="tiny", seed=0)
    con = connect(root / "warehouse")
    try:
        ingest_dir(con, root / "data")
        build_sequence_tables(con, root / "warehouse", min_user_events=2)
        customer = con.execute("SELECT min(visitorid) FROM events").fetchone()[0]
    finally:
        con.close()
    return SimpleNamespace(root=root, data=root / "data", warehouse=root / "warehouse",
                           checkpoints=root / "checkpoints", customer=int(customer))


def run_main(argv: list[str], capsys) -> tuple[int, list[str], str]:
    """(exit code, stderr lines, stdout) of `recs <argv>` in this process."""
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.err.splitlines(), out.out


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    listed = [line.split()[0] for line in text.split("positional arguments:")[1].splitlines()[2:]
              if line.startswith("    ") and not line.startswith("     ")]
    assert listed == SUBCOMMANDS
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(subparsers.choices) == SUBCOMMANDS


def test_ingest_of_missing_dir_is_one_line_in_a_subprocess(tmp_path):
    """The real entry point: no Prefect server is started, one stderr line, exit 2, nothing written."""
    missing = tmp_path / "no-such-data"
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    proc = subprocess.run([sys.executable, "-m", "recs.cli", "ingest", "--data", str(missing),
                           "--warehouse", str(tmp_path / "warehouse")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"recs ingest: error: events.csv (or events.csv.gz) not found in {missing} (no such directory)"]
    assert proc.stdout == ""
    assert not (tmp_path / "warehouse").exists()


@pytest.mark.parametrize("argv, message", [
    (["build", "--warehouse", "{empty}"], "no warehouse at {empty}/recs.duckdb: run `recs ingest` first"),
    (["build", "--warehouse", "{warehouse}", "--min-user-events", "0"], "min_user_events must be a positive integer, got 0"),
    (["train-retrieval", "--warehouse", "{empty}"], "no warehouse at {empty}/recs.duckdb: run `recs ingest` first"),
    (["train-retrieval", "--warehouse", "{warehouse}", "--steps", "0"], "--steps must be >= 1, got 0"),
    (["train-ranking", "--warehouse", "{warehouse}", "--checkpoints", "{checkpoints}", "--init-from-retrieval"],
     "no retrieval checkpoint under {checkpoints}/retrieval: run `recs train-retrieval` first"),
    (["train-ranking", "--warehouse", "{warehouse}", "--freeze-embeddings"],
     "--freeze-embeddings needs --init-from-retrieval (frozen random tables learn nothing)"),
    (["evaluate", "--warehouse", "{warehouse}", "--checkpoints", "{checkpoints}"],
     "no retrieval checkpoint under {checkpoints}/retrieval: run `recs train-retrieval` first"),
    (["score", "--warehouse", "{warehouse}", "--checkpoints", "{checkpoints}"],
     "no retrieval checkpoint under {checkpoints}/retrieval_serving: run `recs train-retrieval` first"),
    (["score", "--warehouse", "{warehouse}", "--top-n", "0"], "--top-n must be >= 1, got 0"),
    (["score", "--warehouse", "{warehouse}", "--shards", "0"], "--shards must be >= 1, got 0"),
    (["score", "--warehouse", "{warehouse}", "--shards", "2", "--dask-workers", "0"], "--dask-workers must be >= 1, got 0"),
    (["run", "--shards", "0"], "--shards must be >= 1, got 0"),
    (["run", "--data", "{empty}"], "events.csv (or events.csv.gz) not found in {empty} (no such directory)"),
    (["deploy", "--cron", "61 2 * * *"], "invalid cron '61 2 * * *': expected 5 fields"),
    (["deploy", "--retrain-cron", "weekly"], "invalid retrain cron 'weekly': expected 5 fields"),
    (["deploy", "--timezone", "Mars/Olympus"], "unknown timezone 'Mars/Olympus': use an IANA name"),
    (["deploy", "--data", "{empty}"], "events.csv (or events.csv.gz) not found in {empty} (no such directory)"),
])
def test_bad_input_is_one_line_before_any_flow_starts(built, capsys, argv, message):
    paths = {"warehouse": built.warehouse, "checkpoints": built.checkpoints, "empty": built.root / "empty"}
    code, err, out = run_main([a.format(**paths) for a in argv], capsys)
    assert code == 2 and out == ""
    assert len(err) == 1 and err[0].startswith(f"recs {argv[0]}: error: {message.format(**paths)}")
    assert not (built.root / "empty").exists() and not built.checkpoints.exists()


def test_recommend_unknown_customer_exits_2(built, capsys):
    code, err, out = run_main(["recommend", "--customer-id", 123456789, "--warehouse", built.warehouse,
                               "--checkpoints", built.checkpoints], capsys)
    assert (code, err, out) == (2, ["recs recommend: error: customer 123456789 not found in the warehouse"], "")


def test_recommend_without_a_run_or_models_exits_2(built, capsys):
    code, err, out = run_main(["recommend", "--customer-id", built.customer, "--warehouse", built.warehouse,
                               "--checkpoints", built.checkpoints], capsys)
    assert (code, out) == (2, "")
    assert err == [f"recs recommend: error: customer {built.customer} has no published recommendations and there is "
                   f"no retrieval checkpoint under {built.checkpoints} to compute them: run `recs run` first"]


def test_error_inside_a_flow_is_one_line_and_prefect_keeps_the_traceback(prefect_harness, built, capsys):
    """A garbled events.csv is only found inside the ingest flow: the console shows Prefect's
    one-line failure messages and the CLI's error, no traceback; the run's API log keeps it."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, LogFilter, LogFilterFlowRunId
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import APILogHandler, PrefectConsoleHandler

    garbled = built.root / "garbled"
    garbled.mkdir()
    (garbled / "events.csv").write_text("a,b,c\n1,2,3\n")
    expected = (f"{garbled / 'events.csv'}: not a Retail Rocket file: header is 'a,b,c', "
                "expected 'timestamp,visitorid,event,itemid,transactionid'")
    ensure_logging_setup()
    console = StringIO()
    handler = PrefectConsoleHandler(stream=console)  # a second console: what a terminal would show
    logging.getLogger().addHandler(handler)
    try:
        code, err, out = run_main(["ingest", "--data", garbled, "--warehouse", built.root / "garbled-warehouse"],
                                  capsys)
    finally:
        logging.getLogger().removeHandler(handler)
    assert code == 2 and err[-1] == f"recs ingest: error: {expected}"
    shown = console.getvalue()
    assert "Encountered exception during execution" in shown and expected in shown
    assert "Traceback" not in shown and "Traceback" not in "\n".join(err)

    for h in logging.getLogger("prefect.flow_runs").handlers:
        if isinstance(h, APILogHandler):
            h.flush()
    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["ingest"])))
                if r.parameters.get("data_dir") == str(garbled)]
        assert len(runs) == 1 and runs[0].state.is_failed()
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[runs[0].id])))
    assert any("Traceback" in log.message and expected in log.message for log in logs)
