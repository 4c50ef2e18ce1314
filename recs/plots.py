"""PNG plots of training curves and of the evaluation (matplotlib, Agg: no display needed).

`training_curves(rows, path)` draws a run's `training_metrics` rows (train loss, validation
metrics, learning rate, throughput against the step); `evaluation_chart(rows, path)` draws the
next-event Recall@20 and MRR@20 of every model and baseline on each split from `eval_metrics`
rows. Both write atomically (temporary name, then rename) and return the path.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    return path


def _series(rows: Iterable[dict]) -> dict[str, tuple[list[int], list[float]]]:
    by_metric: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        value = r["value"]
        if value is not None and math.isfinite(float(value)):
            by_metric[r["metric"]].append((int(r["step"]), float(value)))
    return {m: ([s for s, _ in sorted(v)], [x for _, x in sorted(v)]) for m, v in by_metric.items()}


def training_curves(rows: Iterable[dict], path: str | Path, title: str = "") -> Path:
    """Four panels: train loss, validation metrics, learning rate, throughput (examples/s or steps/s)."""
    series = _series(rows)
    fig = _figure(11, 7)
    axes = fig.subplots(2, 2, sharex=True)
    fig.suptitle(title or "training")
    panels = [
        (axes[0][0], "training loss", [m for m in series if m == "train_loss"]),
        (axes[0][1], "validation", sorted(m for m in series if m.startswith("val_"))),
        (axes[1][0], "learning rate", [m for m in series if m == "learning_rate"]),
        (axes[1][1], "throughput", ["examples_per_s"] if "examples_per_s" in series else
         [m for m in series if m == "steps_per_s"]),
    ]
    for ax, name, metrics in panels:
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
        for m in metrics:
            steps, values = series[m]
            ax.plot(steps, values, marker="o" if m.startswith("val_") else None, markersize=3, label=m)
        if not metrics:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        elif len(metrics) > 1:
            ax.legend(fontsize="small")
        else:
            ax.set_ylabel(metrics[0])
    for ax in axes[1]:
        ax.set_xlabel("step")
    return _save(fig, path)


def evaluation_chart(rows: Iterable[dict], path: str | Path, section: str = "next_event",
                     metrics: tuple[tuple[str, int], ...] = (("recall", 20), ("mrr", 20)), title: str = "") -> Path:
    """Grouped bars: one panel per (metric, k), models on the x axis, one bar per split."""
    value: dict[tuple[str, int, str, str], float] = {}
    models: list[str] = []
    splits: list[str] = []
    for r in rows:
        if r.get("section") != section:
            continue
        value[(r["metric"], r["k"], r["model"], r["split"])] = float(r["value"])
        models += [r["model"]] if r["model"] not in models else []
        splits += [r["split"]] if r["split"] not in splits else []
    fig = _figure(max(6.0, 1.2 * len(models) * len(metrics)), 4.5)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    fig.suptitle(title or f"{section}: models beside baselines")
    width = 0.8 / max(len(splits), 1)
    for ax, (metric, k) in zip(axes, metrics):
        for i, split in enumerate(splits):
            heights = [value.get((metric, k, m, split), float("nan")) for m in models]
            xs = [j + (i - (len(splits) - 1) / 2) * width for j in range(len(models))]
            ax.bar(xs, [0.0 if math.isnan(h) else h for h in heights], width, label=split)
        ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
        ax.set_title(f"{metric}@{k}")
        ax.grid(True, axis="y", alpha=0.3)
        if splits:
            ax.legend(fontsize="small")
    return _save(fig, path)


def is_png(path: str | Path) -> bool:
    """True when the file starts with the PNG signature."""
    path = Path(path)
    return path.is_file() and path.read_bytes()[:8] == PNG_SIGNATURE
