"""A warm worker reuses its compiled model per fine-tune depth: the trial must train exactly
as it would on a freshly built model."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

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


def _demo(tmp_path: Path, *overrides: str) -> tuple[Any, Path]:
    """The digits demo's spec without pruning (and `overrides`), and its base pretrained."""
    from tbxsweep.trial import prepare_base_model

    spec = load_spec(
        REPO / "sweeps" / "lr.yaml",
        [*overrides, "study.pruner.name=none", f"output.dir={tmp_path}"],
    )
    base = tmp_path / "base.keras"
    prepare_base_model(spec, str(base))
    return spec, base


def test_a_reused_model_trains_like_a_fresh_one(tmp_path):
    from tbxsweep.trial import _finetune, run_trial

    spec, base = _demo(tmp_path, "task.epochs=3")
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


def test_a_compiled_models_train_function_is_traced_once(tmp_path, monkeypatch):
    """Its metrics and loss are built before the first fit (`_finetune._prebuild`): built
    inside the first trace, their new variables made TensorFlow trace the train step twice."""
    import keras.src.backend.tensorflow.trainer as tf_trainer

    from tbxsweep.trial import _finetune, run_trial

    spec, base = _demo(tmp_path, "task.epochs=1")
    _finetune._compiled.clear()
    traced: list[str] = []
    step = tf_trainer.TensorFlowTrainer.train_step

    def counted(self, data):
        traced.append(self.name)
        return step(self, data)

    monkeypatch.setattr(tf_trainer.TensorFlowTrainer, "train_step", counted)
    params = {"learning_rate": 0.003, "batch_size": 32, "finetune_depth": 2}
    for n in range(2):
        assert run_trial(_job(spec, tmp_path, n, 5, params, base), "cpu").state.name == "COMPLETE"
    assert traced == ["finetune"]


def test_one_masked_model_trains_each_depth_like_a_model_frozen_to_it(tmp_path, monkeypatch):
    """A small base gets one model for every depth; a depth-1 trial on it (after a depth-4
    one) matches a model built and frozen for depth 1, and leaves the frozen layers as
    they were."""
    import numpy as np

    from tbxsweep.trial import _finetune, run_trial

    spec, base = _demo(tmp_path, "task.epochs=2")
    deep = {"learning_rate": 0.003, "batch_size": 64, "finetune_depth": 4}
    shallow = {"learning_rate": 0.01, "batch_size": 32, "finetune_depth": 1}
    _finetune._compiled.clear()
    _finetune._base_weights.clear()  # earlier tests' bases would come first below
    run_trial(_job(spec, tmp_path, 0, 3, deep, base), "cpu")
    masked = run_trial(_job(spec, tmp_path, 1, 5, shallow, base), "cpu")
    (entry,) = _finetune._compiled.values()
    assert sorted(entry.plans) == [0, 1, 2, 3, 4]  # one model serves every depth
    pretrained = next(iter(_finetune._base_weights.values()))
    after = entry.copy.get_weights()
    # conv1..conv3 and their BatchNorms stayed frozen; only `dense` (the top layer) moved.
    names = [w.path for w in entry.copy.weights]
    changed = zip(names, after, pretrained, strict=True)
    moved = sorted({n.split("/")[-2] for n, a, b in changed if (a != b).any()})
    assert moved == ["dense"]

    monkeypatch.setattr(_finetune, "MASK_MAX_WORK", 0)  # one model per depth, frozen by flag
    _finetune._compiled.clear()
    frozen = run_trial(_job(spec, tmp_path, 2, 5, shallow, base), "cpu")
    (entry,) = _finetune._compiled.values()
    assert list(entry.plans) == [1] and not entry.masks
    assert masked.state.name == frozen.state.name == "COMPLETE"
    assert masked.trainable_params == frozen.trainable_params
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert masked.metrics[key] == pytest.approx(frozen.metrics[key], rel=1e-4), key
    assert np.isfinite(masked.value)


def test_only_a_tiny_task_gets_the_masked_model(tmp_path):
    """The digits demo's work (weights x samples x epochs) is under the limit; the same
    task with 15 epochs is over it and keeps one model per depth."""
    from tbxsweep.trial import _finetune, prepare_base_model
    from tbxsweep.trial._base import load_base
    from tbxsweep.trial._data import load_task_data

    spec = load_spec(REPO / "sweeps" / "lr.yaml", [f"output.dir={tmp_path}"])
    path = tmp_path / "base.keras"
    prepare_base_model(spec, str(path))
    data = load_task_data(spec.task)
    base = load_base(spec.task, data, path)
    assert (base.model.count_params(), len(data.arrays.y_train)) == (60384, 573)
    assert _finetune._tiny(base, data, spec.task)  # 60,384 x 573 x 6 = 2.1e8
    longer = spec.task.model_copy(update={"epochs": 15})  # 5.2e8
    assert not _finetune._tiny(base, data, longer)
    # Masking is exact only when the optimizer alone decides what trains.
    assert _finetune._maskable(base, spec.task)
    assert not _finetune._maskable(base, spec.task.model_copy(update={"mixed_precision": True}))


def test_a_regularized_base_trains_each_depth_like_a_model_frozen_to_it(tmp_path, monkeypatch):
    """Keras adds the penalty of trainable weights only: a depth-1 trial on a base with
    kernel regularizers reports the loss of a model frozen to depth 1, not one that also
    counts the frozen layers' penalties."""
    from tbxsweep.trial import _finetune, run_trial

    spec = load_spec(
        REPO / "sweeps" / "lr.yaml",
        [
            "task.epochs=2",
            "task.base_model={builder: 'fake_trials:regularized_base'}",
            "study.pruner.name=none",
            f"output.dir={tmp_path}",
        ],
    )
    shallow = {"learning_rate": 0.01, "batch_size": 64, "finetune_depth": 1}
    none = tmp_path / "unused.keras"
    _finetune._compiled.clear()
    first = run_trial(_job(spec, tmp_path, 0, 5, shallow, none), "cpu")
    monkeypatch.setattr(_finetune, "MASK_MAX_WORK", 0)  # one model per depth, frozen by flag
    _finetune._compiled.clear()
    frozen = run_trial(_job(spec, tmp_path, 1, 5, shallow, none), "cpu")
    (entry,) = _finetune._compiled.values()
    assert not entry.masks
    _finetune._compiled.clear()
    assert first.state.name == frozen.state.name == "COMPLETE", first.error
    assert first.trainable_params == frozen.trainable_params
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert first.metrics[key] == pytest.approx(frozen.metrics[key], rel=1e-4), key


def test_a_masked_weight_stays_bit_identical_when_its_gradient_is_inf():
    """inf x 0 is NaN: a mask that multiplies would write NaN into a frozen weight."""
    import keras
    import numpy as np

    from tbxsweep.trial import _finetune

    frozen = keras.Variable(np.array([1.5, -2.0, 0.25], np.float32), name="frozen")
    trained = keras.Variable(np.array([1.5, -2.0, 0.25], np.float32), name="trained")
    masks = {
        id(frozen): keras.Variable(0.0, trainable=False, name="grad_mask"),
        id(trained): keras.Variable(1.0, trainable=False, name="grad_mask"),
    }
    optimizer = _finetune._masked_adam(0.1, masks)
    before = np.array(frozen).tobytes()
    for _ in range(2):
        grads = [
            np.array([np.inf, -np.inf, np.nan], np.float32),
            np.array([1.0, -1.0, 1.0], np.float32),
        ]
        optimizer.apply(grads, [frozen, trained])
    assert np.array(frozen).tobytes() == before
    assert np.all(np.isfinite(np.array(trained))) and not np.array_equal(trained, frozen)


def test_a_reused_model_under_mixed_precision_restores_its_loss_scale(tmp_path):
    """Restoring the optimizer's initial state must not zero the loss scale (a zero scale
    would leave every later trial untrained)."""
    import keras

    from tbxsweep.trial import _finetune, run_trial

    spec, base = _demo(tmp_path, "task.epochs=2", "task.mixed_precision=true")
    params = {"learning_rate": 0.003, "batch_size": 64, "finetune_depth": 2}
    _finetune._compiled.clear()
    try:
        first = run_trial(_job(spec, tmp_path, 0, 5, params, base), "cpu")
        again = run_trial(_job(spec, tmp_path, 1, 5, params, base), "cpu")
        (entry,) = _finetune._compiled.values()
        assert not entry.masks  # the loss scale must not see frozen weights' gradients
        optimizer = entry.model.optimizer
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        assert float(optimizer.dynamic_scale) > 1.0
    finally:
        _finetune._compiled.clear()
        keras.mixed_precision.set_global_policy("float32")
    assert first.state.name == again.state.name == "COMPLETE"
    assert again.metrics["val_accuracy"] == pytest.approx(first.metrics["val_accuracy"], abs=0.02)
    assert again.metrics["loss"] == pytest.approx(first.metrics["loss"], rel=0.05)
