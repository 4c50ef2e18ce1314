"""model/tasks.py: both training tasks on real `recs generate --scale tiny` tables, through the real
Grain loader and Orbax checkpoints (resume, stale-data restart, resume equivalence, embedding
transfer and freezing, NaN guard)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest

from model.config import PROFILES
from model.embeddings import SHARED_EMBEDDING_MODULES
from model.ranking_task import train_ranking_model
from model.tasks import checkpoint_path, data_fingerprint, discard_stale_checkpoint, train_retrieval_model
from model.train import load_best_params
from tests.trained_fixtures import (TinyTrained, copy_checkpoints, copy_warehouse, rebuild_sequences,  # noqa: F401
                                    tiny_trained, tiny_warehouse)

TINY = PROFILES["tiny"]


def step_dirs(ckpt: Path, which: str) -> list[int]:
    """Checkpointed steps under `<ckpt>/<which>` (latest or best)."""
    return sorted(int(p.name) for p in (ckpt / which).iterdir() if p.name.isdigit())


def checkpoint_meta(ckpt: Path, which: str = "latest") -> dict:
    [step] = step_dirs(ckpt, which)
    return json.loads((ckpt / which / str(step) / "meta" / "metadata").read_text())


def flat_params(params) -> dict[str, np.ndarray]:
    """{"module/name": array} of a Haiku params dict."""
    return {f"{module}/{name}": np.asarray(value)
            for module, values in params.items() for name, value in values.items()}


def assert_same_params(a, b, atol: float = 0.0) -> None:
    fa, fb = flat_params(a), flat_params(b)
    assert fa.keys() == fb.keys()
    for key in fa:
        np.testing.assert_allclose(fa[key], fb[key], atol=atol, rtol=0, err_msg=key)


def latest_params(ckpt: Path):
    """Params of the `latest/` checkpoint (load_best_params prefers `best/`)."""
    mgr = ocp.CheckpointManager(ckpt.resolve() / "latest")
    restored = mgr.restore(mgr.latest_step(), args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return restored["state"]["params"]


def shared_embeddings(params) -> dict[str, np.ndarray]:
    return {k: v for k, v in flat_params(params).items() if k.split("/")[0] in SHARED_EMBEDDING_MODULES}


def test_tiny_profile_trains_both_models_into_latest_and_best(tiny_trained: TinyTrained):
    build = tiny_trained.warehouse.build_report
    # Enough rows that every tiny batch of 16 is a distinct slice of the train split.
    assert build["n_train"] >= 20 * TINY.retrieval.batch_size and build["n_val"] > 0
    for summary, tc in ((tiny_trained.retrieval, TINY.retrieval), (tiny_trained.ranking, TINY.ranking)):
        ckpt = Path(summary["checkpoint"])
        assert ckpt == checkpoint_path(tiny_trained.checkpoint_dir, summary["model"])
        assert (summary["steps"], summary["resumed_from"], summary["refit"]) == (tc.steps, 0, False)
        assert step_dirs(ckpt, "latest") == [tc.steps]
        # latest holds model + optimizer state + the Grain iterator position (resumable data).
        assert {p.name for p in (ckpt / "latest" / str(tc.steps)).iterdir()} >= {"state", "meta", "data"}
        # best/ holds one checkpoint of a validated step with the best selection metric.
        [best_step] = step_dirs(ckpt, "best")
        metric = "val_recall@100" if summary["model"] == "retrieval" else "val_recall@20"
        by_step = {h["step"]: h for h in checkpoint_meta(ckpt)["history"]}
        assert by_step[best_step][metric] == summary["best"][metric]
        assert summary["final"]["step"] == tc.steps and np.isfinite(summary["final"]["train_loss"])
        meta = checkpoint_meta(ckpt)
        assert [h["step"] for h in meta["history"]] == [20, 40]  # validated every eval_every=20 steps
        assert meta["data_fingerprint"] == data_fingerprint(tiny_trained.warehouse_dir)
        assert meta["profile"] == json.loads(json.dumps(TINY.to_dict()))
    assert 0.0 <= tiny_trained.retrieval["best"]["val_recall@100"] <= 1.0
    assert 0.0 <= tiny_trained.ranking["best"]["val_recall@20"] <= 1.0
    ranking_meta = checkpoint_meta(Path(tiny_trained.ranking["checkpoint"]))
    assert ranking_meta["init_from_retrieval"] is False
    # The ranker is stacked on the retrieval checkpoint it names, trained on validation cases.
    assert ranking_meta["stage_one"]["step"] == tiny_trained.retrieval["best"]["step"]
    assert ranking_meta["cases"]["train"] > 0 and ranking_meta["cases"]["selection"] > 0


def test_best_checkpoint_is_the_step_the_summary_names(tiny_trained: TinyTrained):
    for summary in (tiny_trained.retrieval, tiny_trained.ranking):
        assert step_dirs(Path(summary["checkpoint"]), "best") == [summary["best"]["step"]]


def test_rerun_on_same_data_resumes_and_trains_nothing(tiny_trained: TinyTrained, tmp_path: Path):
    ckpt_dir = copy_checkpoints(tiny_trained.checkpoint_dir, tmp_path / "checkpoints")
    before = {m: load_best_params(checkpoint_path(ckpt_dir, m))[0] for m in ("retrieval", "ranking")}
    # Nothing to discard: same data, same profile (the stored profile is its JSON round trip).
    assert not discard_stale_checkpoint(checkpoint_path(ckpt_dir, "retrieval"),
                                        data_fingerprint(tiny_trained.warehouse_dir), TINY)
    retrieval = train_retrieval_model(tiny_trained.warehouse_dir, ckpt_dir, profile="tiny", progress=False)
    ranking = train_ranking_model(tiny_trained.warehouse_dir, ckpt_dir, profile="tiny", progress=False)
    for summary, tc in ((retrieval, TINY.retrieval), (ranking, TINY.ranking)):
        assert summary["resumed_from"] == summary["steps"] == tc.steps
        assert step_dirs(Path(summary["checkpoint"]), "latest") == [tc.steps]
    assert retrieval["best"]["step"] == tiny_trained.retrieval["best"]["step"]
    assert retrieval["best"]["val_recall@100"] == tiny_trained.retrieval["best"]["val_recall@100"]
    assert ranking["best"]["step"] == tiny_trained.ranking["best"]["step"]
    assert ranking["best"]["val_recall@20"] == tiny_trained.ranking["best"]["val_recall@20"]
    for model in ("retrieval", "ranking"):
        assert_same_params(load_best_params(checkpoint_path(ckpt_dir, model))[0], before[model])


def test_rerun_after_sequence_tables_changed_starts_fresh(tiny_trained: TinyTrained, tmp_path: Path):
    warehouse = copy_warehouse(tiny_trained.warehouse_dir, tmp_path / "warehouse")
    ckpt_dir = copy_checkpoints(tiny_trained.checkpoint_dir, tmp_path / "checkpoints")
    old_fingerprint = data_fingerprint(warehouse)
    rebuild_sequences(warehouse, min_user_events=2, min_item_events=3)
    new_fingerprint = data_fingerprint(warehouse)
    assert new_fingerprint != old_fingerprint
    # Resuming would return at once (resumed_from=40); the stale checkpoint is dropped instead.
    summary = train_retrieval_model(warehouse, ckpt_dir, profile="tiny", progress=False)
    assert (summary["resumed_from"], summary["steps"]) == (0, TINY.retrieval.steps)
    ckpt = checkpoint_path(ckpt_dir, "retrieval")
    meta = checkpoint_meta(ckpt)
    assert meta["data_fingerprint"] == new_fingerprint
    assert [h["step"] for h in meta["history"]] == [20, 40]  # a fresh history, not the old one extended
    # Another profile is stale too, even on the same data.
    other = dataclasses.replace(TINY, retrieval=dataclasses.replace(TINY.retrieval, learning_rate=1e-3))
    assert discard_stale_checkpoint(ckpt, new_fingerprint, other)
    assert not ckpt.exists()


def test_rerun_with_other_steps_or_seed_starts_fresh(tiny_trained: TinyTrained, tmp_path: Path):
    """A finished 40-step run is not returned for --steps 20 (nor resumed for 60: its
    learning-rate schedule was for 40 steps), and another seed is another run."""
    ckpt_dir = copy_checkpoints(tiny_trained.checkpoint_dir, tmp_path / "checkpoints")
    shorter = train_retrieval_model(tiny_trained.warehouse_dir, ckpt_dir, profile="tiny", steps=20, progress=False)
    assert (shorter["resumed_from"], shorter["steps"]) == (0, 20)
    again = train_retrieval_model(tiny_trained.warehouse_dir, ckpt_dir, profile="tiny", steps=20, progress=False)
    assert (again["resumed_from"], again["steps"]) == (20, 20)  # same settings: resumes, trains nothing
    reseeded = train_retrieval_model(tiny_trained.warehouse_dir, ckpt_dir, profile="tiny", steps=20, seed=1,
                                     progress=False)
    assert (reseeded["resumed_from"], reseeded["steps"]) == (0, 20)
    assert checkpoint_meta(checkpoint_path(ckpt_dir, "retrieval"))["settings"]["optim"]["seed"] == 1


def test_half_then_resume_equals_straight_run_on_real_tables(tiny_trained: TinyTrained, tmp_path: Path):
    # The straight run is the session's 40-step retrieval model (same data, profile and seed).
    steps = TINY.retrieval.steps
    first = train_retrieval_model(tiny_trained.warehouse_dir, tmp_path, profile="tiny", stop_after=steps // 2,
                                  progress=False)
    ckpt = checkpoint_path(tmp_path, "retrieval")
    assert (first["steps"], first["resumed_from"]) == (steps // 2, 0)
    assert step_dirs(ckpt, "latest") == [steps // 2]
    halfway = latest_params(ckpt)
    second = train_retrieval_model(tiny_trained.warehouse_dir, tmp_path, profile="tiny", progress=False)
    assert (second["steps"], second["resumed_from"]) == (steps, steps // 2)
    straight = latest_params(Path(tiny_trained.retrieval["checkpoint"]))
    assert_same_params(latest_params(ckpt), straight, atol=1e-5)
    assert second["final"]["val_recall@100"] == pytest.approx(tiny_trained.retrieval["final"]["val_recall@100"])
    # The second half did move the parameters: the comparison is not between two idle runs.
    changed = [k for k, v in flat_params(halfway).items() if not np.allclose(v, flat_params(straight)[k], atol=1e-5)]
    assert any(k.startswith("item_embedding") for k in changed), changed


def test_ranking_from_retrieval_tables_frozen_keeps_them_and_trains_the_rest(tiny_trained: TinyTrained,
                                                                             tmp_path: Path):
    retrieval_params, _ = load_best_params(checkpoint_path(tiny_trained.checkpoint_dir, "retrieval"))
    retrieval_tables = shared_embeddings(retrieval_params)
    assert {k.split("/")[0] for k in retrieval_tables} == {"item_embedding", "category_embedding"}
    fresh, _ = load_best_params(checkpoint_path(tiny_trained.checkpoint_dir, "ranking"))  # own tables

    ckpt_dir = tmp_path / "checkpoints"
    copy_checkpoints(checkpoint_path(tiny_trained.checkpoint_dir, "retrieval"), ckpt_dir / "retrieval")
    summary = train_ranking_model(tiny_trained.warehouse_dir, ckpt_dir, profile="tiny", steps=6, progress=False,
                                  init_from_retrieval=True, freeze_embeddings=True)
    assert summary["steps"] == 6
    trained, meta = load_best_params(checkpoint_path(ckpt_dir, "ranking"))
    assert meta["freeze_embeddings"] is True and meta["init_from_retrieval"] is True
    for name, table in shared_embeddings(trained).items():
        np.testing.assert_array_equal(table, retrieval_tables[name], err_msg=name)
        assert not np.array_equal(table, flat_params(fresh)[name]), name  # the transplant did something
    # The rest trained: it differs from a 6-step run's init only if it moved; compare to the
    # 40-step ranker instead (other steps, same init key): nearly every other leaf differs.
    moved = [name for name, value in flat_params(trained).items()
             if name not in retrieval_tables and not np.allclose(value, flat_params(fresh)[name])]
    assert len(moved) >= len(flat_params(trained)) - len(retrieval_tables) - 2


def test_freeze_without_init_from_retrieval_is_refused(tiny_trained: TinyTrained, tmp_path: Path):
    with pytest.raises(ValueError, match="needs --init-from-retrieval"):
        train_ranking_model(tiny_trained.warehouse_dir, tmp_path, profile="tiny", steps=2, progress=False,
                            freeze_embeddings=True)


def test_nan_loss_raises_floating_point_error(tiny_warehouse, tmp_path: Path):
    exploding = dataclasses.replace(TINY, retrieval=dataclasses.replace(TINY.retrieval, learning_rate=1e9))
    with pytest.raises(FloatingPointError, match=r"retrieval: loss is nan at step 10.*Lower the learning rate"):
        train_retrieval_model(tiny_warehouse.warehouse_dir, tmp_path, profile=exploding, steps=10, progress=False)
