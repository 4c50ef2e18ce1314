"""Small helpers shared by the flows (retry conditions, artifacts)."""
from __future__ import annotations


def is_transient(task, task_run, state) -> bool:
    """Retry I/O hiccups only: bad input, bad parameters and NaN losses fail the same way every time."""
    try:
        state.result()
    except (ValueError, FileNotFoundError, FloatingPointError, KeyError):
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return True


def publish_markdown(markdown: str, key: str, description: str) -> None:
    """A Prefect markdown artifact when running inside a flow; silently nothing otherwise."""
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(markdown=markdown, key=key, description=description)
    except Exception:  # noqa: BLE001 - outside a flow run there is nowhere to attach it
        pass


def training_writer(warehouse_dir: str, model: str):
    """The metric writer a training task gives `fit`: rows into the warehouse table
    `training_metrics` (recs/training_metrics.py) and one line per step in the Prefect run log."""
    from prefect import get_run_logger

    from model.train import LoggingWriter, MultiWriter
    from recs.training_metrics import WarehouseMetricWriter

    return MultiWriter([WarehouseMetricWriter(warehouse_dir, model), LoggingWriter(get_run_logger())])
