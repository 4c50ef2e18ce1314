"""Deterministic generator of Retail Rocket-format CSVs that behave like the real data (the embedded default data).

`generate(out, scale, seed)` writes `events.csv`, `item_properties_part1.csv`,
`item_properties_part2.csv` and `category_tree.csv` in the exact Kaggle formats. Everything is
vectorised numpy (the only Python loops run over walk positions and weekly snapshots, each
vectorised over all visitors / items) and the CSVs are written by polars, so `full` (Retail
Rocket's 2.76M events) takes seconds. Same seed -> byte-identical files.

Behaviour model. Measured as `recs.behaviour` measures the real Retail Rocket sessions (views,
30-minute sessions, items with 5+ views, sessions of 3+ views), `small` and `full` match them
within the tolerances of tests/test_behaviour.py: share of next views on the previous item
0.20, on an item seen earlier in the session 0.375, session length p10/p25/median/p75/p90
3/3/4/6/9, 11% / 41% of views on the top 1% / 10% of items.
- Visitors: a heavy Pareto tail of active visitors whose views are cut into sessions, and
  casual visitors who come once (77% for one view, 13% for two); at `full` 1.41M visitors, 86%
  with 1-2 events.
- Sessions: 1, 2, or 3 + floor(lognormal(0.4, 1.3)) views, seconds to minutes apart; a
  returning visitor's sessions are more than 30 minutes and up to weeks apart.
- Repeats: a view repeats the previous view's item with a per-session propensity (Beta, mean
  0.09 + 0.6 / session length): short visits re-view one item, long ones browse, and repeats come
  in runs (after a repeat another one about half the time), as in the real sessions. Downstream
  every event is a step, so repeats are signal.
- Walk over items: categories form a 1,669-node forest (25 roots, depth <= 5); items live in leaf
  categories and sit on a per-category ring, and each item has a Zipf-like popularity within its
  category; each visitor has persistent tastes over 1-3 categories. A session opens on a popular
  item of a taste category (or, for a returning visitor, often on an item of an earlier session).
  From its third step on, a step returns to an item of the session with probability 0.165
  (0.32 on the session's last step: visitors go back to an item before leaving), mostly two
  steps back (A B A); otherwise it moves to a ring neighbour of the current item (40%), a popular
  item of a taste category (45%) or a globally popular item (15%). On the real sessions and on
  `small`, predicting each test session's last view, popularity << re-showing the session's own
  items (~0.5 Recall@20) < an item co-occurrence kNN with a repeat boost (~0.7).
- Carts and purchases: add-to-cart and purchase propensity grow with taste match and item quality
  and collapse when the item is unavailable (availability flips week to week); purchases close a
  session under one transaction id, mostly after an add-to-cart of the same item; a quarter of
  the buyers view the bought item again, minutes to weeks later (as in the real Retail Rocket
  sample: 13 of 46 purchases).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

T0_MS = 1_430_622_000_000  # 2015-05-03 03:00:00 UTC, a Sunday: first event and first snapshot
T1_MS = 1_442_545_200_000  # 2015-09-18 03:00:00 UTC: end of the Retail Rocket log
WEEK_MS = 7 * 24 * 3600 * 1000
N_SNAPSHOTS = (T1_MS - T0_MS) // WEEK_MS + 1  # weekly property snapshots, Sundays 03:00 UTC
# Ids are positive (the warehouse reserves 0 for unknown): items drawn sparsely from 1..466,867,
# categories from 1..1,699, visitors 1..n, transactions 1..n.
ITEM_ID_RANGE = 466_867
CATEGORY_ID_RANGE = 1_699
CATEGORY_DEPTH_COUNTS = (25, 174, 702, 665, 90, 13)  # nodes per depth: 1,669 categories
EVENT_NAMES = ("view", "addtocart", "transaction")
VIEW, ADDTOCART, TRANSACTION = 0, 1, 2

# Retail Rocket's event mix: 2,664,312 views, 69,332 add-to-carts, 22,457 transactions.
REAL_EVENTS, REAL_ADDTOCARTS, REAL_TRANSACTIONS = 2_756_101, 69_332, 22_457
TRANSACTIONS_AFTER_CART = 0.9  # share of purchases preceded by an add-to-cart
# Share of purchases whose buyer views the item again later (13 of 46 in the real Retail Rocket
# sample), 1 minute to 60 days after the checkout (log-uniform; real: median 9 hours).
P_VIEW_AFTER_PURCHASE = 0.25
VIEW_AFTER_PURCHASE_MS = (60e3, 60 * 86_400e3)

# Sessions. Views per session: 1 or 2 with the probabilities below, else 3 + floor(lognormal)
# (Retail Rocket's sessions of 3+ views: median 4, p90 9, a tail to hundreds).
SESSION_TAIL_MU, SESSION_TAIL_SIGMA = 0.4, 1.3
MAX_SESSION_VIEWS = 500
P_CASUAL_ONE, P_CASUAL_TWO = 0.77, 0.13  # casual visitors come once: one session
P_ACTIVE_ONE, P_ACTIVE_TWO = 0.45, 0.2  # sessions of the active visitors
MIN_SESSION_GAP_MS = 30 * 60 * 1000.0
# A session of L views repeats the previous view with a propensity ~ Beta(c m, c (1 - m)),
# mean m = REPEAT_FLOOR + REPEAT_SHORT / L, concentration c.
REPEAT_FLOOR, REPEAT_SHORT, REPEAT_CONCENTRATION = 0.09, 0.6, 1.7

# Walk step kinds.
TASTE, POPULAR, NEIGHBOUR, RETURN = 0, 1, 2, 3
NEIGHBOUR_OFFSETS = np.array([1, 2, -1, -2])
NEIGHBOUR_PROBS = np.array([0.5, 0.2, 0.2, 0.1])
P_RETURN, P_RETURN_LAST = 0.165, 0.32  # a session's third or later step returns; its last one more often
P_RETURN_OPENING = 0.3  # a returning visitor's later session opens on an item of an earlier one
MOVE_SHARES = (0.4, 0.45, 0.15)  # NEIGHBOUR / TASTE / POPULAR among the other steps
P_BACK_TWO, P_BACK_FURTHER = 0.65, 0.4  # a return goes two steps back (A B A), else 2 + Geometric(0.4)
CART_MAX_DELAY_MS = 150_000.0  # add-to-cart lands before the next view (at most 0.8 x 150 s later)
P_BUY_UNAVAILABLE = 0.03  # an unavailable item still qualifies for cart/purchase this rarely
CART_COHESION = 3.0  # carts cluster in sessions (shared Gumbel noise per session)
CHECKOUT_COHESION = 4.0  # purchases cluster more: one checkout buys several carted items
P_PRICE_CHANGE = 0.03  # per item and week
P_CATEGORY_CHANGE = 0.015  # share of items moved to another category once


@dataclass(frozen=True)
class Scale:
    """Size of one generated data set."""

    n_events: int
    n_active: int  # visitors from the heavy tail, in several sessions (the rest come once, mostly for 1-2 views)
    active_min_views: int
    active_max_views: int
    active_tail: float  # Pareto exponent of active visitors' view counts
    n_items: int  # catalogue (items with properties); a subset gets events
    n_item_categories: int  # leaf categories that hold items (0 = every leaf)
    item_zipf: float  # within-category popularity ~ 1 / rank**item_zipf
    category_spread: float  # log-normal sigma of category popularity


SCALES: dict[str, Scale] = {
    "tiny": Scale(4_500, 130, 10, 100, 2.5, 400, 12, 1.2, 1.0),
    "small": Scale(150_000, 3_800, 10, 600, 2.0, 8_000, 80, 0.9, 0.5),
    # Retail Rocket's shape: 1.4M visitors, ~235K items with events out of a sparse id range.
    "full": Scale(REAL_EVENTS, 36_000, 3, 2_500, 1.3, 340_000, 0, 0.9, 0.5),
}


@dataclass(frozen=True)
class Categories:
    """The category forest; `parent` is -1 for roots."""

    categoryid: np.ndarray
    parent: np.ndarray

    def leaves(self) -> np.ndarray:
        """Category ids that no category names as parent."""
        return np.setdiff1d(self.categoryid, self.parent[self.parent >= 0])


@dataclass(frozen=True)
class Catalogue:
    """Items grouped by category: global item index g is position g - start[c] on category c's ring."""

    itemid: np.ndarray  # per item index
    item_cat: np.ndarray  # per item index: index into cat_id
    quality: np.ndarray  # per item index: purchase appeal
    cumweight: np.ndarray  # cumulative within-category popularity over item indices
    cat_id: np.ndarray  # per used category: its categoryid
    cat_start: np.ndarray
    cat_size: np.ndarray
    cat_weight: np.ndarray  # category popularity (sums to 1)

    def ring_step(self, g: np.ndarray, offset: np.ndarray | int) -> np.ndarray:
        """Item `offset` places along g's category ring."""
        c = self.item_cat[g]
        start = self.cat_start[c]
        return start + (g - start + offset) % self.cat_size[c]

    def draw_in_category(self, cat: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Popularity-weighted item of each category `cat`, by inverse CDF at uniforms `u`."""
        start = self.cat_start[cat]
        base = np.where(start > 0, self.cumweight[start - 1], 0.0)
        total = self.cumweight[start + self.cat_size[cat] - 1] - base
        g = np.searchsorted(self.cumweight, base + u * total, side="right")
        return np.minimum(g, start + self.cat_size[cat] - 1)


def generate(out: Path, scale: str = "small", seed: int = 0, id_offset: int = 0) -> dict:
    """Write the four Retail Rocket CSVs into `out` (created if missing); return summary counts.

    id_offset shifts every item and category id: two seeds draw from the same id ranges (their
    category ids mostly coincide), so a catalogue that shares no id with another one (a transfer
    target, see bench/transfer.py) takes an offset beyond those ranges.
    """
    if id_offset < 0:
        raise ValueError(f"id_offset must be >= 0, got {id_offset}")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}: choose one of {sorted(SCALES)}")
    started = time.perf_counter()
    cfg = SCALES[scale]
    rng = np.random.default_rng([seed, 20150503])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    categories = make_category_tree(rng, id_offset)
    catalogue = make_catalogue(rng, cfg, categories, id_offset)
    available = make_availability(rng, len(catalogue.itemid))
    events = make_events(rng, cfg, catalogue, available)
    properties = make_item_properties(rng, catalogue, available)

    write_category_tree(categories, out / "category_tree.csv", rng)
    events.write_csv(out / "events.csv", null_value="")
    half = properties.height // 2
    properties.slice(0, half).write_csv(out / "item_properties_part1.csv")
    properties.slice(half).write_csv(out / "item_properties_part2.csv")

    by_type = events.group_by("event").len()
    counts = dict(zip(by_type["event"].to_list(), by_type["len"].to_list()))
    return {
        "out": str(out),
        "scale": scale,
        "seed": seed,
        "id_offset": id_offset,
        "events": events.height,
        "events_by_type": {name: int(counts.get(name, 0)) for name in EVENT_NAMES},
        "transaction_ids": int(events["transactionid"].n_unique() - 1),
        "visitors": int(events["visitorid"].n_unique()),
        "items": int(events["itemid"].n_unique()),
        "catalogue_items": len(catalogue.itemid),
        "categories": len(categories.categoryid),
        "property_rows": properties.height,
        "first_timestamp": int(events["timestamp"].min()),
        "last_timestamp": int(events["timestamp"].max()),
        "seconds": round(time.perf_counter() - started, 3),
    }


# ---------------------------------------------------------------------------------------------
# Categories, catalogue, availability


def make_category_tree(rng: np.random.Generator, id_offset: int = 0) -> Categories:
    """A forest with Retail Rocket's node count per depth; parents drawn with skewed fan-out."""
    n = sum(CATEGORY_DEPTH_COUNTS)
    ids = np.sort(rng.choice(CATEGORY_ID_RANGE, size=n, replace=False)) + 1 + id_offset
    ids = ids[rng.permutation(n)]  # depth must not follow id order
    parent = np.full(n, -1, dtype=np.int64)
    start = 0
    prev_level = np.empty(0, dtype=np.int64)
    for d, count in enumerate(CATEGORY_DEPTH_COUNTS):
        level = np.arange(start, start + count)
        if d > 0:
            # Skewed fan-out: a few categories have many children, many have none.
            fanout = rng.lognormal(0.0, 1.0, size=len(prev_level))
            parent[level] = ids[rng.choice(prev_level, size=count, p=fanout / fanout.sum())]
        prev_level = level
        start += count
    return Categories(categoryid=ids, parent=parent)


def make_catalogue(rng: np.random.Generator, cfg: Scale, categories: Categories, id_offset: int = 0) -> Catalogue:
    """Assign `n_items` items to leaf categories with Zipf-like sizes and within-category popularity."""
    leaves = categories.leaves()
    n_cats = len(leaves) if cfg.n_item_categories == 0 else min(cfg.n_item_categories, len(leaves))
    cat_id = np.sort(rng.choice(leaves, size=n_cats, replace=False))
    # Category sizes: Zipf over a random order, at least 5 items so rings have distinct neighbours.
    size_weight = 1.0 / rng.permutation(np.arange(1, n_cats + 1)) ** 0.8
    cat_size = 5 + rng.multinomial(cfg.n_items - 5 * n_cats, size_weight / size_weight.sum())
    cat_start = np.concatenate([[0], np.cumsum(cat_size)[:-1]])
    item_cat = np.repeat(np.arange(n_cats), cat_size)
    # Within-category popularity: Zipf over ranks assigned at random to ring positions, so ring
    # neighbours of a popular item are usually not popular themselves.
    order = np.lexsort((rng.random(cfg.n_items), item_cat))  # within each category, a random order
    rank = np.empty(cfg.n_items)
    rank[order] = np.arange(cfg.n_items) - cat_start[item_cat[order]] + 1
    weight = 1.0 / rank**cfg.item_zipf * rng.lognormal(0.0, 0.3, size=cfg.n_items)
    cat_weight = np.bincount(item_cat, weights=weight) * rng.lognormal(0.0, cfg.category_spread, size=n_cats)
    itemid = rng.choice(ITEM_ID_RANGE, size=cfg.n_items, replace=False).astype(np.int64) + 1 + id_offset
    return Catalogue(
        itemid=itemid,
        item_cat=item_cat,
        quality=rng.lognormal(0.0, 0.7, size=cfg.n_items),
        cumweight=np.cumsum(weight),
        cat_id=cat_id,
        cat_start=cat_start,
        cat_size=cat_size,
        cat_weight=cat_weight / cat_weight.sum(),
    )


def make_availability(rng: np.random.Generator, n_items: int) -> np.ndarray:
    """Weekly availability per item (n_items x N_SNAPSHOTS bool): a two-state Markov chain."""
    available = np.empty((n_items, N_SNAPSHOTS), dtype=bool)
    available[:, 0] = rng.random(n_items) < 0.75
    for week in range(1, N_SNAPSHOTS):
        u = rng.random(n_items)
        was = available[:, week - 1]
        # Stationary ~75% available: 4% of available items sell out, 12% come back, per week.
        available[:, week] = np.where(was, u >= 0.04, u < 0.12)
    return available


def snapshot_index(ts_ms: np.ndarray) -> np.ndarray:
    """Index of the latest weekly snapshot at or before each timestamp."""
    return np.clip((ts_ms - T0_MS) // WEEK_MS, 0, N_SNAPSHOTS - 1)


# ---------------------------------------------------------------------------------------------
# Visitors and their walks


def session_lengths(rng: np.random.Generator, n: int, p_one: float, p_two: float) -> np.ndarray:
    """Views in each of `n` sessions: 1 or 2 with probabilities `p_one` / `p_two`, else a long
    tail 3 + floor(lognormal) (the shape of Retail Rocket's sessions of 3+ views)."""
    u = rng.random(n)
    tail = 3 + np.minimum(np.floor(rng.lognormal(SESSION_TAIL_MU, SESSION_TAIL_SIGMA, n)), MAX_SESSION_VIEWS - 3)
    return np.where(u < p_one, 1, np.where(u < p_one + p_two, 2, tail)).astype(np.int64)


def visitor_sessions(rng: np.random.Generator, cfg: Scale, n_views: int) -> tuple[np.ndarray, np.ndarray]:
    """Sessions per visitor and views per session (visitor-major), exactly `n_views` in total.

    Active visitors come first: a heavy Pareto tail of view counts, each cut into sessions of
    the active length law (the last one cut short). Then casual visitors, one session each.
    """
    u = rng.random(cfg.n_active)
    active = np.minimum(cfg.active_min_views * (1.0 - u) ** (-1.0 / cfg.active_tail), cfg.active_max_views)
    active = active.astype(np.int64)
    remaining = n_views - int(active.sum())
    if remaining < 0:
        raise ValueError("scale misconfigured: active visitors exceed the event budget")
    # One candidate session per view is always enough; keep those that start before the visitor's views run out.
    owner = np.repeat(np.arange(cfg.n_active), active)
    first = np.cumsum(active) - active
    candidate = session_lengths(rng, len(owner), P_ACTIVE_ONE, P_ACTIVE_TWO)
    end = segment_cumsum(candidate, first, owner)
    keep = end - candidate < active[owner]
    active_views = np.minimum(end, active[owner])[keep] - (end - candidate)[keep]
    casual = session_lengths(rng, remaining + 1, P_CASUAL_ONE, P_CASUAL_TWO)  # counts >= 1: always enough
    total = np.cumsum(casual)
    n_casual = int(np.searchsorted(total, remaining, side="left")) + 1
    casual = casual[:n_casual]
    casual[-1] = remaining - (int(total[n_casual - 2]) if n_casual > 1 else 0)
    sessions_per_visitor = np.concatenate([np.bincount(owner[keep], minlength=cfg.n_active), np.ones(n_casual, dtype=np.int64)])
    return sessions_per_visitor, np.concatenate([active_views, casual])


def pick_tastes(rng: np.random.Generator, n_visitors: int, catalogue: Catalogue) -> tuple[np.ndarray, np.ndarray]:
    """1-3 taste categories per visitor (-1 = none) and their cumulative choice weights."""
    n_cats = len(catalogue.cat_id)
    tastes = rng.choice(n_cats, size=(n_visitors, 3), p=catalogue.cat_weight)
    n_tastes = 1 + rng.binomial(2, 0.4, size=n_visitors)
    weights = np.where(np.arange(3) < n_tastes[:, None], np.array([1.0, 0.5, 0.3]), 0.0)
    tastes = np.where(weights > 0, tastes, -1)
    cumweights = np.cumsum(weights, axis=1) / weights.sum(axis=1, keepdims=True)
    return tastes, cumweights


def step_kinds(rng: np.random.Generator, steps: ViewSteps) -> np.ndarray:
    """What each step does: TASTE/POPULAR jump, NEIGHBOUR move or RETURN to an earlier item."""
    u = rng.random(len(steps.position))
    p_return = np.where(steps.session_position < 2, 0.0, np.where(steps.session_end, P_RETURN_LAST, P_RETURN))
    move = (u - p_return) / (1.0 - p_return)  # uniform again among the steps that do not return
    inside = np.select([u < p_return, move < MOVE_SHARES[0], move < MOVE_SHARES[0] + MOVE_SHARES[1]],
                       [RETURN, NEIGHBOUR, TASTE], POPULAR)
    opening = np.select([u < P_RETURN_OPENING, u < 0.9], [RETURN, TASTE], POPULAR)
    first = np.where(u < 0.85, TASTE, POPULAR)
    kind = np.where(steps.session_start, opening, inside)
    return np.where(steps.position == 0, first, kind).astype(np.int8)


def walk(
    catalogue: Catalogue,
    steps_per_visitor: np.ndarray,
    step_offset: np.ndarray,
    kind: np.ndarray,
    jump_item: np.ndarray,
    neighbour_offset: np.ndarray,
    back: np.ndarray,
) -> np.ndarray:
    """Item index of every step. Loops over positions, vectorised over the visitors still walking."""
    order = np.argsort(-steps_per_visitor, kind="stable")
    first = step_offset[order]
    max_steps = int(steps_per_visitor.max())
    walking = len(order) - np.cumsum(np.bincount(steps_per_visitor, minlength=max_steps + 1))
    items = np.empty(len(kind), dtype=np.int64)
    for t in range(max_steps):
        idx = first[: walking[t]] + t
        new = jump_item[idx]
        if t > 0:
            prev = items[idx - 1]
            k = kind[idx]
            nb = k == NEIGHBOUR
            new[nb] = catalogue.ring_step(prev[nb], neighbour_offset[idx[nb]])
            rt = np.flatnonzero(k == RETURN)
            new[rt] = items[idx[rt] - back[idx[rt]]]
            # Never the current item again: that would be a repeat view, not a step.
            same = new == prev
            new[same] = catalogue.ring_step(prev[same], 1)
        items[idx] = new
    return items


def segment_cumsum(values: np.ndarray, segment_first: np.ndarray, segment_of: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at each segment (segments contiguous, `segment_first` their starts)."""
    total = np.cumsum(values)
    return total - total[segment_first][segment_of] + values[segment_first][segment_of]


def weighted_sample(
    rng: np.random.Generator, weight: np.ndarray, k: int, group: np.ndarray | None = None, cohesion: float = 0.0
) -> np.ndarray:
    """Sorted indices of k draws without replacement, probability growing with `weight` (Gumbel top-k).

    With `group`, a shared per-group noise term scaled by `cohesion` makes members of one group
    (a session) tend to be drawn together, so one checkout can hold several items.
    """
    eligible = np.flatnonzero(weight > 0)
    k = min(k, len(eligible))
    if k == 0:
        return np.empty(0, dtype=np.int64)
    key = np.log(weight[eligible]) + rng.gumbel(size=len(eligible))
    if group is not None:
        groups, inverse = np.unique(group[eligible], return_inverse=True)
        key = key + cohesion * rng.gumbel(size=len(groups))[inverse]
    return np.sort(eligible[np.argpartition(-key, k - 1)[:k]])


@dataclass(frozen=True)
class ViewSteps:
    """View events (visitor-major, in time order per visitor) grouped into steps and sessions."""

    n_visitors: int
    is_active: np.ndarray  # per visitor: from the heavy tail
    ev_visitor: np.ndarray  # per view event
    ev_step: np.ndarray  # per view event
    is_repeat: np.ndarray  # per view event: repeats the previous event's item
    visitor_first_event: np.ndarray  # per visitor
    step_first_event: np.ndarray  # per step
    step_visitor: np.ndarray  # per step
    steps_per_visitor: np.ndarray
    step_offset: np.ndarray  # per visitor: index of its first step
    position: np.ndarray  # per step: index within the visitor's steps
    session_position: np.ndarray  # per step: index within its session's steps
    session_start: np.ndarray  # per step
    session_end: np.ndarray  # per step: the last of its session
    step_session: np.ndarray  # per step: global session number
    opens_session: np.ndarray  # per view event

    @property
    def step_last_event(self) -> np.ndarray:
        """Per step: index of its last view event."""
        return np.concatenate([self.step_first_event[1:], [len(self.ev_visitor)]]) - 1


def repeat_flags(rng: np.random.Generator, session_views: np.ndarray, opens_session: np.ndarray) -> np.ndarray:
    """Which views repeat the previous view's item (never a session's first view).

    Each session has its own repeat propensity, Beta-distributed around a mean that falls with the
    session's length (short visits re-view one item, long ones browse), so repeats cluster in some
    sessions: a repeat is followed by another one about half the time, as in Retail Rocket.
    """
    mean = REPEAT_FLOOR + REPEAT_SHORT / session_views
    propensity = rng.beta(REPEAT_CONCENTRATION * mean, REPEAT_CONCENTRATION * (1.0 - mean))
    return (rng.random(len(opens_session)) < np.repeat(propensity, session_views)) & ~opens_session


def make_view_steps(rng: np.random.Generator, cfg: Scale, n_views: int) -> ViewSteps:
    """Visitors' sessions of views, and which views repeat the previous item (never a session's first)."""
    sessions_per_visitor, session_views = visitor_sessions(rng, cfg, n_views)
    n_visitors = len(sessions_per_visitor)
    session_visitor = np.repeat(np.arange(n_visitors), sessions_per_visitor)
    views_per_visitor = np.bincount(session_visitor, weights=session_views, minlength=n_visitors).astype(np.int64)
    ev_visitor = np.repeat(np.arange(n_visitors), views_per_visitor)
    visitor_first_event = np.concatenate([[0], np.cumsum(views_per_visitor)[:-1]])
    opens_session = np.zeros(n_views, dtype=bool)
    opens_session[np.cumsum(session_views) - session_views] = True
    is_repeat = repeat_flags(rng, session_views, opens_session)
    step_first_event = np.flatnonzero(~is_repeat)
    step_visitor = ev_visitor[step_first_event]
    steps_per_visitor = np.bincount(step_visitor, minlength=n_visitors)
    step_offset = np.concatenate([[0], np.cumsum(steps_per_visitor)[:-1]])
    position = np.arange(len(step_first_event)) - step_offset[step_visitor]
    session_start = opens_session[step_first_event]
    step_session = np.cumsum(session_start) - 1
    session_first_step = np.flatnonzero(session_start)
    return ViewSteps(
        n_visitors=n_visitors,
        is_active=np.arange(n_visitors) < cfg.n_active,
        ev_visitor=ev_visitor,
        ev_step=np.cumsum(~is_repeat) - 1,
        is_repeat=is_repeat,
        visitor_first_event=visitor_first_event,
        step_first_event=step_first_event,
        step_visitor=step_visitor,
        steps_per_visitor=steps_per_visitor,
        step_offset=step_offset,
        position=position,
        session_position=np.arange(len(step_first_event)) - session_first_step[step_session],
        session_start=session_start,
        session_end=np.append(session_start[1:], True),
        step_session=step_session,
        opens_session=opens_session,
    )


def walk_items(rng: np.random.Generator, catalogue: Catalogue, steps: ViewSteps, tastes: np.ndarray, taste_cum: np.ndarray) -> np.ndarray:
    """Item index of every step. Every move a step could make is drawn up front (vectorised);
    `walk` then resolves the moves that depend on earlier steps."""
    n_steps = len(steps.position)
    kind = step_kinds(rng, steps)
    taste_slot = (rng.random(n_steps)[:, None] > taste_cum[steps.step_visitor]).sum(axis=1)
    jump_cat = np.where(
        kind == POPULAR,
        np.searchsorted(np.cumsum(catalogue.cat_weight), rng.random(n_steps) * (1 - 1e-12)),
        tastes[steps.step_visitor, np.minimum(taste_slot, 2)],
    )
    jump_item = catalogue.draw_in_category(jump_cat, rng.random(n_steps))
    neighbour_offset = rng.choice(NEIGHBOUR_OFFSETS, size=n_steps, p=NEIGHBOUR_PROBS)
    # Within a session a return mostly goes back two steps (A B A) and stays in the session; a
    # new session's opening step returns further, into earlier sessions.
    inside_back = np.where(rng.random(n_steps) < P_BACK_TWO, 2, 2 + rng.geometric(P_BACK_FURTHER, n_steps))
    back = np.where(steps.session_start, np.minimum(rng.geometric(0.25, n_steps) + 1, steps.position),
                    np.minimum(inside_back, steps.session_position))
    return walk(catalogue, steps.steps_per_visitor, steps.step_offset, kind, jump_item, neighbour_offset, back)


def choose_purchases(
    rng: np.random.Generator, steps: ViewSteps, appeal: np.ndarray, n_cart: int, n_tx: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted step indices that get an add-to-cart, and that end in a purchase.

    At most one of each per (session, item); purchases mostly come from carted steps.
    """
    step_views = steps.step_last_event - steps.step_first_event + 1
    carted = weighted_sample(rng, appeal * np.minimum(step_views, 4), n_cart, steps.step_session, CART_COHESION)
    bought = carted[weighted_sample(
        rng, appeal[carted], round(n_tx * TRANSACTIONS_AFTER_CART), steps.step_session[carted], CHECKOUT_COHESION
    )]
    not_carted = appeal.copy()
    not_carted[carted] = 0.0
    bought_direct = weighted_sample(rng, not_carted, n_tx - len(bought))
    return carted, np.sort(np.concatenate([bought, bought_direct]))


def cart_times(rng: np.random.Generator, steps: ViewSteps, view_ts: np.ndarray, carted: np.ndarray) -> np.ndarray:
    """Add-to-cart time: shortly after the step's last view and before the visitor's next view."""
    last = steps.step_last_event[carted]
    following = np.minimum(last + 1, len(view_ts) - 1)
    same_visitor = (last + 1 < len(view_ts)) & (steps.ev_visitor[following] == steps.ev_visitor[last])
    next_gap = np.where(same_visitor, view_ts[following] - view_ts[last], CART_MAX_DELAY_MS)
    delay = np.floor(rng.uniform(0.2, 0.8, len(carted)) * np.minimum(next_gap, CART_MAX_DELAY_MS))
    return view_ts[last] + delay.astype(np.int64)


def checkouts(
    rng: np.random.Generator, steps: ViewSteps, view_ts: np.ndarray, bought: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per purchase: transaction id and checkout time. Items bought in one session share both;
    checkout follows the session's last view (and any add-to-cart) by 2.5-7.5 minutes."""
    sessions, group = np.unique(steps.step_session[bought], return_inverse=True)
    session_last_step = np.concatenate([np.flatnonzero(steps.session_start)[1:], [len(steps.position)]]) - 1
    checkout_ts = view_ts[steps.step_last_event[session_last_step[sessions]]]
    checkout_ts = checkout_ts + rng.integers(150_000, 450_000, size=len(sessions))
    transaction_ids = rng.permutation(len(sessions)).astype(np.int64) + 1
    return transaction_ids[group], checkout_ts[group]


def make_events(rng: np.random.Generator, cfg: Scale, catalogue: Catalogue, available: np.ndarray) -> pl.DataFrame:
    """events.csv as a frame, sorted by time: views from the visitors' walks, carts and purchases,
    and views of bought items after their purchase."""
    n_tx = round(cfg.n_events * REAL_TRANSACTIONS / REAL_EVENTS)
    n_cart = round(cfg.n_events * REAL_ADDTOCARTS / REAL_EVENTS)
    n_after = round(n_tx * P_VIEW_AFTER_PURCHASE)
    n_views = cfg.n_events - n_cart - n_tx - n_after  # views of the walks

    steps = make_view_steps(rng, cfg, n_views)
    tastes, taste_cum = pick_tastes(rng, steps.n_visitors, catalogue)
    step_item = walk_items(rng, catalogue, steps, tastes, taste_cum)
    view_ts = view_timestamps(rng, steps.ev_visitor, steps.visitor_first_event, steps.is_repeat,
                              steps.opens_session, steps.is_active)

    # Appeal of carting/buying a step's item: taste match and item quality. Only the first step
    # per (session, item) qualifies, and an item unavailable at the time only rarely (a hard
    # filter rather than a weight, so session clustering cannot override it).
    _, first_in_session = np.unique(steps.step_session * len(catalogue.itemid) + step_item, return_index=True)
    taste_match = (catalogue.item_cat[step_item][:, None] == tastes[steps.step_visitor]).any(axis=1)
    available_now = available[step_item, snapshot_index(view_ts[steps.step_first_event])]
    qualifies = np.zeros(len(step_item), dtype=bool)
    qualifies[first_in_session] = True
    qualifies &= available_now | (rng.random(len(step_item)) < P_BUY_UNAVAILABLE)
    appeal = np.where(qualifies, catalogue.quality[step_item] * np.where(taste_match, 3.0, 1.0), 0.0)
    carted, bought = choose_purchases(rng, steps, appeal, n_cart, n_tx)
    transactionid, checkout_ts = checkouts(rng, steps, view_ts, bought)
    revisited = rng.choice(len(bought), size=n_after, replace=len(bought) < n_after)
    low, high = VIEW_AFTER_PURCHASE_MS
    high = np.clip(T1_MS - checkout_ts[revisited], low, high)  # within the log
    delay = np.exp(np.log(low) + rng.random(n_after) * np.log(high / low))
    revisit_ts = np.minimum(checkout_ts[revisited] + delay.astype(np.int64), T1_MS)

    visitorid = rng.permutation(steps.n_visitors).astype(np.int64) + 1  # ids do not reveal activity
    ts = np.concatenate([view_ts, revisit_ts, cart_times(rng, steps, view_ts, carted), checkout_ts])
    visitor = np.concatenate([steps.ev_visitor, steps.step_visitor[bought[revisited]],
                              steps.step_visitor[carted], steps.step_visitor[bought]])
    item = np.concatenate([step_item[steps.ev_step], step_item[bought[revisited]], step_item[carted], step_item[bought]])
    n_all_views = n_views + n_after
    event = np.repeat(np.array([VIEW, ADDTOCART, TRANSACTION], dtype=np.int8), [n_all_views, len(carted), len(bought)])
    txid = np.concatenate([np.full(n_all_views + len(carted), -1, dtype=np.int64), transactionid])
    order = np.lexsort((item, event, visitor, ts))
    frame = pl.DataFrame({
        "timestamp": ts[order].astype(np.int64),
        "visitorid": visitorid[visitor[order]],
        "event": pl.Series(EVENT_NAMES).gather(event[order]),
        "itemid": catalogue.itemid[item[order]],
        "transactionid": txid[order],
    })
    return frame.with_columns(
        pl.when(pl.col("transactionid") >= 0).then(pl.col("transactionid")).alias("transactionid")
    )


def view_timestamps(
    rng: np.random.Generator,
    ev_visitor: np.ndarray,
    visitor_first_event: np.ndarray,
    is_repeat: np.ndarray,
    opens_session: np.ndarray,
    is_active: np.ndarray,
) -> np.ndarray:
    """Millisecond times of the view events: bursts (seconds to minutes apart) spread over days/weeks."""
    n = len(ev_visitor)
    repeat_gap = np.clip(rng.lognormal(np.log(15e3), 0.8, n), 2e3, 600e3)
    browse_gap = np.clip(rng.lognormal(np.log(40e3), 0.9, n), 3e3, 1_200e3)
    gap = np.where(is_repeat, repeat_gap, browse_gap)
    # Session openings split the visitor's span (log-uniform: hours to ~3 months) at random.
    boundary = opens_session & ~is_repeat
    boundary[visitor_first_event] = False
    n_visitors = len(visitor_first_event)
    share = np.where(boundary, rng.exponential(1.0, n), 0.0)
    share_total = np.bincount(ev_visitor, weights=share, minlength=n_visitors)
    log_span = np.where(
        is_active,
        rng.uniform(np.log(86_400e3), np.log(100 * 86_400e3), n_visitors),
        rng.uniform(np.log(3_600e3), np.log(30 * 86_400e3), n_visitors),
    )
    span = np.exp(log_span)
    session_gap = MIN_SESSION_GAP_MS + span[ev_visitor] * share / np.maximum(share_total[ev_visitor], 1e-9)
    gap = np.where(boundary, session_gap, gap)
    gap[visitor_first_event] = 0.0
    total = np.bincount(ev_visitor, weights=gap, minlength=n_visitors)
    room = float(T1_MS - T0_MS) - 600e3  # checkouts land up to 7.5 minutes after the last view
    squeeze = np.minimum(1.0, room / np.maximum(total, 1.0))  # rare: a span longer than the log
    gap = gap * squeeze[ev_visitor]
    start = T0_MS + 60e3 + rng.random(n_visitors) * (room - total * squeeze)
    return np.floor(start[ev_visitor] + segment_cumsum(gap, visitor_first_event, ev_visitor)).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Item properties and the category tree


def make_item_properties(rng: np.random.Generator, catalogue: Catalogue, available: np.ndarray) -> pl.DataFrame:
    """item_properties rows: the first snapshot has every property, later ones only changes.

    Rows come in a seeded random order (as in the real files), to be split half/half.
    """
    n = len(catalogue.itemid)
    snapshot_ts = T0_MS + WEEK_MS * np.arange(N_SNAPSHOTS, dtype=np.int64)
    category = np.repeat(catalogue.cat_id[catalogue.item_cat][:, None], N_SNAPSHOTS, axis=1)
    movers = np.flatnonzero(rng.random(n) < P_CATEGORY_CHANGE)
    move_week = rng.integers(1, N_SNAPSHOTS, size=len(movers))
    n_cats = len(catalogue.cat_id)
    shift = rng.integers(1, max(n_cats, 2), size=len(movers))  # any other used category
    new_cat = catalogue.cat_id[(catalogue.item_cat[movers] + shift) % n_cats]
    category[movers] = np.where(np.arange(N_SNAPSHOTS) >= move_week[:, None], new_cat[:, None], category[movers])
    price = 12 * np.rint(rng.lognormal(np.log(250), 1.0, size=(n, N_SNAPSHOTS))).astype(np.int64)
    price_changes = rng.random((n, N_SNAPSHOTS)) < P_PRICE_CHANGE
    price_changes[:, 0] = True
    # Carry each price forward to the next change.
    last_change = np.maximum.accumulate(np.where(price_changes, np.arange(N_SNAPSHOTS), 0), axis=1)
    price = np.take_along_axis(price, last_change, axis=1)

    frames = []
    for name, values in (("categoryid", category), ("available", available.astype(np.int64)), ("790", price)):
        item_idx, week = first_and_changes(values)
        value = pl.Series(values[item_idx, week]).cast(pl.String)
        if name == "790":  # prices look like `n5040.000`
            value = "n" + value + ".000"
        frames.append(property_rows(snapshot_ts[week], catalogue.itemid[item_idx], name, value))
    frames.extend(static_properties(rng, catalogue, snapshot_ts[0]))
    rows = pl.concat(frames, how="vertical")
    return rows[rng.permutation(rows.height)]


def first_and_changes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(item index, snapshot index) of each item's first snapshot and of every change after it."""
    mask = np.ones_like(values, dtype=bool)
    mask[:, 1:] = values[:, 1:] != values[:, :-1]
    return np.nonzero(mask)


def property_rows(ts: np.ndarray, itemid: np.ndarray, name: str, value: pl.Series) -> pl.DataFrame:
    """Rows `timestamp,itemid,property,value` for one property."""
    return pl.DataFrame({"timestamp": ts, "itemid": itemid, "value": value}).select(
        "timestamp", "itemid", pl.lit(name).alias("property"), "value"
    )


def static_properties(rng: np.random.Generator, catalogue: Catalogue, ts: int) -> list[pl.DataFrame]:
    """Opaque properties recorded once, in the real data's style: hashed tokens and `n<number>.000`."""
    n = len(catalogue.itemid)
    vocab = rng.choice(np.arange(100_000, 1_400_000), size=2_000, replace=False)

    def tokens() -> pl.Series:
        return pl.Series(vocab[rng.integers(0, len(vocab), n)]).cast(pl.String)

    def numbers() -> pl.Series:
        return "n" + pl.Series(12 * rng.integers(1, 500, n)).cast(pl.String) + ".000"

    # Property 364 is category-like: items of one category share a few values.
    per_category = pl.Series(vocab[(catalogue.item_cat * 7 + rng.integers(0, 3, n)) % len(vocab)]).cast(pl.String)
    at_first = np.full(n, ts, dtype=np.int64)
    return [
        property_rows(at_first, catalogue.itemid, "888", tokens() + " " + numbers() + " " + tokens()),
        property_rows(at_first, catalogue.itemid, "283", tokens() + " " + tokens() + " " + numbers() + " " + tokens()),
        property_rows(at_first, catalogue.itemid, "364", per_category),
        property_rows(at_first, catalogue.itemid, "6", tokens() + " " + tokens()),
    ]


def write_category_tree(categories: Categories, path: Path, rng: np.random.Generator) -> None:
    """category_tree.csv, `categoryid,parentid` with an empty parentid for roots, in seeded order."""
    order = rng.permutation(len(categories.categoryid))
    frame = pl.DataFrame({
        "categoryid": categories.categoryid[order].astype(np.int64),
        "parentid": categories.parent[order].astype(np.int64),
    }).with_columns(pl.when(pl.col("parentid") >= 0).then(pl.col("parentid")).alias("parentid"))
    frame.write_csv(path, null_value="")
