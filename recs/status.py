"""`recs status`: what the warehouse and the checkpoints hold, and what is stale.

`collect_status` reads the warehouse through ONE read-only connection (closed before it
returns) and the checkpoints' JSON meta (no JAX, no Orbax): the last ingest (rows, quarantine
counts by reason), the last sequence build (sequence_meta), every model (steps, validation
metrics, age, model_version), the last evaluation and the last scoring run (customers, fallback
share, coverage = distinct items recommended / items in the catalogue, strategy, guard warning).
`stale` lists what is out of date: a model trained on other sequence tables than the current
ones or older than the last ingest, sequence tables older than the last ingest, no evaluation or
no scoring since the last training. `format_status` is the text `recs status` prints.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from model.meta import checkpoint_saved_at, read_checkpoint_meta
from recs.publish import connect_with_retry
from recs.sequences import META_FILENAME, sequences_fingerprint
from recs.warehouse import db_path, sequences_dir, table_exists

MODEL_ORDER = ("retrieval", "ranking", "retrieval_serving")


def _utc(value: datetime | None) -> datetime | None:
    """Warehouse timestamps are naive UTC; make every time aware so they compare."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _one(con, sql: str, params: list | None = None) -> dict | None:
    cursor = con.execute(sql, params or [])
    row = cursor.fetchone()
    return dict(zip([d[0] for d in cursor.description], row)) if row else None


def _warehouse_part(warehouse_dir: Path) -> dict[str, Any]:
    """Everything `recs status` reads from DuckDB (one read-only connection, closed on return)."""
    out: dict[str, Any] = {"ingest": None, "quarantine_by_reason": {}, "build": None, "evaluation": None,
                           "scoring": None}
    con = connect_with_retry(warehouse_dir, read_only=True)
    try:
        if table_exists(con, "events"):
            ingest = (_one(con, "SELECT run_id, started_at, rows_read, rows_loaded, rows_quarantined FROM ingest_runs "
                                "ORDER BY started_at DESC LIMIT 1") if table_exists(con, "ingest_runs") else None)
            if ingest is None:  # loaded outside the ingest flow (e.g. recs.ingest.ingest_dir): counts only
                [(loaded,)] = con.execute("SELECT count(*) FROM events").fetchall()
                quarantined = (con.execute("SELECT count(*) FROM quarantine_events").fetchone()[0]
                               if table_exists(con, "quarantine_events") else 0)
                ingest = {"run_id": None, "started_at": None, "rows_read": loaded + quarantined,
                          "rows_loaded": loaded, "rows_quarantined": quarantined}
            ingest["started_at"] = _utc(ingest["started_at"])
            out["ingest"] = ingest
        if table_exists(con, "quarantine_events"):
            out["quarantine_by_reason"] = dict(con.execute(
                "SELECT reason, count(*) FROM quarantine_events GROUP BY reason ORDER BY 2 DESC, 1").fetchall())
        if table_exists(con, "sequence_meta"):
            out["build"] = _one(con, "SELECT * FROM sequence_meta")
        if table_exists(con, "eval_metrics"):
            columns = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                                 "WHERE table_name = 'eval_metrics'").fetchall()}
            version = "any_value(model_version)" if "model_version" in columns else "NULL"
            out["evaluation"] = _one(con, f"SELECT run_id, max(created_at) AS created_at, {version} AS model_version, "
                                          "list(DISTINCT split ORDER BY split) AS splits FROM eval_metrics "
                                          "GROUP BY run_id ORDER BY created_at DESC, run_id DESC LIMIT 1")
            if out["evaluation"]:
                out["evaluation"]["created_at"] = _utc(out["evaluation"]["created_at"])
        if table_exists(con, "recommendation_runs"):
            columns = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                                 "WHERE table_name = 'recommendation_runs'").fetchall()}
            extra = ", ".join(c if c in columns else f"NULL AS {c}" for c in ("strategy", "guard_warning"))
            run = _one(con, f"SELECT run_id, published_at, generated_at, model_version, n_customers, n_rows, "
                            f"share_fallback, top_n, {extra} FROM recommendation_runs "
                            "ORDER BY published_at DESC, run_id DESC LIMIT 1")
            if run is not None:
                run["distinct_items"] = con.execute("SELECT count(DISTINCT item_id) FROM recommendations "
                                                    "WHERE run_id = ?", [run["run_id"]]).fetchone()[0]
                run["catalogue"] = (con.execute("SELECT count(*) FROM items").fetchone()[0]
                                    if table_exists(con, "items") else None)
                run["coverage"] = run["distinct_items"] / run["catalogue"] if run["catalogue"] else None
                run["scored_at"] = _utc(run["generated_at"] or run["published_at"])
            out["scoring"] = run
    finally:
        con.close()
    return out


def _models(checkpoint_dir: Path, now: datetime) -> list[dict]:
    """One entry per checkpoint directory holding a `latest/` or `best/` checkpoint."""
    if not checkpoint_dir.is_dir():
        return []
    variants = sorted((p.name for p in checkpoint_dir.iterdir() if (p / "latest").is_dir() or (p / "best").is_dir()),
                      key=lambda n: (MODEL_ORDER.index(n) if n in MODEL_ORDER else len(MODEL_ORDER), n))
    models = []
    for variant in variants:
        ckpt = checkpoint_dir / variant
        meta = read_checkpoint_meta(ckpt) or read_checkpoint_meta(ckpt, "best") or {}
        saved = checkpoint_saved_at(ckpt, meta)
        best = meta.get("best") or {}
        models.append({
            "variant": variant, "model": meta.get("model", variant), "model_version": meta.get("model_version"),
            "steps": meta.get("step"), "stopped": meta.get("stopped"), "saved_at": saved,
            "age_s": (now - saved).total_seconds() if saved else None,
            "best_step": best.get("step"),
            "validation": {k: v for k, v in best.items() if k.startswith("val_")},
            "data_fingerprint": meta.get("data_fingerprint"),
        })
    return models


def collect_status(warehouse_dir: str | Path = "warehouse", checkpoint_dir: str | Path = "checkpoints",
                   now: datetime | None = None) -> dict[str, Any]:
    """The state of a warehouse and its checkpoints (see the module docstring)."""
    warehouse_dir, checkpoint_dir = Path(warehouse_dir), Path(checkpoint_dir)
    now = now or datetime.now(timezone.utc)
    status: dict[str, Any] = {"warehouse": str(db_path(warehouse_dir)), "checkpoints": str(checkpoint_dir),
                              "now": now, "warehouse_exists": db_path(warehouse_dir).exists()}
    status.update(_warehouse_part(warehouse_dir) if status["warehouse_exists"] else
                  {"ingest": None, "quarantine_by_reason": {}, "build": None, "evaluation": None, "scoring": None})
    meta_file = sequences_dir(warehouse_dir) / META_FILENAME
    status["sequences_built_at"] = (datetime.fromtimestamp(meta_file.stat().st_mtime, timezone.utc)
                                    if meta_file.exists() else None)
    status["data_fingerprint"] = sequences_fingerprint(warehouse_dir) if meta_file.exists() else None
    status["models"] = _models(checkpoint_dir, now)
    status["stale"] = stale_parts(status)
    return status


def stale_parts(status: dict[str, Any]) -> list[str]:
    """What is out of date, one sentence each (empty: nothing)."""
    stale = []
    ingest = status.get("ingest") or {}
    ingested_at = ingest.get("started_at")
    built_at = status.get("sequences_built_at")
    if ingested_at and built_at and built_at < ingested_at:
        stale.append(f"sequence tables (built {_when(built_at)}) are older than the last ingest "
                     f"({_when(ingested_at)}): run `recs build`")
    elif ingest and built_at is None:
        stale.append("no sequence tables: run `recs build`")
    for m in status["models"]:
        if status.get("data_fingerprint") and m["data_fingerprint"] != status["data_fingerprint"]:
            stale.append(f"model {m['variant']} was trained on other sequence tables than the current build "
                         f"(data {m['data_fingerprint']} vs {status['data_fingerprint']}): retrain it")
        elif ingested_at and m["saved_at"] and m["saved_at"] < ingested_at:
            stale.append(f"model {m['variant']} (saved {_when(m['saved_at'])}) is older than the last ingest "
                         f"({_when(ingested_at)}): rebuild and retrain")
    trained = [m["saved_at"] for m in status["models"] if m["saved_at"]]
    last_training = max(trained) if trained else None
    # The evaluation measures the models selected on validation; the serving refit that `recs
    # run` trains after it (`*_serving`) has no validation to measure.
    selected = [m["saved_at"] for m in status["models"] if m["saved_at"] and not m["variant"].endswith("_serving")]
    last_selected = max(selected) if selected else None
    evaluation, scoring = status.get("evaluation"), status.get("scoring")
    if last_selected and (evaluation is None or evaluation["created_at"] < last_selected):
        stale.append(f"no evaluation since the last training ({_when(last_selected)}): run `recs evaluate`")
    if last_training and (scoring is None or scoring["scored_at"] < last_training):
        stale.append(f"no scoring since the last training ({_when(last_training)}): run `recs score`")
    return stale


def _when(t: datetime | None) -> str:
    return "never" if t is None else t.strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "age unknown"
    seconds = max(seconds, 0)
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit} ago"
    return f"{seconds:.0f} s ago"


def format_status(status: dict[str, Any]) -> str:
    """The text block `recs status` prints: one part per heading, then what is stale."""
    now = status["now"]
    lines = [f"recs status at {_when(now)}", f"  warehouse:   {status['warehouse']}"
             + ("" if status["warehouse_exists"] else "  (missing: run `recs ingest`)"),
             f"  checkpoints: {status['checkpoints']}", ""]
    ingest = status["ingest"]
    if ingest:
        when = (f"{_when(ingest['started_at'])} ({_age((now - ingest['started_at']).total_seconds())})"
                if ingest["started_at"] else "time unknown (loaded outside the ingest flow)")
        share = ingest["rows_quarantined"] / ingest["rows_read"] if ingest["rows_read"] else 0.0
        lines.append(f"Last ingest: {when}: {ingest['rows_read']:,} rows read, {ingest['rows_loaded']:,} loaded, "
                     f"{ingest['rows_quarantined']:,} quarantined ({share:.2%})")
        reasons = ", ".join(f"{r} {n:,}" for r, n in status["quarantine_by_reason"].items())
        lines.append(f"  quarantined by reason: {reasons or 'none'}")
    else:
        lines.append("Last ingest: none (run `recs ingest`)")
    build = status["build"]
    if build:
        built = status["sequences_built_at"]
        lines.append(f"Last build: {_when(built)}" + (f" ({_age((now - built).total_seconds())})" if built else "")
                     + f": {build['n_train']:,} train / {build['n_val']:,} val / {build['n_test']:,} test examples, "
                     f"{build['n_customers']:,} customers ({build['n_in_training']:,} in training), "
                     f"{build['n_items']:,} items")
        lines.append(f"  min_user_events={build['min_user_events']}, min_item_events={build['min_item_events']}, "
                     f"history_len={build['history_len']}, max_candidates={build['max_candidates']}, "
                     f"collapse_repeats={build['collapse_repeats']}, data {status['data_fingerprint']}")
    else:
        lines.append("Last build: none (run `recs build`)")
    lines.append("Models:" if status["models"] else "Models: none (run `recs train-retrieval`, `recs train-ranking`)")
    for m in status["models"]:
        lines.append(f"  {m['variant']}: {m['model_version'] or '(no model_version: trained before versions)'}, "
                     f"{m['steps']} steps" + (f" (stopped: {m['stopped']})" if m["stopped"] not in (None, "steps") else "")
                     + f", saved {_when(m['saved_at'])} ({_age(m['age_s'])})")
        if m["validation"]:
            lines.append(f"    best step {m['best_step']}: "
                         + ", ".join(f"{k}={v:.4f}" for k, v in m["validation"].items()))
        else:
            lines.append("    no validation (a refit on all data trains for the selected steps)")
    evaluation = status["evaluation"]
    if evaluation:
        lines.append(f"Last evaluation: run {evaluation['run_id']} at {_when(evaluation['created_at'])} on "
                     f"{', '.join(evaluation['splits'])}, checkpoints {evaluation['model_version'] or 'unknown'}")
    else:
        lines.append("Last evaluation: none (run `recs evaluate`)")
    scoring = status["scoring"]
    if scoring:
        coverage = (f"{scoring['distinct_items']:,} of {scoring['catalogue']:,} items ({scoring['coverage']:.1%})"
                    if scoring["coverage"] is not None else f"{scoring['distinct_items']:,} items")
        lines.append(f"Last scoring run: {scoring['run_id']} at {_when(scoring['scored_at'])}: "
                     f"{scoring['n_customers']:,} customers, top {scoring['top_n']}, "
                     f"{scoring['share_fallback']:.1%} on the popularity fallback, coverage {coverage}")
        lines.append(f"  strategy {scoring['strategy'] or 'model'}, model {scoring['model_version']}; guard warning: "
                     f"{scoring['guard_warning'] or 'none'}")
    else:
        lines.append("Last scoring run: none (run `recs score`)")
    lines.append("")
    if status["stale"]:
        lines.append("Stale:")
        lines += [f"  - {s}" for s in status["stale"]]
    else:
        lines.append("Stale: nothing")
    return "\n".join(lines)
