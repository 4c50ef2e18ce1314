"""Both systems' lists for one subject, with what the page shows beside each item.

A real customer: ours from the latest published run (computed live with the serving scorer when
the run does not hold them), the incumbent's from `incumbent_lists`. A persona or a typed
history: ours through `recs.recommend.recommend_for_history` (the nightly serving path); the
incumbent's only when it is a built-in the serving path can play (item_knn: the `item_knn`
strategy; popularity: the fallback list an empty history gets), otherwise "not covered".
`get_scorer(strategy)` hands out the page's cached `recs.scoring` scorers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from recs.agreement import list_agreement
from recs.ui import data
from recs.ui.subjects import Subject, customer

LIVE_INCUMBENTS = ("item_knn", "popularity")
HISTORY_SHOWN = 8  # recent events shown above the lists


@dataclass
class SideBySide:
    subject: Subject
    incumbent_name: str | None
    top_n: int
    ours: list[dict]
    incumbent: list[dict] | None  # None: the incumbent does not cover this subject
    history: list[dict]  # newest first: {time, event, item_id, categoryid, root_categoryid}
    n_events: int
    ours_origin: str
    incumbent_note: str = ""
    seen: set[int] = field(default_factory=set)
    ours_strategy: str = "model"  # what ranked our list (the publishing guard's choice)

    @property
    def shared_ranks(self) -> dict[str, dict[int, int]]:
        """{system: {item_id: its rank in the OTHER list}} for items both lists hold."""
        ours = {r["item_id"]: r["rank"] for r in self.ours}
        theirs = {r["item_id"]: r["rank"] for r in self.incumbent or []}
        return {"ours": {i: theirs[i] for i in ours if i in theirs},
                "incumbent": {i: ours[i] for i in theirs if i in ours}}

    def agreement(self) -> dict[str, float | None] | None:
        if not self.incumbent or not self.ours:
            return None
        return list_agreement([r["item_id"] for r in self.incumbent], [r["item_id"] for r in self.ours], self.top_n)


def enrich(warehouse_dir: str | Path, rows: list[dict], seen: set[int]) -> list[dict]:
    """Rows with the item's category, root, availability, event count, price and seen flag."""
    details = data.item_details(warehouse_dir, [r["item_id"] for r in rows])
    empty = dict.fromkeys(("categoryid", "root_categoryid", "available", "n_events", "price"))
    return [{**r, **details.get(r["item_id"], empty), "seen": r["item_id"] in seen} for r in rows]


def _history_rows(warehouse_dir: str | Path, steps: list[tuple[int, str]]) -> list[dict]:
    """A persona's / typed history as history rows, newest first."""
    details = data.item_details(warehouse_dir, [i for i, _ in steps])
    return [{"time": None, "event": action, "item_id": item, "categoryid": details.get(item, {}).get("categoryid"),
             "root_categoryid": details.get(item, {}).get("root_categoryid")} for item, action in reversed(steps)]


def for_customer(warehouse_dir: str | Path, customer_id: int, incumbent: str | None, top_n: int,
                 get_scorer: Callable[[str], object], run: dict | None) -> SideBySide:
    from recs.recommend import customer_events

    events = customer_events(warehouse_dir, customer_id, limit=HISTORY_SHOWN)
    ours = data.our_list(warehouse_dir, customer_id, top_n)
    origin = f"published run {run['run_id']}" if ours and run else ""
    if not ours:
        if events["n_events"] == 0:
            raise ValueError(f"customer {customer_id} is not in the warehouse")
        ours = _live_customer(get_scorer(_run_strategy(run)), customer_id, top_n)
        origin = "computed live: not in the latest published run"
    theirs = data.incumbent_list(warehouse_dir, incumbent, customer_id, top_n) if incumbent else []
    note = ""
    if not theirs:
        stored = incumbent in {i["incumbent"] for i in data.incumbents(warehouse_dir)}
        note = (f"not covered: {incumbent} has no list for customer {customer_id}" if stored else
                f"no stored lists of {incumbent}: load them with `recs compare --incumbent {incumbent}`"
                if incumbent in LIVE_INCUMBENTS else f"no stored lists of {incumbent}: run `recs compare --incumbent PATH`")
    seen = data.customer_item_ids(warehouse_dir, customer_id)
    history = [{"time": h["time"], "event": h["event"], "item_id": h["itemid"], "categoryid": h["categoryid"],
                "root_categoryid": h["root"]} for h in events["history"]]
    return SideBySide(subject=customer(customer_id), incumbent_name=incumbent, top_n=top_n,
                      ours=enrich(warehouse_dir, ours, seen),
                      incumbent=enrich(warehouse_dir, theirs, seen) if theirs else None,
                      history=history, n_events=events["n_events"], ours_origin=origin, incumbent_note=note,
                      seen=seen, ours_strategy=_run_strategy(run))


def for_history(warehouse_dir: str | Path, subject: Subject, incumbent: str | None, top_n: int,
                get_scorer: Callable[[str], object], run: dict | None) -> SideBySide:
    """A persona or typed history: scored now through the serving path."""
    from recs.recommend import recommend_for_history

    ours = recommend_for_history(get_scorer(_run_strategy(run)), subject.history, top_n)
    theirs, note = None, ""
    if incumbent in LIVE_INCUMBENTS:
        steps = subject.history if incumbent == "item_knn" else []  # popularity: the fallback list
        rows = recommend_for_history(get_scorer("item_knn"), steps, top_n)
        theirs = [{**r, "source": incumbent if incumbent == "popularity" else r["source"]} for r in rows]
    elif incumbent:
        note = f"not covered: {incumbent}'s lists come from a file, for its own customers only"
    else:
        note = "no incumbent chosen"
    seen = {i for i, _ in subject.history}
    return SideBySide(subject=subject, incumbent_name=incumbent, top_n=top_n, ours=enrich(warehouse_dir, ours, seen),
                      incumbent=enrich(warehouse_dir, theirs, seen) if theirs else None,
                      history=_history_rows(warehouse_dir, subject.history), n_events=len(subject.history),
                      ours_origin="computed live through the nightly serving path", incumbent_note=note, seen=seen,
                      ours_strategy=_run_strategy(run))


def _run_strategy(run: dict | None) -> str:
    """The strategy the published lists were ranked with (the guard's choice), model without a run."""
    return (run or {}).get("strategy") or "model"


def _live_customer(scorer, customer_id: int, top_n: int) -> list[dict]:
    from datetime import datetime, timezone

    from recs.recommend import RECOMMENDATION_KEYS, serving_chunk

    table, _ = scorer.score_chunk(serving_chunk(scorer.tables, customer_id), run_id="live",
                                  generated_at=datetime.now(timezone.utc).replace(tzinfo=None))
    return [{k: r[k] for k in RECOMMENDATION_KEYS} for r in table.to_pylist() if r["rank"] <= top_n]
