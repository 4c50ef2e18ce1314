"""Configuration a user can work with: one TOML file (--config or $RECS_CONFIG) below the command
line, defaults from the flow signatures only, one-line errors and --debug."""
from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from recs.cli import COMMANDS, build_parser, main, prepare, resolve

REPO = Path(__file__).resolve().parents[1]


def prepared(argv: list[str]) -> dict:
    parser = build_parser()
    return prepare(parser, parser.parse_args([str(a) for a in argv]))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recs.toml"
    path.write_text(text)
    return path


def test_every_flow_parameter_has_an_option_and_defaults_come_from_the_signature():
    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    for cmd, (target, _) in COMMANDS.items():
        options = {a.dest: a for a in subs[cmd]._actions if a.option_strings}
        params = inspect.signature(resolve(target)).parameters
        internal = {"now", "nightly_parameters", "weekly_parameters"}  # not user settings (status's clock, deploy's)
        missing = set(params) - set(options) - internal
        assert not missing, (cmd, missing)
        for dest, action in options.items():
            if dest in params:  # no default of its own: "not given" lets the signature's apply
                assert action.default is argparse_suppress(), (cmd, dest, action.default)
    # The defaults a command runs with are the signature's.
    p = prepared(["score"])["params"]
    assert p == {name: par.default for name, par in inspect.signature(resolve(COMMANDS["score"][0])).parameters.items()}


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def test_help_shows_the_signature_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--top-n TOP_N items per customer (default: 20)" in text
    assert "(default: 0.05)" not in text  # score has no quarantine option
    with pytest.raises(SystemExit):
        main(["ingest", "--help"])
    assert "(default: 0.05)" in " ".join(capsys.readouterr().out.split())


def test_file_below_command_line_above_defaults(tmp_path, monkeypatch):
    config = write(tmp_path, """
warehouse_dir = "wh-from-file"

[score_all]
top_n = 7
retrieve_k = 99
exclude_bought = false
action_weights = [2, 1, 0.5]

[build_sequences]
min_user_events = 3
""")
    p = prepared(["--config", config, "score"])["params"]
    assert (p["top_n"], p["retrieve_k"], p["exclude_bought"], p["warehouse_dir"]) == (7, 99, False, "wh-from-file")
    assert p["action_weights"] == [2.0, 1.0, 0.5] and p["checkpoint_dir"] == "checkpoints"  # the flow's default
    p = prepared(["score", "--config", config, "--top-n", "3", "--exclude-bought", "--warehouse", "wh-cli"])["params"]
    assert (p["top_n"], p["retrieve_k"], p["exclude_bought"], p["warehouse_dir"]) == (3, 99, True, "wh-cli")
    p = prepared(["--config", config, "build"])["params"]
    assert (p["min_user_events"], p["warehouse_dir"], p["min_item_events"]) == (3, "wh-from-file", 1)
    # $RECS_CONFIG when --config is not given.
    monkeypatch.setenv("RECS_CONFIG", str(config))
    assert prepared(["score"])["params"]["top_n"] == 7
    assert prepared(["score", "--top-n", "4"])["params"]["top_n"] == 4


def test_build_with_data_takes_the_ingest_section(tmp_path):
    config = write(tmp_path, "[ingest]\nmax_quarantine_share = 0.2\nplausible_window_days = 30\n")
    out = prepared(["--config", config, "build", "--data", "d", "--warehouse", "wh"])
    assert out["ingest"] == {"data_dir": "d", "warehouse_dir": "wh", "plausible_window_days": 30,
                             "max_quarantine_share": 0.2, "data_format": None}
    out = prepared(["--config", config, "build", "--data", "d", "--max-quarantine-share", "0.5"])
    assert out["ingest"]["max_quarantine_share"] == 0.5
    assert prepared(["--config", config, "build"])["ingest"] is None


def test_deploy_takes_score_all_and_retrain_sections(tmp_path):
    config = write(tmp_path, "[score_all]\ntop_n = 9\n[retrain]\nmin_user_events = 4\n[deploy]\nprofile = 'tiny'\n")
    out = prepared(["--config", config, "deploy"])
    assert out["params"]["profile"] == "tiny"
    assert out["deploy"] == {"nightly_parameters": {"top_n": 9}, "weekly_parameters": {"min_user_events": 4}}


def run_main(argv: list, capsys) -> tuple[int, list[str], str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.err.splitlines(), out.out


@pytest.mark.parametrize("text, message", [
    ("[score]\ntop_n = 5\n", "unknown section [score]; expected one of"),
    ("[score_all]\ntopn = 5\n", "[score_all] has no parameter topn; it takes"),
    ("[score_all]\ntop_n = 'many'\n", "[score_all] top_n must be an integer (like --top-n), got 'many'"),
    ("[score_all]\nkeep_model = 1\n", "[score_all] keep_model must be true or false"),
    ("[train_retrieval]\nprofile = 'huge'\n", "[train_retrieval] profile must be one of tiny, cpu, gpu"),
    ("[retrain]\nprofile = 'tiny'\n", "[retrain] has no parameter profile"),
    ("top_n = 5\n[score_all\n", "not valid TOML"),
    ("colour = 'blue'\n", "unknown top-level key colour"),
])
def test_bad_config_is_one_line_and_exit_2(tmp_path, capsys, text, message):
    config = write(tmp_path, text)
    code, err, out = run_main(["--config", config, "status", "--warehouse", tmp_path / "wh"], capsys)
    assert (code, out) == (2, "") and len(err) == 1
    assert err[0].startswith(f"recs status: error: {config}") and message in err[0], err


def test_missing_config_file_is_one_line(tmp_path, capsys):
    code, err, _ = run_main(["--config", tmp_path / "nope.toml", "status"], capsys)
    assert (code, err) == (2, [f"recs status: error: config file {tmp_path / 'nope.toml'} not found"])


def test_config_values_reach_validation_and_the_command_line_wins(tmp_path, capsys):
    """No flow runs: the validation before it sees what the file and the command line set."""
    wh = tmp_path / "empty"
    config = write(tmp_path, f"[score_all]\ntop_n = 0\nwarehouse_dir = '{wh}'\n")
    code, err, _ = run_main(["--config", config, "score"], capsys)
    assert (code, err) == (2, [f"recs score: error: no warehouse at {wh}/recs.duckdb: run `recs ingest` first"])
    config = write(tmp_path, "[build_sequences]\nmin_user_events = 0\n")
    built = tmp_path / "built"
    (built / "sequences").mkdir(parents=True)
    (built / "recs.duckdb").write_bytes(b"")
    code, err, _ = run_main(["--config", config, "build", "--warehouse", built], capsys)
    assert (code, err) == (2, ["recs build: error: min_user_events must be a positive integer, got 0"])
    code, err, _ = run_main(["--config", config, "build", "--warehouse", built, "--min-user-events", "2",
                             "--history-len", "0"], capsys)
    assert (code, err) == (2, ["recs build: error: history_len must be a positive integer, got 0"])


def test_required_option_may_come_from_the_file(tmp_path, capsys):
    code, err, _ = run_main(["ingest", "--warehouse", tmp_path / "wh"], capsys)
    assert code == 2 and err == ["recs ingest: error: --data is required (or `data_dir` in the [ingest] section "
                                 "of the config file)"]
    config = write(tmp_path, f"[ingest]\ndata_dir = '{tmp_path / 'nowhere'}'\n")
    code, err, _ = run_main(["--config", config, "ingest", "--warehouse", tmp_path / "wh"], capsys)
    assert code == 2 and err == [f"recs ingest: error: events.csv (or events.csv.gz) not found in "
                                 f"{tmp_path / 'nowhere'} (no such directory)"]


def test_unexpected_error_is_one_line_without_debug_and_a_traceback_with_it(tmp_path, capsys, monkeypatch):
    import recs.status

    def broken(**kwargs):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(recs.status, "collect_status", broken)
    code, err, out = run_main(["status", "--warehouse", tmp_path], capsys)
    assert (code, out) == (1, "")
    assert err == ["recs status: unexpected error: RuntimeError: disk on fire; second line "
                   "(re-run with --debug for the traceback)"]
    for argv in (["--debug", "status", "--warehouse", tmp_path], ["status", "--warehouse", tmp_path, "--debug"]):
        code, err, _ = run_main(argv, capsys)
        assert code == 1 and err[0] == "Traceback (most recent call last):" and "RuntimeError: disk on fire" in err
        assert err[-1] == "recs status: unexpected error: RuntimeError: disk on fire; second line"
    # A user error stays exit 2; --debug adds its traceback.
    code, err, _ = run_main(["--debug", "score", "--warehouse", tmp_path / "none"], capsys)
    assert code == 2 and err[0] == "Traceback (most recent call last):"
    assert err[-1] == f"recs score: error: no warehouse at {tmp_path / 'none'}/recs.duckdb: run `recs ingest` first"


def test_debug_flag_in_a_subprocess(tmp_path):
    """The real entry point: without --debug no traceback, exit 1."""
    env_code = ("import sys, recs.status, recs.cli\n"
                "def broken(**kw): raise KeyError('nope')\n"
                "recs.status.collect_status = broken\n"
                "sys.exit(recs.cli.main(sys.argv[1:]))\n")
    for extra, has_traceback in (([], False), (["--debug"], True)):
        proc = subprocess.run([sys.executable, "-c", env_code, *extra, "status", "--warehouse", str(tmp_path)],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1
        assert ("Traceback" in proc.stderr) is has_traceback
        assert proc.stderr.splitlines()[-1].startswith("recs status: unexpected error: KeyError: 'nope'")
