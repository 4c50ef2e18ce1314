"""Who the page shows lists for: a real customer, a persona, or a typed history.

`Subject.key` is what a rating is stored under (`feedback.customer`): the customer id as text,
`persona:<name>`, or `history:<item[:action]>,...` (the typed history, normalised), so ratings of
the same probe group together whoever typed it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from model.batch import ACTION_NAMES

DEFAULT_ACTION = "view"


@dataclass(frozen=True)
class Subject:
    kind: str  # customer | persona | history
    key: str
    label: str
    customer_id: int | None = None
    history: list[tuple[int, str]] = field(default_factory=list)  # oldest first (persona / typed)
    description: str | None = None


def customer(customer_id: int) -> Subject:
    return Subject("customer", str(int(customer_id)), f"Customer {int(customer_id)}", customer_id=int(customer_id))


def persona(name: str, history: list[tuple[int, str]], description: str) -> Subject:
    return Subject("persona", f"persona:{name}", f"Persona {name.replace('_', ' ')}", history=list(history),
                   description=description)


def parse_history(text: str) -> list[tuple[int, str]]:
    """Typed steps, oldest first: item ids separated by commas, spaces or new lines, each with an
    optional `:action` (transaction, addtocart, view; default view), e.g. `101, 205:addtocart`."""
    steps = []
    for token in (t for t in re.split(r"[\s,;]+", text.strip()) if t):
        item, _, action = token.partition(":")
        action = action.strip().lower() or DEFAULT_ACTION
        if not item.strip().isdigit():
            raise ValueError(f"{token!r} is not an item id (digits, optionally :action)")
        if action not in ACTION_NAMES:
            raise ValueError(f"{token!r}: the action must be one of {', '.join(ACTION_NAMES)}")
        steps.append((int(item), action))
    if not steps:
        raise ValueError("type at least one item id")
    return steps


def typed_history(steps: list[tuple[int, str]]) -> Subject:
    key = "history:" + ",".join(str(i) if a == DEFAULT_ACTION else f"{i}:{a}" for i, a in steps)
    return Subject("history", key, f"Typed history of {len(steps)} step{'s' * (len(steps) != 1)}", history=steps)
