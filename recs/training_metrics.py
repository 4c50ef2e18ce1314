"""Training metrics in the warehouse: `training_metrics(run_id, model, step, metric, value, ...)`.

`WarehouseMetricWriter` is the `model.train.MetricWriter` the training flows hand to `fit`: it
buffers the rows and, on each `flush` (just before each checkpoint save), replaces the run's rows
after the last step it persisted by the buffered ones in one short transaction through
`recs.publish.connect_with_retry` (the warehouse is never held open during training).

The run id is the run's model_version, which a resumed run keeps: its first flush deletes the
rows after `resumed_from` (steps a killed run wrote after its last checkpoint) before inserting,
so a run killed and resumed has each (step, metric) exactly once.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from recs.publish import connect_with_retry
from recs.warehouse import run_sql, table_exists

COLUMNS = ("run_id", "model", "step", "metric", "value", "model_version", "variant", "created_at")


def ensure_training_metrics(con) -> None:
    """Create `training_metrics` if missing."""
    run_sql(con, "marts/training_metrics")


def replace_rows(warehouse_dir: str | Path, run_id: str, model: str, rows: list[dict], *,
                 after_step: int | None = None, model_version: str | None = None, variant: str | None = None) -> int:
    """Write `rows` ({step, metric, value}) of one run in one transaction: first the run's rows
    after `after_step` are deleted (all of them when None), so re-writing a run replaces it."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    con = connect_with_retry(warehouse_dir)
    try:
        ensure_training_metrics(con)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("DELETE FROM training_metrics WHERE run_id = ? AND model = ? AND step > ?",
                        [run_id, model, -1 if after_step is None else int(after_step)])
            if rows:
                con.executemany(
                    f"INSERT INTO training_metrics ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                    [[run_id, model, int(r["step"]), r["metric"], float(r["value"]), model_version or run_id,
                      variant, now] for r in rows])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.close()
    return len(rows)


class WarehouseMetricWriter:
    """Buffers a training run's scalars; each flush persists them (see the module docstring)."""

    def __init__(self, warehouse_dir: str | Path, model: str) -> None:
        self.warehouse_dir, self.model = warehouse_dir, model
        self.run_id: str | None = None
        self.variant: str | None = None
        self.persisted_step = -1  # rows after this step are replaced by the next flush
        self.buffer: list[dict[str, Any]] = []
        self.written = 0
        self.started = False  # the first flush also clears what a killed run wrote after resumed_from

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.run_id = hparams.get("model_version") or self.run_id
        self.variant = hparams.get("variant")
        self.persisted_step = int(hparams.get("resumed_from") or 0)
        self.started = False

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        self.buffer += [{"step": int(step), "metric": str(k), "value": float(v)} for k, v in scalars.items()]

    def flush(self) -> None:
        if self.run_id is None or (not self.buffer and self.started):
            return
        self.started = True
        replace_rows(self.warehouse_dir, self.run_id, self.model, self.buffer, after_step=self.persisted_step,
                     model_version=self.run_id, variant=self.variant)
        self.written += len(self.buffer)
        self.persisted_step = max([self.persisted_step, *(r["step"] for r in self.buffer)])
        self.buffer = []


def read_run(warehouse_dir: str | Path, run_id: str) -> list[dict]:
    """Every row of one training run ({step, metric, value}), by step (read-only)."""
    con = connect_with_retry(warehouse_dir, read_only=True)
    try:
        if not table_exists(con, "training_metrics"):
            return []
        rows = con.execute("SELECT step, metric, value FROM training_metrics WHERE run_id = ? ORDER BY step, metric",
                           [run_id]).fetchall()
    finally:
        con.close()
    return [{"step": s, "metric": m, "value": v} for s, m, v in rows]
