"""A vectorised polars reference of ingest + sequence build, and the cross-check against ours.

`reference_tables(data_dir, ...)` reproduces, with polars expressions only (no per-visitor Python
loop), what recs/ingest.py `ingest_dir` followed by recs/sequences.py `build_sequence_tables`
produce on a fresh warehouse (first build: no previous item_index / customer_index), for the
default build (one step per event, collapse_repeats=False):

- events.csv read as text and typed with the same rules that decide which rows survive the
  quarantine: five fields, integer ids (integral decimals like `8693.0` accepted), known event,
  transactionid exactly on transactions, positive ids, exact duplicates of an earlier line
  dropped (the first kept), timestamps within `plausible_window_days` of the median
  (quantile_disc) of the well-formed rows;
- item properties (categoryid / available only; each carried forward on its own, the first
  record backfilling earlier times; ties at one instant: the larger value), the category tree's
  roots (pointer jumping, at most 64 levels; a category in a cycle or deeper is its own root),
  each event's category / root as of its time, and the latest item attributes;
- the vocabulary (items with >= min_item_events events; item_idx 1, 2, ... in itemid order),
  customers (every visitor; customer_idx 1, 2, ... in visitorid order; in training with >=
  min_user_events vocabulary events);
- steps: vocabulary events per visitor ordered by (timestamp, view < addtocart < transaction,
  itemid, then category, root for rows tied on all of those);
- cutoffs: quantile_disc (the ceil(q n)-th smallest) of the in-training visitors' step times;
- windows: each in-training customer's steps of one split cut into consecutive runs of
  max_candidates; history: the <= history_len steps with ts < the window's first ts;
  candidates: the window's distinct items in first-seen order, label = OR of their actions;
- serving: every customer's latest <= history_len steps, last_ts NULL without steps.

H&M format (`fmt="hm"`, transactions_train.csv / articles.csv / customers.csv): `hm_events` and
`hm_item_states` replace the two front ends with recs/ingest_hm.py's rules (ids by first
appearance, customers.csv / articles.csv first; a day's rows in file order, one ms per line from
the day's first line; the value checks; leaf category = (index group, section, product type),
root = index group); the rest is shared.

`cross_check(ours_dir, ref_dir)` compares every table of `sequences/` (train, val, test,
serving, items, customers) with the reference's parquet: schema, row count and every value of
every row (list columns included), in row order. It returns a list of differences (empty: ok).
"""
from __future__ import annotations

import math
from pathlib import Path

import polars as pl

EVENT_RANK = {"view": 0, "addtocart": 1, "transaction": 2}
ACTION_OF_EVENT = {"view": 4, "addtocart": 2, "transaction": 1}  # the README's bitmask
MS_PER_DAY = 86_400_000
MAX_CATEGORY_DEPTH = 64
TABLES = ("train", "val", "test", "serving", "items", "customers")
STEP_COLUMNS = ("item", "category", "root", "action", "ts")
STEP_DTYPES = {"item": pl.Int32, "category": pl.Int32, "root": pl.Int32, "action": pl.Int8, "ts": pl.Int64}
INT_PATTERN = r"^[+-]?[0-9]+(\.0*)?$"


def _parse_int(col: pl.Expr) -> pl.Expr:
    """recs' parse_bigint: integers and integral decimals ("8693.0"), else NULL."""
    return (pl.when(col.str.contains(INT_PATTERN))
            .then(col.str.split(".").list.first().cast(pl.Int64, strict=False)))


def _lines(paths: list[Path]) -> pl.DataFrame:
    """Whole lines of CSV files (header dropped), as one string column `line`."""
    frames = [pl.read_csv(p, has_header=True, separator="\x01", quote_char=None, new_columns=["line"],
                          schema={"line": pl.String}) for p in paths]
    return pl.concat(frames) if frames else pl.DataFrame({"line": []}, schema={"line": pl.String})


def clean_events(data_dir: Path, plausible_window_days: int = 365) -> pl.DataFrame:
    """The rows of events.csv that ingest loads into `events` (timestamp, visitorid, event, itemid)."""
    raw = pl.read_csv(data_dir / "events.csv", schema={c: pl.String for c in
                                                         ("timestamp", "visitorid", "event", "itemid", "transactionid")},
                      quote_char=None, truncate_ragged_lines=False)
    parsed = raw.with_row_index("line").select(
        "line",
        _parse_int(pl.col("timestamp")).alias("timestamp"),
        _parse_int(pl.col("visitorid")).alias("visitorid"),
        pl.col("event"),
        _parse_int(pl.col("itemid")).alias("itemid"),
        pl.col("transactionid").fill_null(""),
    ).with_columns(
        tx=pl.when(pl.col("transactionid") != "").then(_parse_int(pl.col("transactionid"))),
        bad_tx=(pl.col("transactionid") != "") & _parse_int(pl.col("transactionid")).is_null(),
    )
    well_formed = parsed.filter(pl.col("timestamp").is_not_null() & pl.col("visitorid").is_not_null()
                                & pl.col("itemid").is_not_null() & ~pl.col("bad_tx"))
    median = well_formed["timestamp"].sort()[max(-(-len(well_formed) // 2), 1) - 1]
    window = plausible_window_days * MS_PER_DAY
    ok = well_formed.filter(
        pl.col("event").is_in(list(EVENT_RANK))
        & ((pl.col("event") == "transaction") == pl.col("tx").is_not_null())
        # an exact repeat of an earlier line (all five parsed fields) is a duplicate
        & (pl.col("line") == pl.col("line").min().over("timestamp", "visitorid", "event", "itemid", "tx"))
        & (pl.col("visitorid") > 0) & (pl.col("itemid") > 0) & (pl.col("tx").is_null() | (pl.col("tx") > 0))
        & ((pl.col("timestamp") - median).abs() <= window)
    )
    return ok.select("timestamp", "visitorid", "event", "itemid")


HM_TX_COLUMNS = ("t_dat", "customer_id", "article_id", "price", "sales_channel_id")
HM_ORDER_OFFSET = 1_000_000_000_000  # keys only the transactions name come after the listed ones


def _hm_ids(listed: pl.DataFrame, seen: pl.DataFrame, pattern: str, id_name: str) -> pl.DataFrame:
    """(key, <id_name>): valid keys numbered 1, 2, ... listed first (file order), then by first line."""
    keys = pl.concat([listed.select("key", order="line"),
                      seen.group_by("key").agg(order=pl.col("line").min() + HM_ORDER_OFFSET)])
    return (keys.filter(pl.col("key").str.contains(pattern)).group_by("key").agg(pl.col("order").min())
            .sort("order").with_row_index(id_name, offset=1).select("key", pl.col(id_name).cast(pl.Int64)))


def _hm_csv(path: Path, columns: list[str]) -> pl.DataFrame:
    if not path.exists():
        return pl.DataFrame(schema={"line": pl.Int64, **{c: pl.String for c in columns}})
    frame = pl.read_csv(path, columns=columns, schema_overrides={c: pl.String for c in columns}, infer_schema=False)
    return frame.with_row_index("line", offset=2).with_columns(pl.col("line").cast(pl.Int64))


def hm_events(data_dir: Path, plausible_window_days: int = 1_100) -> pl.DataFrame:
    """The rows of transactions_train.csv that ingest loads into `events` (timestamp, visitorid,
    event, itemid), ids as recs/ingest_hm.py assigns them on a fresh warehouse."""
    tx = pl.read_csv(data_dir / "transactions_train.csv", schema={c: pl.String for c in HM_TX_COLUMNS},
                     quote_char=None).with_row_index("line", offset=2).with_columns(pl.col("line").cast(pl.Int64))
    customers = _hm_csv(data_dir / "customers.csv", ["customer_id"]).rename({"customer_id": "key"})
    articles = _hm_csv(data_dir / "articles.csv", ["article_id"]).rename({"article_id": "key"})
    visitors = _hm_ids(customers, tx.select(key="customer_id", line="line"), r"^[0-9A-Fa-f]{64}$", "visitorid")
    items = _hm_ids(articles, tx.select(key="article_id", line="line"), r"^[0-9]{1,20}$", "itemid")
    days = tx.group_by("t_dat").agg(first_line=pl.col("line").min()).with_columns(
        day=pl.when(pl.col("t_dat").str.contains(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))
        .then(pl.col("t_dat").str.strptime(pl.Date, "%Y-%m-%d", strict=False)))
    price = pl.col("price").cast(pl.Float64, strict=False)
    events = (tx.join(days, on="t_dat", how="left").join(visitors, left_on="customer_id", right_on="key", how="left")
              .join(items, left_on="article_id", right_on="key", how="left")
              .filter(pl.col("day").is_not_null() & pl.col("visitorid").is_not_null() & pl.col("itemid").is_not_null()
                      & price.is_finite().fill_null(False) & (price > 0).fill_null(False)
                      & pl.col("sales_channel_id").is_in(["1", "2"]))
              .select(timestamp=pl.col("day").cast(pl.Datetime("ms")).cast(pl.Int64)
                      + pl.min_horizontal(pl.col("line") - pl.col("first_line"), 86_399_999),
                      visitorid="visitorid", event=pl.lit("transaction"), itemid="itemid"))
    median = events["timestamp"].sort()[max(-(-len(events) // 2), 1) - 1]
    window = plausible_window_days * MS_PER_DAY
    return events.filter((pl.col("timestamp") - median).abs() <= window)


def hm_item_states(data_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(snapshots, categories) as item_states returns them, from articles.csv: one snapshot per
    item at time 0, leaf = (group * 1000 + section) * 10000 + product type + 1, root = group."""
    columns = ["article_id", "index_group_no", "section_no", "product_type_no"]
    articles = _hm_csv(data_dir / "articles.csv", columns)
    tx = pl.read_csv(data_dir / "transactions_train.csv", columns=["article_id"], schema_overrides={"article_id": pl.String},
                     quote_char=None).with_row_index("line", offset=2).with_columns(pl.col("line").cast(pl.Int64))
    items = _hm_ids(articles.select(key="article_id", line="line"), tx.select(key="article_id", line="line"),
                    r"^[0-9]{1,20}$", "itemid")
    g, sec, t = (_parse_int(pl.col(c)) for c in ("index_group_no", "section_no", "product_type_no"))
    usable = (g.is_between(1, 99) & sec.is_between(0, 999) & t.is_between(-1, 9998)
              & pl.col("article_id").str.contains(r"^[0-9]{1,20}$")).fill_null(False)
    snaps = (articles.filter(usable).join(items, left_on="article_id", right_on="key", how="inner")
             .group_by("itemid").agg(categoryid=((g * 1000 + sec) * 10000 + t + 1).max())
             .select("itemid", timestamp=pl.lit(0, pl.Int64), categoryid="categoryid", available=pl.lit(1, pl.Int64),
                     root_categoryid=pl.col("categoryid") // 10_000_000))
    snaps = snaps.sort("itemid", "timestamp")
    categories = snaps.select("categoryid", "root_categoryid").unique()
    return snaps, categories


def item_states(data_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(snapshots: itemid, timestamp, categoryid, available, root_categoryid in (itemid, time)
    order; categories: categoryid, root_categoryid)."""
    props = _lines(sorted(data_dir.glob("item_properties_part*.csv")))
    props = props.filter(pl.col("line").str.contains(",categoryid,", literal=True)
                         | pl.col("line").str.contains(",available,", literal=True))
    fields = props.select(f=pl.col("line").str.split(","))
    props = fields.select(
        timestamp=_parse_int(pl.col("f").list.get(0)),
        itemid=_parse_int(pl.col("f").list.get(1)),
        property=pl.col("f").list.get(2),
        value=pl.when(pl.col("f").list.len() == 4).then(_parse_int(pl.col("f").list.get(3, null_on_oob=True))),
    ).filter(pl.col("property").is_in(["categoryid", "available"]) & pl.col("timestamp").is_not_null()
             & (pl.col("itemid") > 0)
             & pl.when(pl.col("property") == "categoryid").then(pl.col("value") >= 0)
             .otherwise(pl.col("value").is_in([0, 1])).fill_null(False))
    records = props.group_by("itemid", "timestamp", "property").agg(pl.col("value").max())
    snaps = (records.pivot(on="property", index=["itemid", "timestamp"], values="value")
             .sort("itemid", "timestamp"))
    for name in ("categoryid", "available"):
        if name not in snaps.columns:
            snaps = snaps.with_columns(pl.lit(None, pl.Int64).alias(name))
    snaps = snaps.with_columns(
        pl.col("categoryid").forward_fill().backward_fill().over("itemid").fill_null(0),
        pl.col("available").forward_fill().backward_fill().over("itemid").fill_null(1),
    )

    tree_path = data_dir / "category_tree.csv"
    tree = pl.read_csv(tree_path, schema={"categoryid": pl.String, "parentid": pl.String}) if tree_path.exists() \
        else pl.DataFrame(schema={"categoryid": pl.String, "parentid": pl.String})
    tree = tree.select(
        categoryid=_parse_int(pl.col("categoryid")),
        parentid=_parse_int(pl.col("parentid")),
        root_row=pl.col("parentid").is_null() | (pl.col("parentid") == ""),
    ).filter((pl.col("categoryid") > 0) & (pl.col("root_row") | pl.col("parentid").is_not_null()))
    tree = tree.select("categoryid", parentid=pl.when(pl.col("parentid") > 0).then("parentid")) \
        .group_by("categoryid").agg(pl.col("parentid").min())
    referenced = pl.concat([tree.select(categoryid="parentid").drop_nulls(),
                            snaps.select("categoryid").filter(pl.col("categoryid") > 0)]).unique()
    nodes = pl.concat([tree, referenced.join(tree, on="categoryid", how="anti")
                       .with_columns(parentid=pl.lit(None, pl.Int64))])
    parent = nodes.select("categoryid", "parentid")
    walk = nodes.select("categoryid", cur="categoryid")
    for _ in range(MAX_CATEGORY_DEPTH):  # pointer chasing, all categories at once
        walk = walk.join(parent, left_on="cur", right_on="categoryid", how="left") \
            .select("categoryid", cur=pl.coalesce("parentid", "cur"))
    walk = walk.join(parent, left_on="cur", right_on="categoryid", how="left")
    # still not at a root after 64 steps: a cycle or deeper than the walk goes, its own root
    categories = walk.select("categoryid", root_categoryid=pl.when(pl.col("parentid").is_null())
                             .then("cur").otherwise("categoryid"))
    snaps = snaps.join(categories, on="categoryid", how="left").with_columns(
        pl.col("root_categoryid").fill_null(0)).sort("itemid", "timestamp")
    return snaps, categories


def reference_tables(data_dir: str | Path, *, min_user_events: int = 10, min_item_events: int = 1,
                     history_len: int = 64, max_candidates: int = 16, train_quantile: float = 0.8,
                     val_quantile: float = 0.9, plausible_window_days: int | None = None,
                     event_rank: dict[str, int] | None = None, itemid_descending: bool = False,
                     fmt: str = "retailrocket") -> dict[str, pl.DataFrame]:
    """Every table of `sequences/` (keys of TABLES) as polars frames, in our row order.

    `event_rank` / `itemid_descending` change the step order's tie-breaks (only to show that the
    cross-check catches a wrong order); the defaults are the contract's.
    """
    data_dir = Path(data_dir)
    rank = event_rank or EVENT_RANK
    if fmt == "hm":
        events = hm_events(data_dir, plausible_window_days or 1_100)
        snaps, _ = hm_item_states(data_dir)
    else:
        events = clean_events(data_dir, plausible_window_days or 365)
        snaps, _ = item_states(data_dir)

    # Category / root as of each event: the latest state at or before it; before an item's first
    # snapshot its first state; items never recorded: 0 / 0.
    states = snaps.with_columns(
        valid_from=pl.when(pl.col("timestamp") == pl.col("timestamp").min().over("itemid"))
        .then(pl.lit(-(2**63), pl.Int64)).otherwise("timestamp")).sort("valid_from")
    events = events.with_columns(event_rank=pl.col("event").replace_strict(rank, return_dtype=pl.Int8))
    events = events.sort("timestamp").join_asof(
        states.select("itemid", "valid_from", "categoryid", "root_categoryid"),
        left_on="timestamp", right_on="valid_from", by="itemid", strategy="backward", check_sortedness=False,
    ).with_columns(pl.col("categoryid").fill_null(0), pl.col("root_categoryid").fill_null(0)).drop("valid_from")

    # Vocabulary and item ids (first build: 1, 2, ... in itemid order).
    counts = events.group_by("itemid").agg(n_events=pl.len())
    vocab = counts.filter(pl.col("n_events") >= min_item_events).sort("itemid").with_row_index("item_idx", offset=1)
    events = events.join(vocab.select("itemid", "item_idx"), on="itemid", how="left")
    events = events.sort("visitorid", "timestamp", "event_rank", "itemid", "categoryid", "root_categoryid",
                         descending=[False, False, False, itemid_descending, False, False])

    customers = events.group_by("visitorid").agg(
        n_events=pl.len(), n_steps=pl.col("item_idx").is_not_null().sum()).sort("visitorid") \
        .with_row_index("customer_idx", offset=1).with_columns(in_training=pl.col("n_steps") >= min_user_events)

    steps = events.filter(pl.col("item_idx").is_not_null()).join(
        customers.select("visitorid", "customer_idx", "in_training"), on="visitorid", how="left",
        maintain_order="left",
    ).select(
        "customer_idx", "visitorid", "in_training",
        item=pl.col("item_idx").cast(pl.Int32), category=pl.col("categoryid").cast(pl.Int32),
        root=pl.col("root_categoryid").cast(pl.Int32),
        action=pl.col("event").replace_strict(ACTION_OF_EVENT, return_dtype=pl.Int8),
        ts=pl.col("timestamp"),
    ).with_row_index("row").with_columns(pos=pl.int_range(pl.len()).over("customer_idx"))

    trained_ts = steps.filter("in_training")["ts"].sort()
    n = len(trained_ts)
    if n == 0:
        raise ValueError("no events left after the filters")
    train_end_ts, val_end_ts = (int(trained_ts[max(math.ceil(n * q), 1) - 1]) for q in (train_quantile, val_quantile))

    item_counts = events.group_by("itemid").agg(
        n_events=pl.len(), n_train_events=(pl.col("timestamp") < train_end_ts).sum())
    latest = snaps.group_by("itemid").agg(pl.all().sort_by("timestamp").last())
    items = vocab.select("item_idx", "itemid").join(item_counts, on="itemid", how="left").join(
        latest.select("itemid", "categoryid", "root_categoryid", "available"), on="itemid", how="left",
    ).select(
        pl.col("item_idx").cast(pl.Int32), pl.col("itemid").cast(pl.Int64),
        pl.col("categoryid").fill_null(0).cast(pl.Int64), pl.col("root_categoryid").fill_null(0).cast(pl.Int64),
        pl.col("available").fill_null(1).cast(pl.Int8), pl.col("n_events").cast(pl.Int64),
        pl.col("n_train_events").cast(pl.Int64), in_vocab=pl.lit(True),
    ).sort("item_idx")

    # Windows: consecutive runs of max_candidates steps of one (customer, split).
    ex = steps.filter("in_training").with_columns(
        split=(pl.col("ts") >= train_end_ts).cast(pl.Int8) + (pl.col("ts") >= val_end_ts).cast(pl.Int8),
        first_same_ts=pl.col("pos").min().over("customer_idx", "ts"),
    ).with_columns(k=pl.int_range(pl.len()).over("customer_idx", "split") // max_candidates)
    wkey = ["customer_idx", "split", "k"]
    windows = ex.group_by(wkey, maintain_order=True).agg(
        pl.col("visitorid").first(),
        window_start_ts=pl.col("ts").first(),
        h_end=pl.col("row").first() - pl.col("pos").first() + pl.col("first_same_ts").first(),
        c_first=pl.col("row").first() - pl.col("pos").first(),
        **{f"window_{c}": pl.col(c) for c in STEP_COLUMNS},
    ).with_row_index("wid").with_columns(h_start=pl.max_horizontal("c_first", pl.col("h_end") - history_len))
    cand = ex.select(*wkey, "item", "category", "root", "action").group_by(
        [*wkey, "item"], maintain_order=True).agg(
        pl.col("category").first(), pl.col("root").first(), label=pl.col("action").bitwise_or(),
    ).group_by(wkey, maintain_order=True).agg(
        candidate_item="item", candidate_category="category", candidate_root="root", candidate_label="label")
    hist = _gather_lists(windows.select("wid", start="h_start", end="h_end"), steps, "history")
    windows = windows.join(cand, on=wkey, how="left", maintain_order="left") \
        .join(hist, on="wid", how="left", maintain_order="left")
    example_columns = ["customer_idx", "visitorid", "window_start_ts", *[f"history_{c}" for c in STEP_COLUMNS],
                       *[f"window_{c}" for c in STEP_COLUMNS], "candidate_item", "candidate_category",
                       "candidate_root", "candidate_label"]
    out = {}
    for code, split in enumerate(("train", "val", "test")):
        out[split] = _typed(windows.filter(pl.col("split") == code).sort("customer_idx", "window_start_ts")
                            .select(example_columns))

    # Serving: every customer's latest <= history_len steps.
    per_customer = steps.group_by("customer_idx").agg(first=pl.col("row").min(), count=pl.len())
    serving = customers.select("customer_idx", "visitorid").join(per_customer, on="customer_idx", how="left") \
        .with_columns(pl.col("count").fill_null(0), pl.col("first").fill_null(0)).with_row_index("wid")
    lists = _gather_lists(serving.select(
        "wid", start=pl.col("first") + pl.col("count") - pl.min_horizontal("count", history_len),
        end=pl.col("first") + pl.col("count")), steps, "history")
    serving = serving.join(lists, on="wid", how="left", maintain_order="left").with_columns(
        last_ts=pl.col("history_ts").list.last())
    out["serving"] = _typed(serving.select("customer_idx", "visitorid", *[f"history_{c}" for c in STEP_COLUMNS],
                                           "last_ts").sort("customer_idx"))
    out["items"] = items
    out["customers"] = customers.select(
        pl.col("customer_idx").cast(pl.Int32), pl.col("visitorid").cast(pl.Int64),
        pl.col("n_events").cast(pl.Int64), pl.col("n_steps").cast(pl.Int64), "in_training")
    out["_meta"] = pl.DataFrame({"train_end_ts": [train_end_ts], "val_end_ts": [val_end_ts]})
    return out


def _gather_lists(ranges: pl.DataFrame, steps: pl.DataFrame, prefix: str) -> pl.DataFrame:
    """Per `wid`: the step-list columns of step rows [start, end) (empty lists when end <= start)."""
    picked = ranges.select("wid", row=pl.int_ranges("start", pl.max_horizontal("start", "end"))) \
        .explode("row").drop_nulls("row") \
        .join(steps.select("row", *STEP_COLUMNS), on="row", how="left", maintain_order="left")
    lists = picked.group_by("wid", maintain_order=True).agg(**{f"{prefix}_{c}": pl.col(c) for c in STEP_COLUMNS})
    return ranges.select("wid").join(lists, on="wid", how="left", maintain_order="left").with_columns(
        pl.col(f"{prefix}_{c}").fill_null(pl.lit([], pl.List(STEP_DTYPES[c]))) for c in STEP_COLUMNS)


def _typed(frame: pl.DataFrame) -> pl.DataFrame:
    """The parquet contract's types (INT32 ids, INT8 actions, INT64 times)."""
    casts = {"customer_idx": pl.Int32, "visitorid": pl.Int64, "window_start_ts": pl.Int64, "last_ts": pl.Int64}
    for prefix in ("history", "window", "candidate"):
        for c, t in STEP_DTYPES.items():
            casts[f"{prefix}_{c}"] = pl.List(t)
    casts["candidate_label"] = pl.List(pl.Int8)
    return frame.with_columns(pl.col(c).cast(t) for c, t in casts.items() if c in frame.columns)


def write_reference(tables: dict[str, pl.DataFrame], out_dir: Path) -> None:
    """One parquet file per table under out_dir/<table>/part-0.parquet."""
    for name, frame in tables.items():
        (out_dir / name).mkdir(parents=True, exist_ok=True)
        frame.write_parquet(out_dir / name / "part-0.parquet")


def cross_check(ours_dir: str | Path, ref_dir: str | Path, max_report: int = 5) -> list[str]:
    """Differences between our sequences/ tables and the reference's (empty list: identical).

    Full comparison: column names and types, row count, then every value of every row in row
    order (list columns element by element, NULLs equal to NULLs).
    """
    problems: list[str] = []
    for name in TABLES:
        ours = pl.read_parquet(Path(ours_dir) / name)
        ref = pl.read_parquet(Path(ref_dir) / name)
        if ours.schema != ref.schema:
            problems.append(f"{name}: schema ours {dict(ours.schema)} != reference {dict(ref.schema)}")
            continue
        if ours.height != ref.height:
            problems.append(f"{name}: {ours.height} rows ours != {ref.height} reference")
            continue
        for col in ours.columns:
            same = ours[col].eq_missing(ref[col]) if not isinstance(ours.schema[col], pl.List) else \
                pl.DataFrame({"a": ours[col], "b": ref[col]}).select(
                    pl.col("a").eq_missing(pl.col("b")))["a"]
            bad = (~same).arg_true()
            if len(bad):
                i = int(bad[0])
                problems.append(f"{name}.{col}: {len(bad)} rows differ; first row {i}: "
                                f"ours {_shown(ours[col][i])} reference {_shown(ref[col][i])}")
                if len(problems) >= max_report:
                    return problems
    return problems


def _shown(value: object) -> str:
    """A cell for a message: lists as Python lists."""
    return repr(value.to_list() if isinstance(value, pl.Series) else value)
