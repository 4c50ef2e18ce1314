"""Ratings from the side-by-side page (recs/feedback.py): stored without the writer lock, seen at
once, folded into `feedback` by the next writer, never in nightly scoring's way."""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from recs.feedback import pending_files, read_feedback, record_feedback, summarise
from recs.warehouse import LOCK_FILENAME, connect
from tests.test_publish import stage_and_publish
from tests.test_readers import REPO, wait_for_line
from tests.warehouse_queries import query

FEEDBACK_ROWS = "SELECT customer, system, kind, item_id, rating, incumbent FROM feedback ORDER BY given_at"
LATEST = "SELECT run_id, count(*) FROM latest_recommendations GROUP BY run_id"


def rate(warehouse: Path, rating: int, **kw) -> dict:
    return record_feedback(warehouse, customer=kw.pop("customer", "42"), system=kw.pop("system", "ours"),
                           rating=rating, customer_id=kw.pop("customer_id", 42), run_id="r1",
                           incumbent="item_knn", **kw)


def run_writer(script: str) -> subprocess.Popen:
    """A writer in its own process (nightly scoring's), steered line by line on stdin."""
    prelude = f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
    return subprocess.Popen([sys.executable, "-c", prelude + textwrap.dedent(script)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def lock_is_held(warehouse: Path) -> bool:
    fd = os.open(warehouse / LOCK_FILENAME, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_rating_is_a_file_read_back_at_once_and_folded_by_the_next_writer(tmp_path):
    stage_and_publish(tmp_path, "r1", n_customers=3)
    rate(tmp_path, 4)
    rate(tmp_path, -1, item_id=7, system="incumbent")
    assert len(pending_files(tmp_path)) == 2
    assert query(tmp_path, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'feedback'") == [(0,)]
    seen = read_feedback(tmp_path)
    assert [(r["system"], r["kind"], r["item_id"], r["rating"]) for r in seen] == [
        ("ours", "list", None, 4), ("incumbent", "item", 7, -1)]

    with connect(tmp_path):  # any writer, e.g. tonight's scoring publish
        pass
    assert pending_files(tmp_path) == []
    assert query(tmp_path, FEEDBACK_ROWS) == [("42", "ours", "list", None, 4, "item_knn"),
                                              ("42", "incumbent", "item", 7, -1, "item_knn")]
    assert read_feedback(tmp_path) == seen  # once each, now from the table


def test_feedback_while_nightly_scoring_holds_the_lock_neither_waits_nor_breaks_it(tmp_path):
    """A scoring publish in another process holds the writer lock inside its transaction; the
    page stores ratings meanwhile (it would deadlock here if it waited for the lock)."""
    stage_and_publish(tmp_path, "yesterday", n_customers=2)
    writer = run_writer(f"""
        import sys
        from pathlib import Path
        from tests.test_publish import stage_and_publish
        stage_and_publish(Path({str(tmp_path)!r}), "tonight", n_customers=5,
                          before_commit=lambda con: (print('ready', flush=True), sys.stdin.readline()))
        print('published', flush=True)
    """)
    try:
        wait_for_line(writer, "ready")
        assert lock_is_held(tmp_path)
        rate(tmp_path, 5)
        rate(tmp_path, 1, item_id=3)
        assert lock_is_held(tmp_path)  # the writer is still mid-publish: nothing waited for it
        assert [r["rating"] for r in read_feedback(tmp_path)] == [5, 1]
        writer.stdin.write("go\n")
        writer.stdin.flush()
        wait_for_line(writer, "published")
        assert writer.wait(timeout=60) == 0
    finally:
        writer.kill()
        writer.wait()
        for stream in (writer.stdin, writer.stdout, writer.stderr):
            stream.close()
    assert query(tmp_path, LATEST) == [("tonight", 15)]
    # Written before that writer closed: folded by it.
    assert query(tmp_path, "SELECT item_id, rating FROM feedback ORDER BY given_at") == [(None, 5), (3, 1)]
    assert pending_files(tmp_path) == []


def test_feedback_written_after_a_writer_folded_waits_for_the_next_one(tmp_path):
    stage_and_publish(tmp_path, "r1", n_customers=2)
    rate(tmp_path, 2)
    late = {}

    def hook(con):
        con.before_publish = lambda snapshot: late.update(rate(tmp_path, 3))

    stage_and_publish(tmp_path, "r2", n_customers=2, before_commit=hook)
    assert query(tmp_path, LATEST) == [("r2", 6)]
    assert query(tmp_path, "SELECT rating FROM feedback") == [(2,)]
    assert [p.name for p in pending_files(tmp_path)] == [f"{late['given_at']:%Y%m%dT%H%M%S%f}-{late['feedback_id']}.parquet"]
    assert [r["rating"] for r in read_feedback(tmp_path)] == [2, 3]  # the page sees both meanwhile
    stage_and_publish(tmp_path, "r3", n_customers=2)
    assert query(tmp_path, "SELECT rating FROM feedback ORDER BY given_at") == [(2,), (3,)]


def test_a_file_folded_twice_is_inserted_once(tmp_path):
    """A crash between the publish and the removal of the folded files folds them again."""
    rate(tmp_path, 4)
    [path] = pending_files(tmp_path)
    kept = tmp_path / "kept.parquet"
    shutil.copy(path, kept)
    with connect(tmp_path):
        pass
    shutil.copy(kept, path)
    with connect(tmp_path):
        pass
    assert query(tmp_path, "SELECT count(*), sum(rating) FROM feedback") == [(1, 4)]
    assert len(read_feedback(tmp_path)) == 1


def test_an_unreadable_file_never_breaks_a_publish_and_stays_pending(tmp_path, caplog):
    rate(tmp_path, 3)
    bad = tmp_path / "feedback" / "00000000T000000000000-bad.parquet"
    bad.write_bytes(b"not parquet")
    stage_and_publish(tmp_path, "r1", n_customers=2)
    assert query(tmp_path, LATEST) == [("r1", 6)]
    assert query(tmp_path, "SELECT rating FROM feedback") == [(3,)]
    assert pending_files(tmp_path) == [bad]
    assert "cannot be read" in caplog.text
    assert [r["rating"] for r in read_feedback(tmp_path)] == [3]


def test_a_writer_that_left_a_transaction_open_folds_nothing(tmp_path):
    rate(tmp_path, 5)
    with connect(tmp_path) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
        con.execute("BEGIN TRANSACTION")
    assert len(pending_files(tmp_path)) == 1
    with connect(tmp_path):
        pass
    assert query(tmp_path, "SELECT rating FROM feedback") == [(5,)]


@pytest.mark.parametrize("kw, message", [
    ({"rating": 6}, "list rating must be one of"),
    ({"rating": 0, "item_id": 3}, "item rating must be one of"),
    ({"rating": 3, "system": "theirs"}, "system must be one of"),
    ({"rating": 3, "customer": ""}, "customer must name"),
])
def test_bad_ratings_are_refused_and_write_nothing(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        rate(tmp_path, **kw)
    assert pending_files(tmp_path) == []


def test_summary_per_system():
    rows = [{"system": "ours", "kind": "list", "rating": 4}, {"system": "ours", "kind": "list", "rating": 2},
            {"system": "ours", "kind": "item", "rating": 1}, {"system": "incumbent", "kind": "item", "rating": -1}]
    assert summarise(rows) == {
        "ours": {"n_list_ratings": 2, "mean_list_rating": 3.0, "thumbs_up": 1, "thumbs_down": 0},
        "incumbent": {"n_list_ratings": 0, "mean_list_rating": None, "thumbs_up": 0, "thumbs_down": 1}}


def test_given_at_is_kept(tmp_path):
    at = datetime(2026, 12, 1, 9, 30)
    rate(tmp_path, 3, given_at=at)
    assert read_feedback(tmp_path)[0]["given_at"] == at
