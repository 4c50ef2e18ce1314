"""The nightly job (flows/nightly.py): today's events reach tonight's lists.

In-process through the session's Prefect harness, and through a REAL Prefect server started by
the test: the deployments are registered by `recs deploy`, the nightly one is triggered through
the API, and the test waits for it to finish and reads the published lists.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.trained_fixtures import TinyTrained, copy_checkpoints, copy_warehouse, tiny_trained, tiny_warehouse  # noqa: F401
from tests.warehouse_queries import query

REPO = Path(__file__).resolve().parents[1]
NEW_VIEWS = 6  # today's views of one item by one customer: enough to move their list


def private_copy(tiny_trained: TinyTrained, root: Path) -> tuple[Path, Path, Path]:
    """(data_dir, warehouse_dir, checkpoint_dir) copies a test may change."""
    data = root / "data"
    shutil.copytree(tiny_trained.warehouse.data_dir, data)
    return (data, copy_warehouse(tiny_trained.warehouse_dir, root / "warehouse"),
            copy_checkpoints(tiny_trained.checkpoint_dir, root / "checkpoints"))


def append_todays_views(data_dir: Path, warehouse: Path) -> tuple[int, int]:
    """Append NEW_VIEWS views of an item a customer has never seen to events.csv, after the
    log's last event (as the shop's export grows). Returns (customer, item)."""
    [(customer,)] = query(warehouse, "SELECT visitorid FROM events GROUP BY 1 HAVING count(*) >= 5 "
                                     "ORDER BY count(*) DESC, 1 LIMIT 1")
    # A popular item still on sale (scoring never offers unavailable items).
    [(item, last_ts)] = query(warehouse, """
        SELECT e.itemid, (SELECT max(timestamp) FROM events) FROM events e JOIN item_index i USING (itemid)
        WHERE i.available AND e.itemid NOT IN (SELECT itemid FROM events WHERE visitorid = ?)
        GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1""", [customer])
    with open(data_dir / "events.csv", "a") as f:
        for k in range(NEW_VIEWS):
            f.write(f"{last_ts + 60_000 * (k + 1)},{customer},view,{item},\n")
    return int(customer), int(item)


def published_list(warehouse: Path, customer: int) -> list[int]:
    return [i for (i,) in query(warehouse, "SELECT item_id FROM latest_recommendations WHERE customer_id = ? "
                                           "ORDER BY rank", [customer])]


def test_nightly_ingests_todays_events_and_they_change_tonights_lists(prefect_harness, tiny_trained, tmp_path):
    from flows.nightly import nightly
    from flows.score_all import score_all

    data, warehouse, checkpoints = private_copy(tiny_trained, tmp_path)
    score_all(warehouse_dir=str(warehouse), checkpoint_dir=str(checkpoints), top_n=10)  # last night's run
    [(events_before,)] = query(warehouse, "SELECT count(*) FROM events")
    meta_before = query(warehouse, "SELECT min_user_events, min_item_events, history_len FROM sequence_meta")
    customer, item = append_todays_views(data, warehouse)
    before = published_list(warehouse, customer)
    assert item not in before

    result = nightly(data_dir=str(data), warehouse_dir=str(warehouse), checkpoint_dir=str(checkpoints), top_n=10,
                     max_model_age_days=0.0)  # any age counts: the warning must show

    [(events_after,)] = query(warehouse, "SELECT count(*) FROM events")
    assert events_after == events_before + NEW_VIEWS  # appended, nothing of yesterday lost
    assert query(warehouse, "SELECT min_user_events, min_item_events, history_len FROM sequence_meta") == meta_before
    after = published_list(warehouse, customer)
    assert len(after) == 10 and after != before
    assert item in after  # six views today (the tiny models rank it anywhere in the 10)
    assert result["scoring"]["run_id"] == query(warehouse, "SELECT DISTINCT run_id FROM latest_recommendations")[0][0]
    assert "models older than the data by more than 0 days" in result["model_age_warning"]


def test_nightly_without_new_data_keeps_quiet_about_fresh_models(prefect_harness, tiny_trained, tmp_path):
    from flows.nightly import nightly

    _, warehouse, checkpoints = private_copy(tiny_trained, tmp_path)
    result = nightly(warehouse_dir=str(warehouse), checkpoint_dir=str(checkpoints), top_n=5)
    assert result["ingest"] is None and result["model_age_warning"] is None  # trained minutes ago
    assert result["scoring"]["n_customers"] > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 90.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"prefect server at {url} not healthy after {timeout_s} s")


@pytest.mark.slow
def test_nightly_deployment_on_a_real_prefect_server(tiny_trained, tmp_path):
    """`recs deploy` against a real `prefect server`, the nightly run triggered through the API."""
    data, warehouse, checkpoints = private_copy(tiny_trained, tmp_path)
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
           "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}"}
    bin_dir = Path(sys.executable).parent
    server = subprocess.Popen([str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    served = None
    try:
        _wait_healthy(api, server)
        served = subprocess.Popen(
            [sys.executable, "-m", "recs.cli", "deploy", "--warehouse", str(warehouse), "--checkpoints",
             str(checkpoints), "--data", str(data), "--profile", "tiny"],
            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        customer, item = append_todays_views(data, warehouse)
        assert query(warehouse, "SELECT count(*) FROM events WHERE visitorid = ? AND itemid = ?",
                     [customer, item]) == [(0,)]
        trigger = textwrap.dedent(f"""
            import time
            from prefect import get_client
            from prefect.deployments import run_deployment
            deadline = time.monotonic() + 90
            while True:  # `recs deploy` registers the deployments when it starts serving
                try:
                    with get_client(sync_client=True) as client:
                        client.read_deployment_by_name("nightly/nightly-scoring")
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
            run = run_deployment("nightly/nightly-scoring", timeout=300, poll_interval=2)
            print(run.state.type.value)
        """)
        done = subprocess.run([sys.executable, "-c", trigger], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=420)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == "COMPLETED", done.stdout[-2000:]
    finally:
        for proc in (served, server):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    # The nightly run ingested today's events and published lists that contain them.
    assert query(warehouse, "SELECT count(*) FROM events WHERE visitorid = ? AND itemid = ?",
                 [customer, item]) == [(NEW_VIEWS,)]
    assert item in published_list(warehouse, customer)

