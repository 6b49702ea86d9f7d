"""A warm worker reuses its compiled model per fine-tune depth: the trial must train exactly
as it would on a freshly built model."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import REPO

from tbxsweep.jobs import SlotPlan, TrialJob
from tbxsweep.spec import load_spec

pytestmark = pytest.mark.slow


def _job(spec, tmp_path: Path, number: int, seed: int, params: dict, base: Path) -> TrialJob:
    run = tmp_path / f"trial-{number:04d}"
    return TrialJob(
        number=number,
        trial_id=number,
        params=params,
        seed=seed,
        run_dir=str(run),
        run_name=run.name,
        group=run.name,
        spec=spec,
        storage_url=None,
        slots=SlotPlan("", ("",), 1),
        base_model_path=str(base),
        dispatched_at=time.time(),
    )


def test_a_reused_model_trains_like_a_fresh_one(tmp_path):
    from tbxsweep.trial import _finetune, prepare_base_model, run_trial

    spec = load_spec(
        REPO / "sweeps" / "lr.yaml",
        ["task.epochs=3", "study.pruner.name=none", f"output.dir={tmp_path}"],
    )
    base = tmp_path / "base.keras"
    prepare_base_model(spec, str(base))
    _finetune._compiled.clear()
    a = {"learning_rate": 0.003, "batch_size": 32, "finetune_depth": 2}
    b = {"learning_rate": 0.01, "batch_size": 64, "finetune_depth": 2}
    first = run_trial(_job(spec, tmp_path, 0, 5, a, base), "cpu")
    assert len(_finetune._compiled) == 1  # built and kept
    other = run_trial(_job(spec, tmp_path, 1, 7, b, base), "cpu")
    again = run_trial(_job(spec, tmp_path, 2, 5, a, base), "cpu")
    assert len(_finetune._compiled) == 1  # the same depth reused the same model
    assert first.state.name == other.state.name == again.state.name == "COMPLETE"
    assert other.value != first.value
    assert again.value == pytest.approx(first.value, abs=1e-6)
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert again.metrics[key] == pytest.approx(first.metrics[key], rel=1e-4), key
    assert again.trainable_params == first.trainable_params
