"""`recs ui`: start the side-by-side page (a Streamlit server) and block until it is stopped."""
from __future__ import annotations

import os
import sys
from pathlib import Path

APP = Path(__file__).resolve().with_name("app.py")


def streamlit_command(warehouse_dir: str | Path, checkpoint_dir: str | Path, port: int, address: str,
                      incumbent: str | None) -> list[str]:
    """The `streamlit run` command line of the page with these settings."""
    page_args = ["--warehouse", str(Path(warehouse_dir).resolve()), "--checkpoints", str(Path(checkpoint_dir).resolve())]
    if incumbent:
        page_args += ["--incumbent", incumbent]
    return [sys.executable, "-m", "streamlit", "run", str(APP),
            "--server.port", str(port), "--server.address", address, "--server.headless", "true",
            # No file watcher (a deployed page does not reload itself) and no usage statistics.
            "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "viewer",  # no Deploy / Rerun menu for merchandisers
            "--", *page_args]


def serve_ui(warehouse_dir: str | Path = "warehouse", checkpoint_dir: str | Path = "checkpoints", port: int = 8501,
             address: str = "127.0.0.1", incumbent: str | None = None) -> None:
    """Serve the page on http://ADDRESS:PORT until killed (the process becomes the Streamlit server).

    incumbent: the incumbent shown first (default: the one `recs compare` loaded last); the page
    lists every incumbent in `incumbent_lists` plus the built-ins it can compute for a persona or
    a typed history (item_knn, popularity)."""
    from recs.ui.data import incumbents, snapshot_key
    from recs.ui.lists import LIVE_INCUMBENTS

    if not 1 <= int(port) <= 65535:
        raise ValueError(f"--port must be between 1 and 65535, got {port}")
    snapshot_key(warehouse_dir)  # FileNotFoundError naming `recs run` when there is no warehouse
    if incumbent:
        known = [i["incumbent"] for i in incumbents(warehouse_dir)]
        if incumbent not in known and incumbent not in LIVE_INCUMBENTS:
            raise ValueError(f"no incumbent {incumbent!r} in the warehouse (loaded: {', '.join(known) or 'none'}); "
                             f"load it with `recs compare --incumbent PATH --name {incumbent}`")
    command = streamlit_command(warehouse_dir, checkpoint_dir, int(port), address, incumbent)
    print(f"recs ui: serving http://{address}:{port} (Ctrl-C stops it)", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)  # signals reach the server itself; nothing is left running
