"""Ingest: Retail Rocket CSVs -> warehouse tables (events, quarantine_events, categories,
item_snapshots, items, item_prices, the id mappings customer_keys / item_keys; ingest_runs is
created here and appended by flows/ingest.py). H&M-format directories (transactions_train.csv)
go through recs/ingest_hm.py onto the same tables: `detect_format` tells them apart by file name.

events.csv is streamed in blocks of whole lines. While the file is plainly clean (the usual
case: nothing but digits, separators, line ends and event names, five fields a line, ids that
parse) Arrow's CSV reader types each block and DuckDB consumes the stream, so memory stays at
one block however big the file is. Otherwise the file is read as raw lines split on '\n' only
(numpy over the file's bytes, zero-copy into Arrow) and split and validated in SQL
(sql/staging, sql/intermediate); either way `line_number` is the true physical line whatever
the line endings, quoting or blank lines. Every data row ends up in exactly one of `events` /
`quarantine_events`. The whole replacement runs in one transaction: a missing or garbled input
leaves the previous tables untouched.
"""
from __future__ import annotations

import gzip
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from recs.warehouse import duckdb_setting, run_sql

EVENTS_HEADER = "timestamp,visitorid,event,itemid,transactionid"
PROPERTIES_HEADER = "timestamp,itemid,property,value"
CATEGORY_TREE_HEADER = "categoryid,parentid"
PROPERTIES_STEMS = ("item_properties_part1", "item_properties_part2")
EVENT_TYPES = ("view", "addtocart", "transaction")
EVENT_COLUMNS = ("timestamp", "visitorid", "event", "itemid", "transactionid")
EVENT_ARROW_TYPES = {
    "timestamp": pa.int64(), "visitorid": pa.int64(), "event": pa.string(),
    "itemid": pa.int64(), "transactionid": pa.string(),
}
# Bytes of a plainly clean events.csv body: digits, separators, '.' of "8693.0", line ends,
# and the letters of view/addtocart/transaction (no '-', '+', space or 'x').
PLAIN_EVENT_BYTES = bytes(sorted(set(b"0123456789,.\r\n" + b"".join(t.encode() for t in EVENT_TYPES))))
# Every quarantine reason, in the order the checks run (the first failing one is recorded).
QUARANTINE_REASONS = (
    "wrong_column_count",
    "bad_timestamp",
    "bad_visitorid",
    "bad_itemid",
    "bad_transactionid",
    "unknown_event",
    "transaction_without_transactionid",
    "transactionid_on_non_transaction",
    "duplicate",
    "nonpositive_id",
    "timestamp_out_of_range",
)
# The item property read as a price (an assumption: see the README's "Item prices").
PRICE_PROPERTY = "790"
MAX_CATEGORY_DEPTH = 64  # guard for the recursive walk of the category tree
MS_PER_DAY = 86_400_000
EVENT_LINES_VIEW = "stg_event_lines"  # the Arrow table stg_events_parsed.sql reads
EVENT_ROWS_VIEW = "stg_event_rows"  # the one stg_events_parsed_typed.sql reads
# Bytes of events.csv per streamed block: big enough for Arrow to parse on every core, small
# enough that the file never sits in memory whole (16 MB blocks cost ~100 MB more peak, no time).
EVENTS_BLOCK_BYTES = 4 << 20
QUARANTINED_LINES_VIEW = "stg_quarantined_lines"  # the one int_quarantine_events.sql reads
# Working tables of one ingest, dropped before its COMMIT (TEMP ones, and the big staging tables
# that live in the database file for the transaction's duration: see their SQL headers).
WORKING_TABLES = (
    "stg_events_parsed",
    "stg_item_properties",
    "stg_item_prices",
    "stg_category_tree",
    "int_events_rejected",
    "int_item_category_snapshots",
    "int_item_available_snapshots",
    "int_item_states",
)
# The tables ingest_dir replaces (ingest_runs is only ever appended to).
WAREHOUSE_TABLES = ("events", "quarantine_events", "categories", "item_snapshots", "items", "item_prices",
                    "customer_keys", "item_keys")
FORMATS = ("retailrocket", "hm")
# The plausibility window (days around the median timestamp) when none is given, per format.
DEFAULT_PLAUSIBLE_WINDOW_DAYS = 365
# The ingest flow (and `recs ingest --max-quarantine-share`) fails when more of events.csv's
# rows than this are quarantined: a file that bad is more likely a wrong export than dirty data.
DEFAULT_MAX_QUARANTINE_SHARE = 0.05


def check_quarantine_share(counts: dict[str, Any], max_share: float | None, data_dir: Path,
                           file_name: str = "events.csv") -> None:
    """ValueError (one line: share, top reasons, what to do) when the quarantined share of the
    rows read exceeds `max_share` (None: no limit)."""
    if max_share is None or not counts["rows_read"]:
        return
    share = counts["rows_quarantined"] / counts["rows_read"]
    if share <= max_share:
        return
    reasons = sorted(((n, r) for r, n in counts["quarantine_by_reason"].items() if n), reverse=True)[:3]
    raise ValueError(
        f"{data_dir}: {counts['rows_quarantined']:,} of {counts['rows_read']:,} rows of {file_name} "
        f"({share:.1%}) would be quarantined, above the limit of {max_share:.1%} "
        f"(mostly {', '.join(f'{r} {n:,}' for n, r in reasons)}); nothing was loaded and the previous "
        f"tables are kept. Fix the export, or re-run with --max-quarantine-share {min(1.0, share + 0.005):.3f} "
        "to load it anyway and inspect quarantine_events")


def find_input(data_dir: Path, stem: str) -> Path | None:
    """`<stem>.csv` in data_dir, else `<stem>.csv.gz`, else None (plain wins when both exist)."""
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        path = data_dir / name
        if path.is_file():
            return path
    return None


def read_file_bytes(path: Path) -> bytes:
    """Whole content of a plain or gzip file; a corrupt gzip is a ValueError naming the file."""
    try:
        if path.name.endswith(".gz"):
            with pa.input_stream(str(path), compression="gzip") as stream:
                return stream.read()
        return path.read_bytes()
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"{path}: unreadable ({exc})") from exc


def split_lines(data: bytes) -> pa.Table:
    """Arrow table (line_number from 1, raw_line) of the physical lines of `data`.

    Lines end at '\\n' only; raw_line keeps its terminator ('\\n' or '\\r\\n', stripped in SQL)
    because contiguous Arrow offsets into the original buffer avoid copying ~100 MB. Trailing
    blank (whitespace-only) lines are dropped: they are not data rows. Bytes that are not valid
    UTF-8 are replaced by `\\xNN` escapes (a rare, slower path) so such lines still quarantine.
    """
    data = _valid_utf8(data)
    return _physical_lines(data, 1, _end_of_content(data))  # an empty file: one empty line (the header)


def _valid_utf8(data: bytes) -> bytes:
    """`data` itself when it is valid UTF-8, else a copy with `\\xNN` escapes for the bad bytes."""
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("utf-8", errors="backslashreplace").encode("utf-8")
    return data


def _physical_lines(data: bytes, first_line_number: int, end: int | None = None) -> pa.Table:
    """(line_number, raw_line) of the lines of data[:end], numbered from first_line_number:
    every '\\n'-terminated one (terminator kept) and the unterminated rest, if any (no lines at
    all: one empty line). raw_line points into `data` itself (Arrow offsets, no copy)."""
    end = len(data) if end is None else end
    line_ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8, count=end) == 10) + 1  # after each '\\n'
    if not len(line_ends) or line_ends[-1] != end:
        line_ends = np.append(line_ends, end)
    offsets = np.empty(len(line_ends) + 1, dtype=np.int64)
    offsets[0] = 0
    offsets[1:] = line_ends
    n_lines = len(line_ends)
    raw_line = pa.LargeStringArray.from_buffers(n_lines, pa.py_buffer(offsets), pa.py_buffer(data))
    line_number = _int64_array(np.arange(first_line_number, first_line_number + n_lines, dtype=np.int64))
    return pa.table({"line_number": line_number, "raw_line": raw_line})


def _int64_array(values: np.ndarray) -> pa.Array:
    """Zero-copy Arrow int64 array (from_buffers rather than pa.array, whose first call costs ~1 s
    of lazy imports)."""
    values = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


def _count_lines(data: bytes) -> int:
    """Physical lines in `data`: its '\\n's, plus one for an unterminated last line."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def _end_of_content(data: bytes) -> int:
    """Where the last non-blank line of `data` ends (before its '\n'): trailing blank or
    whitespace-only lines are cut, the last line itself is kept whole. No copy of the buffer."""
    end = len(data)
    while end and data[end - 1] in b" \t\r\n":
        end -= 1
    if end == 0:
        return 0
    newline = data.find(b"\n", end)
    return len(data) if newline == -1 else newline


def iter_line_blocks(path: Path, block_bytes: int | None = None) -> Iterator[bytes]:
    """Consecutive pieces of a plain or gzip file, each ending just after a '\n' (the last one
    may not): a line is never split across pieces. ValueError naming the file when unreadable."""
    block_bytes = block_bytes or EVENTS_BLOCK_BYTES
    compression = "gzip" if path.name.endswith(".gz") else None
    try:
        with pa.input_stream(str(path), compression=compression) as stream:
            carry = b""
            while chunk := stream.read(block_bytes):
                cut = chunk.rfind(b"\n") + 1
                if cut == 0:
                    carry += chunk
                    continue
                yield carry + chunk[:cut] if carry else chunk[:cut]
                carry = chunk[cut:]
            if carry:
                yield carry
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"{path}: unreadable ({exc})") from exc


def data_line_blocks(path: Path, block_bytes: int | None = None) -> Iterator[bytes]:
    """The data lines of a CSV file in blocks (header cut off; trailing blank lines cut from the
    last block, as split_lines does)."""
    blocks = iter_line_blocks(path, block_bytes)
    first = next(blocks, b"")
    current = first[first.find(b"\n") + 1:] if b"\n" in first else b""
    for block in blocks:
        yield current
        current = block
    yield current[:_end_of_content(current)]


def parse_plain_block(body: bytes, first_line_number: int) -> pa.Table | None:
    """Typed rows (line_number, the five columns) of a block of events.csv data lines, or None
    unless the block is plainly clean.

    Arrow's multi-threaded CSV reader is ~4x cheaper than splitting lines in SQL, but its
    integer parsing is laxer than parse_bigint (it trims spaces, reads 0x hex), so it is used
    only when the block holds nothing but digits , . CR LF and event-name letters, every line
    has five fields and every id parses; its rows are then exactly the block's physical lines
    (checked by count: a stray CR would split a line, a blank line has one field).
    """
    if body.translate(None, PLAIN_EVENT_BYTES):
        return None
    n_lines = _count_lines(body)
    try:
        table = pacsv.read_csv(
            pa.BufferReader(body),
            read_options=pacsv.ReadOptions(column_names=list(EVENT_COLUMNS)),
            parse_options=pacsv.ParseOptions(
                quote_char=False, escape_char=False, newlines_in_values=False, ignore_empty_lines=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=EVENT_ARROW_TYPES, null_values=[], strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid:
        return None
    if table.num_rows != n_lines:
        return None
    line_number = _int64_array(np.arange(first_line_number, first_line_number + n_lines, dtype=np.int64))
    return table.add_column(0, "line_number", line_number)


PLAIN_ROWS_SCHEMA = pa.schema([("line_number", pa.int64()), *EVENT_ARROW_TYPES.items()])


class PlainEventRows:
    """The typed rows of events.csv as a stream of Arrow batches, block by block, for as long as
    the file is plainly clean (parse_plain_block). At the first block that is not, the stream
    ends early and `plain` turns False: the caller discards what was read and parses in SQL."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.plain = True
        self.n_rows = 0
        self.error: ValueError | None = None  # the file turned out unreadable (e.g. truncated gzip)

    def reader(self) -> pa.RecordBatchReader:
        """A one-shot reader over the rows (register it with DuckDB and scan it once)."""
        return pa.RecordBatchReader.from_batches(PLAIN_ROWS_SCHEMA, self._batches())

    def _batches(self) -> Iterator[pa.RecordBatch]:
        # An exception raised in here would surface as a DuckDB error about the scan, so an
        # unreadable file ends the stream and is reported by the caller instead.
        try:
            for body in data_line_blocks(self.path):
                table = parse_plain_block(body, self.n_rows + 2)  # line 1 is the header
                if table is None:
                    self.plain = False
                    return
                self.n_rows += table.num_rows
                yield from table.to_batches()
        except ValueError as exc:
            self.error = exc


def pick_lines(path: Path, line_numbers: np.ndarray) -> pa.Table:
    """(line_number, raw_line) of the given physical lines (sorted, from 1), re-read from the
    file block by block: only the few quarantined rows of a clean file need their text."""
    parts = []
    first = 1  # line number of the block's first line
    for block in iter_line_blocks(path):
        n_lines = _count_lines(block)
        lo, hi = np.searchsorted(line_numbers, [first, first + n_lines])
        if hi > lo:
            lines = _physical_lines(_valid_utf8(block), first)
            parts.append(lines.take(_int64_array(line_numbers[lo:hi] - first)))
        first += n_lines
        if first > (line_numbers[-1] if len(line_numbers) else 0):
            break
    if not parts:
        return _physical_lines(b"", 1).slice(0, 0)
    return pa.concat_tables(parts)


def first_line(path: Path) -> str:
    """The header line of a plain or gzip CSV (BOM and line terminator removed)."""
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as fh:
            line = fh.readline(4096)
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: unreadable ({exc})") from exc
    return line.decode("utf-8", errors="replace").removeprefix("\ufeff").strip()


def check_header(path: Path, header: str, expected: str) -> None:
    """ValueError naming the file when its header is not exactly `expected`."""
    if header.replace(" ", "") != expected:
        shown = header[:80] if header else "(empty file)"
        raise ValueError(f"{path}: not a Retail Rocket file: header is {shown!r}, expected {expected!r}")


def detect_format(data_dir: Path, data_format: str | None = None) -> str:
    """"retailrocket" or "hm": `data_format` when given, else by the files' names
    (transactions_train.csv: H&M; otherwise Retail Rocket). ValueError when both are present."""
    from recs.ingest_hm import TRANSACTIONS_STEM

    if data_format is not None:
        if data_format not in FORMATS:
            raise ValueError(f"unknown data format {data_format!r}: choose one of {', '.join(FORMATS)}")
        return data_format
    data_dir = Path(data_dir)
    hm = find_input(data_dir, TRANSACTIONS_STEM) is not None
    if hm and find_input(data_dir, "events") is not None:
        raise ValueError(f"{data_dir} holds both events.csv (Retail Rocket) and transactions_train.csv (H&M): "
                         "pass --format retailrocket or --format hm")
    return "hm" if hm else "retailrocket"


def locate_inputs(data_dir: Path, data_format: str | None = None) -> dict[str, Any]:
    """Paths of the input files of the directory's format (detect_format), and "format".
    Retail Rocket: events (required), item properties and the category tree (optional); H&M:
    recs.ingest_hm.locate_hm_inputs (its transactions under the key "events")."""
    data_dir = Path(data_dir)
    fmt = detect_format(data_dir, data_format)
    if fmt == "hm":
        from recs.ingest_hm import locate_hm_inputs

        return {**locate_hm_inputs(data_dir), "format": fmt}
    events = find_input(data_dir, "events")
    if events is None:
        where = data_dir if data_dir.is_dir() else f"{data_dir} (no such directory)"
        raise FileNotFoundError(f"events.csv (or events.csv.gz) not found in {where}")
    properties = [p for p in (find_input(data_dir, stem) for stem in PROPERTIES_STEMS) if p is not None]
    return {"events": events, "item_properties": properties, "category_tree": find_input(data_dir, "category_tree"),
            "format": fmt}


def load_event_lines(path: Path) -> pa.Table:
    """Physical lines of events.csv, the whole file in memory (the SQL parsing path)."""
    return split_lines(read_file_bytes(path))


def check_events_header(path: Path) -> None:
    """ValueError naming the file when events.csv is unreadable or its header is garbled."""
    check_header(path, first_line(path), EVENTS_HEADER)


def stage_optional_inputs(con: duckdb.DuckDBPyConnection, inputs: dict[str, Any]) -> None:
    """stg_item_properties and stg_category_tree (empty when their files are absent)."""
    for path in inputs["item_properties"]:
        check_header(path, first_line(path), PROPERTIES_HEADER)
    tree = inputs["category_tree"]
    if tree is not None:
        check_header(tree, first_line(tree), CATEGORY_TREE_HEADER)
    try:
        if inputs["item_properties"]:
            paths = [str(p) for p in inputs["item_properties"]]
            run_sql(con, "staging/stg_item_properties", paths=paths)
            run_sql(con, "staging/stg_item_prices", paths=paths, property=PRICE_PROPERTY)
        else:
            run_sql(con, "staging/stg_item_properties_empty")
            run_sql(con, "staging/stg_item_prices_empty")
    except duckdb.Error as exc:
        names = ", ".join(str(p) for p in inputs["item_properties"])
        raise ValueError(f"{names}: unreadable as CSV lines ({_first_line_of(exc)})") from exc
    try:
        if tree is not None:
            run_sql(con, "staging/stg_category_tree", path=str(tree))
        else:
            run_sql(con, "staging/stg_category_tree_empty")
    except duckdb.Error as exc:
        raise ValueError(f"{tree}: unreadable as CSV ({_first_line_of(exc)})") from exc


def _first_line_of(exc: BaseException) -> str:
    """First line of an exception message (DuckDB's run to many lines)."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def stage_events(con: duckdb.DuckDBPyConnection, path: Path) -> pa.Table | None:
    """stg_events_parsed from events.csv: streamed through Arrow while the file is plainly
    clean (returns None), else parsed in SQL from its physical lines (returned: the quarantine
    takes its raw text from them)."""
    rows = PlainEventRows(path)
    con.register(EVENT_ROWS_VIEW, rows.reader())
    try:
        run_sql(con, "staging/stg_events_parsed_typed")
    finally:
        con.unregister(EVENT_ROWS_VIEW)
    if rows.error is not None:
        raise rows.error
    if rows.plain and rows.n_rows:
        return None
    lines = load_event_lines(path)
    con.register(EVENT_LINES_VIEW, lines)
    try:
        run_sql(con, "staging/stg_events_parsed")  # replaces the partial typed table
    finally:
        con.unregister(EVENT_LINES_VIEW)
    return lines


def build_tables(con: duckdb.DuckDBPyConnection, events_path: Path, plausible_window_days: int) -> str:
    """All staging, intermediate and warehouse tables, in dependency order. Returns the parse
    path of events.csv: "arrow" (streamed, plainly clean) or "sql"."""
    lines = stage_events(con, events_path)
    run_sql(con, "intermediate/int_events_rejected", window_ms=plausible_window_days * MS_PER_DAY)
    con.register(QUARANTINED_LINES_VIEW, quarantined_lines(con, events_path, lines))
    try:
        run_sql(con, "intermediate/int_quarantine_events")
    finally:
        con.unregister(QUARANTINED_LINES_VIEW)
    build_dimension_tables(con)
    run_sql(con, "intermediate/int_customer_keys_decimal")
    run_sql(con, "intermediate/int_item_keys_decimal")
    return "arrow" if lines is None else "sql"


def build_dimension_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Categories, item states, events as of them and items, from stg_events_parsed,
    int_events_rejected, stg_item_properties and stg_category_tree (either format's)."""
    run_sql(con, "intermediate/int_item_category_snapshots")
    run_sql(con, "intermediate/int_item_available_snapshots")
    run_sql(con, "intermediate/int_categories", max_depth=MAX_CATEGORY_DEPTH)
    run_sql(con, "intermediate/int_item_snapshots")
    run_sql(con, "intermediate/int_item_states")
    run_sql(con, "intermediate/int_events_asof")
    run_sql(con, "intermediate/int_items")
    run_sql(con, "intermediate/int_item_prices")
    run_sql(con, "intermediate/int_ingest_runs")


def quarantined_lines(con: duckdb.DuckDBPyConnection, events_path: Path, lines: pa.Table | None) -> pa.Table:
    """(line_number, raw_line) of the rows int_events_rejected holds, taken from `lines`
    (the SQL path) or re-read from the file (the streamed path).

    Only these few rows need their raw text, so it is not dragged through the SQL stages.
    """
    line_numbers = np.ascontiguousarray(con.execute(
        "SELECT line_number FROM int_events_rejected ORDER BY line_number"
    ).fetchnumpy()["line_number"], dtype=np.int64)
    if lines is None:
        return pick_lines(events_path, line_numbers)
    return lines.take(_int64_array(line_numbers - 1))


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    """First column of the first row of a query."""
    return con.execute(sql).fetchone()[0]


def summarize(con: duckdb.DuckDBPyConnection, reasons: tuple[str, ...] = QUARANTINE_REASONS) -> dict[str, Any]:
    """Row counts of the freshly built tables (before the staging tables are dropped)."""
    by_reason = dict(con.execute("SELECT reason, count(*) FROM quarantine_events GROUP BY reason").fetchall())
    by_type = dict(con.execute("SELECT event, count(*) FROM events GROUP BY event").fetchall())
    rows_loaded = _scalar(con, "SELECT count(*) FROM events")
    rows_quarantined = _scalar(con, "SELECT count(*) FROM quarantine_events")
    return {
        "rows_read": _scalar(con, "SELECT count(*) FROM stg_events_parsed"),
        "rows_loaded": rows_loaded,
        "rows_quarantined": rows_quarantined,
        "quarantine_by_reason": {r: int(by_reason.get(r, 0)) for r in reasons},
        "events_by_type": {t: int(by_type.get(t, 0)) for t in EVENT_TYPES},
        "median_timestamp": _scalar(
            con, "SELECT quantile_disc(\"timestamp\", 0.5) FROM stg_events_parsed WHERE malformed_reason IS NULL"
        ),
        "n_visitors": _scalar(con, "SELECT count(DISTINCT visitorid) FROM events"),
        "n_customers": _scalar(con, "SELECT count(*) FILTER (WHERE in_data) FROM customer_keys"),
        "n_items": _scalar(con, "SELECT count(*) FROM items"),
        "n_categories": _scalar(con, "SELECT count(*) FROM categories"),
        "n_item_snapshots": _scalar(con, "SELECT count(*) FROM item_snapshots"),
        "n_item_prices": _scalar(con, "SELECT count(*) FROM item_prices"),
        "property_rows_used": _scalar(con, "SELECT count(*) FILTER (WHERE usable) FROM stg_item_properties"),
        "property_rows_skipped": _scalar(con, "SELECT count(*) FILTER (WHERE NOT usable) FROM stg_item_properties"),
        "category_rows_skipped": _scalar(con, "SELECT count(*) FILTER (WHERE NOT usable) FROM stg_category_tree"),
    }


def ingest_dir(con: duckdb.DuckDBPyConnection, data_dir: Path, *, plausible_window_days: int | None = None,
               max_quarantine_share: float | None = None, data_format: str | None = None) -> dict:
    """Load a Retail Rocket or H&M CSV directory into the warehouse open on `con` (full rebuild).

    data_format: "retailrocket" or "hm" (None: by the files' names, detect_format).
    plausible_window_days: None = the format's default (365 days; H&M's two-year log: 1,100).

    Returns a report: rows_read / rows_loaded / rows_quarantined (read = loaded + quarantined),
    quarantine_by_reason, events_by_type, n_items, n_categories, ..., seconds.
    Raises FileNotFoundError when events.csv(.gz) is missing and ValueError when a file is
    garbled (wrong header, corrupt gzip) or when more than `max_quarantine_share` of its rows
    would be quarantined (None: no limit); in every case the previous tables stay as they were
    (the replacement is one transaction, rolled back).
    """
    started = time.perf_counter()
    started_at = datetime.now(timezone.utc).replace(tzinfo=None)
    data_dir = Path(data_dir)
    if plausible_window_days is not None and plausible_window_days <= 0:
        raise ValueError(f"plausible_window_days must be positive, got {plausible_window_days}")
    if max_quarantine_share is not None and not 0.0 <= max_quarantine_share <= 1.0:
        raise ValueError(f"max_quarantine_share must be between 0 and 1, got {max_quarantine_share}")
    inputs = locate_inputs(data_dir, data_format)
    hm = inputs["format"] == "hm"
    if hm:
        from recs.ingest_hm import (HM_PLAUSIBLE_WINDOW_DAYS, HM_QUARANTINE_REASONS, HM_WORKING_TABLES,
                                    build_hm_tables, check_hm_headers)

        check_hm_headers(inputs)
        window = plausible_window_days or HM_PLAUSIBLE_WINDOW_DAYS
    else:
        check_events_header(inputs["events"])
        window = plausible_window_days or DEFAULT_PLAUSIBLE_WINDOW_DAYS
    # Nothing here relies on insertion order (every consumer orders explicitly); letting
    # DuckDB reorder saves ~10% CPU on the big CREATE TABLE AS statements.
    with duckdb_setting(con, "preserve_insertion_order", False):
        con.execute("BEGIN TRANSACTION")
        try:
            run_sql(con, "staging/stg_parse_bigint_macro")
            if hm:
                parse_path = build_hm_tables(con, inputs, window)
            else:
                stage_optional_inputs(con, inputs)
                parse_path = build_tables(con, inputs["events"], window)
            counts = summarize(con, HM_QUARANTINE_REASONS if hm else QUARANTINE_REASONS)
            if counts["rows_read"] != counts["rows_loaded"] + counts["rows_quarantined"]:
                raise RuntimeError(f"ingest lost rows: {counts['rows_read']} read but "
                                   f"{counts['rows_loaded']} loaded + {counts['rows_quarantined']} quarantined")
            check_quarantine_share(counts, max_quarantine_share, data_dir,  # before COMMIT: rolled back
                                   inputs["events"].name.removesuffix(".gz"))
            for name in WORKING_TABLES + (HM_WORKING_TABLES if hm else ()):
                con.execute(f"DROP TABLE IF EXISTS {name}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    files = {k: (v.name if isinstance(v, Path) else [p.name for p in v] if isinstance(v, list) else v)
             for k, v in inputs.items() if k != "format"}
    return {
        "data_dir": str(data_dir),
        "format": inputs["format"],
        "files": files,
        "started_at": started_at.isoformat(),
        "plausible_window_days": window,
        "max_quarantine_share": max_quarantine_share,
        "parse_path": parse_path,
        **counts,
        "seconds": round(time.perf_counter() - started, 3),
    }


def record_ingest_run(con: duckdb.DuckDBPyConnection, report: dict, run_id: str) -> None:
    """Append one ingest_runs row for a committed ingest report."""
    run_sql(con, "intermediate/int_ingest_runs")
    run_sql(
        con,
        "intermediate/int_ingest_runs_insert",
        run_id=run_id,
        started_at=datetime.fromisoformat(report["started_at"]),
        rows_read=report["rows_read"],
        rows_loaded=report["rows_loaded"],
        rows_quarantined=report["rows_quarantined"],
    )


def report_markdown(report: dict) -> str:
    """A short markdown summary of an ingest report (for the Prefect artifact)."""
    lines = [
        f"# Ingest of `{report['data_dir']}`",
        "",
        "| rows read | loaded | quarantined | items | categories | seconds |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {report['rows_read']:,} | {report['rows_loaded']:,} | {report['rows_quarantined']:,} "
        f"| {report['n_items']:,} | {report['n_categories']:,} | {report['seconds']} |",
        "",
        "| event | rows |",
        "|---|---:|",
        *(f"| {t} | {n:,} |" for t, n in report["events_by_type"].items()),
        "",
        "| quarantine reason | rows |",
        "|---|---:|",
        *(f"| {r} | {n:,} |" for r, n in report["quarantine_by_reason"].items() if n),
    ]
    return "\n".join(lines) + "\n"
