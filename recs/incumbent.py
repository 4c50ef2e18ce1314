"""An incumbent's lists in the warehouse table `incumbent_lists`: a shop's files, validated, or a
built-in baseline exported through the serving path.

Files: a CSV (plain or .gz) or parquet file, or a directory of them, with the columns
`customer_id, rank, item_id[, score]` in the source data's ids (events.visitorid / itemid).
Column names match case-insensitively; other columns are reported (with the number of rows
that carry a value in them) and left out. Every row that cannot be used is kept out with a
reason (sql/staging/stg_incumbent_rows.sql) and counted; nothing is dropped silently. The
incumbent's previous rows are replaced in one transaction, so a re-run is idempotent and a
failed load leaves the previous lists in place.

Built-in incumbents (`popularity`, `item_knn`): the lists those baselines would publish today
for every customer, from the same scoring code as the nightly run (recs.scoring, strategy
`item_knn`; popularity = the served fallback list without the customer's purchases).
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from recs.publish import connect_with_retry
from recs.warehouse import run_sql

REQUIRED_COLUMNS = ("customer_id", "rank", "item_id")
OPTIONAL_COLUMNS = ("score",)
BUILTIN = ("popularity", "item_knn")
FILE_SUFFIXES = (".csv", ".csv.gz", ".parquet")
EXAMPLES_PER_REASON = 3


def is_builtin(incumbent: str) -> bool:
    return incumbent in BUILTIN


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".csv") or name.endswith(".csv.gz"):
        return "csv"
    return None


def incumbent_files(path: str | Path) -> list[Path]:
    """The CSV / parquet files behind PATH (a file, or a directory's files in name order)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no incumbent file or directory at {path}")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _kind(p))
        if not files:
            raise FileNotFoundError(f"no .csv, .csv.gz or .parquet files in {path}")
        return files
    if _kind(path) is None:
        raise ValueError(f"{path}: an incumbent file must be .csv, .csv.gz or .parquet")
    return [path]


def default_name(incumbent: str) -> str:
    """`--name` when not given: the built-in's name, or the file's (directory's) stem."""
    if is_builtin(incumbent):
        return incumbent
    name = Path(incumbent).name
    for suffix in (".gz", ".csv", ".parquet"):
        name = name[: -len(suffix)] if name.lower().endswith(suffix) else name
    return name or "incumbent"


def _read_relation(con, path: Path) -> str:
    """SQL of one file read with every column as text."""
    quoted = str(path).replace("'", "''")
    if _kind(path) == "csv":
        return f"read_csv('{quoted}', all_varchar = true, header = true)"
    return f"read_parquet('{quoted}')"


def stage_files(con, files: list[Path]) -> dict:
    """Fill the temp table `incumbent_raw` (text columns) from the files; returns {n_rows,
    unknown_columns: {column: rows with a value}}. A file without a required column fails."""
    import duckdb

    con.execute("CREATE OR REPLACE TEMP TABLE incumbent_raw (source_file VARCHAR, raw_customer_id VARCHAR, "
                "raw_rank VARCHAR, raw_item_id VARCHAR, raw_score VARCHAR)")
    unknown: dict[str, int] = {}
    for path in files:
        relation = _read_relation(con, path)
        try:
            columns = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()]
        except duckdb.Error as exc:
            raise ValueError(f"{path}: cannot be read as {_kind(path)}: {str(exc).splitlines()[0]}") from None
        by_name = {c.strip().lower(): c for c in columns}
        missing = [c for c in REQUIRED_COLUMNS if c not in by_name]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (need customer_id, rank, item_id"
                             f"[, score]; found {', '.join(columns) or 'none'})")

        def text(name: str) -> str:
            return f'CAST("{by_name[name]}" AS VARCHAR)' if name in by_name else "NULL"

        quoted = str(path).replace("'", "''")
        try:
            con.execute(f"INSERT INTO incumbent_raw SELECT '{quoted}', {text('customer_id')}, {text('rank')}, "
                        f"{text('item_id')}, {text('score')} FROM {relation}").fetchall()
            for key, column in by_name.items():
                if key not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
                    n = con.execute(f'SELECT count("{column}") FROM {relation}').fetchall()[0][0]
                    unknown[column] = unknown.get(column, 0) + int(n)
        except duckdb.Error as exc:
            raise ValueError(f"{path}: cannot be read as {_kind(path)}: {str(exc).splitlines()[0]}") from None
    n_rows = con.execute("SELECT count(*) FROM incumbent_raw").fetchall()[0][0]
    return {"n_rows": int(n_rows), "unknown_columns": unknown}


def _store(con, name: str, select_sql: str) -> int:
    """Replace incumbent `name`'s rows with those of `select_sql` (customer_id, rank, item_id, score)."""
    run_sql(con, "marts/incumbent_lists")
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    con.execute("BEGIN TRANSACTION")
    con.execute("DELETE FROM incumbent_lists WHERE incumbent = ?", [name]).fetchall()
    con.execute(f"INSERT INTO incumbent_lists SELECT ?, customer_id, rank, item_id, score, ? FROM ({select_sql})",
                [name, now]).fetchall()
    con.execute("COMMIT")
    return int(con.execute("SELECT count(*) FROM incumbent_lists WHERE incumbent = ?", [name]).fetchall()[0][0])


def _coverage(con, name: str) -> dict:
    """Customers the incumbent covers, and the customers of the latest run it does not."""
    covered = con.execute("SELECT count(DISTINCT customer_id) FROM incumbent_lists WHERE incumbent = ?",
                          [name]).fetchall()[0][0]
    if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'latest_recommendations'"
                       ).fetchall()[0][0]:
        return {"customers_covered": int(covered), "customers_not_covered": None}
    not_covered = con.execute(
        "SELECT count(*) FROM (SELECT DISTINCT customer_id FROM latest_recommendations) "
        "ANTI JOIN (SELECT DISTINCT customer_id FROM incumbent_lists WHERE incumbent = ?) USING (customer_id)",
        [name]).fetchall()[0][0]
    return {"customers_covered": int(covered), "customers_not_covered": int(not_covered)}


def load_incumbent_file(warehouse_dir: str | Path, path: str | Path, name: str) -> dict:
    """Validate the file(s) at `path` and store the usable rows as incumbent `name`.

    Returns {incumbent, files, n_rows, n_kept, rejected: {reason: rows}, examples: {reason: [rows]},
    unknown_columns, customers_covered, customers_not_covered}. No usable row at all fails
    (ValueError) and keeps the incumbent's previous rows."""
    files = incumbent_files(path)
    with connect_with_retry(warehouse_dir) as con:
        staged = stage_files(con, files)
        run_sql(con, "staging/stg_incumbent_rows")
        rejected = dict(con.execute("SELECT reason, count(*) FROM stg_incumbent_rows WHERE reason IS NOT NULL "
                                    "GROUP BY 1 ORDER BY 2 DESC, 1").fetchall())
        examples = {}
        for reason in rejected:
            rows = con.execute("SELECT raw_customer_id, raw_rank, raw_item_id, raw_score FROM stg_incumbent_rows "
                               "WHERE reason = ? LIMIT ?", [reason, EXAMPLES_PER_REASON]).fetchall()
            examples[reason] = [dict(zip(("customer_id", "rank", "item_id", "score"), r)) for r in rows]
        n_kept = int(con.execute("SELECT count(*) FROM stg_incumbent_rows WHERE reason IS NULL").fetchall()[0][0])
        if n_kept == 0:
            reasons = ", ".join(f"{r}: {n}" for r, n in rejected.items()) or "the file(s) hold no rows"
            raise ValueError(f"{path}: no usable incumbent rows ({reasons})")
        _store(con, name, "SELECT customer_id, rank, item_id, score FROM stg_incumbent_rows WHERE reason IS NULL")
        coverage = _coverage(con, name)
    return {"incumbent": name, "source": str(path), "files": [str(f) for f in files], "n_rows": staged["n_rows"],
            "n_kept": n_kept, "rejected": {r: int(n) for r, n in rejected.items()}, "examples": examples,
            "unknown_columns": staged["unknown_columns"], **coverage}


def builtin_lists(warehouse_dir: str | Path, checkpoint_dir: str | Path, strategy: str, top_n: int) -> pa.Table:
    """(customer_id, rank, item_id, score) of the built-in baseline for every customer scoring serves."""
    from model.data import serving_histories
    from model.serving import bought_matrix
    from recs.scoring import fill_from_fallback, load_scorer

    if strategy not in BUILTIN:
        raise ValueError(f"unknown built-in incumbent {strategy!r}; expected one of {BUILTIN}")
    scorer = load_scorer(warehouse_dir, checkpoint_dir, top_n=top_n, strategy="item_knn")
    generated_at = datetime.now(timezone.utc).replace(tzinfo=None)
    parts = []
    for chunk in serving_histories(scorer.tables):
        if strategy == "item_knn":
            table, _ = scorer.score_chunk(chunk, "", generated_at)
            parts.append(table.select(["customer_id", "rank", "item_id", "score"]))
            continue
        n = len(chunk.customer_idx)
        bought = (bought_matrix(chunk.customer_idx, scorer.inputs["bought"], scorer.config.max_bought)
                  if scorer.config.exclude_bought else np.zeros((n, 1), np.int32))
        items, _ = fill_from_fallback(np.zeros((n, top_n), np.int32), scorer.fallback, bought, top_n)
        rows, slots = np.nonzero(items > 0)
        parts.append(pa.table({"customer_id": chunk.visitorid[rows],
                               "rank": (slots + 1).astype(np.int32),
                               "item_id": scorer.tables.item_ids[items[rows, slots]].astype(np.int64),
                               "score": pa.nulls(len(rows), pa.float64())}))
    return pa.concat_tables(parts) if parts else pa.table({"customer_id": pa.array([], pa.int64())})


def export_builtin(warehouse_dir: str | Path, checkpoint_dir: str | Path, strategy: str, name: str,
                   top_n: int = 20) -> dict:
    """Store the built-in baseline's lists as incumbent `name`."""
    lists = builtin_lists(warehouse_dir, checkpoint_dir, strategy, top_n)
    with connect_with_retry(warehouse_dir) as con:
        con.register("builtin_lists", lists)
        n = _store(con, name, "SELECT customer_id, rank, item_id, score FROM builtin_lists")
        con.unregister("builtin_lists")
        coverage = _coverage(con, name)
    return {"incumbent": name, "source": f"built-in {strategy}", "files": [], "n_rows": n, "n_kept": n,
            "rejected": {}, "examples": {}, "unknown_columns": {}, **coverage}
