"""A reader that keeps a warehouse open in another process, the way an analyst's DuckDB CLI,
notebook or BI tool does, while a test runs writers beside it.

The child process opens `warehouse/recs.duckdb` read-only by the path users type (through the
symlink) and keeps that one connection until closed; each `query` runs on it. Only duckdb is
imported there: the child shares nothing with the test process but the file system.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

READER = r"""
import json, sys
import duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
print(json.dumps({"open": True}), flush=True)
for line in sys.stdin:
    try:
        out = {"rows": con.execute(json.loads(line)).fetchall()}
    except Exception as exc:  # reported to the test, which fails on it
        out = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out, default=str), flush=True)
"""


class HeldReader:
    """`with HeldReader(db_path(warehouse)) as reader: reader.query(sql)` on one held connection."""

    def __init__(self, db: Path) -> None:
        self._proc = subprocess.Popen([sys.executable, "-c", READER, str(db)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = self._proc.stdout.readline()
        if not first:
            raise RuntimeError(f"the reader did not open {db}: {self._proc.stderr.read()}")
        assert json.loads(first) == {"open": True}

    def query(self, sql: str) -> list[tuple]:
        """All rows of `sql`, run on the held connection."""
        self._proc.stdin.write(json.dumps(sql) + "\n")
        self._proc.stdin.flush()
        answer = json.loads(self._proc.stdout.readline())
        if "error" in answer:
            raise AssertionError(f"held reader: {answer['error']}")
        return [tuple(row) for row in answer["rows"]]

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=30)
        self._proc.stdout.close()
        self._proc.stderr.close()

    def __enter__(self) -> "HeldReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
