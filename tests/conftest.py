"""Shared fixtures: one Prefect test harness per session (a temporary server costs ~12 s)."""
from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def prefect_logging_on_the_session_stream():
    """Prefect's console handler keeps the stderr it first sees, and importing a flow module
    (which `recs` does to read a flow's defaults, also for input it then rejects) sets Prefect's
    logging up: do it now, on the session's stream, not inside a test whose capsys stream is
    closed when it ends (later records would fail with "--- Logging error ---")."""
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()
    yield


@pytest.fixture(scope="session")
def prefect_harness():
    """Run flows against one local, temporary Prefect API for the whole session."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.testing.utilities import prefect_test_harness

    # RECS_TEST_PREFECT_STARTUP_S: more time for the test server to start on a crowded machine.
    with prefect_test_harness(server_startup_timeout=int(os.environ.get("RECS_TEST_PREFECT_STARTUP_S", "60"))):
        # Prefect's console handler keeps the stderr it first sees: set logging up now, on the
        # session's stream, not inside a test whose capsys stream is closed when it ends.
        ensure_logging_setup()
        yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the repo (real Retail Rocket slices), when present."""
    return SHARED_DATA
