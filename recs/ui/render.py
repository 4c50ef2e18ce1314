"""HTML fragments of the side-by-side page (pure functions of the rows; the page lays them out).

A list row carries `data-item`, `data-system` and, for an item both lists hold, the class
`shared` and `data-shared-rank` (its rank in the other list): the highlight a merchandiser
sees is also what the tests read.
"""
from __future__ import annotations

import math
from html import escape

SYSTEM_TITLES = {"incumbent": "Incumbent", "ours": "Ours"}
EVENT_LABELS = {"transaction": "bought", "addtocart": "carted", "view": "viewed"}

CSS = """
<style>
.block-container {padding-top: 2.2rem; max-width: 1500px;}
.rx-banner {display:flex; gap:1.2rem; flex-wrap:wrap; align-items:baseline; color:#475467; font-size:0.86rem;
            margin:-0.4rem 0 0.6rem 0;}
.rx-banner b {color:#101828;}
.rx-chip {display:inline-block; padding:0.05rem 0.45rem; border-radius:999px; font-size:0.74rem;
          background:#f2f4f7; color:#344054; border:1px solid #e4e7ec; white-space:nowrap;}
.rx-chip.shared {background:#fef0c7; color:#93370d; border-color:#fec84b;}
.rx-chip.warn {background:#fee4e2; color:#912018; border-color:#fda29b;}
.rx-head {display:flex; justify-content:space-between; align-items:center; padding:0.5rem 0.75rem;
          border-radius:10px 10px 0 0; color:white; font-weight:600;}
.rx-head.incumbent {background:#475467;} .rx-head.ours {background:#0e7c66;}
.rx-head small {font-weight:400; opacity:0.85;}
.rx-row {display:grid; grid-template-columns: 1.8rem minmax(0,1.35fr) minmax(0,0.85fr) minmax(0,1.9fr) minmax(0,1.15fr); gap:0.5rem; align-items:center;
         padding:0.32rem 0.6rem; border-left:4px solid transparent; border-bottom:1px solid #f2f4f7;
         font-size:0.88rem; min-height:2.55rem;}
.rx-row.shared {border-left-color:#f79009;}
div[class*="st-key-row-"]:has(.rx-row.shared) {background:#fffaeb; border-radius:4px;}
.rx-row.colhead {font-size:0.72rem; text-transform:uppercase; letter-spacing:0.04em; color:#667085;
                 min-height:auto; border-bottom:1px solid #e4e7ec;}
.rx-rank {font-weight:700; color:#344054; text-align:right;}
.rx-item {font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-weight:600; color:#101828;}
.rx-cat {color:#475467; font-size:0.8rem; line-height:1.15;}
.rx-probs {display:grid; grid-template-columns: repeat(3, 1fr); gap:0 0.45rem; font-size:0.7rem; color:#475467;}
.rx-probs > div {display:flex; flex-direction:column; gap:0.1rem;}
.rx-probs .v {display:flex; justify-content:space-between;} .rx-probs .v b {color:#101828; font-weight:600;}
.rx-bar {height:0.38rem; background:#eaecf0; border-radius:4px; overflow:hidden;}
.rx-bar span {display:block; height:100%; background:#12b76a; border-radius:4px;}
.rx-bar.cart span {background:#2e90fa;} .rx-bar.view span {background:#98a2b3;}
.rx-score {font-size:0.74rem; color:#667085; margin-top:0.1rem;}
.rx-score.only {font-size:0.84rem; color:#344054;}
.rx-event {display:inline-block; padding:0 0.4rem; border-radius:4px; font-size:0.74rem; background:#f2f4f7; color:#475467;}
.rx-event.transaction {background:#d1fadf; color:#05603a;} .rx-event.addtocart {background:#d1e9ff; color:#175cd3;}
.rx-up {color:#05603a; font-weight:600;} .rx-down {color:#b42318; font-weight:600;}
.rx-src {font-size:0.72rem; color:#475467; overflow-wrap:anywhere; line-height:1.2;}
.rx-empty {padding:1.2rem; color:#667085; background:#f9fafb; border:1px dashed #d0d5dd; border-radius:0 0 10px 10px;}
.rx-table {width:100%; border-collapse:collapse; font-size:0.85rem;}
.rx-table th {text-align:left; color:#667085; font-weight:500; font-size:0.74rem; text-transform:uppercase;
              letter-spacing:0.03em; border-bottom:1px solid #e4e7ec; padding:0.25rem 0.4rem;}
.rx-table td {padding:0.25rem 0.4rem; border-bottom:1px solid #f2f4f7;}
.rx-table td.num {text-align:right; font-variant-numeric: tabular-nums;}
.rx-table tr.shared td {background:#fffaeb;}
.rx-note {color:#667085; font-size:0.78rem;}
div[class*="st-key-row-"] {gap:0 !important;}
div[class*="st-key-row-"] [data-testid="stHorizontalBlock"] {align-items:center; gap:0.25rem;}
</style>
"""


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value, digits: int = 3) -> str:
    return "—" if _missing(value) else f"{value:.{digits}f}"


def category_text(row: dict) -> str:
    cat, root = row.get("categoryid"), row.get("root_categoryid")
    if cat is None:
        return '<span class="rx-cat">not in catalogue</span>'
    return f'<span class="rx-cat">cat <b>{cat}</b><br>root {root}</span>'


def _bar(label: str, value, css: str) -> str:
    if _missing(value):
        return ""
    width = max(0.0, min(1.0, float(value))) * 100
    return (f'<div><span class="v"><span>{label}</span><b>{value:.2f}</b></span>'
            f'<div class="rx-bar {css}"><span style="width:{width:.0f}%"></span></div></div>')


def scores_html(row: dict) -> str:
    """Per-action probability bars when the system has them, else its score."""
    bars = "".join(_bar(label, row.get(key), css) for label, key, css in
                   (("buy", "p_transaction", "buy"), ("cart", "p_addtocart", "cart"), ("view", "p_view", "view")))
    if not bars:
        return f'<div class="rx-score only">score {number(row.get("score"), 3)}</div>'
    return f'<div class="rx-probs">{bars}</div><div class="rx-score">score {number(row.get("score"), 3)}</div>'


def header_html(system: str, name: str, detail: str) -> str:
    return (f'<div class="rx-head {system}"><span>{SYSTEM_TITLES[system]} · {escape(name)}</span>'
            f'<small>{escape(detail)}</small></div>')


def column_heads() -> str:
    return ('<div class="rx-row colhead"><span>#</span><span>item</span><span>category</span>'
            '<span>p(buy · cart · view) / score</span><span>source</span></div>')


def row_html(system: str, row: dict, shared_rank: int | None) -> str:
    """One list row; `shared_rank`: the item's rank in the other list (None: only this one has it)."""
    other = "ours" if system == "incumbent" else "incumbent"
    shared = shared_rank is not None
    chips = (f' <span class="rx-chip shared" title="also #{shared_rank} in the {other} list">in both · #{shared_rank}</span>'
             if shared else "")
    if row.get("available") is False:
        chips += ' <span class="rx-chip warn">unavailable</span>'
    if row.get("seen"):
        chips += ' <span class="rx-chip">seen before</span>'
    attrs = f'data-system="{system}" data-item="{row["item_id"]}"' + (
        f' data-shared-rank="{shared_rank}"' if shared else "")
    return (f'<div class="rx-row{" shared" if shared else ""}" {attrs}>'
            f'<span class="rx-rank">{row["rank"]}</span>'
            f'<span><span class="rx-item">{row["item_id"]}</span>{chips}</span>'
            f'{category_text(row)}<div>{scores_html(row)}</div>'
            f'<span class="rx-src">{escape(str(row.get("source") or "")).replace("+", " + ")}</span></div>')


def empty_list_html(message: str) -> str:
    return f'<div class="rx-empty">{escape(message)}</div>'


def _history_row(step: dict, timed: bool) -> str:
    when = f"<td>{step['time']:%Y-%m-%d %H:%M}</td>" if timed else ""
    event = (f'<span class="rx-event {escape(str(step["event"]))}">'
             f'{EVENT_LABELS.get(step["event"], escape(str(step["event"])))}</span>')
    cat = "—" if step.get("categoryid") is None else step["categoryid"]
    root = "—" if step.get("root_categoryid") is None else step["root_categoryid"]
    return (f'<tr>{when}<td>{event}</td><td class="num rx-item">{step["item_id"]}</td>'
            f'<td class="num">{cat}</td><td class="num">{root}</td></tr>')


def history_html(steps: list[dict]) -> str:
    """History rows {time (None for a persona / typed step), event, item_id, categoryid,
    root_categoryid}, newest first."""
    if not steps:
        return '<p class="rx-note">No events.</p>'
    timed = all(s.get("time") is not None for s in steps)
    return (f'<table class="rx-table"><tr>{"<th>time</th>" if timed else ""}<th>event</th>'
            '<th style="text-align:right">item</th><th style="text-align:right">category</th>'
            '<th style="text-align:right">root</th></tr>'
            f'{"".join(_history_row(s, timed) for s in steps)}</table>')


AGREEMENT_LABELS = {"overlap": "overlap", "jaccard": "Jaccard", "rbo": "RBO (p=0.9)",
                    "spearman": "Spearman (shared)", "kendall": "Kendall (shared)"}
BEYOND_LABELS = {"diversity": ("root categories", 0), "intra_list_dissimilarity": ("intra-list dissimilarity", 2),
                 "novelty": ("novelty (bits)", 2), "repeat_share": ("already seen", 2),
                 "unavailable_share": ("unavailable", 2)}


def beyond_table_html(incumbent: dict, ours: dict, extra: dict[str, tuple[float | None, float | None]] | None = None) -> str:
    """Beyond-accuracy per system for this customer (plus persona preference rows in `extra`)."""
    rows = [(label, number(incumbent.get(key), digits), number(ours.get(key), digits))
            for key, (label, digits) in BEYOND_LABELS.items()]
    rows += [(escape(label), number(a, 2), number(b, 2)) for label, (a, b) in (extra or {}).items()]
    body = "".join(f'<tr><td>{label}</td><td class="num">{a}</td><td class="num">{b}</td></tr>' for label, a, b in rows)
    return ('<table class="rx-table"><tr><th></th><th style="text-align:right">incumbent</th>'
            f'<th style="text-align:right">ours</th></tr>{body}</table>')


def summary_table_html(summary: dict[str, dict], title: str) -> str:
    """Ratings per system: list ratings (count, mean stars) and item thumbs."""
    def stars(s):
        return "—" if s["mean_list_rating"] is None else f'{s["mean_list_rating"]:.1f} ★ ({s["n_list_ratings"]})'
    body = "".join(f'<tr><td>{SYSTEM_TITLES[system]}</td><td class="num">{stars(s)}</td>'
                   f'<td class="num"><span class="rx-up">▲ {s["thumbs_up"]}</span> · '
                   f'<span class="rx-down">▼ {s["thumbs_down"]}</span></td></tr>'
                   for system, s in sorted(summary.items(), key=lambda kv: kv[0] != "incumbent"))
    return (f'<table class="rx-table"><tr><th>{escape(title)}</th><th style="text-align:right">list rating</th>'
            f'<th style="text-align:right">item thumbs</th></tr>{body}</table>')
