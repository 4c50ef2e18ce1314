"""Our published lists against an incumbent's: agreement, beyond-accuracy and accuracy, by segment.

Rows are `(segment, system, metric, k, value, ci_low, ci_high, n_customers)`; flows/compare.py
adds run_id and incumbent and writes them to `comparison_metrics`.

- Agreement (system `both`): recs.agreement per customer, averaged over the customers both
  systems cover (`spearman` / `kendall` over those with >= 2 shared items: read them beside
  `overlap`).
- Beyond accuracy (each system), per customer averaged: `diversity` (distinct root categories in
  the top k), `intra_list_dissimilarity` (share of item pairs in different leaf categories),
  `novelty` (mean self-information -log2 p(item), p = the item's share of all events, add-one
  smoothed), `repeat_share` (items the customer already had an event on), `unavailable_share`
  (items unavailable now); per segment: `coverage` (distinct items over the catalogue = items
  with events).
- Accuracy on the held-out test period (each system, and system `both` = ours - incumbent with a
  paired bootstrap 95% interval over customers): the published lists are made from ALL history
  (the refit models, indexes over every split), so they cannot be scored on the test period.
  Instead both systems make one list per customer from the history before the test period:
  ours with the checkpoints selected on validation (`checkpoints/{retrieval,ranking}`, not the
  refits) behind the same serving rules, indexes and fallback fitted on train + val
  (model.evaluation.split_serving, as the product's evaluation does); a built-in incumbent is
  the same baseline fitted on train + val; a file incumbent's lists are taken as given, ASSUMING
  the shop made them before the test period began (if they were made later they saw the test
  events and their accuracy is optimistic). Each list is scored against every test-period event
  of the customer (model.cases next-event cases, the evaluation's protocol): `recall` (share of
  those events whose item is in the top k), `mrr` (mean reciprocal rank, 0 beyond k), `hit`
  (any of them in the top k); customers without history before the test period are left out
  (both systems would show them the popularity fallback).
- Segments: `all` (the customers both systems cover), `history:1`, `history:2-5`,
  `history:6-20`, `history:>20` (the customer's events, all history), `root:<id>` (the root
  category of most of the customer's events).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl

from recs.agreement import list_agreement

AGREEMENT_METRICS = ("overlap", "jaccard", "rbo", "spearman", "kendall")
ACCURACY_METRICS = ("recall", "mrr", "hit")
BEYOND_METRICS = ("coverage", "diversity", "intra_list_dissimilarity", "novelty", "repeat_share",
                  "unavailable_share")
HISTORY_BUCKETS = ((1, 1, "history:1"), (2, 5, "history:2-5"), (6, 20, "history:6-20"), (21, None, "history:>20"))
MAX_ACCURACY_CUSTOMERS = 10_000  # a deterministic sample beyond that (as model.evaluation.MAX_CASES)
BOOTSTRAP = 1_000
ROW_SCHEMA = {"segment": pl.String, "system": pl.String, "metric": pl.String, "k": pl.Int64, "value": pl.Float64,
              "ci_low": pl.Float64, "ci_high": pl.Float64, "n_customers": pl.Int64}


def parse_ks(k) -> list[int]:
    """`--k 10,20` (or a list) as sorted distinct positive ints."""
    values = k if isinstance(k, (list, tuple)) else str(k).replace(" ", "").split(",")
    try:
        ks = sorted({int(v) for v in values if str(v) != ""})
    except ValueError:
        raise ValueError(f"--k must be comma-separated positive integers, got {k!r}") from None
    if not ks or ks[0] < 1:
        raise ValueError(f"--k must be comma-separated positive integers, got {k!r}")
    return ks


def _empty_rows() -> pl.DataFrame:
    return pl.DataFrame(schema=ROW_SCHEMA)


def customer_segments(customers: pl.DataFrame) -> pl.DataFrame:
    """(customer_id, segment): `all`, the history bucket and the dominant root of each customer."""
    bucket = pl.lit(None, pl.String)
    for low, high, name in reversed(HISTORY_BUCKETS):
        cond = pl.col("n_events") >= low if high is None else pl.col("n_events").is_between(low, high)
        bucket = pl.when(cond).then(pl.lit(name)).otherwise(bucket)
    return pl.concat([
        customers.select("customer_id", pl.lit("all").alias("segment")),
        customers.select("customer_id", bucket.alias("segment")).drop_nulls(),
        customers.select("customer_id", pl.format("root:{}", pl.col("dominant_root")).alias("segment")),
    ])


def agreement_per_customer(items: pl.DataFrame, ks: list[int]) -> pl.DataFrame:
    """(customer_id, system='both', metric, k, value) of every agreement metric."""
    lists = (items.sort("system", "customer_id", "position")
             .group_by("customer_id", "system", maintain_order=True).agg(pl.col("item_id")))
    ours = dict(lists.filter(pl.col("system") == "ours").select("customer_id", "item_id").iter_rows())
    theirs = dict(lists.filter(pl.col("system") == "incumbent").select("customer_id", "item_id").iter_rows())
    out: dict[str, list] = {"customer_id": [], "metric": [], "k": [], "value": []}
    for customer in sorted(ours.keys() & theirs.keys()):
        a, b = ours[customer], theirs[customer]
        for k in ks:
            for metric, value in list_agreement(a, b, k).items():
                if value is not None:
                    out["customer_id"].append(customer)
                    out["metric"].append(metric)
                    out["k"].append(k)
                    out["value"].append(float(value))
    return pl.DataFrame(out, schema={"customer_id": pl.Int64, "metric": pl.String, "k": pl.Int64,
                                     "value": pl.Float64}).with_columns(pl.lit("both").alias("system"))


def beyond_per_customer(items: pl.DataFrame, ks: list[int], total_events: int, catalogue: int) -> pl.DataFrame:
    """(customer_id, system, metric, k, value) of the per-list beyond-accuracy metrics."""
    denominator = float(total_events + catalogue)
    parts = []
    for k in ks:
        top = items.filter(pl.col("position") <= k)
        per_list = top.group_by("system", "customer_id").agg(
            pl.len().alias("n"),
            pl.col("root_categoryid").n_unique().cast(pl.Float64).alias("diversity"),
            (-((pl.col("n_events") + 1) / denominator).log(2)).mean().alias("novelty"),
            pl.col("seen").cast(pl.Float64).mean().alias("repeat_share"),
            (~pl.col("available")).cast(pl.Float64).mean().alias("unavailable_share"),
        )
        same = (top.group_by("system", "customer_id", "categoryid").len()
                .group_by("system", "customer_id").agg((pl.col("len") * (pl.col("len") - 1)).sum().alias("same")))
        per_list = per_list.join(same, on=["system", "customer_id"]).with_columns(
            pl.when(pl.col("n") >= 2).then(1 - pl.col("same") / (pl.col("n") * (pl.col("n") - 1)))
            .otherwise(None).cast(pl.Float64).alias("intra_list_dissimilarity"))
        long = per_list.unpivot(index=["system", "customer_id"],
                                on=["diversity", "intra_list_dissimilarity", "novelty", "repeat_share",
                                    "unavailable_share"], variable_name="metric", value_name="value")
        parts.append(long.drop_nulls("value").with_columns(pl.lit(k, pl.Int64).alias("k")))
    return pl.concat(parts).select("customer_id", "system", "metric", "k", "value")


def coverage_rows(items: pl.DataFrame, segments: pl.DataFrame, ks: list[int], catalogue: int) -> pl.DataFrame:
    """Catalogue coverage per (segment, system, k): distinct recommended items / items with events."""
    parts = []
    for k in ks:
        top = items.filter(pl.col("position") <= k).join(segments, on="customer_id")
        parts.append(top.group_by("segment", "system").agg(
            (pl.col("item_id").n_unique() / max(catalogue, 1)).alias("value"),
            pl.col("customer_id").n_unique().cast(pl.Int64).alias("n_customers"))
            .with_columns(pl.lit("coverage").alias("metric"), pl.lit(k, pl.Int64).alias("k")))
    return pl.concat(parts).with_columns(pl.lit(None, pl.Float64).alias("ci_low"),
                                         pl.lit(None, pl.Float64).alias("ci_high")).select(list(ROW_SCHEMA))


def segment_means(per_customer: pl.DataFrame, segments: pl.DataFrame) -> pl.DataFrame:
    """Mean of each (system, metric, k) over each segment's customers."""
    if per_customer.is_empty():
        return _empty_rows()
    return (per_customer.join(segments, on="customer_id")
            .group_by("segment", "system", "metric", "k")
            .agg(pl.col("value").mean(), pl.col("customer_id").n_unique().cast(pl.Int64).alias("n_customers"))
            .with_columns(pl.lit(None, pl.Float64).alias("ci_low"), pl.lit(None, pl.Float64).alias("ci_high"))
            .select(list(ROW_SCHEMA)))


def paired_bootstrap(differences: np.ndarray, n_resamples: int, rng: np.random.Generator,
                     chunk: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """2.5% / 97.5% quantiles of the resampled means of each column of `differences` [n, m]
    (customers resampled with replacement, the same draw for every column: paired)."""
    n, m = differences.shape
    means = np.empty((n_resamples, m))
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        draw = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = differences[draw].mean(axis=1)
    return np.quantile(means, 0.025, axis=0), np.quantile(means, 0.975, axis=0)


def accuracy_differences(accuracy: pl.DataFrame, segments: pl.DataFrame, n_resamples: int, seed: int) -> pl.DataFrame:
    """system `both`, metric `<m>_diff`: mean over customers of ours - incumbent, with its paired
    bootstrap 95% interval (segments with < 2 customers get no interval)."""
    if accuracy.is_empty():
        return _empty_rows()
    wide = (accuracy.with_columns(pl.format("{}@{}", pl.col("metric"), pl.col("k")).alias("key"))
            .pivot(on="system", index=["customer_id", "key"], values="value").drop_nulls(["ours", "incumbent"])
            .with_columns((pl.col("ours") - pl.col("incumbent")).alias("d"))
            .pivot(on="key", index="customer_id", values="d"))
    keys = [c for c in wide.columns if c != "customer_id"]
    rng = np.random.default_rng([seed, 23])
    rows = []
    for (segment,), part in wide.join(segments, on="customer_id").group_by("segment", maintain_order=True):
        d = part.select(keys).to_numpy().astype(np.float64)
        n = len(d)
        low, high = paired_bootstrap(d, n_resamples, rng) if n >= 2 and n_resamples > 0 else (
            np.full(len(keys), np.nan), np.full(len(keys), np.nan))
        for j, key in enumerate(keys):
            metric, k = key.split("@")
            rows.append({"segment": segment, "system": "both", "metric": f"{metric}_diff", "k": int(k),
                         "value": float(d[:, j].mean()), "ci_low": None if math.isnan(low[j]) else float(low[j]),
                         "ci_high": None if math.isnan(high[j]) else float(high[j]), "n_customers": n})
    return pl.DataFrame(rows, schema=ROW_SCHEMA) if rows else _empty_rows()


def _per_customer_accuracy(lists: np.ndarray, case_row: np.ndarray, target_idx: np.ndarray, n_customers: int,
                           ks: list[int], system: str, customer_ids: np.ndarray) -> pl.DataFrame:
    """recall / mrr / hit @ ks of one list per customer [n, K] (item_idx) over the customers' cases."""
    from model.evaluation import list_ranks

    ranks = list_ranks(lists[case_row], target_idx)
    n_cases = np.bincount(case_row, minlength=n_customers).astype(np.float64)
    frames = []
    for k in ks:
        within = (ranks > 0) & (ranks <= k)
        recall = np.bincount(case_row, weights=within, minlength=n_customers) / np.maximum(n_cases, 1)
        mrr = np.bincount(case_row, weights=np.where(within, 1.0 / np.maximum(ranks, 1), 0.0),
                          minlength=n_customers) / np.maximum(n_cases, 1)
        hit = (np.bincount(case_row, weights=within, minlength=n_customers) > 0).astype(np.float64)
        for metric, value in (("recall", recall), ("mrr", mrr), ("hit", hit)):
            frames.append(pl.DataFrame({"customer_id": customer_ids, "value": value})
                          .with_columns(pl.lit(system).alias("system"), pl.lit(metric).alias("metric"),
                                        pl.lit(k, pl.Int64).alias("k")))
    return pl.concat(frames).select("customer_id", "system", "metric", "k", "value")


def test_period_accuracy(warehouse_dir: str | Path, checkpoint_dir: str | Path, ks: list[int], *,
                         builtin: str | None = None, incumbent_lists: pl.DataFrame | None = None,
                         max_customers: int = MAX_ACCURACY_CUSTOMERS, seed: int = 0) -> tuple[pl.DataFrame, dict]:
    """Per-customer accuracy of both systems on the test period (see the module docstring).

    builtin: `item_knn` / `popularity` (made from train + val); otherwise incumbent_lists
    (customer_id, position, item_id) taken as given. Returns (customer_id, system, metric, k,
    value) rows and {n_customers, n_cases, ...}."""
    from model.cases import next_event_cases
    from model.config import Profile
    from model.data import StepArrays, history_batch
    from model.evaluation import split_serving
    from model.serving import Recommender, bought_in_history
    from model.tasks import checkpoint_path, load_tables
    from model.train import load_best_params
    from recs.scoring import fill_from_fallback

    top_n = max(ks)
    retrieval_params, meta = load_best_params(checkpoint_path(checkpoint_dir, "retrieval"))
    ranking_params, _ = load_best_params(checkpoint_path(checkpoint_dir, "ranking"))
    profile = Profile.from_dict(meta["profile"])
    tables = load_tables(warehouse_dir, profile)
    test = tables.split("test")
    # Each customer's first test example: its history is everything before the test period.
    order = np.lexsort((test.window_start_ts, test.customer_idx))
    first = order[np.r_[True, np.diff(test.customer_idx[order]) != 0]] if len(order) else order
    first = first[test.history.length[first] > 0]
    cases = next_event_cases(tables, "test")
    first = first[np.isin(test.customer_idx[first], cases.customer_idx)]
    if incumbent_lists is not None:  # a file incumbent: only the customers it covers
        first = first[np.isin(test.visitorid[first], incumbent_lists["customer_id"].to_numpy())]
    if len(first) > max_customers:
        first = np.sort(np.random.default_rng([seed, 29]).choice(first, max_customers, replace=False))
    info = {"n_customers": int(len(first)), "protocol": "one list per customer from the history before the test "
            "period, scored on the customer's test-period events"}
    if not len(first):
        return pl.DataFrame(schema={"customer_id": pl.Int64, "system": pl.String, "metric": pl.String,
                                    "k": pl.Int64, "value": pl.Float64}), {**info, "n_cases": 0}
    steps = StepArrays(*(getattr(test.history, f)[first] for f in ("item", "category", "root", "action", "length")))
    rows = np.arange(len(first))
    history = history_batch(tables, steps, test.visitorid[first], rows)
    stage = split_serving(tables, profile, retrieval_params, ranking_params, "test")
    bought = bought_in_history(steps.item, steps.action, stage.config.max_bought)
    fallback = stage.fallback.astype(np.int32)

    def served(recommender) -> np.ndarray:
        recs = recommender.recommend(history, steps.item, steps.action, bought, top_n=top_n)
        return fill_from_fallback(recs.item_idx, fallback, bought, top_n)[0]

    ours = served(stage.recommender)
    if builtin == "item_knn":
        theirs = served(Recommender(profile, retrieval_params, ranking_params, tables=tables, cooc=stage.cooc,
                                    corpus=stage.corpus, available=np.ones_like(stage.corpus), config=stage.config,
                                    strategy="item_knn", sessions=stage.sessions))
    elif builtin == "popularity":
        theirs = fill_from_fallback(np.zeros((len(first), top_n), np.int32), fallback, bought, top_n)[0]
    else:
        where = {int(c): i for i, c in enumerate(test.visitorid[first])}
        top = incumbent_lists.filter((pl.col("position") <= top_n)
                                     & pl.col("customer_id").is_in(pl.Series(list(where), dtype=pl.Int64).implode()))
        theirs = np.zeros((len(first), top_n), np.int32)
        r = np.array([where[int(c)] for c in top["customer_id"].to_numpy()], np.int64)
        theirs[r, top["position"].to_numpy() - 1] = tables.item_idx_of(top["item_id"].to_numpy())
    row_of = {int(c): i for i, c in enumerate(test.customer_idx[first])}
    case_row = np.array([row_of.get(int(c), -1) for c in cases.customer_idx], np.int64)
    keep = case_row >= 0
    customer_ids = test.visitorid[first].astype(np.int64)
    args = (case_row[keep], cases.target_idx[keep], len(first), ks)
    frame = pl.concat([_per_customer_accuracy(ours, *args, "ours", customer_ids),
                       _per_customer_accuracy(theirs, *args, "incumbent", customer_ids)])
    return frame, {**info, "n_cases": int(keep.sum())}


def _arrow(con, name: str, **params):
    """The rows of the query in `sql/<name>.sql` as an Arrow table."""
    from recs.warehouse import read_sql, sql_params

    sql = read_sql(name)
    bound = {k: v for k, v in params.items() if k in sql_params(sql)}
    return (con.sql(sql, params=bound) if bound else con.sql(sql)).to_arrow_table()


def comparison_rows(warehouse_dir: str | Path, checkpoint_dir: str | Path, run_id: str, incumbent: str,
                    ks: list[int], *, builtin: str | None = None, n_bootstrap: int = BOOTSTRAP,
                    max_accuracy_customers: int = MAX_ACCURACY_CUSTOMERS, seed: int = 0,
                    accuracy: bool = True) -> tuple[pl.DataFrame, dict]:
    """Every comparison row of run `run_id` against incumbent `incumbent`, and a summary."""
    from recs.publish import connect_with_retry

    max_k = max(ks)
    con = connect_with_retry(warehouse_dir, read_only=True)
    try:
        con.execute("SET enable_progress_bar = false")
        items = _arrow(con, "intermediate/compare_list_items", run_id=run_id, incumbent=incumbent, max_k=max_k)
        customers = _arrow(con, "intermediate/compare_customers")
        total_events, catalogue = con.execute("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM items)"
                                              ).fetchall()[0]
        n_ours, n_theirs = con.execute(
            "SELECT (SELECT count(DISTINCT customer_id) FROM recommendations WHERE run_id = ?), "
            "(SELECT count(DISTINCT customer_id) FROM incumbent_lists WHERE incumbent = ?)",
            [run_id, incumbent]).fetchall()[0]
        theirs_all = con.sql(
            "SELECT customer_id, row_number() OVER (PARTITION BY customer_id ORDER BY rank, item_id) AS position, "
            "item_id FROM incumbent_lists WHERE incumbent = $incumbent", params={"incumbent": incumbent}
        ).to_arrow_table() if builtin is None else None
    finally:
        con.close()
    items, customers = pl.from_arrow(items), pl.from_arrow(customers)
    theirs_all = None if theirs_all is None else pl.from_arrow(theirs_all)
    both = items["customer_id"].unique()
    segments = customer_segments(customers.filter(pl.col("customer_id").is_in(both.implode())))
    summary = {"run_id": run_id, "incumbent": incumbent, "ks": ks, "customers_ours": int(n_ours),
               "customers_incumbent": int(n_theirs), "customers_both": int(len(both)),
               "customers_only_ours": int(n_ours) - int(len(both)), "catalogue_items": int(catalogue)}
    if not len(both):
        raise ValueError(f"incumbent {incumbent!r} covers none of run {run_id}'s customers")
    parts = [segment_means(agreement_per_customer(items, ks), segments),
             segment_means(beyond_per_customer(items, ks, int(total_events), int(catalogue)), segments),
             coverage_rows(items, segments, ks, int(catalogue))]
    if accuracy:
        acc, info = test_period_accuracy(warehouse_dir, checkpoint_dir, ks, builtin=builtin,
                                         incumbent_lists=theirs_all, max_customers=max_accuracy_customers, seed=seed)
        # Accuracy segments: the same definitions, over the customers scored on the test period.
        acc_segments = customer_segments(customers.filter(pl.col("customer_id").is_in(acc["customer_id"].unique()
                                                                                       .implode())))
        parts += [segment_means(acc, acc_segments),
                  accuracy_differences(acc, acc_segments, n_bootstrap, seed)]
        summary["accuracy"] = info
    rows = pl.concat(parts).sort("segment", "metric", "k", "system")
    share = pl.DataFrame([{"segment": "all", "system": "incumbent", "metric": "covered_share", "k": None,
                           "value": len(both) / max(int(n_ours), 1), "ci_low": None, "ci_high": None,
                           "n_customers": int(n_ours)}], schema=ROW_SCHEMA)
    return pl.concat([share, rows]), summary


def _fmt(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def comparison_markdown(rows: pl.DataFrame, summary: dict, segments_shown: int = 6) -> str:
    """The comparison as markdown: the `all` segment in full (one line per metric@k, columns ours,
    incumbent, both = agreement or ours - incumbent [95% CI]), then the headline per segment."""
    name = summary["incumbent"]
    value = {(r["segment"], r["system"], r["metric"], r["k"]): r for r in rows.iter_rows(named=True)}
    lines = [f"Customers: ours {summary['customers_ours']:,}, {name} {summary['customers_incumbent']:,}, "
             f"both {summary['customers_both']:,} (not covered by {name}: {summary['customers_only_ours']:,})."]
    if "accuracy" in summary:
        acc = summary["accuracy"]
        lines.append(f"Accuracy: {acc['n_customers']:,} customers with history before the test period, "
                     f"{acc['n_cases']:,} test-period events ({acc['protocol']}).")
    lines += ["", f"| segment all | k | ours | {name} | both (agreement, or ours - {name} [95% CI]) |",
              "|---|---:|---:|---:|---|"]
    order = list(AGREEMENT_METRICS) + list(BEYOND_METRICS) + list(ACCURACY_METRICS)
    for metric in order:
        for k in summary["ks"]:
            o, t = value.get(("all", "ours", metric, k)), value.get(("all", "incumbent", metric, k))
            b = value.get(("all", "both", metric, k)) or value.get(("all", "both", f"{metric}_diff", k))
            if not (o or t or b):
                continue
            cell = ""
            if b is not None:
                cell = _fmt(b["value"])
                if b["ci_low"] is not None:
                    cell += f" [{_fmt(b['ci_low'])}, {_fmt(b['ci_high'])}]"
            lines.append(f"| {metric} | {k} | {_fmt(o and o['value'])} | {_fmt(t and t['value'])} | {cell} |")
    k = summary["ks"][0]
    segs = rows.filter((pl.col("metric") == "overlap") & (pl.col("k") == k) & (pl.col("segment") != "all"))
    history = [s for _, _, s in HISTORY_BUCKETS if s in set(segs["segment"])]
    roots = (segs.filter(pl.col("segment").str.starts_with("root:")).sort("n_customers", descending=True)
             ["segment"].head(segments_shown).to_list())
    lines += ["", f"| segment | customers | overlap@{k} | rbo@{k} | recall@{k} ours | recall@{k} {name} | "
              f"ours - {name} [95% CI] |", "|---|---:|---:|---:|---:|---:|---|"]
    for segment in ["all"] + history + roots:
        ov, rb = value.get((segment, "both", "overlap", k)), value.get((segment, "both", "rbo", k))
        ro, rt = value.get((segment, "ours", "recall", k)), value.get((segment, "incumbent", "recall", k))
        d = value.get((segment, "both", "recall_diff", k))
        ci = f"{_fmt(d['value'])} [{_fmt(d['ci_low'])}, {_fmt(d['ci_high'])}]" if d and d["ci_low"] is not None \
            else (_fmt(d["value"]) if d else "")
        lines.append(f"| {segment} | {ov['n_customers'] if ov else 0:,} | {_fmt(ov and ov['value'])} | "
                     f"{_fmt(rb and rb['value'])} | {_fmt(ro and ro['value'])} | {_fmt(rt and rt['value'])} | {ci} |")
    return "\n".join(lines)
