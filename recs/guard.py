"""The publishing guard: never ship lists that lose to a baseline on validation without saying so.

Reads the latest evaluation run's validation figures (eval_metrics, section `next_event`, k=20:
the same next-event protocol and serving path as nightly scoring) and decides which strategy
the scoring run publishes. The model "loses" when a baseline has the higher (Recall@20, MRR@20)
pair, Recall first. It is then replaced by the item-kNN strategy (the baseline serving can
publish) when that one is better on validation, unless `keep_model` is set; either way the run
records a warning.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

BASELINES = ("popularity", "s_pop", "item_knn", "session_knn")
PUBLISHABLE_BASELINE = "item_knn"  # model.serving.STRATEGIES' alternative to the model


@dataclass(frozen=True)
class GuardDecision:
    """What a scoring run publishes and the validation figures it is recorded with."""

    strategy: str  # model | item_knn
    val_recall20: float | None
    val_mrr20: float | None
    baseline: str | None  # the best baseline on validation
    baseline_val_recall20: float | None
    baseline_val_mrr20: float | None
    guard_warning: str | None

    def as_row(self) -> dict:
        return asdict(self)


def validation_figures(warehouse_dir: str | Path) -> dict[str, tuple[float, float]]:
    """{model: (Recall@20, MRR@20)} of the newest evaluation run on `val` ({} when none).

    Opens the warehouse read-only and closes it before returning."""
    from recs.publish import connect_with_retry
    from recs.warehouse import table_exists

    con = connect_with_retry(warehouse_dir, read_only=True)
    try:
        if not table_exists(con, "eval_metrics"):
            return {}
        rows = con.execute(
            "WITH latest AS (SELECT run_id FROM eval_metrics WHERE split = 'val' AND section = 'next_event' "
            "                ORDER BY created_at DESC, run_id DESC LIMIT 1) "
            "SELECT model, metric, value FROM eval_metrics JOIN latest USING (run_id) "
            "WHERE split = 'val' AND section = 'next_event' AND k = 20 AND metric IN ('recall', 'mrr')").fetchall()
    finally:
        con.close()
    found: dict[str, dict[str, float]] = {}
    for model, metric, value in rows:
        found.setdefault(model, {})[metric] = float(value)
    return {m: (v["recall"], v["mrr"]) for m, v in found.items() if "recall" in v and "mrr" in v}


def decide(figures: dict[str, tuple[float, float]], keep_model: bool = False) -> GuardDecision:
    """The strategy to publish given validation figures ({model: (Recall@20, MRR@20)})."""
    shipped = figures.get("shipped")
    baselines = {b: figures[b] for b in BASELINES if b in figures and all(map(math.isfinite, figures[b]))}
    if shipped is None or not baselines:
        return GuardDecision("model", shipped and shipped[0], shipped and shipped[1], None, None, None,
                             "no validation evaluation of the model and baselines in eval_metrics: published "
                             "unchecked (run `recs evaluate` first)")
    best = max(baselines, key=lambda b: baselines[b])
    b_recall, b_mrr = baselines[best]
    strategy, published = "model", shipped
    warning = None
    if baselines[best] > shipped:
        alternative = baselines.get(PUBLISHABLE_BASELINE)
        trail = (f"the model trails {best} on validation (Recall@20 {shipped[0]:.4f} vs {b_recall:.4f}, "
                 f"MRR@20 {shipped[1]:.4f} vs {b_mrr:.4f})")
        if keep_model:
            warning = f"{trail}; published the model anyway (--keep-model)"
        elif alternative is not None and alternative > shipped:
            strategy, published = PUBLISHABLE_BASELINE, alternative
            warning = f"{trail}; published the {PUBLISHABLE_BASELINE} strategy instead (--keep-model keeps the model)"
        else:
            warning = f"{trail}; no publishable strategy does better, published the model"
        if strategy != "model" and baselines[best] > published:
            warning += f"; {best} is still better on validation"
    return GuardDecision(strategy, published[0], published[1], best, b_recall, b_mrr, warning)
