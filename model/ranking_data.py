"""The ranker's training data: next-event cases with the candidates serving would give them.

The ranker is stacked: its cases come from the validation period, and their candidates and
features from the retrieval model and the co-occurrence index fitted on the train period only,
so the scores it learns from look exactly like the scores it gets at serving (a co-occurrence
index that had seen a case's own session would make its score of the true next item look far
better than it ever is at serving). The test period is never touched.

Training rows keep the next event's slot and a uniform sample of the other candidates (the
softmax over a uniform sample ranks like the full one; candidate isolation makes the number of
slots irrelevant to a score). Selection rows keep every candidate, as served.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from model.batch import History, Items, RankingBatch
from model.candidates import NUM_FEATURES, CandidateGenerator
from model.cases import Cases
from model.data import SequenceTables, _EpochBatchSource, history_batch

CHUNK_ROWS = 2_048


@dataclasses.dataclass(frozen=True)
class RankingCases:
    """N cases with C candidate slots each (item 0 = empty slot)."""

    customer_idx: np.ndarray  # int32 [N]
    visitorid: np.ndarray  # int64 [N]
    history: History  # [N, H] original ids
    history_idx: np.ndarray  # int32 [N, H] the same steps as item_idx
    target_idx: np.ndarray  # int32 [N] the next event's item (may be outside the candidates)
    item_idx: np.ndarray  # int32 [N, C]
    source: np.ndarray  # int8 [N, C]
    features: np.ndarray  # float16 [N, C, F] (float32 in the model)
    target: np.ndarray  # int8 [N, C] 1 at the next event's slot
    labels: np.ndarray  # int8 [N, C] actions on the candidate from the case to its window's end

    def __len__(self) -> int:
        return len(self.target_idx)


def future_labels(cand: np.ndarray, future_item: np.ndarray, future_action: np.ndarray) -> np.ndarray:
    """int8 [n, C]: OR of the actions of the future steps on each candidate."""
    match = (cand[:, :, None] == future_item[:, None, :]) & (cand[:, :, None] > 0)
    return np.bitwise_or.reduce(np.where(match, future_action[:, None, :], 0), axis=2).astype(np.int8)


def _keep_slots(cand: np.ndarray, target: np.ndarray, keep: int, rng: np.random.Generator) -> np.ndarray:
    """[n, keep] slot indices: the target's slot first (when present), then random non-empty slots."""
    key = rng.random(cand.shape)
    key = np.where(target > 0, -1.0, key)
    key = np.where(cand == 0, 2.0, key)
    return np.argsort(key, axis=1, kind="stable")[:, :keep]


def build_ranking_cases(tables: SequenceTables, cases: Cases, generator: CandidateGenerator, retriever,
                        *, keep: int | None = None, seed: int = 0, progress=None) -> RankingCases:
    """Candidates, features and labels of `cases` (keep: slots per row; None = all)."""
    rng = np.random.default_rng([seed, 11])
    parts: dict[str, list] = {k: [] for k in ("item_idx", "source", "features", "target", "labels")}
    history = history_batch(tables, cases.history, cases.visitorid, np.arange(len(cases)))  # once, sliced below
    hist = cases.history
    for start in range(0, len(cases), CHUNK_ROWS):
        rows = np.arange(start, min(start + CHUNK_ROWS, len(cases)))
        retrieved = retriever(History(*(x[rows] for x in history))) if retriever is not None else None
        cs = generator.generate(hist.item[rows], hist.action[rows], retrieved)
        target = ((cs.item_idx == cases.target_idx[rows, None]) & (cs.item_idx > 0)).astype(np.int8)
        labels = future_labels(cs.item_idx, cases.future_item[rows], cases.future_action[rows])
        arrays = {"item_idx": cs.item_idx, "source": cs.source, "features": cs.features, "target": target,
                  "labels": labels}
        if keep is not None and keep < cs.item_idx.shape[1]:
            slots = _keep_slots(cs.item_idx, target, keep, rng)
            arrays = {k: np.take_along_axis(v, slots[..., None] if v.ndim == 3 else slots, axis=1)
                      for k, v in arrays.items()}
        for k, v in arrays.items():
            parts[k].append(v.astype(np.float16) if k == "features" else v)
        if progress is not None:
            progress(len(rows))
    joined = {k: np.concatenate(v) for k, v in parts.items()} if parts["item_idx"] else None
    if joined is None:
        width = keep or generator.config.width
        joined = {"item_idx": np.zeros((0, width), np.int32), "source": np.zeros((0, width), np.int8),
                  "features": np.zeros((0, width, NUM_FEATURES), np.float16),
                  "target": np.zeros((0, width), np.int8), "labels": np.zeros((0, width), np.int8)}
    return RankingCases(cases.customer_idx, cases.visitorid, history, cases.history.item, cases.target_idx,
                        **joined)


def candidate_items(tables: SequenceTables, item_idx: np.ndarray) -> Items:
    """Items (original ids, latest category / root) of dense candidate slots; 0 stays padding."""
    valid = item_idx > 0
    return Items(tables.item_ids[item_idx], np.where(valid, tables.item_category[item_idx], 0).astype(np.int32),
                 np.where(valid, tables.item_root[item_idx], 0).astype(np.int32))


def ranking_batch(tables: SequenceTables, cases: RankingCases, rows: np.ndarray) -> RankingBatch:
    """The RankingBatch of `rows` (numpy)."""
    return RankingBatch(
        history=History(*(x[rows] for x in cases.history)),
        candidates=candidate_items(tables, cases.item_idx[rows]),
        features=cases.features[rows].astype(np.float32),
        target=cases.target[rows].astype(np.float32),
        labels=cases.labels[rows].astype(np.int32),
    )


class _CasesHolder:
    """Lets _EpochBatchSource draw rows of RankingCases like those of a split."""

    def __init__(self, tables: SequenceTables, cases: RankingCases):
        self._tables, self._cases = tables, cases

    def split(self, name: str) -> RankingCases:
        return self._cases


class RankingBatchSource(_EpochBatchSource):
    """Grain source: step -> RankingBatch of precomputed cases (epoch shuffles, pure in step).

    Rows whose next event is not among the candidates only train the cart / purchase heads.
    """

    def __init__(self, tables: SequenceTables, cases: RankingCases, batch_size: int, *, seed: int = 0,
                 num_steps: int | None = None):
        super().__init__(_CasesHolder(tables, cases), "cases", batch_size, seed=seed, num_steps=num_steps)
        self.ranking_tables = tables

    def __getitem__(self, step: int) -> RankingBatch:
        return ranking_batch(self.ranking_tables, self.split, self.local_rows(self.rows(step)))

    def __getstate__(self) -> dict:
        raise TypeError("RankingBatchSource holds precomputed arrays: use it in-process (worker_count=0)")
