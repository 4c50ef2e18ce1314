"""Ingest of the H&M Personalized Fashion Recommendations files onto the warehouse contract.

`transactions_train.csv` (required; t_dat, customer_id, article_id, price, sales_channel_id),
`articles.csv` and `customers.csv` (optional), plain or .gz. recs.ingest.ingest_dir calls
`build_hm_tables` inside its transaction; the tables it makes are the Retail Rocket ones
(events, quarantine_events, categories, item_snapshots, items, through the same SQL after the
H&M staging) plus the id mapping tables customer_keys / item_keys:

- every row is an event of type transaction; a repeated row is one more unit of the article
  and stays a separate event (no duplicate check);
- customer_id (64 hex digits) and article_id (digits, leading zero kept: text until mapped)
  get stable BIGINT ids (int_hm_customer_map / int_hm_item_map: ids held in the warehouse are
  kept, new keys numbered after them in file order);
- the order within a day is the file's: timestamp = t_dat 00:00 UTC + the row's distance in
  lines from the day's first line (ms); one basket (transactionid) per customer, day and channel;
- the category tree is index_group -> section -> product type (sql/staging/stg_hm_category_tree.sql),
  product_code is the item's author (item_keys) and price an item property: every clean row's
  price is a price record, so item_prices holds the latest, min and max as for Retail Rocket;
- bad rows go to quarantine_events with a reason (HM_QUARANTINE_REASONS), their raw line kept.

transactions_train.csv is streamed in blocks of whole lines (never whole in memory: the real
file is 3.5 GB): Arrow's CSV reader splits a block into five text fields; a block it rejects
(a line with the wrong number of fields) is split line by line with Arrow compute instead, so
every physical line becomes exactly one row with its true line number either way. The text
fields never reach DuckDB row by row: t_dat, customer_id and article_id become codes of a
per-ingest polars Categorical (a hash table of the distinct values; the codes are only a join
key, ids are assigned in SQL by first appearance), price a float, the channel a small int. So
DuckDB stores ~30 bytes of integers a row instead of ~110 bytes of text, and the key checks
and mappings run once per distinct value (~730 days, ~1.4M customers, ~105K articles).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recs.warehouse import run_sql

TRANSACTIONS_STEM, ARTICLES_STEM, CUSTOMERS_STEM = "transactions_train", "articles", "customers"
TRANSACTIONS_HEADER = "t_dat,customer_id,article_id,price,sales_channel_id"
TRANSACTION_COLUMNS = ("t_dat", "customer_id", "article_id", "price", "sales_channel_id")
ARTICLE_COLUMNS = ("article_id", "product_code", "product_type_no", "index_group_no", "section_no",
                   "colour_group_code")  # the ones the warehouse uses (articles.csv has 25)
CUSTOMER_COLUMNS = ("customer_id",)
# Every H&M quarantine reason, in the order the checks run (the first failing one is recorded).
HM_QUARANTINE_REASONS = (
    "wrong_column_count",
    "bad_t_dat",
    "bad_customer_id",
    "bad_article_id",
    "bad_price",
    "bad_sales_channel_id",
    "timestamp_out_of_range",
)
# The real log spans two years (2018-09-20 .. 2020-09-22): the plausibility window around the
# median is wider than Retail Rocket's 365 days by default.
HM_PLAUSIBLE_WINDOW_DAYS = 1_100
HM_ROWS_VIEW = "stg_hm_rows"
ARTICLE_ROWS_VIEW, CUSTOMER_ROWS_VIEW = "stg_hm_article_rows", "stg_hm_customer_rows"
KEY_VIEWS = {"day": "stg_hm_day_keys", "customer": "stg_hm_customer_keys", "article": "stg_hm_article_keys"}
HM_BLOCK_BYTES = 16 << 20  # bigger blocks than events.csv's: ~220 Arrow calls for the 3.5 GB file
HM_ROWS_SCHEMA = pa.schema([("line_number", pa.int64()), ("n_fields", pa.int32()), ("day_code", pa.uint32()),
                            ("customer_code", pa.uint32()), ("article_code", pa.uint32()), ("price", pa.float64()),
                            ("sales_channel_id", pa.int8())])


class KeyCodes:
    """Codes of distinct strings (t_dat, customer_id or article_id) for one ingest: a polars
    Categorical of its own, so the same text always gets the same code across blocks and files."""

    def __init__(self) -> None:
        self.dtype = pl.Categorical(pl.Categories.random())
        # polars drops a Categories' strings once no Series uses it: keep the latest one alive.
        self._alive: pl.Series | None = None

    def codes(self, values: pa.Array | pa.ChunkedArray) -> pa.Array:
        """uint32 code of each string (NULL stays NULL)."""
        series = pl.Series(values).cast(pl.String).cast(self.dtype)
        self._alive = series
        return series.to_physical().cast(pl.UInt32).to_arrow()

    def table(self, name: str) -> pa.Table:
        """(code, <name>) of every string seen, by code."""
        keys = self.dtype.categories.to_series().to_arrow()
        from recs.ingest import _int64_array

        return pa.table({"code": _int64_array(np.arange(len(keys), dtype=np.int64)), name: keys})


def locate_hm_inputs(data_dir: Path) -> dict:
    """Paths of transactions_train (required), articles and customers (optional)."""
    from recs.ingest import find_input

    transactions = find_input(data_dir, TRANSACTIONS_STEM)
    if transactions is None:
        where = data_dir if data_dir.is_dir() else f"{data_dir} (no such directory)"
        raise FileNotFoundError(f"transactions_train.csv (or transactions_train.csv.gz) not found in {where}")
    return {"events": transactions, "articles": find_input(data_dir, ARTICLES_STEM),
            "customers": find_input(data_dir, CUSTOMERS_STEM)}


def check_hm_headers(inputs: dict) -> None:
    """ValueError naming the file when a header is not H&M's (transactions: exactly; articles,
    customers: the columns used must be there)."""
    from recs.ingest import first_line

    path = inputs["events"]
    header = first_line(path)
    if header.replace(" ", "") != TRANSACTIONS_HEADER:
        shown = header[:80] if header else "(empty file)"
        raise ValueError(f"{path}: not an H&M transactions file: header is {shown!r}, expected {TRANSACTIONS_HEADER!r}")
    for key, needed in (("articles", ARTICLE_COLUMNS), ("customers", CUSTOMER_COLUMNS)):
        path = inputs[key]
        if path is None:
            continue
        names = first_line(path).replace(" ", "").split(",")
        missing = [c for c in needed if c not in names]
        if missing:
            raise ValueError(f"{path}: not an H&M {key} file: header lacks {', '.join(missing)}")


def split_hm_block(body: bytes, first_line_number: int) -> tuple[pa.Array, pa.Array, list]:
    """(line_number, n_fields, the five fields as text) of a block of data lines, one row per
    physical line. Fields are NULL on a line without exactly five (n_fields says how many)."""
    from recs.ingest import _count_lines, _int64_array, _physical_lines, _valid_utf8

    n_lines = _count_lines(body)
    line_number = _int64_array(np.arange(first_line_number, first_line_number + n_lines, dtype=np.int64))
    try:
        table = pacsv.read_csv(
            pa.BufferReader(body),
            read_options=pacsv.ReadOptions(column_names=list(TRANSACTION_COLUMNS), block_size=1 << 22),
            parse_options=pacsv.ParseOptions(quote_char=False, escape_char=False, newlines_in_values=False,
                                             ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in TRANSACTION_COLUMNS},
                                                 null_values=[], strings_can_be_null=False),
        )
    except pa.ArrowInvalid:
        table = None
    if table is not None and table.num_rows == n_lines:
        n_fields = pa.Array.from_buffers(pa.int32(), n_lines, [None, pa.py_buffer(np.full(n_lines, 5, np.int32))])
        return line_number, n_fields, table.columns
    # A line with the wrong field count (or a stray CR): split every line of the block instead.
    lines = _physical_lines(_valid_utf8(body), first_line_number)
    fields = pc.split_pattern(pc.utf8_rtrim(lines.column("raw_line"), characters="\r\n"), ",")
    n_fields = pc.list_value_length(fields).cast(pa.int32())
    five = pc.if_else(pc.equal(n_fields, 5), fields, pa.scalar(None, fields.type))
    columns = [pc.list_element(five, i).cast(pa.string()) for i in range(len(TRANSACTION_COLUMNS))]
    return lines.column("line_number"), n_fields, columns


def parse_hm_block(body: bytes, first_line_number: int, keys: dict[str, KeyCodes]) -> pa.Table:
    """HM_ROWS_SCHEMA rows of a block: the three text ids as codes of `keys`, price as a float
    (NULL unless it parses), sales_channel_id 1 / 2 (NULL otherwise)."""
    line_number, n_fields, (t_dat, customer_id, article_id, price, channel) = split_hm_block(body, first_line_number)
    price = pl.Series(price).cast(pl.String).cast(pl.Float64, strict=False).to_arrow()
    channel = pl.select(pl.lit(pl.Series(channel).cast(pl.String)).replace_strict(
        {"1": 1, "2": 2}, default=None, return_dtype=pl.Int8)).to_series().to_arrow()
    return pa.table([line_number, n_fields, keys["day"].codes(t_dat), keys["customer"].codes(customer_id),
                     keys["article"].codes(article_id), price, channel], schema=HM_ROWS_SCHEMA)


class HmRows:
    """The rows of transactions_train.csv as a stream of Arrow batches, block by block."""

    def __init__(self, path: Path, keys: dict[str, KeyCodes], block_bytes: int = HM_BLOCK_BYTES) -> None:
        self.path = path
        self.keys = keys
        self.block_bytes = block_bytes
        self.n_rows = 0
        self.error: ValueError | None = None  # the file turned out unreadable (e.g. truncated gzip)

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(HM_ROWS_SCHEMA, self._batches())

    def _batches(self) -> Iterator[pa.RecordBatch]:
        from recs.ingest import data_line_blocks

        # An exception raised in here would surface as a DuckDB error about the scan, so an
        # unreadable file ends the stream and is reported by the caller instead.
        try:
            for body in data_line_blocks(self.path, self.block_bytes):
                if not body:
                    continue
                table = parse_hm_block(body, self.n_rows + 2, self.keys)  # line 1 is the header
                self.n_rows += table.num_rows
                yield from table.to_batches()
        except ValueError as exc:
            self.error = exc


def read_text_columns(path: Path, columns: tuple[str, ...], codes: tuple[str, KeyCodes] | None = None) -> pa.Table:
    """`columns` of a (quoted) CSV as text, with line_number = data row number + 1."""
    try:
        with pa.input_stream(str(path), compression="gzip" if path.name.endswith(".gz") else None) as stream:
            table = pacsv.read_csv(stream, convert_options=pacsv.ConvertOptions(
                include_columns=list(columns), column_types={c: pa.string() for c in columns},
                null_values=[], strings_can_be_null=False))
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"{path}: unreadable as CSV ({str(exc).strip().splitlines()[0]})") from exc
    from recs.ingest import _int64_array

    table = table.add_column(0, "line_number", _int64_array(np.arange(2, table.num_rows + 2, dtype=np.int64)))
    if codes is not None:  # the id column's codes (the transactions' KeyCodes: the same text, the same code)
        column, keys = codes
        table = table.append_column(f"{column}_code", keys.codes(table.column(column)))
    return table


def _stage_optional(con: duckdb.DuckDBPyConnection, inputs: dict, keys: dict[str, KeyCodes]) -> None:
    """stg_hm_articles and stg_hm_customers (empty when their files are absent)."""
    for key, columns, view, statement, code in (
            ("articles", ARTICLE_COLUMNS, ARTICLE_ROWS_VIEW, "stg_hm_articles", ("article_id", keys["article"])),
            ("customers", CUSTOMER_COLUMNS, CUSTOMER_ROWS_VIEW, "stg_hm_customers", ("customer_id", keys["customer"]))):
        if inputs[key] is None:
            run_sql(con, f"staging/{statement}_empty")
            continue
        con.register(view, read_text_columns(inputs[key], columns, code))
        try:
            run_sql(con, f"staging/{statement}")
        finally:
            con.unregister(view)


def build_hm_tables(con: duckdb.DuckDBPyConnection, inputs: dict, plausible_window_days: int) -> str:
    """Every warehouse table from the H&M files (inside the caller's transaction). Returns the
    parse path ("arrow": transactions streamed block by block)."""
    from recs.ingest import MS_PER_DAY, QUARANTINED_LINES_VIEW, build_dimension_tables, quarantined_lines

    keys = {name: KeyCodes() for name in KEY_VIEWS}
    rows = HmRows(inputs["events"], keys)
    con.register(HM_ROWS_VIEW, rows.reader())
    try:
        run_sql(con, "staging/stg_hm_transactions")
    finally:
        con.unregister(HM_ROWS_VIEW)
    if rows.error is not None:
        raise rows.error
    _stage_optional(con, inputs, keys)
    for name, view in KEY_VIEWS.items():
        con.register(view, keys[name].table({"day": "t_dat", "customer": "customer_key", "article": "item_key"}[name]))
    run_sql(con, "marts/customer_keys_init")
    run_sql(con, "marts/item_keys_init")
    run_sql(con, "intermediate/int_hm_days")
    run_sql(con, "intermediate/int_hm_customer_map")
    run_sql(con, "intermediate/int_hm_item_map")
    for view in KEY_VIEWS.values():
        con.unregister(view)
    run_sql(con, "intermediate/int_hm_events_parsed")
    run_sql(con, "intermediate/int_hm_events_rejected", window_ms=plausible_window_days * MS_PER_DAY)
    con.register(QUARANTINED_LINES_VIEW, quarantined_lines(con, inputs["events"], None))
    try:
        run_sql(con, "intermediate/int_quarantine_events")
    finally:
        con.unregister(QUARANTINED_LINES_VIEW)
    run_sql(con, "staging/stg_hm_item_properties")
    run_sql(con, "staging/stg_hm_category_tree")
    run_sql(con, "staging/stg_hm_item_prices")
    build_dimension_tables(con)
    run_sql(con, "intermediate/int_hm_customer_keys")
    run_sql(con, "intermediate/int_hm_item_keys")
    return "arrow"


HM_WORKING_TABLES = ("stg_hm_transactions", "stg_hm_articles", "stg_hm_customers", "int_hm_days",
                     "int_hm_customer_map", "int_hm_item_map")
