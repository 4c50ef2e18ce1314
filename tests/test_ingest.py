"""Ingest: hand-written CSVs in tests/fixtures/ingest/ in, exact warehouse rows out."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import duckdb
import pytest

from recs.ingest import QUARANTINE_REASONS, WAREHOUSE_TABLES, ingest_dir
from recs.warehouse import connect
from tests.warehouse_queries import query

FIXTURES = Path(__file__).parent / "fixtures" / "ingest"
T0 = 1_433_000_000_000  # ms; fixture times are T0 + a few seconds


def rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    """All rows of a query."""
    return con.execute(sql).fetchall()


def tables(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    """Every warehouse table's rows in a canonical order."""
    return {t: rows(con, f"SELECT * FROM {t} ORDER BY ALL") for t in WAREHOUSE_TABLES}


def ingest_fresh(warehouse: Path, data_dir: Path, **kwargs) -> tuple[duckdb.DuckDBPyConnection, dict]:
    """Open a warehouse and ingest one directory into it."""
    con = connect(warehouse)
    return con, ingest_dir(con, data_dir, **kwargs)


@pytest.fixture(scope="module")
def bad_rows(tmp_path_factory) -> tuple[duckdb.DuckDBPyConnection, dict]:
    """The warehouse after ingesting bad_rows/events.csv (one line per quarantine class)."""
    con, report = ingest_fresh(tmp_path_factory.mktemp("bad_rows"), FIXTURES / "bad_rows")
    yield con, report
    con.close()


@pytest.fixture(scope="module")
def asof(tmp_path_factory) -> tuple[duckdb.DuckDBPyConnection, dict]:
    """The warehouse after ingesting asof/ (events, both property parts and a category tree)."""
    con, report = ingest_fresh(tmp_path_factory.mktemp("asof"), FIXTURES / "asof")
    yield con, report
    con.close()


# (physical line, reason, raw line) of every rejected line of bad_rows/events.csv.
BAD_ROWS = [
    (3, "wrong_column_count", "1433000001000,1,view,10"),
    (4, "wrong_column_count", "1433000002000,1,view,10,,"),
    (5, "wrong_column_count", ""),  # a blank line inside the file is a (malformed) data row
    (6, "bad_timestamp", "2015-06-01,2,view,10,"),
    (21, "bad_timestamp", "x,0,click,12,"),  # also visitor 0 and unknown event: first check wins
    (7, "bad_visitorid", "1433000003000,abc,view,10,"),
    (8, "bad_itemid", "1433000004000,2,view,1.5,"),
    (9, "bad_transactionid", "1433000005000,2,transaction,10,12.5"),  # non-integral
    (10, "bad_transactionid", "1433000006000,2,transaction,10,99999999999999999999"),  # overflow
    (11, "unknown_event", "1433000007000,2,click,10,"),
    (22, "unknown_event", "1433000014000,5,click,13,5"),  # not transactionid_on_non_transaction
    (12, "transaction_without_transactionid", "1433000008000,3,transaction,11,"),
    (13, "transactionid_on_non_transaction", "1433000009000,3,view,11,77"),
    (15, "duplicate", "1433000000000,1,view,10,"),  # of line 2
    (16, "duplicate", "1433000010000,3,transaction,11,8693"),  # of line 14's 8693.0
    (17, "nonpositive_id", "1433000011000,0,view,12,"),
    (18, "nonpositive_id", "1433000012000,4,view,-5,"),
    (19, "nonpositive_id", "1433000013000,4,transaction,12,0"),
    (20, "timestamp_out_of_range", "1000,4,view,12,"),
]


@pytest.mark.parametrize("reason", QUARANTINE_REASONS)
def test_each_bad_row_class_is_quarantined_with_its_line(bad_rows, reason):
    con, _ = bad_rows
    expected = sorted((line, raw) for line, r, raw in BAD_ROWS if r == reason)
    assert expected, f"fixture lacks a {reason} row"
    got = rows(con, f"SELECT line_number, raw_line FROM quarantine_events WHERE reason = '{reason}' ORDER BY 1")
    assert got == expected


def test_bad_rows_counts_add_up_and_clean_rows_load(bad_rows):
    con, report = bad_rows
    # Lines 2..24 are data rows; the two trailing blank lines are not.
    assert (report["rows_read"], report["rows_loaded"], report["rows_quarantined"]) == (23, 4, 19)
    assert report["parse_path"] == "sql"
    assert report["quarantine_by_reason"] == {
        "wrong_column_count": 3, "bad_timestamp": 2, "bad_visitorid": 1, "bad_itemid": 1,
        "bad_transactionid": 2, "unknown_event": 2, "transaction_without_transactionid": 1,
        "transactionid_on_non_transaction": 1, "duplicate": 2, "nonpositive_id": 3,
        "timestamp_out_of_range": 1,
    }
    assert rows(con, "SELECT line_number FROM quarantine_events ORDER BY 1") == [
        (n,) for n in sorted(line for line, _, _ in BAD_ROWS)
    ]
    # The first occurrences of the duplicates load; "8693.0" is the integral transactionid 8693.
    assert rows(con, 'SELECT "timestamp", visitorid, event, itemid, transactionid FROM events ORDER BY 1') == [
        (T0, 1, "view", 10, None),
        (T0 + 10_000, 3, "transaction", 11, 8693),
        (T0 + 15_000, 4, "addtocart", 12, None),
        (T0 + 16_000, 5, "view", 13, None),
    ]


def test_quarantine_keeps_the_fields_that_parse(bad_rows):
    con, _ = bad_rows
    parsed = 'SELECT "timestamp", visitorid, event, itemid, transactionid FROM quarantine_events WHERE line_number = '
    assert rows(con, parsed + "4") == [(None, None, None, None, None)]  # wrong column count
    assert rows(con, parsed + "7") == [(T0 + 3_000, None, "view", 10, None)]  # bad visitorid
    assert rows(con, parsed + "13") == [(T0 + 9_000, 3, "view", 11, 77)]


def test_events_schema_matches_the_data_contract(asof):
    con, _ = asof
    assert rows(con, "SELECT column_name, data_type FROM information_schema.columns "
                     "WHERE table_name = 'events' ORDER BY ordinal_position") == [
        ("timestamp", "BIGINT"), ("visitorid", "BIGINT"), ("event", "VARCHAR"), ("itemid", "BIGINT"),
        ("transactionid", "BIGINT"), ("event_time", "TIMESTAMP"), ("categoryid", "BIGINT"),
        ("available", "TINYINT"), ("root_categoryid", "BIGINT"),
    ]


def test_asof_join_gives_category_and_availability_as_of_each_event(asof):
    con, report = asof
    assert report["parse_path"] == "arrow"
    # Item 100: categoryid 3 at +10 s, 5 at +30 s; available 0 at +20 s, 1 at +40 s.
    assert rows(con, 'SELECT "timestamp" - 1433000000000, itemid, categoryid, root_categoryid, available '
                     'FROM events ORDER BY 1, 2') == [
        (5_000, 100, 3, 1, 0),  # before both first records: the first ones
        (10_000, 100, 3, 1, 0),  # exactly at the category record, before the first availability
        (25_000, 100, 3, 1, 0),  # between
        (35_000, 100, 5, 4, 0),  # after the category change, before the availability change
        (45_000, 100, 5, 4, 1),  # after both
        (50_000, 200, 0, 0, 1),  # never recorded: unknown category, available
        (50_000, 300, 0, 0, 0),  # only availability recorded
        (60_000, 400, 9, 9, 1),  # category the tree does not know: its own root
        (70_000, 500, 0, 0, 1),  # only unusable records ("abc", available 2)
    ]
    assert rows(con, "SELECT event_time FROM events WHERE itemid = 400")[0][0].isoformat() == "2015-05-30T15:34:20"


def test_item_snapshots_carry_each_property_forward(asof):
    con, report = asof
    assert rows(con, 'SELECT itemid, "timestamp" - 1433000000000, categoryid, available FROM item_snapshots ORDER BY 1, 2') == [
        (100, 10_000, 3, 0), (100, 20_000, 3, 0), (100, 30_000, 5, 0), (100, 40_000, 5, 1),
        (300, 0, 0, 0), (400, 0, 9, 1),
    ]
    assert (report["property_rows_used"], report["property_rows_skipped"]) == (7, 2)


def test_root_category_through_a_three_level_tree(asof):
    con, report = asof
    assert rows(con, "SELECT categoryid, parentid, root_categoryid, depth FROM categories ORDER BY 1") == [
        (1, None, 1, 0), (2, 1, 1, 1), (3, 2, 1, 2),  # three levels: 3 -> 2 -> 1
        (4, None, 4, 0), (5, 4, 4, 1),
        (6, 99, 99, 1),  # parent missing from the file: an implicit root
        (7, 8, 7, None), (8, 7, 8, None),  # a parent cycle never reaches a root
        (9, None, 9, 0),  # used by item_properties, absent from the tree
        (99, None, 99, 0),
    ]
    assert report["n_categories"] == 10


def test_items_hold_latest_state_and_counts(asof):
    con, report = asof
    assert rows(con, "SELECT * FROM items ORDER BY itemid") == [
        (100, 5, 4, 1, 5, 3, 1, 1, T0 + 45_000),
        (200, 0, 0, 1, 1, 1, 0, 0, T0 + 50_000),
        (300, 0, 0, 0, 1, 1, 0, 0, T0 + 50_000),
        (400, 9, 9, 1, 1, 1, 0, 0, T0 + 60_000),
        (500, 0, 0, 1, 1, 1, 0, 0, T0 + 70_000),
    ]
    assert report["n_items"] == 5


def test_without_properties_or_tree_every_item_is_unknown_and_available(tmp_path):
    con, report = ingest_fresh(tmp_path, FIXTURES / "events_only")
    assert rows(con, 'SELECT "timestamp" - 1433000000000, event, itemid, transactionid, categoryid, '
                     "root_categoryid, available FROM events ORDER BY 1") == [
        (0, "view", 10, None, 0, 0, 1),
        (1_000, "addtocart", 10, None, 0, 0, 1),
        (2_000, "transaction", 10, 7, 0, 0, 1),
        (3_000, "view", 11, None, 0, 0, 1),
        (4_000, "view", 10, None, 0, 0, 1),
    ]
    assert rows(con, "SELECT count(*) FROM categories")[0][0] == 0
    assert rows(con, "SELECT count(*) FROM item_snapshots")[0][0] == 0
    assert rows(con, "SELECT * FROM items ORDER BY 1") == [
        (10, 0, 0, 1, 4, 2, 1, 1, T0 + 4_000),
        (11, 0, 0, 1, 1, 1, 0, 0, T0 + 3_000),
    ]
    assert report["files"] == {"events": "events.csv", "item_properties": [], "category_tree": None}
    con.close()


def test_gzip_and_crlf_inputs_give_the_same_tables(tmp_path, asof):
    con, _ = asof
    gz_dir = tmp_path / "gz"
    gz_dir.mkdir()
    for path in (FIXTURES / "asof").iterdir():
        crlf = path.read_bytes().replace(b"\n", b"\r\n")
        (gz_dir / f"{path.name}.gz").write_bytes(gzip.compress(crlf))
    gz_con, report = ingest_fresh(tmp_path / "warehouse", gz_dir)
    assert report["files"] == {
        "events": "events.csv.gz",
        "item_properties": ["item_properties_part1.csv.gz", "item_properties_part2.csv.gz"],
        "category_tree": "category_tree.csv.gz",
    }
    assert tables(gz_con) == tables(con)
    gz_con.close()


def test_odd_bytes_keep_physical_line_numbers(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "events.csv").write_bytes(
        b"\xef\xbb\xbftimestamp,visitorid,event,itemid,transactionid\r\n"  # BOM, CRLF
        b"1433000000000,1,view,10,\r\n"
        b"1433000001000,\xff\xfe,view,10,\n"  # not UTF-8
        b"1433000002000,1,view,11,\r1433000003000,1,view,12,\n"  # a lone CR is not a line end
        b"\"1433000004000\",1,view,10,\n"  # no quoting rules
        b"1433000005000,2,view,10,  \n"  # trailing spaces in the last field
        b"1433000006000,2,view,11,\n \r\n\t\n"
    )
    con, report = ingest_fresh(tmp_path / "warehouse", data)
    assert (report["rows_read"], report["rows_loaded"], report["parse_path"]) == (6, 2, "sql")
    assert rows(con, "SELECT line_number, raw_line, reason FROM quarantine_events ORDER BY 1") == [
        (3, "1433000001000,\\xff\\xfe,view,10,", "bad_visitorid"),
        (4, "1433000002000,1,view,11,\r1433000003000,1,view,12,", "wrong_column_count"),
        (5, '"1433000004000",1,view,10,', "bad_timestamp"),
        (6, "1433000005000,2,view,10,  ", "bad_transactionid"),
    ]
    assert rows(con, 'SELECT "timestamp", itemid FROM events ORDER BY 1') == [(T0, 10), (T0 + 6_000, 11)]
    con.close()


def test_header_only_file_loads_nothing(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "events.csv").write_text("timestamp,visitorid,event,itemid,transactionid\n\n")
    con, report = ingest_fresh(tmp_path / "warehouse", data)
    assert (report["rows_read"], report["rows_loaded"], report["rows_quarantined"], report["n_items"]) == (0, 0, 0, 0)
    con.close()


def test_ingesting_twice_gives_identical_tables(tmp_path):
    con, first_report = ingest_fresh(tmp_path, FIXTURES / "asof")
    first = tables(con)
    second_report = ingest_dir(con, FIXTURES / "asof")
    assert tables(con) == first
    assert second_report["rows_loaded"] == first_report["rows_loaded"] == 9
    con.close()


def test_appended_rows_load_on_the_next_run(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "events_only", data)
    con, report = ingest_fresh(tmp_path / "warehouse", data)
    before = rows(con, "SELECT * FROM events ORDER BY ALL")
    with open(data / "events.csv", "a") as fh:
        fh.write("1433000005000,3,view,12,\n1433000006000,3,view\n")
    report = ingest_dir(con, data)
    # The malformed line sends the file down the SQL parsing path; the clean rows must not change.
    assert (report["rows_read"], report["rows_loaded"], report["rows_quarantined"]) == (7, 6, 1)
    assert report["parse_path"] == "sql"
    assert rows(con, "SELECT * FROM events WHERE itemid <> 12 ORDER BY ALL") == before
    assert rows(con, 'SELECT "timestamp", visitorid, itemid FROM events WHERE itemid = 12') == [(T0 + 5_000, 3, 12)]
    assert rows(con, "SELECT line_number, raw_line, reason FROM quarantine_events") == [
        (8, "1433000006000,3,view", "wrong_column_count")
    ]
    con.close()


def test_missing_events_file_fails_clearly_and_keeps_previous_tables(tmp_path):
    con, _ = ingest_fresh(tmp_path / "warehouse", FIXTURES / "asof")
    before = tables(con)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "category_tree.csv").write_text("categoryid,parentid\n1,\n")
    with pytest.raises(FileNotFoundError) as excinfo:
        ingest_dir(con, empty)
    message = str(excinfo.value)
    assert "events.csv" in message and str(empty) in message and "\n" not in message
    assert tables(con) == before
    con.close()


@pytest.mark.parametrize(
    ("file_name", "content"),
    [
        ("events.csv", b"time,visitor,event,item\n1,2,view,3\n"),
        ("events.csv", b""),
        ("events.csv.gz", b"this is not gzip data"),
        ("item_properties_part1.csv", b"timestamp,itemid,value\n1,2,3\n"),
        ("category_tree.csv", b"categoryid\n1\n"),
    ],
)
def test_garbled_file_fails_naming_it_and_keeps_previous_tables(tmp_path, file_name, content):
    con, _ = ingest_fresh(tmp_path / "warehouse", FIXTURES / "asof")
    before = tables(con)
    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "asof", data)
    if file_name == "events.csv.gz":
        (data / "events.csv").unlink()
    (data / file_name).write_bytes(content)
    with pytest.raises(ValueError, match=file_name.replace(".", r"\.")):
        ingest_dir(con, data)
    assert tables(con) == before
    con.close()


def test_real_retailrocket_sample_parses(tmp_path, shared_data):
    sample = shared_data / "retailrocket-sample"
    if not (sample / "events.csv").exists():
        pytest.skip(f"no real Retail Rocket sample at {sample}")
    con, report = ingest_fresh(tmp_path, sample)
    assert report["rows_read"] == 9_385
    read_by_type = rows(con, "SELECT event, count(*) FROM (SELECT event FROM events UNION ALL "
                             "SELECT event FROM quarantine_events) GROUP BY event ORDER BY event")
    assert read_by_type == [("addtocart", 263), ("transaction", 46), ("view", 9_076)]
    # The genuine file repeats three rows exactly (one view, two add-to-carts); nothing else fails.
    assert report["quarantine_by_reason"]["duplicate"] == 3
    assert (report["rows_loaded"], report["rows_quarantined"]) == (9_382, 3)
    # Its transactionids are written as floats ("8693.0").
    assert rows(con, "SELECT count(*), min(transactionid) > 0 FROM events WHERE event = 'transaction'") == [(46, True)]
    assert rows(con, "SELECT transactionid FROM events WHERE visitorid = 1207981 AND event = 'transaction'") == [(8693,)]
    # 1,669 categories in the tree; the warehouse reserves categoryid 0 for "unknown".
    assert report["n_categories"] == 1_668 and report["category_rows_skipped"] == 1
    assert rows(con, "SELECT max(depth), count(*) FILTER (WHERE depth IS NULL) FROM categories") == [(5, 0)]
    con.close()


def test_ingest_flow_records_the_run(prefect_harness, tmp_path, capsys):
    from flows.ingest import ingest
    from recs.cli import main

    warehouse = tmp_path / "warehouse"
    # 19 of 23 rows quarantined: above the default limit (5%), so this ingest lifts it.
    report = ingest(data_dir=str(FIXTURES / "bad_rows"), warehouse_dir=str(warehouse), max_quarantine_share=1.0)
    assert (report["rows_read"], report["rows_loaded"], report["rows_quarantined"]) == (23, 4, 19)
    assert query(warehouse, "SELECT run_id, rows_read, rows_loaded, rows_quarantined FROM ingest_runs") == [
        (report["run_id"], 23, 4, 19)
    ]
    # A missing events.csv through the CLI: one error line, exit code 2, tables untouched.
    assert main(["ingest", "--data", str(tmp_path / "nowhere"), "--warehouse", str(warehouse)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"recs ingest: error: events.csv (or events.csv.gz) not found in {tmp_path / 'nowhere'} (no such directory)"
    )
    assert query(warehouse, "SELECT count(*) FROM events") == [(4,)]
    assert query(warehouse, "SELECT count(*) FROM ingest_runs") == [(1,)]


def clean_events_with_duplicates(n: int = 400) -> str:
    """A plainly clean events.csv body of n rows where every 50th row repeats the one before."""
    lines = ["timestamp,visitorid,event,itemid,transactionid"]
    for i in range(n):
        if i % 50 == 49:
            lines.append(lines[-1])
            continue
        event = ("view", "addtocart", "transaction")[i % 3]
        lines.append(f"{T0 + i * 1000},{1 + i % 7},{event},{10 + i % 11},{i if event == 'transaction' else ''}")
    return "\n".join(lines) + "\n"


def test_streamed_blocks_give_the_tables_of_one_block(tmp_path, monkeypatch):
    """Blocks far smaller than a line's neighbourhood (lines straddle every boundary) load the
    same tables, and the duplicates' raw lines are re-read from the right physical lines."""
    import recs.ingest as ingest

    data = tmp_path / "data"
    data.mkdir()
    (data / "events.csv").write_text(clean_events_with_duplicates())
    whole, report = ingest_fresh(tmp_path / "whole", data)
    assert (report["parse_path"], report["rows_read"], report["rows_quarantined"]) == ("arrow", 400, 8)
    monkeypatch.setattr(ingest, "EVENTS_BLOCK_BYTES", 37)
    blocks, report = ingest_fresh(tmp_path / "blocks", data)
    assert report["parse_path"] == "arrow"
    assert tables(blocks) == tables(whole)
    text = (data / "events.csv").read_text().splitlines()
    assert rows(blocks, "SELECT line_number, raw_line, reason FROM quarantine_events ORDER BY 1") == [
        (line, text[line - 1], "duplicate") for line in range(51, 402, 50)
    ]
    whole.close()
    blocks.close()


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_dirty_line_after_clean_blocks_sends_the_file_to_sql_parsing(tmp_path, monkeypatch, gzipped):
    """The stream has already loaded clean blocks when it meets the bad line: those rows are
    discarded and the whole file is parsed in SQL, nothing loaded twice or lost."""
    import recs.ingest as ingest

    data = tmp_path / "data"
    data.mkdir()
    body = clean_events_with_duplicates() + f"{T0},1,view,10, 5\n"  # a space: not plainly clean
    if gzipped:
        (data / "events.csv.gz").write_bytes(gzip.compress(body.encode()))
    else:
        (data / "events.csv").write_text(body)
    monkeypatch.setattr(ingest, "EVENTS_BLOCK_BYTES", 256)
    con, report = ingest_fresh(tmp_path / "warehouse", data)
    assert (report["parse_path"], report["rows_read"], report["rows_loaded"], report["rows_quarantined"]) == (
        "sql", 401, 392, 9)
    assert rows(con, "SELECT line_number, reason FROM quarantine_events WHERE reason <> 'duplicate'") == [
        (402, "bad_transactionid")
    ]
    con.close()


def test_gzip_truncated_after_clean_blocks_fails_naming_it_and_keeps_previous_tables(tmp_path, monkeypatch):
    """The header reads fine and the first blocks stream into DuckDB before the gzip ends early:
    one clear error naming the file, not a DuckDB scan error, and nothing replaced."""
    import recs.ingest as ingest

    monkeypatch.setattr(ingest, "EVENTS_BLOCK_BYTES", 4096)
    con, _ = ingest_fresh(tmp_path / "warehouse", FIXTURES / "asof")
    before = tables(con)
    data = tmp_path / "data"
    data.mkdir()
    body = clean_events_with_duplicates(20_000).encode()
    compressed = gzip.compress(body)
    (data / "events.csv.gz").write_bytes(compressed[: len(compressed) * 2 // 3])
    with pytest.raises(ValueError, match=r"events\.csv\.gz: unreadable"):
        ingest_dir(con, data)
    assert tables(con) == before
    con.close()


def file_data_lines(path: Path) -> int:
    """The file's own count of data lines: every line after the header up to the last non-blank
    one (a blank line inside the data is a bad row; trailing blank lines are not rows), read as
    bytes, without CSV parsing, so nothing the ingest does can agree with it by construction."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        lines = f.read().splitlines()[1:]
    while lines and not lines[-1].strip():
        lines.pop()
    return len(lines)


@pytest.mark.parametrize("source", ["bad_rows", "asof", "events_only", "real_sample", "generated_tiny"])
def test_every_data_line_of_the_file_is_loaded_or_quarantined(tmp_path, shared_data, source):
    """rows read = loaded + quarantined, where 'read' is the number of data lines in the file and
    loaded / quarantined are the rows in `events` / `quarantine_events`."""
    if source == "real_sample":
        data = shared_data / "retailrocket-sample"
        if not (data / "events.csv").exists():
            pytest.skip(f"no real Retail Rocket sample at {data}")
    elif source == "generated_tiny":
        from recs.generate import generate

        data = tmp_path / "data"
        generate(data, scale="tiny", seed=3)
    else:
        data = FIXTURES / source
    events_file = data / "events.csv" if (data / "events.csv").exists() else data / "events.csv.gz"
    expected = file_data_lines(events_file)
    con, report = ingest_fresh(tmp_path / "warehouse", data)
    [(loaded,)] = rows(con, "SELECT count(*) FROM events")
    [(quarantined,)] = rows(con, "SELECT count(*) FROM quarantine_events")
    con.close()
    assert loaded + quarantined == expected == report["rows_read"], (loaded, quarantined, expected)
    assert (report["rows_loaded"], report["rows_quarantined"]) == (loaded, quarantined)


def test_too_much_quarantine_fails_and_keeps_previous_tables(tmp_path):
    """bad_rows/ quarantines 19 of 23 rows: above a 5% limit nothing changes; 1.0 loads it."""
    con, _ = ingest_fresh(tmp_path / "warehouse", FIXTURES / "asof")
    before = tables(con)
    with pytest.raises(ValueError) as excinfo:
        ingest_dir(con, FIXTURES / "bad_rows", max_quarantine_share=0.05)
    message = str(excinfo.value)
    assert "\n" not in message
    assert "19 of 23 rows of events.csv (82.6%) would be quarantined, above the limit of 5.0%" in message
    assert "previous tables are kept" in message and "--max-quarantine-share" in message
    assert tables(con) == before
    report = ingest_dir(con, FIXTURES / "bad_rows", max_quarantine_share=1.0)
    assert report["rows_quarantined"] == 19 and tables(con) != before
    with pytest.raises(ValueError, match="max_quarantine_share must be between 0 and 1, got 1.5"):
        ingest_dir(con, FIXTURES / "bad_rows", max_quarantine_share=1.5)
    con.close()


def test_quarantine_limit_through_the_cli(prefect_harness, tmp_path, capsys):
    """`recs ingest`: the default limit (5%) fails in one line with exit 2 and keeps the previous
    tables and ingest_runs; --max-quarantine-share (or the config file) lifts it."""
    from recs.cli import main

    warehouse = tmp_path / "warehouse"
    assert main(["ingest", "--data", str(FIXTURES / "asof"), "--warehouse", str(warehouse)]) == 0
    capsys.readouterr()
    events_before = query(warehouse, "SELECT * FROM events ORDER BY ALL")
    assert main(["ingest", "--data", str(FIXTURES / "bad_rows"), "--warehouse", str(warehouse)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"recs ingest: error: {FIXTURES / 'bad_rows'}: 19 of 23 rows of events.csv (82.6%) "
                              "would be quarantined, above the limit of 5.0%")
    assert "Traceback" not in "\n".join(err)
    assert query(warehouse, "SELECT * FROM events ORDER BY ALL") == events_before
    assert query(warehouse, "SELECT count(*) FROM ingest_runs") == [(1,)]
    config = tmp_path / "recs.toml"
    config.write_text("[ingest]\nmax_quarantine_share = 0.9\n")
    assert main(["--config", str(config), "ingest", "--data", str(FIXTURES / "bad_rows"),
                 "--warehouse", str(warehouse), "--max-quarantine-share", "0.5"]) == 2  # the command line wins
    capsys.readouterr()
    assert main(["--config", str(config), "ingest", "--data", str(FIXTURES / "bad_rows"),
                 "--warehouse", str(warehouse)]) == 0
    capsys.readouterr()
    assert query(warehouse, "SELECT count(*) FROM events") == [(4,)]
    assert query(warehouse, "SELECT count(*) FROM ingest_runs") == [(2,)]


# ---------------------------------------------------------------------------------------------
# H&M format (recs/ingest_hm.py): the same warehouse contract from transactions_train.csv,
# articles.csv and customers.csv. Cases shared with Retail Rocket are parametrised over a
# fixture directory per format.

HM_FIXTURES = Path(__file__).parent / "fixtures" / "ingest_hm"
C1, C2, C3, C4, C9 = "a1" + "0" * 62, "00" + "b2" * 31, "c3" * 32, "d4" * 32, "e9" * 32
DAY_0901 = 1_598_918_400_000  # 2020-09-01 00:00 UTC, ms
DAY_MS = 86_400_000
# (physical line, reason) of every rejected line of ingest_hm/bad_rows/transactions_train.csv.
HM_BAD_ROWS = [
    (3, "wrong_column_count"), (4, "wrong_column_count"), (5, "wrong_column_count"),
    (6, "bad_t_dat"), (7, "bad_t_dat"), (8, "bad_customer_id"), (9, "bad_article_id"),
    (10, "bad_price"), (11, "bad_price"), (12, "bad_sales_channel_id"), (13, "timestamp_out_of_range"),
]
# One clean fixture per format, and the table of its events that re-ingesting must reproduce.
CLEAN = {"retailrocket": FIXTURES / "asof", "hm": HM_FIXTURES / "clean"}
BAD = {"retailrocket": FIXTURES / "bad_rows", "hm": HM_FIXTURES / "bad_rows"}


@pytest.fixture(scope="module")
def hm_clean(tmp_path_factory) -> tuple[duckdb.DuckDBPyConnection, dict]:
    con, report = ingest_fresh(tmp_path_factory.mktemp("hm_clean"), HM_FIXTURES / "clean")
    yield con, report
    con.close()


@pytest.fixture(scope="module")
def hm_bad_rows(tmp_path_factory) -> tuple[duckdb.DuckDBPyConnection, dict]:
    con, report = ingest_fresh(tmp_path_factory.mktemp("hm_bad"), HM_FIXTURES / "bad_rows")
    yield con, report
    con.close()


def test_hm_rows_become_transactions_with_stable_ids_and_file_order_within_a_day(hm_clean):
    con, report = hm_clean
    assert report["format"] == "hm" and report["files"] == {
        "events": "transactions_train.csv", "articles": "articles.csv", "customers": "customers.csv"}
    assert (report["rows_read"], report["rows_loaded"], report["rows_quarantined"]) == (7, 7, 0)
    # Ids: customers.csv's order first (C4 never buys), then customers only the transactions name.
    assert rows(con, "SELECT visitorid, customer_key, in_data FROM customer_keys ORDER BY 1") == [
        (1, C1, True), (2, C2, True), (3, C3, True), (4, C4, True), (5, C9, True)]
    # Articles: articles.csv's order, then the one only the transactions name; leading zeros kept.
    assert rows(con, "SELECT itemid, item_key, author FROM item_keys ORDER BY 1") == [
        (1, "0108775015", "0108775"), (2, "0108775044", "0108775"), (3, "0706016001", "0706016"),
        (4, "0706016002", "0706016"), (5, "0111111001", "0111111"), (6, "0999999001", None)]
    # Every row a transaction; the two identical rows are two units (two events); within a day
    # the file's order, one ms apart from the day's first line; one basket per customer, day, channel.
    got = rows(con, 'SELECT "timestamp" - 1598918400000, visitorid, event, itemid FROM events ORDER BY 1, 2')
    assert got == [(0, 1, "transaction", 1), (1, 1, "transaction", 1), (2, 2, "transaction", 2),
                   (3, 1, "transaction", 3), (DAY_MS, 3, "transaction", 4), (2 * DAY_MS, 2, "transaction", 1),
                   (2 * DAY_MS + 1, 5, "transaction", 6)]
    baskets = rows(con, 'SELECT count(DISTINCT transactionid) FROM events WHERE visitorid = 1')
    assert baskets == [(1,)] and rows(con, "SELECT min(transactionid) > 0 FROM events") == [(True,)]


def test_hm_category_tree_is_index_group_section_product_type(hm_clean):
    con, _ = hm_clean
    # 0108775015: index group 1 (Ladieswear) -> section 16 -> product type 253.
    assert rows(con, "SELECT categoryid, root_categoryid FROM items WHERE itemid = 1") == [(1_016 * 10_000 + 254, 1)]
    assert rows(con, "SELECT categoryid, parentid, root_categoryid, depth FROM categories "
                     "WHERE categoryid IN (1, 1016, 10160254) ORDER BY 1") == [
        (1, None, 1, 0), (1016, 1, 1, 1), (10_160_254, 1016, 1, 2)]
    assert rows(con, "SELECT DISTINCT root_categoryid FROM events WHERE itemid IN (3, 4)") == [(2,)]
    # Not in articles.csv: unknown category, as for Retail Rocket items without properties.
    assert rows(con, "SELECT categoryid, root_categoryid FROM items WHERE itemid = 6") == [(0, 0)]


def test_hm_price_is_an_item_property(hm_clean):
    con, _ = hm_clean
    # 0108775015 sold at 0.0508 on 09-01 and 0.0423 on 09-03: its latest price.
    assert dict(rows(con, "SELECT item_key, price FROM item_keys")) == {
        "0108775015": 0.0423, "0108775044": 0.0508, "0706016001": 0.0338, "0706016002": 0.0338,
        "0111111001": None, "0999999001": 0.01}
    # The same records in item_prices, as Retail Rocket's price property: latest, min, max, count.
    assert rows(con, "SELECT itemid, price, min_price, max_price, n_records FROM item_prices WHERE itemid = 1") == [
        (1, 0.0423, 0.0423, 0.0508, 3)]


@pytest.mark.parametrize("reason", sorted({r for _, r in HM_BAD_ROWS}))
def test_each_bad_hm_row_class_is_quarantined_with_its_line(hm_bad_rows, reason):
    con, _ = hm_bad_rows
    lines = (HM_FIXTURES / "bad_rows" / "transactions_train.csv").read_text().split("\n")
    expected = [(line, lines[line - 1]) for line, r in HM_BAD_ROWS if r == reason]
    got = rows(con, f"SELECT line_number, raw_line FROM quarantine_events WHERE reason = '{reason}' ORDER BY 1")
    assert got == expected


def test_hm_bad_rows_counts_add_up_and_repeated_rows_are_units(hm_bad_rows):
    from recs.ingest_hm import HM_QUARANTINE_REASONS

    con, report = hm_bad_rows
    assert (report["rows_read"], report["rows_loaded"], report["rows_quarantined"]) == (14, 3, 11)
    assert set(report["quarantine_by_reason"]) == set(HM_QUARANTINE_REASONS)
    assert {r: n for r, n in report["quarantine_by_reason"].items() if n} == {
        "wrong_column_count": 3, "bad_t_dat": 2, "bad_customer_id": 1, "bad_article_id": 1, "bad_price": 2,
        "bad_sales_channel_id": 1, "timestamp_out_of_range": 1}
    # Lines 2 and 14 are the same purchase twice: two units, both loaded, 12 lines apart in time.
    assert rows(con, 'SELECT "timestamp" - 1598918400000, visitorid, itemid FROM events ORDER BY 1') == [
        (0, 1, 1), (12, 1, 1), (DAY_MS, 2, 2)]
    # The quarantine keeps what parses: the customer of the bad price row, nothing of a short row.
    assert rows(con, 'SELECT visitorid, itemid FROM quarantine_events WHERE line_number = 10') == [(1, 1)]
    assert rows(con, 'SELECT "timestamp", visitorid FROM quarantine_events WHERE line_number = 3') == [(None, None)]


@pytest.mark.parametrize("fmt", ["retailrocket", "hm"])
def test_ingesting_twice_gives_identical_tables_for_each_format(tmp_path, fmt):
    con, first_report = ingest_fresh(tmp_path, CLEAN[fmt])
    first = tables(con)
    second_report = ingest_dir(con, CLEAN[fmt])
    assert tables(con) == first
    assert second_report["rows_loaded"] == first_report["rows_loaded"] > 0
    con.close()


@pytest.mark.parametrize("fmt", ["retailrocket", "hm"])
def test_gzip_and_crlf_give_the_same_tables_for_each_format(tmp_path, fmt):
    con, _ = ingest_fresh(tmp_path / "plain", CLEAN[fmt])
    gz_dir = tmp_path / "gz"
    gz_dir.mkdir()
    for path in CLEAN[fmt].iterdir():
        (gz_dir / f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes().replace(b"\n", b"\r\n")))
    gz_con, report = ingest_fresh(tmp_path / "warehouse", gz_dir)
    assert report["files"]["events"].endswith(".csv.gz")
    assert tables(gz_con) == tables(con)
    gz_con.close()
    con.close()


@pytest.mark.parametrize("fmt", ["retailrocket", "hm"])
def test_too_much_quarantine_fails_and_keeps_previous_tables_for_each_format(tmp_path, fmt):
    con, _ = ingest_fresh(tmp_path / "warehouse", CLEAN[fmt])
    before = tables(con)
    with pytest.raises(ValueError, match="would be quarantined") as excinfo:
        ingest_dir(con, BAD[fmt], max_quarantine_share=0.05)
    assert ("transactions_train.csv" if fmt == "hm" else "events.csv") in str(excinfo.value)
    assert tables(con) == before
    report = ingest_dir(con, BAD[fmt], max_quarantine_share=1.0)
    assert report["rows_quarantined"] > 0 and tables(con) != before
    con.close()


@pytest.mark.parametrize(("fmt", "file_name", "content"), [
    ("retailrocket", "events.csv", b"time,visitor,event,item\n1,2,view,3\n"),
    ("hm", "transactions_train.csv", b"t_dat,customer_id,article_id,price\n2020-09-01,a,1,0.1\n"),
    ("hm", "transactions_train.csv.gz", b"this is not gzip data"),
    ("hm", "articles.csv", b"article_id,prod_name\n0108775015,x\n"),
    ("hm", "customers.csv", b"id,age\n1,2\n"),
])
def test_garbled_file_fails_naming_it_for_each_format(tmp_path, fmt, file_name, content):
    con, _ = ingest_fresh(tmp_path / "warehouse", CLEAN[fmt])
    before = tables(con)
    data = tmp_path / "data"
    shutil.copytree(CLEAN[fmt], data)
    if file_name.endswith(".gz"):
        (data / file_name.removesuffix(".gz")).unlink()
    (data / file_name).write_bytes(content)
    with pytest.raises(ValueError, match=file_name.replace(".", r"\.")):
        ingest_dir(con, data)
    assert tables(con) == before
    con.close()


def test_hm_ids_stay_stable_when_rows_and_customers_are_added(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(HM_FIXTURES / "clean", data)
    con, _ = ingest_fresh(tmp_path / "warehouse", data)
    before = rows(con, "SELECT * FROM customer_keys ORDER BY 1")
    items_before = rows(con, "SELECT itemid, item_key FROM item_keys ORDER BY 1")
    new = "f0" * 32
    # A new customer listed first in customers.csv, and a new day of rows.
    customers = (data / "customers.csv").read_text().split("\n", 1)
    (data / "customers.csv").write_text(f"{customers[0]}\n{new},,,ACTIVE,NONE,30,{'f' * 64}\n{customers[1]}")
    with open(data / "transactions_train.csv", "a") as fh:
        fh.write(f"2020-09-04,{new},0111111001,0.02,2\n2020-09-04,{C1},0888888001,0.02,2\n")
    report = ingest_dir(con, data)
    assert report["rows_loaded"] == 9
    assert rows(con, "SELECT * FROM customer_keys ORDER BY 1") == before + [(6, new, True)]
    assert rows(con, "SELECT itemid, item_key FROM item_keys ORDER BY 1") == items_before + [(7, "0888888001")]
    con.close()


def test_format_is_recognised_by_file_name_and_can_be_forced(tmp_path):
    from recs.ingest import detect_format

    assert detect_format(HM_FIXTURES / "clean") == "hm"
    assert detect_format(FIXTURES / "asof") == "retailrocket"
    both = tmp_path / "both"
    shutil.copytree(FIXTURES / "asof", both)
    shutil.copy(HM_FIXTURES / "clean" / "transactions_train.csv", both)
    with pytest.raises(ValueError, match="--format"):
        detect_format(both)
    con, report = ingest_fresh(tmp_path / "warehouse", both, data_format="retailrocket")
    assert report["format"] == "retailrocket" and report["rows_loaded"] == 9
    report = ingest_dir(con, both, data_format="hm")
    assert report["format"] == "hm" and report["rows_loaded"] == 7
    con.close()


def test_retailrocket_keys_are_the_decimal_ids(asof):
    con, _ = asof
    assert rows(con, "SELECT count(*) FROM customer_keys WHERE customer_key <> visitorid::VARCHAR") == [(0,)]
    assert rows(con, "SELECT count(*) FROM item_keys WHERE item_key <> itemid::VARCHAR") == [(0,)]
    assert rows(con, "SELECT count(*) FROM customer_keys") == rows(con, "SELECT count(DISTINCT visitorid) FROM events")
    assert rows(con, "SELECT count(*) FROM item_keys") == rows(con, "SELECT count(*) FROM items")


@pytest.mark.parametrize("source", ["hm_bad_rows", "hm_clean", "hm_generated_tiny"])
def test_every_hm_data_line_is_loaded_or_quarantined(tmp_path, source):
    if source == "hm_generated_tiny":
        from recs.generate_hm import generate_hm

        data = tmp_path / "data"
        generate_hm(data, scale="tiny", seed=3)
    else:
        data = HM_FIXTURES / source.removeprefix("hm_")
    expected = file_data_lines(data / "transactions_train.csv")
    con, report = ingest_fresh(tmp_path / "warehouse", data)
    [(loaded,)] = rows(con, "SELECT count(*) FROM events")
    [(quarantined,)] = rows(con, "SELECT count(*) FROM quarantine_events")
    con.close()
    assert loaded + quarantined == expected == report["rows_read"], (loaded, quarantined, expected)


def test_hm_blocks_with_a_bad_line_are_split_line_by_line(tmp_path, monkeypatch):
    """Streamed in tiny blocks, a dirty block (split by Arrow compute) beside clean ones (Arrow's
    CSV reader) gives the tables of one block."""
    import recs.ingest_hm as ingest_hm

    data = tmp_path / "data"
    shutil.copytree(HM_FIXTURES / "bad_rows", data)
    con, _ = ingest_fresh(tmp_path / "one_block", data)
    whole = tables(con)
    con.close()
    monkeypatch.setattr(ingest_hm, "HM_BLOCK_BYTES", 150)
    monkeypatch.setattr(ingest_hm.HmRows.__init__, "__defaults__", (150,))
    con, _ = ingest_fresh(tmp_path / "blocks", data)
    assert tables(con) == whole
    con.close()
