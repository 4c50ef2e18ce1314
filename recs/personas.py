"""Synthetic personas: customers with a declared preference and a history of real items.

Four probes (`PERSONAS`), each built from the warehouse catalogue (read-only) and deterministic
by seed:
- budget_conscious: items in a low price band (at or below the `BUDGET_QUANTILE` quantile of
  the vocabulary's prices; table item_prices, property PRICE_PROPERTY, an assumption);
- brand_loyal: items of one root category. Retail Rocket has no brand or author field (its
  other properties are hashed and nobody knows which one is a brand), so the "label" a
  loyal shopper sticks to is the top-level category, the broadest group the data does name;
- impulse_trending: the items trending over the last `trending_days` of the log (the window of
  the scoring fallback);
- niche_enthusiast: one deep subcategory (the deepest category level holding enough items).

History items are drawn from the models' vocabulary (item_index in_vocab: items the serving
path knows), weighted by their events, as views with an add-to-cart on some of them (no
purchases: a synthetic customer has no purchase record for the bought-item rule to read).
`preference_metrics` says how much of a list honours a persona's preference.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recs.publish import connect_with_retry
from recs.warehouse import table_exists

PERSONAS = ("budget_conscious", "brand_loyal", "impulse_trending", "niche_enthusiast")
HISTORY_ITEMS = 10  # distinct items in a persona's history
CART_EVERY = 4  # every 4th item viewed is also added to the cart (right after its view)
BUDGET_QUANTILE = 0.2  # the budget band: prices up to this quantile of the vocabulary's prices
TRENDING_ITEMS = 50  # the trending set: the most-evented items of the last `trending_days`
MIN_FOCUS_ITEMS = 5  # a focus category needs at least this many vocabulary items
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Preference:
    """What a persona declares it wants: the focus set of item ids that honour it.

    kind: price_band | root_category | category | trending; metric: the name of its share
    metric (share_in_band | share_in_focus | share_trending); category_id for the two category
    kinds; price_low / price_high for the band.
    """

    kind: str
    metric: str
    description: str
    items: frozenset[int] = field(repr=False)
    category_id: int | None = None
    price_low: float | None = None
    price_high: float | None = None


@dataclass(frozen=True)
class Persona:
    """A synthetic customer: history is (item_id, action name) steps, oldest first."""

    name: str
    description: str
    history: list[tuple[int, str]]
    preference: Preference


@dataclass(frozen=True)
class Catalogue:
    """The vocabulary items with what the personas need (numpy, one row per item)."""

    itemid: np.ndarray  # int64
    categoryid: np.ndarray  # int64 latest category
    root_categoryid: np.ndarray  # int64
    n_events: np.ndarray  # int64
    price: np.ndarray  # float64, NaN without a price record
    trending_events: np.ndarray  # int64 events in the last trending_days of the log
    category_parent: dict[int, int | None]  # every category's parent (None for a root)
    category_depth: dict[int, int | None]

    def prices(self) -> dict[int, float]:
        """item id -> latest price (priced items only)."""
        ok = ~np.isnan(self.price)
        return dict(zip(self.itemid[ok].tolist(), self.price[ok].tolist()))


def load_catalogue(warehouse_dir: str | Path, trending_days: float = 7.0) -> Catalogue:
    """The vocabulary items (item_index in_vocab, else every item with events) with category,
    price and recent events, read from the current snapshot (read-only)."""
    con = connect_with_retry(warehouse_dir, read_only=True)
    try:
        vocab = ("JOIN item_index AS x ON x.itemid = i.itemid AND x.in_vocab"
                 if table_exists(con, "item_index") else "")
        price = ("LEFT JOIN item_prices AS p ON p.itemid = i.itemid" if table_exists(con, "item_prices")
                 else "LEFT JOIN (SELECT NULL::BIGINT AS itemid, NULL::DOUBLE AS price) AS p ON false")
        items = con.execute(
            f"WITH last AS (SELECT max(timestamp) AS t FROM events), "
            f"recent AS (SELECT itemid, count(*) AS n FROM events, last WHERE timestamp >= last.t - ? GROUP BY 1) "
            f"SELECT i.itemid, i.categoryid, i.root_categoryid, i.n_events, coalesce(p.price, 'NaN'::DOUBLE) AS price, "
            f"coalesce(r.n, 0) AS trending_events FROM items AS i {vocab} {price} "
            f"LEFT JOIN recent AS r ON r.itemid = i.itemid ORDER BY i.itemid",
            [int(trending_days * DAY_MS)]).fetchnumpy()
        categories = con.execute("SELECT categoryid, parentid, depth FROM categories").fetchall()
    finally:
        con.close()
    return Catalogue(
        itemid=np.asarray(items["itemid"], np.int64), categoryid=np.asarray(items["categoryid"], np.int64),
        root_categoryid=np.asarray(items["root_categoryid"], np.int64),
        n_events=np.asarray(items["n_events"], np.int64), price=np.asarray(items["price"], np.float64),
        trending_events=np.asarray(items["trending_events"], np.int64),
        category_parent={int(c): (None if p is None else int(p)) for c, p, _ in categories},
        category_depth={int(c): d for c, _, d in categories},
    )


def draw_history(rng: np.random.Generator, itemid: np.ndarray, weight: np.ndarray) -> list[tuple[int, str]]:
    """HISTORY_ITEMS distinct items (fewer if the pool is smaller), drawn with probability
    proportional to `weight`, viewed in the drawn order; every CART_EVERY-th is then carted."""
    k = min(HISTORY_ITEMS, len(itemid))
    p = weight.astype(np.float64) + 1e-9
    chosen = rng.choice(len(itemid), size=k, replace=False, p=p / p.sum())
    history: list[tuple[int, str]] = []
    for n, i in enumerate(chosen, start=1):
        history.append((int(itemid[i]), "view"))
        if n % CART_EVERY == 0:
            history.append((int(itemid[i]), "addtocart"))
    return history


def descendants(parent: dict[int, int | None], category: int) -> set[int]:
    """The category and every category below it."""
    children: dict[int, list[int]] = {}
    for c, p in parent.items():
        if p is not None:
            children.setdefault(p, []).append(c)
    out, todo = set(), [category]
    while todo:
        c = todo.pop()
        if c not in out:
            out.add(c)
            todo.extend(children.get(c, []))
    return out


def budget_conscious(cat: Catalogue, rng: np.random.Generator) -> Persona | None:
    priced = ~np.isnan(cat.price)
    if priced.sum() < MIN_FOCUS_ITEMS:
        return None  # the data has no price property: no budget to declare
    low, high = float(cat.price[priced].min()), float(np.quantile(cat.price[priced], BUDGET_QUANTILE))
    band = priced & (cat.price <= high)
    preference = Preference("price_band", "share_in_band", f"prices {low:,.0f} .. {high:,.0f}",
                            frozenset(cat.itemid[band].tolist()), price_low=low, price_high=high)
    return Persona("budget_conscious", f"buys cheap: items priced {low:,.0f} .. {high:,.0f} "
                   f"(the lowest {BUDGET_QUANTILE:.0%} of prices)",
                   draw_history(rng, cat.itemid[band], cat.n_events[band]), preference)


def brand_loyal(cat: Catalogue, rng: np.random.Generator) -> Persona | None:
    roots, counts = np.unique(cat.root_categoryid[cat.root_categoryid > 0], return_counts=True)
    roots = roots[counts >= MIN_FOCUS_ITEMS]
    if not len(roots):
        return None
    weight = np.array([cat.n_events[cat.root_categoryid == r].sum() for r in roots], np.float64)
    root = int(rng.choice(roots, p=weight / weight.sum()))
    focus = cat.root_categoryid == root
    preference = Preference("root_category", "share_in_focus", f"root category {root}",
                            frozenset(cat.itemid[focus].tolist()), category_id=root)
    return Persona("brand_loyal", f"loyal to one label: only items of root category {root} "
                   "(Retail Rocket has no brand field; its top-level category stands in)",
                   draw_history(rng, cat.itemid[focus], cat.n_events[focus]), preference)


def impulse_trending(cat: Catalogue, rng: np.random.Generator) -> Persona | None:
    recent = np.flatnonzero(cat.trending_events > 0)
    if not len(recent):
        return None
    top = recent[np.lexsort((cat.itemid[recent], -cat.trending_events[recent]))][:TRENDING_ITEMS]
    preference = Preference("trending", "share_trending", f"the {len(top)} items trending in the last days",
                            frozenset(cat.itemid[top].tolist()))
    return Persona("impulse_trending", f"follows what is hot: the {len(top)} most-evented items of the "
                   "log's last days", draw_history(rng, cat.itemid[top], cat.trending_events[top]), preference)


def niche_enthusiast(cat: Catalogue, rng: np.random.Generator) -> Persona | None:
    # Items per category subtree, then the deepest level where some category has enough items.
    members: dict[int, np.ndarray] = {}
    for c in np.unique(cat.categoryid[cat.categoryid > 0]):
        node: int | None = int(c)
        rows = cat.categoryid == c
        while node is not None:
            members[node] = members[node] | rows if node in members else rows
            node = cat.category_parent.get(node)
    eligible = [(cat.category_depth.get(c) or 0, c) for c, rows in members.items()
                if rows.sum() >= MIN_FOCUS_ITEMS and cat.category_depth.get(c)]
    if not eligible:
        return None
    deepest = max(d for d, _ in eligible)
    options = sorted(c for d, c in eligible if d == deepest)
    category = int(options[rng.integers(len(options))])
    focus = members[category]
    preference = Preference("category", "share_in_focus", f"category {category} (depth {deepest})",
                            frozenset(cat.itemid[focus].tolist()), category_id=category)
    return Persona("niche_enthusiast", f"deep in one niche: category {category}, {deepest} levels below its root",
                   draw_history(rng, cat.itemid[focus], cat.n_events[focus]), preference)


BUILDERS = {"budget_conscious": budget_conscious, "brand_loyal": brand_loyal,
            "impulse_trending": impulse_trending, "niche_enthusiast": niche_enthusiast}


def build_personas(cat: Catalogue, seed: int = 0) -> dict[str, Persona]:
    """Every persona the catalogue supports (a data set without prices has no budget_conscious)."""
    out = {}
    for index, name in enumerate(PERSONAS):
        persona = BUILDERS[name](cat, np.random.default_rng([seed, index]))
        if persona is not None:
            out[name] = persona
    return out


def persona_histories(warehouse_dir: str | Path, seed: int = 0, trending_days: float = 7.0) -> dict[str, Persona]:
    """The personas of this warehouse's catalogue, by name (deterministic for a seed)."""
    return build_personas(load_catalogue(warehouse_dir, trending_days), seed)


def preference_metrics(preference: Preference, item_ids: list[int], prices: dict[int, float]) -> dict[str, float | None]:
    """How a list honours a preference: its share metric (share of the list in the focus set);
    for a price band also price_distance, the mean distance of the list's priced items outside
    the band, relative to the band's top (0 = all inside; None without priced items)."""
    n = len(item_ids)
    share = sum(i in preference.items for i in item_ids) / n if n else None
    out: dict[str, float | None] = {preference.metric: share}
    if preference.kind == "price_band":
        priced = [prices[i] for i in item_ids if i in prices]
        low, high = preference.price_low, preference.price_high
        out["price_distance"] = (sum(max(0.0, p - high, low - p) for p in priced) / len(priced) / high
                                 if priced else None)
    return out
