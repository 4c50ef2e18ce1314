"""`recs recommend`: one customer's recent history and their recommendation list.

The list comes from the newest published scoring run (`latest_recommendations`). When there is
no published run, or the customer is not in it (e.g. the run predates their first event), the
list is computed live for this one customer with the same code nightly scoring uses
(recs.scoring.load_scorer + Scorer.score_chunk): same checkpoints, rules and popularity fallback.
The warehouse is only ever opened read-only, so this can run beside a scoring run.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from recs.publish import connect_with_retry

HISTORY_EVENTS = 20  # most recent events shown


def customer_events(warehouse_dir: str | Path, customer_id: int, limit: int = HISTORY_EVENTS) -> dict[str, Any]:
    """Event count, first/last event time and the last `limit` events (newest first) of a customer."""
    con = connect_with_retry(warehouse_dir, read_only=True)
    try:
        n_events, first, last = con.execute(
            "SELECT count(*), min(event_time), max(event_time) FROM events WHERE visitorid = ?",
            [customer_id]).fetchone()
        rows = con.execute(
            "SELECT event_time, itemid, event, categoryid, root_categoryid FROM events WHERE visitorid = ? "
            "ORDER BY timestamp DESC, itemid DESC LIMIT ?", [customer_id, limit]).fetchall()
    finally:
        con.close()
    history = [{"time": t, "itemid": item, "event": event, "categoryid": cat, "root": root}
               for t, item, event, cat, root in rows]
    return {"n_events": int(n_events), "first_event_time": first, "last_event_time": last, "history": history}


def published_recommendations(warehouse_dir: str | Path, customer_id: int, top_n: int) -> list[dict]:
    """The customer's list in the newest published run (empty when there is none or they are not in it)."""
    con = connect_with_retry(warehouse_dir, read_only=True)
    try:
        published = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'latest_recommendations'").fetchone()[0]
        if not published:
            return []
        cursor = con.execute(
            "SELECT r.rank, r.item_id, r.score, r.p_transaction, r.p_addtocart, r.p_view, r.source, "
            "i.categoryid, r.run_id, r.model_version, r.generated_at "
            "FROM latest_recommendations AS r LEFT JOIN items AS i ON i.itemid = r.item_id "
            "WHERE r.customer_id = ? AND r.rank <= ? ORDER BY r.rank", [customer_id, top_n])
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]
    finally:
        con.close()


def item_categories(warehouse_dir: str | Path, item_ids: list[int]) -> dict[int, int]:
    """categoryid (latest state, table `items`) of each item id."""
    if not item_ids:
        return {}
    con = connect_with_retry(warehouse_dir, read_only=True)
    try:
        return dict(con.execute("SELECT itemid, categoryid FROM items WHERE list_contains(?, itemid)",
                                [item_ids]).fetchall())
    finally:
        con.close()


def serving_chunk(tables, customer_id: int):
    """A one-row `ServingChunk` of this customer from `sequences/serving`.

    A customer missing from the last build (no row) gets an empty history: the popularity
    fallback then fills their list, as nightly scoring would.
    """
    import pyarrow.dataset as pads

    from model.data import ServingChunk, StepArrays, history_batch, left_pad_lists

    width = tables.history_len
    files = sorted(str(p) for p in (tables.root / "serving").glob("*.parquet"))
    table = (pads.dataset(files, format="parquet").to_table(filter=pads.field("visitorid") == customer_id)
             if files else None)
    if table is not None and table.num_rows:
        table = table.slice(0, 1)
        item, length = left_pad_lists(table.column("history_item"), width, np.int32)
        steps = StepArrays(item, left_pad_lists(table.column("history_category"), width, np.int32)[0],
                           left_pad_lists(table.column("history_root"), width, np.int32)[0],
                           left_pad_lists(table.column("history_action"), width, np.int8)[0], length)
        customer_idx = table.column("customer_idx").to_numpy().astype(np.int32)
    else:
        zeros = np.zeros((1, width), np.int32)
        steps = StepArrays(zeros, zeros, zeros, zeros.astype(np.int8), np.zeros(1, np.int32))
        customer_idx = np.zeros(1, np.int32)  # 0 = unknown: no purchases to exclude either
    visitorid = np.array([customer_id], np.int64)
    return ServingChunk(customer_idx=customer_idx, visitorid=visitorid,
                        history=history_batch(tables, steps, visitorid, np.arange(1)), history_item_idx=steps.item)


def history_chunk(tables, history: list[tuple[int, str | int]], customer_id: int = 0):
    """A one-row `ServingChunk` of an arbitrary history, built like a `sequences/serving` row.

    history: (item_id, action) steps oldest first, action an ACTION_NAMES name or a bitmask.
    As in the sequence build, steps on items outside the vocabulary are dropped and the latest
    `history_len` steps kept; each step's category / root are the item's latest. customer_id:
    a known customer is scored as them (their purchases are excluded, as nightly); 0 or an
    unknown id is a new customer.
    """
    from model.batch import ACTION_NAMES
    from model.data import ServingChunk, StepArrays, history_batch

    bits = {name: 1 << i for i, name in enumerate(ACTION_NAMES)}
    width = tables.history_len
    item_ids = np.array([int(item) for item, _ in history], np.int64)
    action = np.array([bits[a] if isinstance(a, str) else int(a) for _, a in history], np.int8)
    idx = tables.item_idx_of(item_ids) if len(item_ids) else np.zeros(0, np.int32)
    known = idx > 0
    idx, action = idx[known][-width:], action[known][-width:]
    pad = width - len(idx)
    item = np.pad(idx, (pad, 0))[None, :].astype(np.int32)
    steps = StepArrays(item, tables.item_category[item], tables.item_root[item],
                       np.pad(action, (pad, 0))[None, :].astype(np.int8), np.array([len(idx)], np.int32))
    matches = np.flatnonzero(tables.customer_visitorid == customer_id) if customer_id else np.zeros(0, np.int64)
    customer_idx = np.array([matches[0] if len(matches) else 0], np.int32)
    visitorid = np.array([customer_id], np.int64)
    return ServingChunk(customer_idx=customer_idx, visitorid=visitorid,
                        history=history_batch(tables, steps, visitorid, np.arange(1)), history_item_idx=steps.item)


RECOMMENDATION_KEYS = ("rank", "item_id", "score", "p_transaction", "p_addtocart", "p_view", "source")


def recommend_for_history(scorer, history: list[tuple[int, str | int]], top_n: int, *,
                          customer_id: int = 0) -> list[dict]:
    """The top-`top_n` list nightly scoring would publish for a customer with this history.

    scorer: a `recs.scoring.load_scorer` Scorer (its strategy and rules apply); history:
    (item_id, action name) steps oldest first (see history_chunk). The chunk goes through
    `Scorer.score_chunk`, the nightly path itself: retrieval, candidates, ranking, rules and the
    popularity fallback (an empty or unknown history gets the fallback list). Returns the
    published rows' fields {rank, item_id, score, p_transaction, p_addtocart, p_view, source}
    (score and probabilities None on fallback rows).
    """
    if not 1 <= top_n <= scorer.config.top_n:
        raise ValueError(f"top_n must be between 1 and the scorer's top_n ({scorer.config.top_n}), got {top_n}")
    generated_at = datetime.now(timezone.utc).replace(tzinfo=None)
    table, _ = scorer.score_chunk(history_chunk(scorer.tables, history, customer_id), run_id="history",
                                  generated_at=generated_at)
    return [{k: r[k] for k in RECOMMENDATION_KEYS} for r in table.to_pylist() if r["rank"] <= top_n]


def live_recommendations(warehouse_dir: str | Path, checkpoint_dir: str | Path, customer_id: int,
                         top_n: int) -> list[dict]:
    """Score this one customer now with the serving checkpoints (nothing is written)."""
    from model.tasks import serving_checkpoint
    from recs.scoring import load_scorer

    for model in ("retrieval", "ranking"):
        ckpt = serving_checkpoint(checkpoint_dir, model)
        if not ((ckpt / "best").exists() or (ckpt / "latest").exists()):
            raise FileNotFoundError(f"customer {customer_id} has no published recommendations and there is no {model} "
                                    f"checkpoint under {Path(checkpoint_dir)} to compute them: run `recs run` first")
    from recs.guard import decide, validation_figures

    # The strategy tonight's run would publish (the publishing guard), so live = published.
    strategy = decide(validation_figures(warehouse_dir)).strategy
    scorer = load_scorer(warehouse_dir, checkpoint_dir, top_n=top_n, strategy=strategy)
    generated_at = datetime.now(timezone.utc).replace(tzinfo=None)
    table, _ = scorer.score_chunk(serving_chunk(scorer.tables, customer_id), run_id="live", generated_at=generated_at)
    rows = table.to_pylist()
    categories = item_categories(warehouse_dir, [r["item_id"] for r in rows])
    keys = ("rank", "item_id", "score", "p_transaction", "p_addtocart", "p_view", "source")
    return [{**{k: r[k] for k in keys}, "categoryid": categories.get(r["item_id"]), "run_id": None,
             "model_version": r["model_version"], "generated_at": r["generated_at"]} for r in rows]


def recommend_for_customer(warehouse_dir: str | Path, checkpoint_dir: str | Path, customer_id: int,
                           top_n: int = 20) -> dict:
    """A customer's recent history and top-N list (published run, else computed live).

    Returns {customer_id, n_events, first_event_time, last_event_time, history, origin
    ("published" | "live"), run_id, model_version, generated_at, recommendations}; history rows
    are {time, itemid, event, categoryid, root} newest first, recommendation rows {rank, item_id,
    score, p_transaction, p_addtocart, p_view, source, categoryid} (score and probabilities are
    None on popularity-fallback rows). Raises ValueError for an unknown customer.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    customer_id = int(customer_id)
    events = customer_events(warehouse_dir, customer_id)
    rows = published_recommendations(warehouse_dir, customer_id, top_n)
    if not rows and events["n_events"] == 0:
        raise ValueError(f"customer {customer_id} not found in the warehouse")
    origin = "published" if rows else "live"
    if not rows:
        rows = live_recommendations(warehouse_dir, checkpoint_dir, customer_id, top_n)
    first = rows[0] if rows else {}
    return {"customer_id": customer_id, **events, "origin": origin, "run_id": first.get("run_id"),
            "model_version": first.get("model_version"), "generated_at": first.get("generated_at"),
            "recommendations": [{k: r[k] for k in ("rank", "item_id", "score", "p_transaction", "p_addtocart",
                                                    "p_view", "source", "categoryid")} for r in rows]}


def _number(value: float | None, digits: int = 3) -> str:
    """A probability or score for the table; '-' where there is none (fallback rows)."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def format_recommendation(result: dict) -> str:
    """The readable text block `recs recommend` prints."""
    cid = result["customer_id"]
    lines = [f"Customer {cid}: {result['n_events']} events"
             + (f", {result['first_event_time']:%Y-%m-%d %H:%M} .. {result['last_event_time']:%Y-%m-%d %H:%M}"
                if result["n_events"] else "")]
    history = result["history"]
    if history:
        lines += ["", f"Recent history (newest first, {len(history)} of {result['n_events']} events):",
                  f"  {'time':<19}  {'event':<11}  {'item':>8}  {'category':>8}  {'root':>6}"]
        lines += [f"  {h['time']:%Y-%m-%d %H:%M:%S}  {h['event']:<11}  {h['itemid']:>8}  "
                  f"{h['categoryid']:>8}  {h['root']:>6}" for h in history]
    else:
        lines += ["", "No events in the warehouse."]
    recs = result["recommendations"]
    if result["origin"] == "published":
        where = f"published run {result['run_id']}"
    else:
        where = "computed live: no published run for this customer"
    lines += ["", f"Top {len(recs)} recommendations ({where}; model {result['model_version']}):",
              f"  {'rank':>4}  {'item':>8}  {'category':>8}  {'score':>6}  {'p(buy)':>6}  {'p(cart)':>7}  "
              f"{'p(view)':>7}  source"]
    for r in recs:
        category = "?" if r["categoryid"] is None else r["categoryid"]
        lines.append(f"  {r['rank']:>4}  {r['item_id']:>8}  {category:>8}  {_number(r['score'], 2):>6}  "
                     f"{_number(r['p_transaction']):>6}  {_number(r['p_addtocart']):>7}  "
                     f"{_number(r['p_view']):>7}  {r['source']}")
    lines += ["", "score = 10 p(buy) + 3 p(cart) + 1 p(view) by default; '-' = popularity fallback (no model score)"]
    return "\n".join(lines)
