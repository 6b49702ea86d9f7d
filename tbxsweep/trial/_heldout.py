"""The sweep's last step, in a worker: its best trials evaluated once on the test split.

No trial ever reads the test split (validation is carved from the training data); only
this step does, from each chosen trial's best-epoch weights (`best.weights.h5`, written by
the built-in task when a trial ends). The results go into the trial's own TensorBoard run
as `test/accuracy` and `test/loss` (HParams metric columns) and back to the orchestrator,
which puts them in the leaderboard.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tbxsweep.jobs import SlotPlan
from tbxsweep.paths import BEST_WEIGHTS
from tbxsweep.spec import Spec

SAMPLES_MARKER = ".samples"
TEST_TAGS = ("test/accuracy", "test/loss")


@dataclass(frozen=True)
class HeldOutJob:
    """Evaluate `trials` ((number, run directory), best first) on the test split."""

    spec: Spec
    base_model_path: str | None
    slots: SlotPlan
    trials: tuple[tuple[int, str], ...]
    sweep_run_dir: str


def evaluate_held_out(job: HeldOutJob) -> dict[int, dict[str, float]]:
    """{trial number: {"test_accuracy": ..., "test_loss": ...}} of the trials that have
    best-epoch weights; also writes the sweep's sample images if nothing has yet."""
    from tbxsweep.trial._tf import configure

    task = job.spec.task
    configure(task)
    log_sweep_samples(job.spec, Path(job.sweep_run_dir))
    if not job.trials:
        return {}
    from tbxsweep.trial._data import load_test_data

    test = load_test_data(task)
    if test is None:
        return {}
    out: dict[int, dict[str, float]] = {}
    for number, run_dir in job.trials:
        weights = Path(run_dir) / BEST_WEIGHTS
        if weights.is_file():
            out[number] = _evaluate(job, weights, test)
            _log(Path(run_dir), out[number])
    return out


def _evaluate(job: HeldOutJob, weights: Path, test: tuple[Any, Any]) -> dict[str, float]:
    from tbxsweep.trial._base import load_base
    from tbxsweep.trial._data import load_task_data
    from tbxsweep.trial._finetune import build_model
    from tbxsweep.trial.datasets import make_pipeline

    task = job.spec.task
    data = load_task_data(task)
    base_path = Path(job.base_model_path) if job.base_model_path else None
    base = load_base(task, data, base_path)
    model, _ = build_model(base, data)
    model.load_weights(str(weights))
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = test
    ds = make_pipeline(x, y, 256, preprocess=base.preprocess, image_size=base.input_shape[:2])
    loss, accuracy = model.evaluate(ds, verbose=0)
    return {"test_accuracy": float(accuracy), "test_loss": float(loss)}


def _log(run_dir: Path, result: dict[str, float]) -> None:
    """Into the trial's own run: the HParams tab shows them as its `test/...` columns."""
    from tbxsweep.tblog import TrialLogger

    logger = TrialLogger(run_dir)
    logger.scalars(0, {"test/accuracy": result["test_accuracy"], "test/loss": result["test_loss"]})
    logger.close()


def log_sweep_samples(spec: Spec, sweep_run_dir: Path) -> None:
    """A grid of training images per class, with the class names, in the `sweep` run, once
    per sweep (a marker file says it is done; a lost race writes it twice, harmlessly)."""
    if spec.task.train is not None:
        return
    marker = sweep_run_dir / SAMPLES_MARKER
    sweep_run_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return
    os.close(fd)
    from tbxsweep.tblog import TrialLogger, log_samples
    from tbxsweep.trial._data import load_task_data

    try:
        data = load_task_data(spec.task)
    except Exception:  # the first trial reports it, naming itself
        with contextlib.suppress(OSError):
            marker.unlink()
        return
    if data.arrays is None:
        return
    logger = TrialLogger(sweep_run_dir)
    logger.text("data/fine_tune", data.label)
    log_samples(
        logger, "data/fine_tune_samples", data.arrays.x_train, data.arrays.y_train, data.class_names
    )
    logger.close()
