"""Warehouse access: paths, connections and the SQL-file runner every stage shares.

DuckDB allows one writer process per database file, so flows write through `connect()`
and readers (dashboards, `recs recommend`, tests of atomic publish) use `read_only=True`.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

REPO_ROOT = Path(__file__).resolve().parents[1]
SQL_DIR = REPO_ROOT / "sql"
DEFAULT_WAREHOUSE = Path("warehouse")
DEFAULT_CHECKPOINTS = Path("checkpoints")
DB_FILENAME = "recs.duckdb"
# DuckDB's default buffer pool is 80% of RAM and it keeps what it reads cached: a pipeline that
# streams 2.76M rows needs far less (it spills to disk beyond the limit). bench/pipeline.py at
# full scale (ingest + build): 250MB -> 4.6 s / 433 MB peak, 200MB -> 4.6 s / 400 MB,
# 150MB -> 4.9 s / 391 MB.
# Raise it for much larger inputs with RECS_DUCKDB_MEMORY_LIMIT.
DEFAULT_MEMORY_LIMIT = "200MB"


def db_path(warehouse_dir: str | Path) -> Path:
    """The DuckDB file inside a warehouse directory."""
    return Path(warehouse_dir) / DB_FILENAME


def sequences_dir(warehouse_dir: str | Path) -> Path:
    """Root of the parquet sequence tables (train/val/test/serving/items/customers)."""
    return Path(warehouse_dir) / "sequences"


def connect(warehouse_dir: str | Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the warehouse database, creating the directory for writers."""
    path = db_path(warehouse_dir)
    if read_only:
        if not path.exists():
            raise FileNotFoundError(f"no warehouse at {path}: run `recs ingest` first")
        return duckdb.connect(str(path), read_only=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute(f"SET memory_limit = '{os.environ.get('RECS_DUCKDB_MEMORY_LIMIT', DEFAULT_MEMORY_LIMIT)}'")
    return con


def read_sql(name: str) -> str:
    """Text of `sql/<name>.sql`, e.g. read_sql("staging/stg_events")."""
    path = SQL_DIR / f"{name}.sql"
    return path.read_text()


_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def sql_params(sql: str) -> set[str]:
    """The `$name` parameters a statement uses (string literals are not special-cased)."""
    return set(_PARAM.findall(sql))


def run_sql(con: duckdb.DuckDBPyConnection, name: str, **params: Any) -> duckdb.DuckDBPyConnection:
    """Run one statement from `sql/<name>.sql`, binding only the `$name` parameters it uses.

    Missing parameters fail loudly with the file name rather than as a DuckDB binder error.
    """
    sql = read_sql(name)
    wanted = sql_params(sql)
    missing = wanted - params.keys()
    if missing:
        raise ValueError(f"sql/{name}.sql needs parameters {sorted(missing)}")
    bound = {k: v for k, v in params.items() if k in wanted}
    return con.execute(sql, bound) if bound else con.execute(sql)


def table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """True when a table or view of that name exists in the main schema."""
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
        ).fetchone()[0]
    )


@contextmanager
def duckdb_setting(con: duckdb.DuckDBPyConnection, name: str, value: bool | int) -> Iterator[None]:
    """`SET name = value` for the duration of the block; the previous value is restored after it,
    also when the block fails."""
    [(previous,)] = con.execute(f"SELECT current_setting('{name}')").fetchall()
    con.execute(f"SET {name} = {value}")
    try:
        yield
    finally:
        con.execute(f"SET {name} = {previous}")
