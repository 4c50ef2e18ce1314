"""Reading a warehouse from tests the way its users do: a short-lived read-only connection."""
from __future__ import annotations

from pathlib import Path

from recs.publish import connect_with_retry


def query(warehouse: Path, sql: str, params: list | None = None) -> list[tuple]:
    """All rows of a query, through a read-only connection closed before returning (none stays in
    the caller's frame, which Prefect's stored failure state would keep alive)."""
    con = connect_with_retry(warehouse, read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()
