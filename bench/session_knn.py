"""Tune and measure model.session_knn.SessionKNN on the real Retail Rocket sessions.

Protocol (model.baselines.load_sessions): sessions ordered by start; the last 10% are the test
sessions, whose last item is predicted from the items before it. Hyperparameters are tuned ONLY
on a validation split carved from the train sessions: the last 10% of the train sessions are the
validation queries (last item from the preceding ones, at the time of the last-but-one event),
fitted on the first 90%. Metrics: Recall@20 / MRR@20 from rank_of_targets on dense scores
(pessimistic ties), as evaluate_on_sessions does for ItemKNN.

    .venv/bin/python bench/session_knn.py            # defaults: validation + test, ItemKNN beside
    .venv/bin/python bench/session_knn.py --tune     # coordinate search on validation first

--tune starts from session-rec's VSTAN defaults, varies one hyperparameter at a time over GRID
(objective: validation Recall@20 + MRR@20), writes every trial to bench/out/session_knn_tune.json
and evaluates the test split only for the validation winner (never used for choosing). Each
trial fits in ~0.4 s and scores the 11,355 validation queries in ~3 s.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_OUT, log, timer  # noqa: E402

SESSIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "retailrocket-sessions" / "events.csv.gz"
K = 20

# session-rec's VSTAN defaults (algorithms/knn/vstan.py), where the search starts.
SESSION_REC = dict(k=500, sample_size=5000, lambda_spw=1.02, lambda_snh=5.0, lambda_inh=2.05, lambda_ipw=1.02,
                   lambda_idf=5.0, idf_similarity=False, remind=True, popularity_weight=0.0)

# Values tried per hyperparameter in the coordinate search (None = factor off).
GRID = {
    "k": [50, 100, 200, 500, 1000, 2000],
    "sample_size": [0, 500, 1000, 2500, 5000, 10000],
    "lambda_spw": [None, 0.25, 0.5, 1.02, 2.0, 4.0, 8.0],
    "lambda_snh": [None, 0.5, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0],
    "lambda_inh": [None, 0.25, 0.5, 1.0, 2.05, 4.0, 8.0],
    "lambda_ipw": [None, 0.25, 0.5, 1.02, 2.0, 4.0, 8.0],
    "lambda_idf": [None, 0.5, 1.0, 2.0, 5.0, 10.0],
    "idf_similarity": [False, True],
    "remind": [True, False],
    "popularity_weight": [0.0, 1e-6, 1e-3],
}


@dataclasses.dataclass
class Case:
    """Fit rows (+ their times) and query rows (+ times, targets)."""

    fit: np.ndarray
    fit_ts: np.ndarray
    history: np.ndarray
    query_ts: np.ndarray
    target: np.ndarray


def shift_off_last(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded rows -> (rows without their last step, left-padded; the last step)."""
    return np.concatenate([np.zeros((len(rows), 1), rows.dtype), rows[:, :-1]], axis=1), rows[:, -1].copy()


def make_cases(path: Path, val_fraction: float = 0.1):
    from model.baselines import load_sessions
    from model.session_knn import load_session_times

    split = load_sessions(path)
    times = load_session_times(path)
    n_val = int(round(len(split.train) * val_fraction))
    n_fit = len(split.train) - n_val
    val_rows = split.train[n_fit:]
    history, target = shift_off_last(val_rows)
    has_history = (history > 0).any(axis=1)
    val = Case(split.train[:n_fit], times.train_last[:n_fit], history[has_history],
               times.train_query[n_fit:][has_history], target[has_history])
    test = Case(split.train, times.train_last, split.test_history, times.test_query, split.target)
    return split, val, test


def metrics(model, case: Case, use_time: bool = True, chunk_rows: int = 512) -> dict[str, float]:
    from model.metrics import mrr_at_k, rank_of_targets, recall_at_k

    ranks = []
    for a in range(0, len(case.target), chunk_rows):
        b = min(a + chunk_rows, len(case.target))
        args = (case.query_ts[a:b],) if use_time else ()
        ranks.append(rank_of_targets(model.score(case.history[a:b], *args), case.target[a:b]))
    ranks = np.concatenate(ranks)
    return {"recall@20": recall_at_k(ranks, K), "mrr@20": mrr_at_k(ranks, K)}


def evaluate(params: dict, num_items: int, case: Case) -> dict:
    from model.session_knn import SessionKNN

    with timer() as t_fit:
        model = SessionKNN(num_items, **params).fit(case.fit, case.fit_ts)
    with timer() as t_score:
        m = metrics(model, case)
    return {**m, "fit_s": round(t_fit(), 2), "score_s": round(t_score(), 2)}


def objective(m: dict) -> float:
    return m["recall@20"] + m["mrr@20"]


def coordinate_search(num_items: int, val: Case, start: dict, sweeps: int, trials: list) -> dict:
    """Vary one hyperparameter at a time over GRID, keep the best (validation Recall@20 + MRR@20)."""
    best = dict(start)
    seen = {}

    def run(params):
        key = json.dumps(params, sort_keys=True)
        if key not in seen:
            seen[key] = evaluate(params, num_items, val)
            trials.append({"params": params, **seen[key]})
            log(f"  {seen[key]['recall@20']:.4f} {seen[key]['mrr@20']:.4f} {params}")
        return seen[key]

    best_m = run(best)
    for sweep in range(sweeps):
        changed = False
        for name, values in GRID.items():
            for v in values:
                cand = {**best, name: v}
                m = run(cand)
                if objective(m) > objective(best_m) + 1e-5:
                    best, best_m, changed = cand, m, True
            log(f"sweep {sweep} {name}: best {best_m['recall@20']:.4f} / {best_m['mrr@20']:.4f} at {name}={best[name]}")
        if not changed:
            break
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--sweeps", type=int, default=3)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args()
    from model.baselines import ItemKNN
    from model.session_knn import SessionKNN

    split, val, test = make_cases(SESSIONS)
    log(f"validation: fit {len(val.fit)}, {len(val.target)} queries; test: fit {len(test.fit)}, {len(test.target)} queries")
    defaults = {f.name: f.default for f in dataclasses.fields(SessionKNN) if f.name in GRID}
    report = {"defaults": defaults}
    if args.tune:
        trials: list = []
        best = coordinate_search(split.num_items, val, SESSION_REC, args.sweeps, trials)
        report["validation_best"] = {"params": best, **evaluate(best, split.num_items, val)}
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "session_knn_tune.json").write_text(json.dumps({"trials": trials, **report}, indent=1))
        report["test_best"] = evaluate(best, split.num_items, test)
    report["validation_session_rec_defaults"] = evaluate(SESSION_REC, split.num_items, val)
    report["test_session_rec_defaults"] = evaluate(SESSION_REC, split.num_items, test)
    report["validation_defaults"] = evaluate(defaults, split.num_items, val)
    report["test_defaults"] = evaluate(defaults, split.num_items, test)
    with timer() as t_fit:
        model = SessionKNN(split.num_items).fit(test.fit, test.fit_ts)
    with timer() as t_top:
        model.top_candidates(test.history, K, test.query_ts)
    report["test_defaults"].update(fit_again_s=round(t_fit(), 2), top_candidates_s=round(t_top(), 2))
    with timer() as t_fit:
        knn = ItemKNN(split.num_items).fit(test.fit)
    with timer() as t_score:
        report["test_item_knn"] = {**metrics(knn, test, use_time=False), "fit_s": round(t_fit(), 2)}
    report["test_item_knn"]["score_s"] = round(t_score(), 2)
    with timer() as t_fit:
        knn_val = ItemKNN(split.num_items).fit(val.fit)
    report["validation_item_knn"] = metrics(knn_val, val, use_time=False)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
