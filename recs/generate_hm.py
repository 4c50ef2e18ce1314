"""Deterministic generator of H&M Personalized Fashion Recommendations-format CSVs.

`generate_hm(out, scale, seed)` writes `transactions_train.csv` (t_dat, customer_id,
article_id, price, sales_channel_id), `articles.csv` (the 25 Kaggle columns) and
`customers.csv` (the 7 Kaggle columns) in the exact Kaggle formats: customer ids are 64 hex
digits, article ids 10 digits with a leading zero (product code * 1000 + colour variant), a
purchase of several units is several identical rows. Same seed -> byte-identical files.

Everything is vectorised numpy (no loop over customers or rows; the only loops run over a
handful of pointer-jumping passes and over output chunks) and the CSVs are written by polars
in chunks of rows, so `full` (H&M's shape: ~31.8M rows over two years, ~1.37M customers,
~105K articles) is generated in minutes with a few GB of memory.

Behaviour model (what a recommender can learn; tests/test_generate_hm.py measures it):
- Catalogue: index groups -> sections -> product types (the ingest's category tree); products
  (product_code) come in 1-6 colours (articles). Each product is launched on some day (its
  sales decay over ~4 months after it) and half of them are seasonal (sales peak around a day
  of the year, e.g. swimwear in summer); popularity is log-normal.
- Customers: a segment (index group), 1-3 favourite sections (mostly of that segment), 1-2
  favourite colours and a preferred sales channel; basket counts are heavy-tailed (a few
  customers buy hundreds of times, ~0.7% of customers.csv never buy).
- Days: volume follows a yearly season, a growing trend, a Black-Friday spike and a weekly
  rhythm (Fridays and Saturdays ~1.4x Tuesdays).
- Rows of a basket: after the first basket, REPURCHASE_SHARE of the rows buy an article the
  customer bought before (recent baskets favoured), SAME_PRODUCT_SHARE another colour of a
  product bought before; the rest are fresh picks: a favourite section, weighted by the
  articles' popularity in the basket's 4-week period (launch + season), in a favourite colour
  COLOUR_SHARE of the time. UNIT_SHARE of the rows are bought as 2-3 units (repeated rows).
- File order: by day; a basket's rows are adjacent, baskets of one day in random order.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

FIRST_DAY = date(2018, 9, 20)  # H&M's first t_dat (a Thursday)
N_DAYS = 730  # two years: 2018-09-20 .. 2020-09-18
PERIOD_DAYS = 28  # popularity is recomputed every 4 weeks
N_PERIODS = -(-N_DAYS // PERIOD_DAYS)
WEEKDAY_FACTOR = np.array([0.95, 0.85, 0.9, 1.0, 1.2, 1.3, 1.05])  # Monday .. Sunday
REPURCHASE_SHARE = 0.15  # rows after the first basket that re-buy an article bought before
SAME_PRODUCT_SHARE = 0.12  # ... that buy another colour of a product bought before
COLOUR_SHARE = 0.45  # fresh picks restricted to a favourite colour (when the section has one)
UNIT_SHARE = (0.07, 0.02)  # rows bought as 2 units, as 3 units
NEVER_BUY_SHARE = 0.007  # customers.csv rows without a transaction
BASKET_P, BASKET_BIG_P, BASKET_BIG_MAX = 0.62, 0.15, 5  # basket rows: geometric(p) + sometimes 1-5 more
MEAN_BASKET_ROWS = 1 / BASKET_P + BASKET_BIG_P * (1 + BASKET_BIG_MAX) / 2
LAUNCH_DECAY_DAYS = 120.0
SEASONAL_SHARE = 0.5
PRICE_UNIT = 7_000.0  # H&M's prices are scaled: SEK / PRICE_UNIT gives its mean of ~0.028
CHUNK_ROWS = 2_000_000  # rows of transactions_train.csv formatted and written at once

# Index groups (H&M's index_group_no / name), their index (index_code / name) and share of customers.
INDEX_GROUPS = (
    (1, "A", "Ladieswear", 0.38, 18),  # ..., sections
    (2, "D", "Divided", 0.16, 8),
    (3, "F", "Menswear", 0.14, 10),
    (4, "H", "Baby/Children", 0.22, 14),
    (26, "S", "Sport", 0.10, 6),
)
PRODUCT_GROUPS = ("Garment Upper body", "Garment Lower body", "Garment Full body", "Underwear", "Accessories",
                  "Shoes", "Swimwear", "Socks & Tights", "Nightwear")
N_PRODUCT_TYPES = 130
N_COLOURS = 50


@dataclass(frozen=True)
class HmScale:
    """Size of one generated H&M data set."""

    n_customers: int  # rows of customers.csv
    n_articles: int  # about: articles.csv holds whole products
    n_rows: int  # about: rows of transactions_train.csv


HM_SCALES: dict[str, HmScale] = {
    "tiny": HmScale(1_200, 700, 30_000),
    "small": HmScale(40_000, 12_000, 900_000),
    "full": HmScale(1_371_980, 105_542, 31_788_324),  # H&M's shape
}


@dataclass(frozen=True)
class Catalogue:
    """Articles in product order (a product's colours are contiguous)."""

    product_code: np.ndarray  # per product: int (article_id = product_code * 1000 + variant)
    product_section: np.ndarray  # per product: section index
    product_type: np.ndarray  # per product: product type index
    product_first: np.ndarray  # per product: its first article
    product_colours: np.ndarray  # per product: its number of articles
    article_product: np.ndarray  # per article: product index
    article_colour: np.ndarray  # per article: colour index
    article_variant: np.ndarray  # per article: variant number (last 3 digits of article_id)
    article_price: np.ndarray  # per article: base price (H&M's scaled units)
    weights: np.ndarray  # [articles, periods] sales weight per 4-week period
    section_group: np.ndarray  # per section: index group index
    section_no: np.ndarray  # per section: section_no
    type_no: np.ndarray  # per product type: product_type_no
    type_group: np.ndarray  # per product type: product group index

    @property
    def n_articles(self) -> int:
        return len(self.article_product)


def generate_hm(out: Path, scale: str = "small", seed: int = 0) -> dict:
    """Write transactions_train.csv, articles.csv and customers.csv into `out` (created if
    missing); return summary counts."""
    if scale not in HM_SCALES:
        raise ValueError(f"unknown scale {scale!r}: choose one of {sorted(HM_SCALES)}")
    started = time.perf_counter()
    cfg = HM_SCALES[scale]
    rng = np.random.default_rng([seed, 20180920])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    catalogue = make_catalogue(rng, cfg)
    customers = make_customers(rng, cfg, catalogue)
    rows = make_transactions(rng, cfg, catalogue, customers)
    customer_ids = hex_ids(rng, cfg.n_customers)
    write_articles(catalogue, out / "articles.csv", rng)
    write_customers(customers, customer_ids, out / "customers.csv", rng)
    write_transactions(rows, catalogue, customer_ids, out / "transactions_train.csv")
    return {
        "out": str(out), "scale": scale, "seed": seed, "format": "hm",
        "rows": int(len(rows["day"])),
        "customers": cfg.n_customers,
        "buying_customers": int(len(np.unique(rows["customer"]))),
        "articles": catalogue.n_articles,
        "products": len(catalogue.product_code),
        "first_day": str(FIRST_DAY),
        "last_day": str(FIRST_DAY + timedelta(days=int(rows["day"].max()))),
        "seconds": round(time.perf_counter() - started, 3),
    }


# ---------------------------------------------------------------------------------------------
# Catalogue and customers


def make_catalogue(rng: np.random.Generator, cfg: HmScale) -> Catalogue:
    """Sections, product types, products and their colour variants, with per-period sales weights."""
    section_group = np.concatenate([np.full(n, g) for g, (*_, n) in enumerate(INDEX_GROUPS)])
    n_sections = len(section_group)
    section_no = np.sort(rng.choice(np.arange(2, 99), n_sections, replace=False))
    type_no = np.sort(rng.choice(np.arange(49, 763), N_PRODUCT_TYPES, replace=False))
    type_group = rng.integers(0, len(PRODUCT_GROUPS), N_PRODUCT_TYPES)
    # Each section sells 6-14 product types.
    section_types = [rng.choice(N_PRODUCT_TYPES, rng.integers(6, 15), replace=False) for _ in range(n_sections)]

    n_colours_per_product = np.minimum(1 + rng.geometric(0.55, size=cfg.n_articles), 6)
    cum = np.cumsum(n_colours_per_product)
    n_products = int(np.searchsorted(cum, cfg.n_articles) + 1)
    colours = n_colours_per_product[:n_products]
    section_weight = rng.lognormal(0.0, 0.6, n_sections)
    product_section = rng.choice(n_sections, n_products, p=section_weight / section_weight.sum())
    type_pick = rng.random(n_products)
    product_type = _pick_types(section_types, product_section, type_pick)
    product_code = np.sort(rng.choice(np.arange(108_775, 959_462), n_products, replace=False))
    first = np.concatenate([[0], np.cumsum(colours)[:-1]])
    n_articles = int(colours.sum())
    article_product = np.repeat(np.arange(n_products), colours)
    article_variant = (np.arange(n_articles) - first[article_product]) * 2 + 1 + rng.integers(0, 2, n_articles)
    colour_weight = 1.0 / np.arange(1, N_COLOURS + 1) ** 0.9
    article_colour = rng.choice(N_COLOURS, n_articles, p=colour_weight / colour_weight.sum())
    price_sek = np.round(rng.lognormal(np.log(200), 0.6, n_products) / 10) * 10 - 0.01
    article_price = np.maximum(price_sek, 9.99)[article_product] / PRICE_UNIT

    # Sales weight per period: popularity x launch decay x season.
    popularity = rng.lognormal(0.0, 1.1, n_products)
    launch = rng.uniform(-240, N_DAYS - 20, n_products)
    seasonal = rng.random(n_products) < SEASONAL_SHARE
    peak = rng.uniform(0, 365, n_products)
    mid = (np.arange(N_PERIODS) + 0.5) * PERIOD_DAYS
    age = mid[None, :] - launch[:, None]
    decay = np.where(age >= 0, 0.15 + np.exp(-np.maximum(age, 0) / LAUNCH_DECAY_DAYS), 0.0)
    doy = (mid + (FIRST_DAY.timetuple().tm_yday - 1)) % 365
    phase = np.cos(2 * np.pi * (doy[None, :] - peak[:, None]) / 365)
    season = np.where(seasonal[:, None], np.exp(1.6 * (phase - 1)), 1.0)
    product_weights = popularity[:, None] * decay * season
    article_appeal = rng.lognormal(0.0, 0.5, n_articles)
    weights = product_weights[article_product] * article_appeal[:, None]
    return Catalogue(product_code, product_section, product_type, first, colours, article_product, article_colour,
                     article_variant, article_price, weights, section_group, section_no, type_no, type_group)


def _pick_types(section_types: list[np.ndarray], product_section: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Product type of each product: a uniform pick among its section's types (vectorised)."""
    lengths = np.array([len(t) for t in section_types])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    flat = np.concatenate(section_types)
    return flat[starts[product_section] + (u * lengths[product_section]).astype(np.int64)]


@dataclass(frozen=True)
class Customers:
    segment: np.ndarray  # index group index
    sections: np.ndarray  # [n, 3] favourite sections (repeats when fewer)
    colours: np.ndarray  # [n, 2] favourite colours
    p_online: np.ndarray
    n_baskets: np.ndarray
    age: np.ndarray


def make_customers(rng: np.random.Generator, cfg: HmScale, catalogue: Catalogue) -> Customers:
    """Tastes, channel preference and heavy-tailed basket counts."""
    n = cfg.n_customers
    shares = np.array([g[3] for g in INDEX_GROUPS])
    segment = rng.choice(len(INDEX_GROUPS), n, p=shares)
    sections_of = [np.flatnonzero(catalogue.section_group == g) for g in range(len(INDEX_GROUPS))]
    lengths = np.array([len(s) for s in sections_of])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    flat = np.concatenate(sections_of)
    in_segment = flat[starts[segment][:, None] + (rng.random((n, 3)) * lengths[segment][:, None]).astype(np.int64)]
    anywhere = rng.integers(0, len(catalogue.section_group), (n, 3))
    sections = np.where(rng.random((n, 3)) < 0.8, in_segment, anywhere)
    k = rng.choice([1, 2, 3], n, p=[0.3, 0.4, 0.3])
    sections = np.where(np.arange(3)[None, :] < k[:, None], sections, sections[:, :1])
    colour_weight = 1.0 / np.arange(1, N_COLOURS + 1) ** 0.9
    colours = rng.choice(N_COLOURS, (n, 2), p=colour_weight / colour_weight.sum())
    raw = rng.lognormal(1.2, 1.15, n)
    buys = rng.random(n) >= NEVER_BUY_SHARE
    target_baskets = cfg.n_rows / (MEAN_BASKET_ROWS * (1 + UNIT_SHARE[0] + 2 * UNIT_SHARE[1]))
    factor = target_baskets / raw[buys].sum()
    for _ in range(3):  # every buyer has >= 1 basket: rescale the rest to keep the total
        factor *= target_baskets / np.maximum(raw[buys] * factor, 1.0).sum()
    n_baskets = np.where(buys, np.maximum(np.floor(raw * factor + rng.random(n)), 1), 0).astype(np.int64)
    age = np.clip(np.round(rng.gamma(4.0, 9.0, n) + 16), 16, 99).astype(np.int64)
    return Customers(segment, sections, colours, rng.beta(2.0, 1.2, n), n_baskets, age)


def day_weights() -> np.ndarray:
    """Relative volume of each day: yearly season, trend, Black Friday, weekly rhythm."""
    days = np.arange(N_DAYS)
    dates = FIRST_DAY.toordinal() + days
    weekday = (dates - 1) % 7  # date.fromordinal(1) is a Monday
    doy = (days + FIRST_DAY.timetuple().tm_yday - 1) % 365
    season = 1.0 + 0.25 * np.cos(2 * np.pi * (doy - 170) / 365)  # summer high
    trend = 1.0 + 0.15 * days / N_DAYS
    black_friday = np.isin(days, [date(2018, 11, 23).toordinal() - FIRST_DAY.toordinal(),
                                  date(2019, 11, 29).toordinal() - FIRST_DAY.toordinal()])
    return season * trend * WEEKDAY_FACTOR[weekday] * np.where(black_friday, 2.5, 1.0)


# ---------------------------------------------------------------------------------------------
# Transactions


class PeriodSampler:
    """Inverse-CDF draws of an article of a group, weighted by the period's sales weights.

    One flat cumulative array over (group, period, article of the group): block b = (g, p) holds
    values in (b, b + 1], so a draw is one searchsorted for every row at once."""

    def __init__(self, group_of_article: np.ndarray, n_groups: int, weights: np.ndarray) -> None:
        self.order = np.argsort(group_of_article, kind="stable")
        self.count = np.bincount(group_of_article, minlength=n_groups)
        self.start = np.concatenate([[0], np.cumsum(self.count)[:-1]])
        w = weights[self.order]  # [A, P] in group order
        group = group_of_article[self.order]
        blocks = []
        totals = np.zeros((n_groups, N_PERIODS))
        for p in range(N_PERIODS):  # P ~ 27 passes, each vectorised over all articles
            col = w[:, p]
            cum = np.cumsum(col)
            base = np.concatenate([[0.0], cum])[self.start[group]]
            within = cum - base
            totals[:, p] = np.bincount(group, weights=col, minlength=n_groups)
            blocks.append((group, within))
        self.totals = totals
        # Layout (group, period, j): value = block id + within / total.
        n_p = N_PERIODS
        values = np.empty(len(group) * n_p)
        j = np.arange(len(group)) - self.start[group]
        for p, (g, within) in enumerate(blocks):
            total = totals[g, p]
            frac = np.where(total > 0, within / np.where(total > 0, total, 1.0), 0.0)
            pos = self.start[g] * n_p + p * self.count[g] + j
            values[pos] = (g * n_p + p) + frac
        self.values = values

    def has(self, group: np.ndarray, period: np.ndarray) -> np.ndarray:
        return self.totals[group, period] > 0

    def draw(self, group: np.ndarray, period: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Article index per row (rows where `has` is False get an arbitrary article of the group)."""
        block = group * N_PERIODS + period
        pos = np.searchsorted(self.values, block + np.clip(u, 1e-12, 1 - 1e-12), side="left")
        lo = self.start[group] * N_PERIODS + period * self.count[group]
        j = np.clip(pos - lo, 0, np.maximum(self.count[group] - 1, 0))
        return self.order[np.minimum(self.start[group] + j, len(self.order) - 1)]


def _resolve(ref: np.ndarray) -> np.ndarray:
    """Root of every row's reference chain (ref[i] == i at a root) by pointer jumping."""
    root = ref.copy()
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            return root
        root = nxt


def make_transactions(rng: np.random.Generator, cfg: HmScale, catalogue: Catalogue,
                      customers: Customers) -> dict[str, np.ndarray]:
    """Every row (customer, article, day, channel, price), in customer-major time order."""
    n_baskets = customers.n_baskets
    basket_customer = np.repeat(np.arange(cfg.n_customers, dtype=np.int32), n_baskets)
    dw = day_weights()
    basket_day = np.searchsorted(np.cumsum(dw) / dw.sum(), rng.random(len(basket_customer))).astype(np.int16)
    basket_day = np.minimum(basket_day, N_DAYS - 1)
    order = np.lexsort((basket_day, basket_customer))
    basket_day = basket_day[order]  # customer-major, in time order
    n_b = len(basket_customer)
    size = np.minimum(rng.geometric(BASKET_P, n_b) + (rng.random(n_b) < BASKET_BIG_P)
                      * rng.integers(1, BASKET_BIG_MAX + 1, n_b), 30)
    online = rng.random(len(basket_customer)) < customers.p_online[basket_customer]
    # Rows: customer-major; a row's "previous rows" are its customer's rows of earlier baskets.
    n_rows = int(size.sum())
    row_basket = np.repeat(np.arange(len(size), dtype=np.int64), size)
    cust = basket_customer[row_basket]
    cust_rows = np.bincount(cust, minlength=cfg.n_customers)
    cust_first = np.concatenate([[0], np.cumsum(cust_rows)[:-1]])
    basket_first_row = np.concatenate([[0], np.cumsum(size)[:-1]])
    prev = basket_first_row[row_basket] - cust_first[cust]  # rows of earlier baskets
    u = rng.random(n_rows)
    kind = np.where(prev == 0, 0, np.where(u < REPURCHASE_SHARE, 1,
                                           np.where(u < REPURCHASE_SHARE + SAME_PRODUCT_SHARE, 2, 0)))
    rows = np.arange(n_rows, dtype=np.int64)
    ref_pos = np.floor(prev * np.sqrt(rng.random(n_rows))).astype(np.int64)  # recent baskets favoured
    ref = np.where(kind > 0, cust_first[cust] + np.minimum(ref_pos, np.maximum(prev - 1, 0)), rows)

    # Fresh picks: a favourite section, the basket's period, a favourite colour some of the time.
    day = basket_day[row_basket].astype(np.int64)
    period = day // PERIOD_DAYS
    section = customers.sections[cust, rng.integers(0, 3, n_rows)]
    colour = customers.colours[cust, rng.integers(0, 2, n_rows)]
    n_sections = len(catalogue.section_group)
    art_section = catalogue.product_section[catalogue.article_product]
    by_section = PeriodSampler(art_section, n_sections, catalogue.weights)
    by_colour = PeriodSampler(art_section * N_COLOURS + catalogue.article_colour, n_sections * N_COLOURS,
                              catalogue.weights)
    anywhere = PeriodSampler(np.zeros(catalogue.n_articles, np.int64), 1, catalogue.weights)
    fresh = kind == 0
    article = np.full(n_rows, -1, np.int64)
    f_rows = np.flatnonzero(fresh)
    f_sec, f_per, f_col = section[f_rows], period[f_rows], colour[f_rows]
    use_colour = (rng.random(len(f_rows)) < COLOUR_SHARE) & by_colour.has(f_sec * N_COLOURS + f_col, f_per)
    use_section = ~use_colour & by_section.has(f_sec, f_per)
    uf = rng.random(len(f_rows))
    pick = anywhere.draw(np.zeros(len(f_rows), np.int64), f_per, uf)
    pick = np.where(use_section, by_section.draw(f_sec, f_per, uf), pick)
    pick = np.where(use_colour, by_colour.draw(f_sec * N_COLOURS + f_col, f_per, uf), pick)
    article[f_rows] = pick

    # Same product, other colour: the product of the chain's fresh root, a different variant.
    root = _resolve(ref)
    same = np.flatnonzero(kind == 2)
    root_article = article[root[same]]
    product = catalogue.article_product[root_article]
    n_col = catalogue.product_colours[product]
    offset = np.where(n_col > 1, 1 + (rng.random(len(same)) * (n_col - 1)).astype(np.int64), 0)
    article[same] = catalogue.product_first[product] + (root_article - catalogue.product_first[product] + offset) % n_col
    # Repurchases copy their reference's article (fresh or same-product rows end the chain).
    rep_ref = np.where(kind == 1, ref, rows)
    article = article[_resolve(rep_ref)]

    # Several units: repeated rows.
    units = 1 + (rng.random(n_rows) < UNIT_SHARE[0] + UNIT_SHARE[1]).astype(np.int64) \
        + (rng.random(n_rows) < UNIT_SHARE[1]).astype(np.int64)
    take = np.repeat(rows, units)
    price = catalogue.article_price[article]
    sale = np.isin(((day + FIRST_DAY.timetuple().tm_yday - 1) % 365) // 15, [0, 12])  # January, early July
    price = np.where(sale & (rng.random(n_rows) < 0.5), np.round(price * 0.7 * PRICE_UNIT) / PRICE_UNIT, price)
    return {"customer": cust[take].astype(np.int32), "article": article[take].astype(np.int32),
            "day": day[take].astype(np.int16), "channel": np.where(online[row_basket], 2, 1)[take].astype(np.int8),
            "price": price[take], "basket": row_basket[take]}


# ---------------------------------------------------------------------------------------------
# Writing


def hex_ids(rng: np.random.Generator, n: int) -> pl.Series:
    """n distinct 64-hex-digit ids (random, like H&M's hashed customer ids)."""
    digits = np.frombuffer(b"0123456789abcdef", np.uint8)
    raw = rng.integers(0, 16, (n, 64), dtype=np.uint8)
    text = digits[raw].view("S64").ravel()
    return pl.Series("customer_id", text).cast(pl.String)


def article_ids(catalogue: Catalogue) -> pl.Series:
    """article_id strings: product_code * 1000 + variant, zero-padded to 10 digits."""
    ids = catalogue.product_code[catalogue.article_product].astype(np.int64) * 1000 + catalogue.article_variant
    return pl.Series("article_id", ids).cast(pl.String).str.zfill(10)


def write_transactions(rows: dict[str, np.ndarray], catalogue: Catalogue, customer_ids: pl.Series,
                       path: Path, chunk_rows: int = CHUNK_ROWS) -> None:
    """transactions_train.csv sorted by day, each basket's rows adjacent, baskets in random order."""
    n_baskets = int(rows["basket"].max()) + 1 if len(rows["basket"]) else 0
    shuffle = np.random.default_rng([n_baskets, 7]).permutation(n_baskets)
    key = rows["day"].astype(np.int64) * max(n_baskets, 1) + shuffle[rows["basket"]]
    order = np.argsort(key, kind="stable")
    days = pl.Series("t_dat", [str(FIRST_DAY + timedelta(days=d)) for d in range(N_DAYS)])
    articles = article_ids(catalogue)
    with open(path, "wb") as fh:
        fh.write(b"t_dat,customer_id,article_id,price,sales_channel_id\n")
        for start in range(0, len(order), chunk_rows):
            idx = order[start:start + chunk_rows]
            pl.DataFrame({
                "t_dat": days.gather(rows["day"][idx].astype(np.int64)),
                "customer_id": customer_ids.gather(rows["customer"][idx]),
                "article_id": articles.gather(rows["article"][idx]),
                "price": rows["price"][idx],
                "sales_channel_id": rows["channel"][idx],
            }).write_csv(fh, include_header=False)


COLOUR_NAMES = ("Black", "White", "Dark Blue", "Light Pink", "Grey", "Blue", "Beige", "Light Beige", "Dark Grey",
                "Light Blue")


def write_articles(catalogue: Catalogue, path: Path, rng: np.random.Generator) -> None:
    """articles.csv with H&M's 25 columns (codes consistent with the catalogue, names synthetic)."""
    a = catalogue.article_product
    section = catalogue.product_section[a]
    group = catalogue.section_group[section]
    ptype = catalogue.product_type[a]
    colour = catalogue.article_colour
    colour_names = np.array([COLOUR_NAMES[c] if c < len(COLOUR_NAMES) else f"Colour {c}" for c in range(N_COLOURS)])
    group_no = np.array([g[0] for g in INDEX_GROUPS])[group]
    n = catalogue.n_articles
    frame = pl.DataFrame({
        "article_id": article_ids(catalogue),
        "product_code": pl.Series(catalogue.product_code[a]).cast(pl.String).str.zfill(7),
        "prod_name": [f"Product {c}" for c in catalogue.product_code[a]],
        "product_type_no": catalogue.type_no[ptype],
        "product_type_name": [f"Type {t}" for t in catalogue.type_no[ptype]],
        "product_group_name": np.array(PRODUCT_GROUPS)[catalogue.type_group[ptype]],
        "graphical_appearance_no": 1010016 + rng.integers(0, 30, n),
        "graphical_appearance_name": "Solid",
        "colour_group_code": colour + 1,
        "colour_group_name": colour_names[colour],
        "perceived_colour_value_id": 1 + colour % 7,
        "perceived_colour_value_name": "Medium",
        "perceived_colour_master_id": 1 + colour % 20,
        "perceived_colour_master_name": colour_names[colour],
        "department_no": 1000 + catalogue.section_no[section] * 50 + ptype % 50,
        "department_name": [f"Department {s}" for s in catalogue.section_no[section]],
        "index_code": np.array([g[1] for g in INDEX_GROUPS])[group],
        "index_name": np.array([g[2] for g in INDEX_GROUPS])[group],
        "index_group_no": group_no,
        "index_group_name": np.array([g[2] for g in INDEX_GROUPS])[group],
        "section_no": catalogue.section_no[section],
        "section_name": [f"Section {s}" for s in catalogue.section_no[section]],
        "garment_group_no": 1001 + catalogue.type_group[ptype],
        "garment_group_name": np.array(PRODUCT_GROUPS)[catalogue.type_group[ptype]],
        "detail_desc": [f"A {c.lower()} garment, product {p}" for c, p in
                        zip(colour_names[colour], catalogue.product_code[a])],
    })
    frame.write_csv(path)


def write_customers(customers: Customers, customer_ids: pl.Series, path: Path, rng: np.random.Generator) -> None:
    """customers.csv with H&M's 7 columns (FN / Active as 1.0 or empty, like the Kaggle file)."""
    n = len(customer_ids)
    news = rng.random(n) < 0.35
    status = np.array(["ACTIVE", "PRE-CREATE", "LEFT CLUB"])[rng.choice(3, n, p=[0.93, 0.065, 0.005])]
    frequency = np.where(news, np.where(rng.random(n) < 0.95, "Regularly", "Monthly"), "NONE")
    pl.DataFrame({
        "customer_id": customer_ids,
        "FN": pl.Series(np.where(news, 1.0, np.nan)).fill_nan(None),
        "Active": pl.Series(np.where(news & (rng.random(n) < 0.97), 1.0, np.nan)).fill_nan(None),
        "club_member_status": status,
        "fashion_news_frequency": frequency,
        "age": pl.Series(np.where(rng.random(n) >= 0.01, customers.age, -1)).replace(-1, None),
        "postal_code": hex_ids(rng, n),
    }).write_csv(path)
