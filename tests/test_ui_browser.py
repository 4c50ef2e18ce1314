"""`recs ui` in a real headless Chromium (Debian's package, driven by Playwright through its
executable path; browsers are never downloaded): the page served on a free port shows a
customer's two lists, a rating submitted in the browser is read back from the warehouse, and a
screenshot is saved under tests/output/."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import duckdb

from recs.feedback import read_feedback
from recs.warehouse import connect, db_path
from tests.trained_fixtures import copy_warehouse, tiny_trained, tiny_warehouse  # noqa: F401
from tests.ui_fixtures import SHARED_OUR_RANKS, SHOP, TOP_N, PublishedWarehouse, published_warehouse  # noqa: F401
from tests.warehouse_queries import query

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OUTPUT = Path(__file__).resolve().parent / "output"
REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (`apt-get install chromium`)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(url: str, proc: subprocess.Popen, timeout_s: float = 40.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"recs ui exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"recs ui did not serve {url} within {timeout_s:.0f} s")


@pytest.fixture()
def served(published_warehouse: PublishedWarehouse, tmp_path):
    """`recs ui` on a free port over a private copy of the published tiny warehouse."""
    warehouse = copy_warehouse(published_warehouse.warehouse_dir, tmp_path / "warehouse")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "recs.cli", "ui", "--warehouse", str(warehouse), "--checkpoints",
                             str(published_warehouse.checkpoint_dir), "--port", str(port), "--incumbent", SHOP],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, proc)
        yield url, warehouse
    finally:
        proc.terminate()  # `recs ui` became the Streamlit server (exec): this stops it
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_the_page_in_chromium_shows_both_lists_and_stores_a_rating(served, published_warehouse, tmp_path):
    from playwright.sync_api import sync_playwright

    url, warehouse = served
    customer = published_warehouse.customer_id
    OUTPUT.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1600, "height": 1700})
        try:
            page = browser.new_page()
            page.goto(url)
            page.locator('.rx-row[data-system="ours"]').first.wait_for(timeout=45_000)
            page.get_by_text("Ratings", exact=True).wait_for(timeout=20_000)
            assert page.locator('[data-testid="stMain"] h1').first.inner_text().strip() == f"Customer {customer}"

            ours = [int(i) for i in page.locator('.rx-row[data-system="ours"]').evaluate_all(
                "rows => rows.map(r => r.dataset.item)")]
            theirs = [int(i) for i in page.locator('.rx-row[data-system="incumbent"]').evaluate_all(
                "rows => rows.map(r => r.dataset.item)")]
            assert ours == [r[0] for r in query(warehouse, "SELECT item_id FROM latest_recommendations "
                                                           "WHERE customer_id = ? ORDER BY rank", [customer])]
            assert theirs == [r[0] for r in query(warehouse, "SELECT item_id FROM incumbent_lists WHERE incumbent = ? "
                                                             "AND customer_id = ? ORDER BY rank", [SHOP, customer])]
            assert len(ours) == len(theirs) == TOP_N
            shared = page.locator('.rx-row.shared[data-system="ours"]').evaluate_all(
                "rows => rows.map(r => Number(r.dataset.sharedRank))")
            assert shared == list(range(1, len(SHARED_OUR_RANKS) + 1))  # shop ranks 1, 2, 3

            rate = page.locator('div[class*="st-key-rate-incumbent"]')
            rate.locator('button[aria-label="2 out of 5 stars"]').click()
            rate.get_by_role("button", name="Submit incumbent rating").click()
            page.get_by_text("Saved 2★ for the incumbent list").wait_for(timeout=20_000)
            page.locator("td", has_text="2.0 ★ (1)").first.wait_for(timeout=20_000)
            page.screenshot(path=str(OUTPUT / "ui_side_by_side.png"), full_page=True)
            # The page, open in the browser after its queries and a rating, holds no connection:
            # DuckDB would refuse this writable open while any process had the file open
            # (tests/test_readers.py asserts the refusal beside a held reader).
            duckdb.connect(os.path.realpath(db_path(warehouse))).close()
        finally:
            browser.close()

    [row] = read_feedback(warehouse)
    assert (row["customer"], row["system"], row["kind"], row["rating"], row["incumbent"]) == (
        str(customer), "incumbent", "list", 2, SHOP)
    with connect(warehouse):  # the next writer folds it into the table
        pass
    assert query(warehouse, "SELECT customer, system, kind, item_id, rating, run_id FROM feedback") == [
        (str(customer), "incumbent", "list", None, 2, published_warehouse.run["run_id"])]
