"""Prefect flow `personas`: probe every system with the synthetic personas (recs/personas.py).

Each persona's history is scored through the nightly serving path by ours, the built-in
incumbent and popularity; the preference metrics go to `comparison_metrics` (segment
`persona:<name>`, replaced on a re-run) and a markdown artifact (recs/persona_probe.py).
"""
from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows._common import is_transient, publish_markdown


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=is_transient, cache_policy=NONE)
def probe(warehouse_dir: str, checkpoint_dir: str, seed: int, top_n: int, incumbent: str,
          trending_days: float) -> dict:
    """Build the personas, score them with each system and replace their comparison_metrics rows."""
    from recs.persona_probe import probe_personas

    return probe_personas(warehouse_dir, checkpoint_dir, seed=seed, top_n=top_n, incumbent=incumbent,
                          trending_days=trending_days)


@flow(name="personas")
def personas(warehouse_dir: str = "warehouse", checkpoint_dir: str = "checkpoints", seed: int = 0, top_n: int = 20,
             incumbent: str = "item_knn", trending_days: float = 7.0) -> dict:
    """Persona probes: does each system's list honour the persona's preference better than popularity?

    incumbent: `item_knn` (the built-in incumbent, scored live) or the name / path of an
    incumbent given as a file of lists (not covered: it has no list for a synthetic history)."""
    from recs.persona_probe import format_personas, personas_markdown

    result = probe(str(warehouse_dir), str(checkpoint_dir), seed, top_n, incumbent, trending_days)
    get_run_logger().info("personas: %d personas, %d comparison_metrics rows for run %s", len(result["personas"]),
                          result["n_rows"], result["run_id"])
    publish_markdown(personas_markdown(result), "personas", "Persona probes: preference honoured vs popularity")
    print(format_personas(result))
    return result


if __name__ == "__main__":
    personas()
