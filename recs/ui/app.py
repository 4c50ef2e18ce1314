"""The side-by-side page: `streamlit run recs/ui/app.py -- --warehouse DIR --checkpoints DIR
[--incumbent NAME]` (what `recs ui` runs).

Every rerun reads the warehouse through short read-only connections (recs/ui/data.py); caches
are keyed by the published snapshot, so tonight's publish shows on the next interaction. The
serving scorer is loaded once per snapshot and strategy (st.cache_resource). Ratings are files
(recs/feedback.py): saving one never waits for, or holds up, a warehouse writer.
"""
from __future__ import annotations

import argparse
import sys
from html import escape

import streamlit as st

from recs import feedback
from recs.ui import data, lists, render, subjects

MODES = ("Customer", "Persona", "Typed history")


def settings() -> argparse.Namespace:
    """The page's settings from the script arguments (`recs ui` passes them all)."""
    parser = argparse.ArgumentParser(prog="recs ui page")
    parser.add_argument("--warehouse", required=True)
    parser.add_argument("--checkpoints", required=True)
    parser.add_argument("--incumbent", default=None)
    return parser.parse_known_args(sys.argv[1:])[0]


@st.cache_data(ttl=300, show_spinner=False, max_entries=8)
def suggestions(snapshot: str, warehouse: str, incumbent: str | None) -> list[dict]:
    return data.suggested_customers(warehouse, incumbent)


@st.cache_data(show_spinner=False, max_entries=4)
def totals(snapshot: str, warehouse: str) -> dict:
    return data.catalogue_totals(warehouse)


@st.cache_data(show_spinner="Building the personas from the catalogue…", max_entries=2)
def personas(snapshot: str, warehouse: str) -> dict:
    from recs.personas import persona_histories

    return persona_histories(warehouse)


@st.cache_data(show_spinner=False, max_entries=4)
def example_history(snapshot: str, warehouse: str) -> str:
    items = data.popular_items(warehouse, 3)
    return ", ".join([str(i) for i in items[:2]] + [f"{i}:addtocart" for i in items[2:]])


@st.cache_resource(show_spinner="Loading the serving models (once)…", max_entries=4)
def scorer(snapshot: str, warehouse: str, checkpoints: str, strategy: str, top_n: int):
    from recs.scoring import load_scorer

    return load_scorer(warehouse, checkpoints, top_n=top_n, strategy=strategy)


def save_list_rating(warehouse: str, key: str, side: lists.SideBySide, system: str, run_id: str | None) -> None:
    stars = st.session_state.get(key)
    if stars is None:
        st.session_state["saved"] = (system, "warning", f"Pick 1-5 stars for the {system} list first.")
        return
    feedback.record_feedback(warehouse, customer=side.subject.key, customer_id=side.subject.customer_id,
                             system=system, rating=stars + 1, run_id=run_id, incumbent=side.incumbent_name)
    st.session_state["saved"] = (system, "success", f"Saved {stars + 1}★ for the {render.SYSTEM_TITLES[system].lower()} "
                                            f"list of {side.subject.label.lower()}.")


def save_thumb(warehouse: str, key: str, side: lists.SideBySide, system: str, item_id: int,
               run_id: str | None) -> None:
    value = st.session_state.get(key)
    if value is None:  # un-clicked: the earlier thumb stays on record
        return
    feedback.record_feedback(warehouse, customer=side.subject.key, customer_id=side.subject.customer_id,
                             system=system, rating=feedback.THUMBS["up" if value == 1 else "down"], item_id=item_id,
                             run_id=run_id, incumbent=side.incumbent_name)
    st.toast(f"Item {item_id} ({system}) saved as thumbs {'up' if value == 1 else 'down'}",
             icon=":material/thumb_up:" if value == 1 else ":material/thumb_down:")


def pick_customer() -> None:
    if st.session_state.get("pick") is not None:
        st.session_state["customer_id"] = str(st.session_state["pick"])


def choose_subject(cfg, snapshot: str, incumbent: str | None):
    """Sidebar: who to show; returns (Subject, Persona or None) or (None, None) with a message shown."""
    mode = st.sidebar.radio("Show lists for", MODES, key="mode", horizontal=True)
    if mode == "Customer":
        suggested = suggestions(snapshot, cfg.warehouse, incumbent)
        if suggested:
            st.session_state.setdefault("customer_id", str(suggested[0]["customer_id"]))
        st.sidebar.text_input("Customer id", key="customer_id", placeholder="e.g. 12345")
        events = {s["customer_id"]: s["n_events"] for s in suggested}
        st.sidebar.selectbox("…or pick an active customer", [None, *events], key="pick", on_change=pick_customer,
                             format_func=lambda c: "—" if c is None else f"{c} · {events[c]} events")
        text = (st.session_state.get("customer_id") or "").strip()
        if not text.isdigit():
            st.info("Type a customer id (digits) in the sidebar.")
            return None, None
        return subjects.customer(int(text)), None
    if mode == "Persona":
        found = personas(snapshot, cfg.warehouse)
        if not found:
            st.info("This catalogue supports no persona.")
            return None, None
        name = st.sidebar.selectbox("Persona", list(found), key="persona", format_func=lambda n: n.replace("_", " "))
        p = found[name]
        return subjects.persona(p.name, p.history, p.description), p
    st.session_state.setdefault("history_text", example_history(snapshot, cfg.warehouse))
    st.sidebar.text_area("Item ids, oldest first", key="history_text", height=110,
                         help="Separated by commas or spaces; add :addtocart or :transaction to a step (default: view).")
    try:
        steps = subjects.parse_history(st.session_state.get("history_text") or "")
    except ValueError as exc:
        st.error(f"Typed history: {exc}")
        return None, None
    return subjects.typed_history(steps), None


def show_list(side: lists.SideBySide, system: str, cfg, run_id: str | None) -> None:
    rows = side.ours if system == "ours" else side.incumbent
    name = side.ours_strategy if system == "ours" else (side.incumbent_name or "none")
    detail = side.ours_origin if system == "ours" else ("stored lists" if side.subject.kind == "customer"
                                                        else "built-in, computed live")
    st.markdown(render.header_html(system, name, detail if rows else ""), unsafe_allow_html=True)
    if not rows:
        st.markdown(render.empty_list_html(side.incumbent_note or "no list"), unsafe_allow_html=True)
        return
    st.markdown(render.column_heads(), unsafe_allow_html=True)
    shared = side.shared_ranks[system]
    # The run the lists are compared against (None for lists computed live: no run made them).
    live = side.subject.kind != "customer" or (system == "ours" and not side.ours_origin.startswith("published"))
    list_run = None if live else run_id
    for row in rows:
        with st.container(key=f"row-{system}-{row['rank']}"):
            left, right = st.columns([12, 2], vertical_alignment="center")
            left.markdown(render.row_html(system, row, shared.get(row["item_id"])), unsafe_allow_html=True)
            key = f"thumb|{side.subject.key}|{system}|{row['item_id']}"
            with right:
                st.feedback("thumbs", key=key, on_change=save_thumb,
                            args=(cfg.warehouse, key, side, system, row["item_id"], list_run))
    stars_key = f"stars|{side.subject.key}|{system}"
    with st.container(key=f"rate-{system}", border=True):
        a, b = st.columns([3, 2], vertical_alignment="center")
        with a:
            st.caption(f"Rate the {render.SYSTEM_TITLES[system].lower()} list for {side.subject.label.lower()}")
            st.feedback("stars", key=stars_key)
        with b:
            st.button(f"Submit {render.SYSTEM_TITLES[system].lower()} rating", key=f"submit-{system}",
                      on_click=save_list_rating, args=(cfg.warehouse, stars_key, side, system, list_run),
                      width="stretch")
        saved = st.session_state.get("saved")
        if saved and saved[0] == system:
            getattr(st, saved[1])(saved[2])
            del st.session_state["saved"]


def show_numbers(side: lists.SideBySide, persona, snapshot: str, cfg) -> None:
    agreement = side.agreement()
    st.markdown(f"**Agreement at k = {side.top_n}**")
    if agreement is None:
        st.caption(side.incumbent_note or "The incumbent has no list here.")
    else:
        n_shared = len(side.shared_ranks["ours"])
        cols = st.columns(3)
        cols[0].metric("shared items", f"{n_shared} / {side.top_n}")
        cols[1].metric("overlap", render.number(agreement["overlap"], 2))
        cols[2].metric("RBO (p=0.9)", render.number(agreement["rbo"], 2))
        cols = st.columns(3)
        cols[0].metric("Jaccard", render.number(agreement["jaccard"], 2))
        cols[1].metric("Spearman (shared)", render.number(agreement["spearman"], 2))
        cols[2].metric("Kendall (shared)", render.number(agreement["kendall"], 2))
    t = totals(snapshot, cfg.warehouse)
    extra = {}
    if persona is not None:
        from recs.personas import preference_metrics

        prices = {r["item_id"]: r["price"] for r in (side.ours + (side.incumbent or [])) if r.get("price") is not None}
        theirs = preference_metrics(persona.preference, [r["item_id"] for r in side.incumbent or []], prices)
        ours = preference_metrics(persona.preference, [r["item_id"] for r in side.ours], prices)
        extra = {f"{persona.preference.metric.replace('_', ' ')} ({persona.preference.description})":
                 (theirs.get(persona.preference.metric) if side.incumbent else None, ours[persona.preference.metric])}
    st.markdown("**Beyond accuracy, this list**")
    st.markdown(render.beyond_table_html(data.beyond_accuracy(side.incumbent or [], side.seen, t) if side.incumbent
                                         else {}, data.beyond_accuracy(side.ours, side.seen, t), extra),
                unsafe_allow_html=True)


def show_feedback(cfg, side: lists.SideBySide) -> None:
    rows = feedback.read_feedback(cfg.warehouse)
    mine = [r for r in rows if r["customer"] == side.subject.key]
    left, right = st.columns(2, gap="large")
    left.markdown(render.summary_table_html(feedback.summarise(mine), side.subject.label), unsafe_allow_html=True)
    right.markdown(render.summary_table_html(feedback.summarise(rows), f"All ratings ({len(rows)})"),
                   unsafe_allow_html=True)
    if mine:
        with st.expander(f"Ratings of {side.subject.label.lower()} ({len(mine)})"):
            st.dataframe([{k: r[k] for k in ("given_at", "system", "kind", "item_id", "rating", "incumbent", "run_id")}
                          for r in reversed(mine)], hide_index=True, width="stretch")


def main() -> None:
    st.set_page_config(page_title="recs · side by side", page_icon=":material/compare_arrows:", layout="wide")
    st.html(render.CSS)
    cfg = settings()
    try:
        snapshot = data.snapshot_key(cfg.warehouse)
    except FileNotFoundError as exc:
        st.error(str(exc))
        st.stop()
    run = data.latest_run(cfg.warehouse)
    stored = data.incumbents(cfg.warehouse)
    names = [i["incumbent"] for i in stored]
    if cfg.incumbent and cfg.incumbent not in names:
        names.insert(0, cfg.incumbent)
    names += [b for b in lists.LIVE_INCUMBENTS if b not in names]
    st.sidebar.title(":material/compare_arrows: Side by side")
    incumbent = st.sidebar.selectbox("Incumbent", names, key="incumbent",
                                     index=names.index(cfg.incumbent) if cfg.incumbent in names else 0)
    max_k = int((run or {}).get("top_n") or 20)
    top_n = st.sidebar.slider("List length (k)", 3, max_k, min(10, max_k), key="top_n")
    subject, persona = choose_subject(cfg, snapshot, incumbent)

    loaded = next((i for i in stored if i["incumbent"] == incumbent), None)
    run_text = (f"run <b>{run['run_id']}</b> · {run.get('strategy') or 'model'} · published "
                f"{run['published_at']:%Y-%m-%d %H:%M}" if run else "no published run yet")
    inc_text = (f"incumbent <b>{incumbent}</b> · {loaded['n_customers']:,} customers · loaded "
                f"{loaded['loaded_at']:%Y-%m-%d %H:%M}" if loaded else f"incumbent <b>{incumbent}</b> · no stored lists")
    st.title(subject.label if subject else "Side by side")
    st.markdown(f'<div class="rx-banner"><span>{run_text}</span><span>{inc_text}</span></div>', unsafe_allow_html=True)
    if run and run.get("guard_warning"):  # e.g. ours IS the item_knn strategy tonight: say so beside the lists
        st.markdown(f'<div class="rx-banner"><span class="rx-chip warn">publishing guard</span>'
                    f'<span>{escape(run["guard_warning"])}</span></div>', unsafe_allow_html=True)
    if subject is None:
        st.stop()

    def get_scorer(strategy: str):
        return scorer(snapshot, cfg.warehouse, cfg.checkpoints, strategy, max_k)

    try:
        if subject.kind == "customer":
            side = lists.for_customer(cfg.warehouse, subject.customer_id, incumbent, top_n, get_scorer, run)
        else:
            side = lists.for_history(cfg.warehouse, subject, incumbent, top_n, get_scorer, run)
    except (ValueError, FileNotFoundError) as exc:
        st.error(str(exc))
        st.stop()

    if subject.description:
        st.caption(subject.description)
    history_col, numbers_col = st.columns([1.15, 1], gap="large")
    with history_col:
        label = "Recent history" if subject.kind == "customer" else "History (as scored)"
        shown = f"{len(side.history)} of {side.n_events} events" if subject.kind == "customer" else f"{side.n_events} steps"
        st.markdown(f"**{label}** <span class='rx-note'>newest first · {shown}</span>", unsafe_allow_html=True)
        st.markdown(render.history_html(side.history), unsafe_allow_html=True)
    with numbers_col:
        show_numbers(side, persona, snapshot, cfg)

    st.markdown("<span class='rx-chip shared'>in both · #r</span> <span class='rx-note'>an item both systems "
                "recommend, and its rank in the other list · thumbs save at once · a list rating saves on Submit; "
                "ratings go to the warehouse table <code>feedback</code></span>", unsafe_allow_html=True)
    left, right = st.columns(2, gap="large")
    run_id = (run or {}).get("run_id")
    with left:
        show_list(side, "incumbent", cfg, run_id)
    with right:
        show_list(side, "ours", cfg, run_id)

    st.subheader("Ratings")
    show_feedback(cfg, side)
    overview = data.comparison_overview(cfg.warehouse, run_id, incumbent)
    if overview:
        with st.expander(f"All customers: `recs compare` figures for run {run_id} vs {incumbent}"):
            st.dataframe(overview, hide_index=True, width="stretch")


main()
