"""Checkpoint identity without JAX: the JSON meta stored beside each checkpoint and the
training run's unique `model_version` (what `recs status`, scoring and evaluation report).

Meta lives at `<checkpoint>/{latest,best}/<step>/meta/metadata` (Orbax's JsonSave); it holds the
profile, data_fingerprint, settings, history, best, step, saved_at (UTC) and model_version.
"""
from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path


def read_checkpoint_meta(ckpt: str | Path, which: str = "latest") -> dict | None:
    """The JSON meta of the newest `<ckpt>/<which>/<step>/` checkpoint, or None when there is none."""
    root = Path(ckpt) / which
    if not root.is_dir():
        return None
    steps = sorted((int(p.parent.parent.name), p) for p in root.glob("*/meta/metadata")
                   if p.parent.parent.name.isdigit())
    return json.loads(steps[-1][1].read_text()) if steps else None


def checkpoint_saved_at(ckpt: str | Path, meta: dict | None = None) -> datetime | None:
    """When the newest `latest/` checkpoint was saved (UTC): meta's saved_at, else the file's mtime."""
    meta = read_checkpoint_meta(ckpt) if meta is None else meta
    if meta and meta.get("saved_at"):
        return datetime.strptime(meta["saved_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    files = list((Path(ckpt) / "latest").glob("*/meta/metadata"))
    if not files:
        return None
    return datetime.fromtimestamp(max(f.stat().st_mtime for f in files), timezone.utc)


def new_model_version(variant: str, fingerprint: str, settings: dict, profile: dict,
                      now: datetime | None = None) -> str:
    """A training run's unique name, e.g. `retrieval-20261201T221012Z-1a2b3c4d`: the checkpoint
    variant, the start time (UTC) and 8 hex of a hash of the data fingerprint, the settings, the
    profile and the start time to the nanosecond (two runs started in the same second differ)."""
    now = now or datetime.now(timezone.utc)
    identity = json.dumps({"data": fingerprint, "settings": settings, "profile": profile,
                           "time": now.isoformat(), "ns": time.time_ns()}, sort_keys=True, default=str)
    return f"{variant}-{now.strftime('%Y%m%dT%H%M%SZ')}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"


def checkpoint_version(meta: dict, ckpt: str | Path, model: str) -> str:
    """The model_version a checkpoint's meta names; for a checkpoint from before model versions,
    the older `<model>:<variant>@<step>` form."""
    return meta.get("model_version") or f"{model}:{Path(ckpt).name}@{meta.get('step')}"


def combined_version(retrieval: str, ranking: str) -> str:
    """The model_version of what serving / evaluation used: `<retrieval version>+<ranking version>`."""
    return f"{retrieval}+{ranking}"
