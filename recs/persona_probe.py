"""`recs personas`: score the synthetic personas with each system and say which honours them.

Every system scores a persona's history through the nightly serving path
(`recs.recommend.recommend_for_history` -> `Scorer.score_chunk`):
- `ours`: the strategy tonight's run would publish (the publishing guard, as `recs recommend`);
- `incumbent`: the built-in incumbent, the item-kNN serving strategy (`load_scorer(strategy=
  "item_knn")`). An incumbent given as a file of lists cannot be asked about a history nobody
  has, so personas do not cover it: only ours and popularity are reported then;
- `popularity`: the list of a customer without history (the trending fallback).
For each persona and system: its preference metric (recs.personas.preference_metrics), the
share of the list re-showing the persona's own history, and, for ours and the incumbent,
`beats_popularity` (1 when its preference metric is higher than popularity's). Rows go to
`comparison_metrics` with segment `persona:<name>`; a re-run replaces the persona rows of the
same (run_id, incumbent).
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from recs.personas import build_personas, load_catalogue, preference_metrics
from recs.publish import connect_with_retry
from recs.warehouse import run_sql, table_exists

BUILTIN_INCUMBENTS = ("item_knn",)
SEGMENT_PREFIX = "persona:"
COLUMNS = ("run_id", "incumbent", "segment", "system", "metric", "k", "value")


def latest_run_id(warehouse_dir: str | Path) -> str:
    """The run id of latest_recommendations (what the lists are compared beside), or 'live'
    when nothing is published yet."""
    con = connect_with_retry(warehouse_dir, read_only=True)
    try:
        if not table_exists(con, "recommendation_runs"):
            return "live"
        row = con.execute("SELECT run_id FROM recommendation_runs ORDER BY published_at DESC, run_id DESC LIMIT 1"
                          ).fetchone()
    finally:
        con.close()
    return row[0] if row else "live"


def incumbent_name(incumbent: str) -> str:
    """The comparison_metrics `incumbent` of an --incumbent value: a built-in's name, a file's stem."""
    return incumbent if incumbent in BUILTIN_INCUMBENTS else Path(incumbent).stem


def persona_rows(personas: dict, lists: dict[str, dict[str, list[int]]], prices: dict[int, float],
                 run_id: str, incumbent: str, k: int) -> list[dict[str, Any]]:
    """comparison_metrics rows of every persona's lists ({persona: {system: [item ids]}})."""
    rows = []
    for name, persona in personas.items():
        pref, history = persona.preference, {item for item, _ in persona.history}
        measured = {system: preference_metrics(pref, items, prices) for system, items in lists[name].items()}
        for system, items in lists[name].items():
            values = dict(measured[system])
            values["history_share"] = sum(i in history for i in items) / len(items) if items else None
            if system != "popularity":
                mine, base = measured[system][pref.metric], measured["popularity"][pref.metric]
                values["beats_popularity"] = (None if mine is None or base is None else float(mine > base))
            rows += [{"run_id": run_id, "incumbent": incumbent, "segment": SEGMENT_PREFIX + name, "system": system,
                      "metric": metric, "k": k, "value": value} for metric, value in values.items()]
    return rows


def write_persona_metrics(warehouse_dir: str | Path, rows: list[dict[str, Any]], run_id: str, incumbent: str) -> int:
    """Replace the persona rows of (run_id, incumbent) in comparison_metrics by `rows`, in one
    transaction (rows of `recs compare`, segments not LIKE 'persona:%', are left alone)."""
    with connect_with_retry(warehouse_dir) as con:
        run_sql(con, "marts/comparison_metrics")
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("DELETE FROM comparison_metrics WHERE run_id = ? AND incumbent = ? AND segment LIKE ?",
                        [run_id, incumbent, SEGMENT_PREFIX + "%"])
            if rows:
                con.executemany(f"INSERT INTO comparison_metrics ({', '.join(COLUMNS)}) "
                                f"VALUES ({', '.join('?' * len(COLUMNS))})",
                                [[r[c] for c in COLUMNS] for r in rows])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return len(rows)


def probe_personas(warehouse_dir: str | Path = "warehouse", checkpoint_dir: str | Path = "checkpoints", *,
                   seed: int = 0, top_n: int = 20, incumbent: str = "item_knn",
                   trending_days: float = 7.0) -> dict[str, Any]:
    """Build the personas, score them with every system, write comparison_metrics; returns
    {run_id, incumbent, incumbent_covered, strategy, top_n, personas: {name: {description,
    preference, metric, history, lists}}, rows, n_rows, computed_at}."""
    from recs.guard import decide, validation_figures
    from recs.recommend import recommend_for_history
    from recs.scoring import load_scorer

    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    catalogue = load_catalogue(warehouse_dir, trending_days)
    personas = build_personas(catalogue, seed)
    if not personas:
        raise ValueError(f"{warehouse_dir}: the catalogue has too few items to build any persona")
    strategy = decide(validation_figures(warehouse_dir)).strategy
    scorers = {"ours": load_scorer(warehouse_dir, checkpoint_dir, top_n=top_n, strategy=strategy,
                                   trending_days=trending_days)}
    covered = incumbent in BUILTIN_INCUMBENTS
    if covered:
        scorers["incumbent"] = load_scorer(warehouse_dir, checkpoint_dir, top_n=top_n, strategy=incumbent,
                                           trending_days=trending_days)
    popularity = [r["item_id"] for r in recommend_for_history(scorers["ours"], [], top_n)]
    lists = {name: {**{system: [r["item_id"] for r in recommend_for_history(scorer, p.history, top_n)]
                       for system, scorer in scorers.items()}, "popularity": popularity}
             for name, p in personas.items()}
    run_id, name = latest_run_id(warehouse_dir), incumbent_name(incumbent)
    rows = persona_rows(personas, lists, catalogue.prices(), run_id, name, top_n)
    n_rows = write_persona_metrics(warehouse_dir, rows, run_id, name)
    return {"run_id": run_id, "incumbent": name, "incumbent_covered": covered, "strategy": strategy, "top_n": top_n,
            "seed": seed, "personas": {n: {"description": p.description, "preference": p.preference.description,
                                           "metric": p.preference.metric, "history": p.history, "lists": lists[n]}
                                       for n, p in personas.items()},
            "rows": rows, "n_rows": n_rows, "computed_at": datetime.now(timezone.utc).replace(tzinfo=None)}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def persona_table(result: dict[str, Any]) -> list[list[str]]:
    """Header + one line per (persona, metric): the metric for ours / incumbent / popularity and
    whether ours and the incumbent honour the preference better than popularity."""
    value = {(r["segment"], r["system"], r["metric"]): r["value"] for r in result["rows"]}
    systems = ["ours", "incumbent", "popularity"] if result["incumbent_covered"] else ["ours", "popularity"]
    inc = result["incumbent"]
    header = ["persona", "metric", "ours", *([inc] if result["incumbent_covered"] else []), "popularity",
              "ours > pop", *([f"{inc} > pop"] if result["incumbent_covered"] else [])]
    lines = [header]
    for name, persona in result["personas"].items():
        segment = SEGMENT_PREFIX + name
        metrics = [persona["metric"], *(["price_distance"] if persona["metric"] == "share_in_band" else []),
                   "history_share"]
        for metric in metrics:
            beats = []
            if metric == persona["metric"]:
                for s in systems[:-1]:
                    b = value.get((segment, s, "beats_popularity"))
                    beats.append("-" if b is None else ("yes" if b else "no"))
            else:
                beats = [""] * (len(systems) - 1)
            lines.append([name if metric == persona["metric"] else "", metric,
                          *(_fmt(value.get((segment, s, metric))) for s in systems), *beats])
    return lines


def notes(result: dict[str, Any]) -> list[str]:
    out = [f"run {result['run_id']}, top {result['top_n']}, seed {result['seed']}; ours = strategy "
           f"`{result['strategy']}` (the publishing guard's choice)"]
    if not result["incumbent_covered"]:
        out.append(f"incumbent `{result['incumbent']}` is a file of lists: it has no list for a synthetic history, "
                   "so personas do not cover it (only ours and popularity are compared)")
    out.append("price_distance: lower is better; history_share: share of the list re-showing the persona's own items")
    return out


def format_personas(result: dict[str, Any]) -> str:
    """The plain-text table `recs personas` prints."""
    lines = persona_table(result)
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
    text = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
            for row in lines]
    descriptions = [f"  {n}: {p['description']}" for n, p in result["personas"].items()]
    return "\n".join([f"Personas ({len(result['personas'])}):", *descriptions, "", *text, "",
                      *notes(result)])


def personas_markdown(result: dict[str, Any]) -> str:
    """The Prefect artifact: the table, the personas and their histories."""
    lines = persona_table(result)
    md = [f"# Persona probes (run `{result['run_id']}`, incumbent `{result['incumbent']}`)", "",
          "| " + " | ".join(lines[0]) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(lines[0]))) + "|",
          *("| " + " | ".join(row) + " |" for row in lines[1:]), "", *(f"- {n}" for n in notes(result)), ""]
    for name, p in result["personas"].items():
        md.append(f"- **{name}**: {p['description']}; history: "
                  + ", ".join(f"{item} ({action})" for item, action in p["history"]))
    md += ["", "```sql", "SELECT * FROM comparison_metrics WHERE segment LIKE 'persona:%' ORDER BY ALL;", "```"]
    return "\n".join(md) + "\n"
