"""The generic trainer: resumable (state + Grain iterator in one Orbax checkpoint), NaN guard."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.train import OptimConfig, TrainTask, fit, load_best_params, tree_allclose

REPO = Path(__file__).resolve().parents[1]
TRUE_W = np.array([1.5, -2.0, 0.5], np.float32)


class RegressionBatches:
    """A batch-per-item source: batch i is a pure function of (seed, i)."""

    def __init__(self, steps: int, batch: int = 32, seed: int = 0, nan_at: int | None = None):
        self.steps, self.batch, self.seed, self.nan_at = steps, batch, seed, nan_at

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, i])
        x = rng.normal(size=(self.batch, 3)).astype(np.float32)
        y = x @ TRUE_W + 0.01 * rng.normal(size=self.batch).astype(np.float32)
        if self.nan_at is not None and i >= self.nan_at:
            y = y * np.nan
        return {"x": x, "y": y}


def loader_factory(source):
    def make(start: int):
        ds = grain.MapDataset.source(source)
        it = iter(ds.to_iter_dataset())
        if start:
            it.set_state({**it.get_state(), "next_index": start})
        return it
    return make


def regression_task() -> TrainTask:
    def init_fn(key, batch):
        return {"w": jax.random.normal(key, (3,)) * 0.1, "b": jnp.zeros(())}

    def loss_fn(params, batch, rng):
        noise = 1e-3 * jax.random.normal(rng, ())  # uses the per-step RNG, so resume must replay it
        pred = batch["x"] @ params["w"] + params["b"] + noise
        return jnp.mean((pred - batch["y"]) ** 2), {}

    def validate(params):
        return {"val_neg_err": -float(jnp.sum((params["w"] - TRUE_W) ** 2))}

    return TrainTask("regression", init_fn, loss_fn, validate, selection_metric="val_neg_err")


CFG = OptimConfig(steps=40, learning_rate=0.1, warmup_steps=5, eval_every=10, checkpoint_every=5, log_every=5)


def test_fit_learns_and_keeps_best(tmp_path):
    result = fit(regression_task(), CFG, loader_factory(RegressionBatches(40)), tmp_path / "ck", progress=False)
    assert result.step == 40 and result.resumed_from == 0
    np.testing.assert_allclose(np.asarray(result.params["w"]), TRUE_W, atol=0.15)
    assert [h["step"] for h in result.history] == [10, 20, 30, 40]
    best, meta = load_best_params(tmp_path / "ck", jax.tree_util.tree_map(np.asarray, result.params))
    assert meta["best"]["step"] == max(result.history, key=lambda h: h["val_neg_err"])["step"]
    assert set(best) == {"w", "b"}


def test_half_plus_restart_plus_half_equals_straight(tmp_path):
    straight = fit(regression_task(), CFG, loader_factory(RegressionBatches(40)), tmp_path / "a", progress=False)
    first = fit(regression_task(), CFG, loader_factory(RegressionBatches(40)), tmp_path / "b", progress=False,
                stop_after=20)
    assert first.step == 20
    second = fit(regression_task(), CFG, loader_factory(RegressionBatches(40)), tmp_path / "b", progress=False)
    assert second.resumed_from == 20 and second.step == 40
    assert tree_allclose(straight.params, second.params, atol=1e-6)


class KillBeforeBatch:
    """An iterator that SIGKILLs its own process when the training loop asks for batch `at`: the
    steps since the last checkpoint are lost, as when a machine dies."""

    def __init__(self, inner, start: int, at: int):
        self.inner, self.position, self.at = inner, start, at

    def __iter__(self):
        return self

    def __next__(self):
        if self.position == self.at:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        self.position += 1
        return next(self.inner)


def killing_loader_factory(source, at: int):
    make = loader_factory(source)
    return lambda start: KillBeforeBatch(make(start), start, at)


def test_sigkill_between_checkpoints_then_resume_matches_straight(tmp_path):
    straight = fit(regression_task(), CFG, loader_factory(RegressionBatches(40)), tmp_path / "a", progress=False)
    # A child process trains 23 steps (checkpoints every 5) and is SIGKILLed when it asks for
    # the 24th batch: steps 21-23 exist in no checkpoint.
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(REPO / 'tests')!r})
        from test_train import regression_task, killing_loader_factory, RegressionBatches, CFG
        from model.train import fit
        fit(regression_task(), CFG, killing_loader_factory(RegressionBatches(40), at=23), {str(tmp_path / 'b')!r},
            progress=False)
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == -9  # killed, not finished
    latest = sorted(int(p.name) for p in (tmp_path / "b" / "latest").iterdir() if p.name.isdigit())
    assert latest[-1] == 20  # the progress after step 20 was lost
    resumed = fit(regression_task(), CFG, loader_factory(RegressionBatches(40)), tmp_path / "b", progress=False)
    assert resumed.resumed_from == 20 and resumed.step == 40
    assert tree_allclose(straight.params, resumed.params, atol=1e-6)


def test_stop_after_then_resume_matches_straight_in_another_process(tmp_path):
    straight = fit(regression_task(), CFG, loader_factory(RegressionBatches(40)), tmp_path / "a", progress=False)
    # A child process trains to step 23, checkpoints it (stop_after) and exits hard (no cleanup).
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(REPO / 'tests')!r})
        from test_train import regression_task, loader_factory, RegressionBatches, CFG
        from model.train import fit
        fit(regression_task(), CFG, loader_factory(RegressionBatches(40)), {str(tmp_path / 'b')!r},
            progress=False, stop_after=23)
        os._exit(9)
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    resumed = fit(regression_task(), CFG, loader_factory(RegressionBatches(40)), tmp_path / "b", progress=False)
    assert resumed.resumed_from == 23
    assert tree_allclose(straight.params, resumed.params, atol=1e-6)


def test_nan_loss_stops_with_clear_error(tmp_path):
    with pytest.raises(FloatingPointError, match="loss is nan at step 15"):
        fit(regression_task(), CFG, loader_factory(RegressionBatches(40, nan_at=12)), tmp_path / "c", progress=False)
