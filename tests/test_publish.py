"""Atomic publish: readers see the previous run or the new one in full, never a partial run."""
from __future__ import annotations

import subprocess
import time
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest

from recs.publish import connect_with_retry, publish_run, staging_dir, write_shard
from recs.warehouse import open_writer
from tests.warehouse_queries import query

REPO = Path(__file__).resolve().parents[1]


def fake_run(run_id: str, n_customers: int, top_n: int = 3) -> pa.Table:
    """A well-formed run: every customer gets top_n rows with ranks 1..top_n."""
    rows = n_customers * top_n
    return pa.table({
        "run_id": [run_id] * rows,
        "customer_id": [1000 + i // top_n for i in range(rows)],
        "rank": [1 + i % top_n for i in range(rows)],
        "item_id": [500 + i % 7 for i in range(rows)],
        "score": [1.0 / (1 + i % top_n) for i in range(rows)],
        "p_transaction": [0.01] * rows,
        "p_addtocart": [0.02] * rows,
        "p_view": [0.5] * rows,
        "source": ["retrieval"] * rows,
        "model_version": ["test"] * rows,
        "generated_at": [datetime(2026, 1, 1)] * rows,
    })


def stage_and_publish(warehouse: Path, run_id: str, n_customers: int, shards: int = 2, **kw) -> dict:
    table = fake_run(run_id, n_customers)
    per = -(-table.num_rows // shards)
    for s in range(shards):
        write_shard(table.slice(s * per, per), warehouse, run_id, s)
    return publish_run(warehouse, run_id, {"n_customers": n_customers, "top_n": 3, "model_version": "test"}, **kw)


def latest(warehouse: Path) -> list[tuple]:
    return query(warehouse, "SELECT run_id, count(*), count(DISTINCT customer_id) FROM latest_recommendations "
                            "GROUP BY run_id")


def test_publish_makes_newest_run_latest_and_keeps_last_runs(tmp_path):
    for i, run_id in enumerate(["r1", "r2", "r3", "r4"]):
        row = stage_and_publish(tmp_path, run_id, n_customers=10 + i, keep_runs=2)
        assert row["n_rows"] == (10 + i) * 3
        assert not staging_dir(tmp_path, run_id).exists()
    assert latest(tmp_path) == [("r4", 39, 13)]
    con = connect_with_retry(tmp_path, read_only=True)
    assert con.execute("SELECT run_id FROM recommendation_runs ORDER BY run_id").fetchall() == [("r3",), ("r4",)]
    assert con.execute("SELECT DISTINCT run_id FROM recommendations ORDER BY 1").fetchall() == [("r3",), ("r4",)]
    con.close()


def test_republishing_a_run_is_idempotent(tmp_path):
    stage_and_publish(tmp_path, "r1", n_customers=5)
    stage_and_publish(tmp_path, "r1", n_customers=5)
    assert latest(tmp_path) == [("r1", 15, 5)]


def test_failure_inside_the_transaction_leaves_previous_run(tmp_path):
    stage_and_publish(tmp_path, "good", n_customers=4)

    def explode(con):
        # The new rows are inserted at this point, inside the open transaction.
        assert con.execute("SELECT count(*) FROM recommendations WHERE run_id = 'bad'").fetchone()[0] == 30
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        stage_and_publish(tmp_path, "bad", n_customers=10, before_commit=explode)
    assert latest(tmp_path) == [("good", 12, 4)]


def test_other_connection_never_sees_an_uncommitted_run(tmp_path):
    import duckdb

    stage_and_publish(tmp_path, "old", n_customers=4)
    seen = {}

    def peek(con):
        # A reader opening the warehouse the way users do, mid-transaction.
        other = duckdb.connect(str(tmp_path / "recs.duckdb"), read_only=True)
        seen["during"] = other.execute("SELECT run_id, count(*) FROM latest_recommendations GROUP BY 1").fetchall()
        other.close()
        con.execute("COMMIT")
        con.execute("BEGIN TRANSACTION")
        # Committed in the writer's private copy, not published yet: still the old run.
        seen["committed"] = latest(tmp_path)

    stage_and_publish(tmp_path, "new", n_customers=6, before_commit=peek)
    assert seen["during"] == [("old", 12)]
    assert seen["committed"] == [("old", 12, 4)]
    assert latest(tmp_path) == [("new", 18, 6)]


@pytest.mark.parametrize("crash_point", ["after_shards", "inside_transaction", "after_commit", "before_publish"])
def test_process_crash_leaves_previous_run_fully_visible(tmp_path, crash_point):
    stage_and_publish(tmp_path, "good", n_customers=4)
    # after_commit: committed in the writer's private copy; before_publish: that copy complete and
    # closed, the rename that publishes it not done.
    hooks = {"inside_transaction": "lambda con: os._exit(9)",
             "after_commit": "lambda con: (con.execute('COMMIT'), os._exit(9))",
             "before_publish": "lambda con: setattr(con, 'before_publish', lambda snapshot: os._exit(9))"}
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(REPO / 'tests')!r})
        from pathlib import Path
        from test_publish import fake_run
        from recs.publish import write_shard, publish_run
        wh = Path({str(tmp_path)!r})
        write_shard(fake_run("crashed", 50), wh, "crashed", 0)
        if {crash_point!r} == "after_shards":
            os._exit(9)
        publish_run(wh, "crashed", {{"n_customers": 50}}, before_commit={hooks.get(crash_point)})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    assert latest(tmp_path) == [("good", 12, 4)]
    con = connect_with_retry(tmp_path, read_only=True)
    assert con.execute("SELECT count(*) FROM recommendations WHERE run_id = 'crashed'").fetchone()[0] == 0
    con.close()
    # The next run publishes normally over the leftovers (no stale lock: it gets it at once).
    open_writer(tmp_path, timeout_s=2).discard()
    stage_and_publish(tmp_path, "next", n_customers=3)
    assert latest(tmp_path) == [("next", 9, 3)]
    assert len(list((tmp_path / ".snapshots").iterdir())) == 1


def test_read_only_reader_in_another_process_only_sees_complete_runs(tmp_path):
    stage_and_publish(tmp_path, "r000", n_customers=20)
    writer = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(REPO / 'tests')!r})
        from pathlib import Path
        from test_publish import stage_and_publish
        for i in range(1, 6):
            stage_and_publish(Path({str(tmp_path)!r}), f"r{{i:03d}}", n_customers=20 + 10 * i, shards=3)
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer])
    observed = []
    while proc.poll() is None or not observed:
        for run_id, rows, customers in latest(tmp_path):
            observed.append(run_id)
            expected_customers = 20 + 10 * int(run_id[1:])
            assert (rows, customers) == (expected_customers * 3, expected_customers), run_id
        time.sleep(0.01)  # let the writer take the lock between reads
    assert proc.wait() == 0
    assert latest(tmp_path)[0][0] == "r005"
