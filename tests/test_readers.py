"""Readers never block publishing and never see a partial run (recs/warehouse.py snapshots).

Every test holds a read-only DuckDB connection open in another process (tests/held_reader.py,
what an analyst's CLI does) across real writers: scoring, an evaluation write, ingest and build
through their Prefect flows, writers killed half way. The held reader keeps the complete state it
first saw; a reader opened afterwards sees the new one; nothing waits for the reader.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from flows.evaluate import write_metrics
from recs.publish import connect_with_retry
from recs.warehouse import connect, db_path, open_writer, sequences_dir
from tests.held_reader import HeldReader
from tests.test_publish import stage_and_publish
from tests.trained_fixtures import TinyTrained, copy_warehouse, tiny_trained, tiny_warehouse  # noqa: F401
from tests.warehouse_queries import query

REPO = Path(__file__).resolve().parents[1]
LATEST = "SELECT run_id, count(*) FROM latest_recommendations GROUP BY run_id"
SEQUENCE_STATE = "SELECT min_user_events, n_customers, n_train FROM sequence_meta"


def assert_blocks_a_plain_writer(warehouse: Path) -> None:
    """The held reader really holds its file: DuckDB refuses a writer on it (the old way to
    publish, which made nightly scoring fail while anyone had the warehouse open)."""
    with pytest.raises(duckdb.IOException, match="lock|Permission denied"):
        duckdb.connect(os.path.realpath(db_path(warehouse)))


def parquet_state(warehouse: Path) -> tuple:
    """What `sequences/meta.json` says, in SEQUENCE_STATE's columns."""
    meta = json.loads((sequences_dir(warehouse) / "meta.json").read_text())
    return meta["min_user_events"], meta["n_customers"], meta["n_train"]


def run_python(script: str) -> subprocess.Popen:
    """A writer in its own process (the worktree's code; output lines on stdout)."""
    prelude = f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
    return subprocess.Popen([sys.executable, "-c", prelude + textwrap.dedent(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_line(proc: subprocess.Popen, expected: str) -> None:
    line = proc.stdout.readline().strip()
    assert line == expected, (line, proc.stderr.read() if proc.poll() is not None else "")


def snapshots(warehouse: Path) -> list[str]:
    return sorted(p.name for p in (warehouse / ".snapshots").iterdir())


# ------------------------------------------------------------------------------------------
# Real writers beside a held reader
# ------------------------------------------------------------------------------------------

def test_scoring_run_publishes_while_a_reader_holds_the_warehouse(tiny_trained: TinyTrained, tmp_path):
    from recs.scoring import score_all_customers

    warehouse = copy_warehouse(tiny_trained.warehouse_dir, tmp_path / "warehouse")
    stage_and_publish(warehouse, "previous", n_customers=7)
    with HeldReader(db_path(warehouse)) as reader:
        assert reader.query(LATEST) == [("previous", 21)]
        assert_blocks_a_plain_writer(warehouse)
        started = time.monotonic()
        run = score_all_customers(warehouse, tiny_trained.checkpoint_dir, top_n=3, progress=False)
        assert time.monotonic() - started < 100  # never waited out a lock (connect_with_retry: 120 s)
        assert run["n_rows"] == 3 * run["n_customers"] > 0
        # The held connection still reads the complete previous run; a new reader the new one.
        assert reader.query(LATEST) == [("previous", 21)]
        assert query(warehouse, LATEST) == [(run["run_id"], run["n_rows"])]
        with HeldReader(db_path(warehouse)) as new_reader:
            assert new_reader.query(LATEST) == [(run["run_id"], run["n_rows"])]
        assert reader.query("SELECT count(*) FROM recommendation_runs") == [(1,)]
    assert query(warehouse, "SELECT run_id FROM recommendation_runs ORDER BY published_at") == [("previous",), (run["run_id"],)]


def _metric_rows(value: float) -> list[dict]:
    return [{"model": model, "split": "val", "metric": metric, "k": 20, "value": value, "section": "next_event"}
            for model in ("shipped", "popularity") for metric in ("recall", "mrr")]


def test_evaluation_write_publishes_while_a_reader_holds_the_warehouse(tmp_path):
    warehouse = tmp_path / "warehouse"
    write_metrics.fn(str(warehouse), "eval-1", _metric_rows(0.25))
    by_run = "SELECT run_id, count(*), sum(value) FROM eval_metrics GROUP BY run_id ORDER BY run_id"
    with HeldReader(db_path(warehouse)) as reader:
        assert reader.query(by_run) == [("eval-1", 4, 1.0)]
        assert_blocks_a_plain_writer(warehouse)
        assert write_metrics.fn(str(warehouse), "eval-2", _metric_rows(0.5)) == 4
        # Re-writing a run replaces it, in one publish as well.
        assert write_metrics.fn(str(warehouse), "eval-1", _metric_rows(0.75)) == 4
        assert reader.query(by_run) == [("eval-1", 4, 1.0)]
        assert query(warehouse, by_run) == [("eval-1", 4, 3.0), ("eval-2", 4, 2.0)]


def test_ingest_and_build_flows_publish_while_a_reader_holds_the_warehouse(tiny_warehouse, prefect_harness, tmp_path):
    from flows.build_sequences import build_sequences
    from flows.ingest import ingest

    warehouse = copy_warehouse(tiny_warehouse.warehouse_dir, tmp_path / "warehouse")
    data = tmp_path / "data"
    shutil.copytree(tiny_warehouse.data_dir, data)
    lines = (data / "events.csv").read_text().splitlines(keepends=True)
    (data / "events.csv").write_text("".join(lines[:-1000]))  # a different log: 1,000 events fewer
    before_events = query(warehouse, "SELECT count(*) FROM events")
    before_sequences = query(warehouse, SEQUENCE_STATE)
    assert [parquet_state(warehouse)] == before_sequences

    with HeldReader(db_path(warehouse)) as reader:
        assert reader.query("SELECT count(*) FROM events") == before_events
        assert_blocks_a_plain_writer(warehouse)
        report = ingest(data_dir=str(data), warehouse_dir=str(warehouse))
        assert report["rows_read"] == before_events[0][0] - 1000
        built = build_sequences(warehouse_dir=str(warehouse), min_user_events=3, min_item_events=2)
        # The held connection: the state before both writes, complete.
        assert reader.query("SELECT count(*) FROM events") == before_events
        assert reader.query(SEQUENCE_STATE) == before_sequences
        assert reader.query("SELECT count(*) FROM ingest_runs") == [(0,)]
    # A new reader: both writes, and the parquet tables of the same build as the DuckDB tables.
    assert query(warehouse, "SELECT count(*) FROM events") == [(report["rows_loaded"],)]
    assert query(warehouse, "SELECT count(*) FROM ingest_runs") == [(1,)]
    after = query(warehouse, SEQUENCE_STATE)
    assert after == [(3, built["n_customers"], built["n_train"])] != before_sequences
    assert [parquet_state(warehouse)] == after


def test_a_reader_of_this_process_sees_new_snapshots_while_it_holds_an_old_one(tmp_path):
    stage_and_publish(tmp_path, "r1", n_customers=2)
    old = connect(tmp_path, read_only=True)
    try:
        stage_and_publish(tmp_path, "r2", n_customers=3)
        new = connect(tmp_path, read_only=True)
        try:
            assert old.execute(LATEST).fetchall() == [("r1", 6)]
            assert new.execute(LATEST).fetchall() == [("r2", 9)]
        finally:
            new.close()
    finally:
        old.close()


# ------------------------------------------------------------------------------------------
# Writers killed half way
# ------------------------------------------------------------------------------------------

# Where the writer process is killed: inside publish_run's open transaction, or after its
# snapshot is complete (committed, checkpointed, closed) just before the rename publishes it.
CRASH_HOOKS = {
    "inside_transaction": "before_commit=lambda con: (print('ready', flush=True), time.sleep(600))",
    "before_publish": ("before_commit=lambda con: setattr(con, 'before_publish', "
                       "lambda snapshot: (print('ready', flush=True), time.sleep(600)))"),
}


@pytest.mark.parametrize("crash_point", sorted(CRASH_HOOKS))
def test_killed_publish_leaves_readers_the_previous_run_and_no_stale_lock(tmp_path, crash_point):
    stage_and_publish(tmp_path, "good", n_customers=4)
    with HeldReader(db_path(tmp_path)) as reader:
        writer = run_python(f"""
            import time
            from pathlib import Path
            from tests.test_publish import stage_and_publish
            stage_and_publish(Path({str(tmp_path)!r}), "killed", n_customers=50, {CRASH_HOOKS[crash_point]})
        """)
        try:
            wait_for_line(writer, "ready")
            writer.kill()  # SIGKILL: no finally, no atexit
        finally:
            writer.wait(timeout=30)
            writer.stdout.close()
            writer.stderr.close()
        assert reader.query(LATEST) == [("good", 12)]
        assert query(tmp_path, LATEST) == [("good", 12)]
        assert len(snapshots(tmp_path)) == 2  # the current one and the killed writer's copy
        # The kernel released the dead writer's lock: the next writer gets it at once.
        open_writer(tmp_path, timeout_s=2).discard()
        stage_and_publish(tmp_path, "next", n_customers=3)
        assert reader.query(LATEST) == [("good", 12)]
    assert query(tmp_path, LATEST) == [("next", 9)]
    assert query(tmp_path, "SELECT count(*) FROM recommendations WHERE run_id = 'killed'") == [(0,)]
    assert len(snapshots(tmp_path)) == 1  # the next publish removed the leftovers


def test_build_killed_between_its_tables_and_its_parquet_changes_neither(tiny_warehouse, tmp_path):
    """The old build committed its DuckDB tables, then swapped the parquet directory: a crash
    between the two left new tables beside old parquet. Now both are in one snapshot."""
    warehouse = copy_warehouse(tiny_warehouse.warehouse_dir, tmp_path / "warehouse")
    before = query(warehouse, SEQUENCE_STATE)
    with HeldReader(db_path(warehouse)) as reader:
        writer = run_python(f"""
            import time
            from pathlib import Path
            from recs.sequences import build_sequence_tables
            from recs.warehouse import connect
            con = connect(Path({str(warehouse)!r}))
            build_sequence_tables(con, Path({str(warehouse)!r}), min_user_events=4, min_item_events=2)
            con.before_publish = lambda snapshot: (print("ready", flush=True), time.sleep(600))
            con.close()
        """)
        try:
            wait_for_line(writer, "ready")
            writer.kill()
        finally:
            writer.wait(timeout=30)
            writer.stdout.close()
            writer.stderr.close()
        # The killed build wrote its tables and parquet in full; readers see neither.
        assert len(list((warehouse / ".sequences").iterdir())) == 2
        assert reader.query(SEQUENCE_STATE) == before
        assert query(warehouse, SEQUENCE_STATE) == before
        assert [parquet_state(warehouse)] == before
        # The next build publishes normally, and both halves move together.
        with connect_with_retry(warehouse, timeout_s=2) as con:
            from recs.sequences import build_sequence_tables

            built = build_sequence_tables(con, warehouse, min_user_events=5, min_item_events=2)
        assert reader.query(SEQUENCE_STATE) == before
    after = query(warehouse, SEQUENCE_STATE)
    assert after == [(5, built["n_customers"], built["n_train"])] != before
    assert [parquet_state(warehouse)] == after
    # Left: the new version and the previous one (kept for readers that had just resolved it).
    assert len(list((warehouse / ".sequences").iterdir())) == 2 and len(snapshots(warehouse)) == 1


# ------------------------------------------------------------------------------------------
# Writers among themselves
# ------------------------------------------------------------------------------------------

def test_writers_in_two_processes_serialise_and_lose_no_update(tmp_path):
    """Two processes append through `connect_with_retry(warehouse_dir)` (what a new writer, e.g.
    a feedback table, would use): every write lands, none overwrites another's snapshot."""
    with connect_with_retry(tmp_path) as con:
        con.execute("CREATE TABLE feedback (writer INTEGER, i INTEGER)")
    with HeldReader(db_path(tmp_path)) as reader:
        script = """
            from pathlib import Path
            from recs.publish import connect_with_retry
            for i in range(8):
                con = connect_with_retry(Path({wh!r}))
                try:
                    n = con.execute("SELECT count(*) FROM feedback").fetchone()[0]
                    con.execute("INSERT INTO feedback VALUES (?, ?)", [{w}, n])
                finally:
                    con.close()
            print("done", flush=True)
        """
        writers = [run_python(script.format(wh=str(tmp_path), w=w)) for w in (1, 2)]
        for writer in writers:
            wait_for_line(writer, "done")
            assert writer.wait(timeout=60) == 0
            writer.stdout.close()
            writer.stderr.close()
        assert reader.query("SELECT count(*) FROM feedback") == [(0,)]
    # Each write saw all earlier ones: the counts it read are 0..15, each once.
    assert query(tmp_path, "SELECT writer, count(*) FROM feedback GROUP BY 1 ORDER BY 1") == [(1, 8), (2, 8)]
    assert query(tmp_path, "SELECT list(i ORDER BY i) FROM feedback") == [(list(range(16)),)]


def test_a_second_writer_in_the_same_thread_fails_at_once(tmp_path):
    with connect(tmp_path) as con:
        with pytest.raises(RuntimeError, match="already has a writer"):
            connect(tmp_path)
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
    assert query(tmp_path, "SELECT x FROM t") == [(1,)]


def test_a_writer_that_raises_publishes_nothing(tmp_path):
    with connect(tmp_path) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
    with pytest.raises(ZeroDivisionError):
        with connect(tmp_path) as con:
            con.execute("INSERT INTO t VALUES (2)")
            1 / 0
    assert query(tmp_path, "SELECT x FROM t") == [(1,)]
    assert len(snapshots(tmp_path)) == 1


def test_closing_inside_a_block_that_then_raises_keeps_what_was_published(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with connect(tmp_path) as con:
            con.execute("CREATE TABLE t AS SELECT 1 AS x")
            con.close()  # published here: the discard on the way out must not undo it
            1 / 0
    assert query(tmp_path, "SELECT x FROM t") == [(1,)]
    assert len(snapshots(tmp_path)) == 1


def test_a_bare_duckdb_connection_cannot_build(tmp_path):
    """The build publishes its parquet with the writer's snapshot: without one it would have to
    swap the directory on its own again."""
    from recs.sequences import build_sequence_tables
    from tests.test_sequences import VIEW, Event, insert_events

    with duckdb.connect() as con:
        insert_events(con, [Event(i * 1000, 1, VIEW, i % 3) for i in range(1, 11)])
        with pytest.raises(TypeError, match="needs a warehouse writer"):
            build_sequence_tables(con, tmp_path, min_user_events=1, min_item_events=1)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------
# Warehouses from before snapshots
# ------------------------------------------------------------------------------------------

def test_an_old_layout_warehouse_is_adopted_with_its_content_and_write_ahead_log(tmp_path):
    warehouse = tmp_path / "warehouse"
    (warehouse / "sequences" / "train").mkdir(parents=True)
    (warehouse / "sequences" / "meta.json").write_text('{"n_train": 7}\n')
    (warehouse / "sequences" / "train" / "part-0.parquet").write_bytes(b"not really parquet")
    with duckdb.connect(str(db_path(warehouse))) as con:  # how writers used to open it
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
    # A writer of the old code that died after committing: its rows are only in the WAL.
    died = run_python(f"""
        import os, duckdb
        con = duckdb.connect({str(db_path(warehouse))!r})
        con.execute("INSERT INTO t VALUES (2)")
        os._exit(0)
    """)
    assert died.wait(timeout=60) == 0, died.stderr.read()
    died.stdout.close()
    died.stderr.close()
    assert (warehouse / "recs.duckdb.wal").exists()
    with HeldReader(db_path(warehouse)) as reader:
        assert reader.query("SELECT list(x ORDER BY x) FROM t") == [([1, 2],)]
        with connect(warehouse) as con:
            assert con.execute("SELECT list(x ORDER BY x) FROM t").fetchall() == [([1, 2],)]
            con.execute("INSERT INTO t VALUES (3)")
        assert reader.query("SELECT list(x ORDER BY x) FROM t") == [([1, 2],)]
    assert (warehouse / "recs.duckdb").is_symlink() and (warehouse / "sequences").is_symlink()
    assert not (warehouse / "recs.duckdb.wal").exists()
    assert query(warehouse, "SELECT list(x ORDER BY x) FROM t") == [([1, 2, 3],)]
    assert json.loads((sequences_dir(warehouse) / "meta.json").read_text()) == {"n_train": 7}
    assert (sequences_dir(warehouse) / "train" / "part-0.parquet").read_bytes() == b"not really parquet"


def test_a_copy_that_followed_the_symlinks_is_adopted(tmp_path):
    stage_and_publish(tmp_path / "a", "r1", n_customers=2)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # plain copytree: real files, `.current` a directory
    assert not (tmp_path / "b" / "recs.duckdb").is_symlink()
    stage_and_publish(tmp_path / "b", "r2", n_customers=3)
    assert (tmp_path / "b" / ".current").is_symlink()
    assert query(tmp_path / "b", "SELECT run_id FROM recommendation_runs ORDER BY 1") == [("r1",), ("r2",)]
    assert len(snapshots(tmp_path / "b")) == 1
    assert query(tmp_path / "a", LATEST) == [("r1", 6)]
