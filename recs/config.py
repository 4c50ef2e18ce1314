"""The config file: one TOML file of parameters for every stage, read by `recs --config FILE`
(or $RECS_CONFIG).

Sections are named after the flow (or function) a command runs, keys are its parameter names:

    warehouse_dir = "/data/recs/warehouse"   # top level: every command that has the parameter
    checkpoint_dir = "/data/recs/checkpoints"

    [ingest]
    max_quarantine_share = 0.02

    [build_sequences]
    min_user_events = 5

    [score_all]
    top_n = 20
    retrieve_k = 100

Precedence: the function's own default (its signature: the one place defaults live) < the config
file < the command line. Unknown sections, unknown keys and values of the wrong type are errors
(ValueError: `recs` prints them as one line and exits 2).
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

ENV_VAR = "RECS_CONFIG"


def config_path(given: str | None) -> Path | None:
    """The config file to read: --config, else $RECS_CONFIG, else none."""
    path = given or os.environ.get(ENV_VAR) or None
    return Path(path) if path else None


def read_config(path: Path) -> dict[str, Any]:
    """The parsed TOML file (FileNotFoundError / ValueError naming the file)."""
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a UTF-8 text file ({exc})") from None


def split_config(data: dict[str, Any], path: Path, sections: dict[str, list[str]],
                 aliases: dict[str, str] | None = None) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(top-level keys, {section: keys}) of a parsed file, checked against `sections`
    ({section: the parameter names it may set}); top-level keys must be a parameter of at least
    one section."""
    aliases = aliases or {}
    top = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables: dict[str, dict[str, Any]] = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            continue
        canonical = aliases.get(name, name)
        if canonical not in sections:
            raise ValueError(f"{path}: unknown section [{name}]; expected one of "
                             + ", ".join(f"[{s}]" for s in sorted(sections)))
        if canonical in tables:
            raise ValueError(f"{path}: both [{name}] and [{canonical}]: keep one")
        unknown = sorted(set(table) - set(sections[canonical]))
        if unknown:
            raise ValueError(f"{path}: [{name}] has no parameter {', '.join(unknown)}; it takes "
                             + ", ".join(sections[canonical]))
        tables[canonical] = table
    everything = {p for params in sections.values() for p in params}
    unknown = sorted(set(top) - everything)
    if unknown:
        raise ValueError(f"{path}: unknown top-level key {', '.join(unknown)} (a parameter of no command; "
                         "put stage settings under their [section])")
    return top, tables


def check_value(value: Any, action, where: str) -> Any:
    """`value` from the file, checked against the command-line option `action` that sets the same
    parameter (its type, choices, number of values); returns it converted like the option would."""
    import argparse

    if action is None:
        return value
    flag = action.option_strings[0] if action.option_strings else action.dest
    if isinstance(action, argparse.BooleanOptionalAction) or action.nargs == 0:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false (like {flag}), got {value!r}")
        return value
    many = action.nargs not in (None, "?")
    values = value if many else [value]
    if many and not isinstance(value, list):
        raise ValueError(f"{where} must be a list (like {flag}), got {value!r}")
    if isinstance(action.nargs, int) and len(values) != action.nargs:
        raise ValueError(f"{where} needs {action.nargs} values (like {flag}), got {len(values)}")
    out = []
    for v in values:
        kind = action.type
        if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise ValueError(f"{where} must be an integer (like {flag}), got {v!r}")
        if kind is float and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValueError(f"{where} must be a number (like {flag}), got {v!r}")
        if kind in (None, str) and not isinstance(v, str):
            raise ValueError(f"{where} must be a string (like {flag}), got {v!r}")
        if action.choices is not None and v not in action.choices:
            raise ValueError(f"{where} must be one of {', '.join(map(str, action.choices))}, got {v!r}")
        out.append(float(v) if kind is float else v)
    return out if many else out[0]
