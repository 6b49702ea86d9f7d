"""What a training function sees of its trial: parameters, logger, pruning, device."""

from __future__ import annotations

import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any

from tbxsweep.errors import TrialFailed
from tbxsweep.paths import BEST_MODEL, CHECKPOINT_JSON, CHECKPOINT_WEIGHTS, TRIAL_JSON
from tbxsweep.tblog import TrialLogger


class TrialPruned(Exception):
    """Raised by `TrialContext.report` when the pruner stops the trial."""


class TrialContext:
    """Handed to every training function (built-in or `task.train`).

    Attributes:
        number: the Optuna trial number.
        params: the sampled hyperparameters, plain Python values.
        seed: the seed this run should use.
        device: "gpu:<id>" or "cpu".
        run_dir: this trial's TensorBoard directory (also the place for its own files).
        logger: the trial's TrialLogger (scalars, text; `.writer` for anything else).
        epochs: `task.epochs` from the spec.
        histograms: `logging.histograms` from the spec (log weight histograms per epoch).
        resume_dir: when this trial re-runs one that was interrupted, that run's directory
            (see `resume_state`); None otherwise.
        checkpoint_every_s: `task.checkpoint_every_s`: `save_checkpoint` writes at most
            this often (0: every call).
        task: the spec's `task` section (for `data`).
        keep_model: whether the sweep keeps models (`output.keep_models > 0`): without it
            `save_model` writes nothing.
        model_bar: `save_model` writes only for a best value beyond this one (the worst
            value among the models the sweep kept when this trial started: one not beyond
            it cannot enter the best `output.keep_models`); None: for any value.
        last_step: the step whose report ends the training (the built-in task's last
            epoch): its value goes to the storage, but the pruner is not asked (the work
            is done: pruning it would only drop a finished trial from the ranking).
            None: the pruner is asked at every step (a `task.train` function counts its
            own steps).
    """

    def __init__(
        self,
        *,
        number: int,
        params: dict[str, Any],
        seed: int,
        device: str,
        run_dir: Path,
        logger: TrialLogger,
        metric: str,
        direction: str,
        epochs: int,
        pruning: Any | None,
        histograms: bool = False,
        resume_dir: Path | None = None,
        checkpoint_every_s: float = 0.0,
        task: Any = None,
        keep_model: bool = False,
        model_bar: float | None = None,
        last_step: int | None = None,
    ) -> None:
        self.number = number
        self.params = params
        self.seed = seed
        self.device = device
        self.run_dir = run_dir
        self.logger = logger
        self.metric = metric
        self.direction = direction
        self.epochs = epochs
        self._pruning = pruning
        self.last_step = last_step
        self.histograms = histograms
        self.resume_dir = resume_dir
        self.checkpoint_every_s = checkpoint_every_s
        self.task = task
        self.keep_model = keep_model
        self.model_bar = model_bar
        self._saved_epoch: int | None = None
        self.history: list[tuple[int, dict[str, float]]] = []
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.epochs_run = 0
        self.last: dict[str, float] = {}
        self.first_epoch_end: float | None = None
        self.epoch_seconds: list[float] = []
        self.trainable_params: int | None = None
        # The built-in task's feature cache: whether this trial trained on it (None: it
        # was not asked) and the seconds it spent building caches (trial/_cache.py).
        self.feature_cache: bool | None = None
        self.cache_build_s = 0.0
        self._last_epoch_end = time.time()
        self.started_at = time.time()
        self._last_checkpoint = self.started_at
        self._write_record()

    def data(self, split: str) -> tuple[Any, Any]:
        """The spec's `task.dataset`, split as the built-in task splits it: `(x, y)` of
        "train", "val" or "test" (float32 NHWC images in [0, 1], int labels of the
        fine-tuning classes). Nothing is loaded unless asked, and "test" only when asked:
        a `task.train` function that selects on the test split does so by its own choice.

        Raises:
            TrialFailed: an unknown split, or a dataset without that split.
        """
        from tbxsweep.trial._data import load_task_data, load_test_data

        if split not in ("train", "val", "test") or self.task is None:
            raise TrialFailed(f"ctx.data: split must be 'train', 'val' or 'test', got {split!r}")
        if split == "test":
            test = load_test_data(self.task)
            if test is None:
                raise TrialFailed("ctx.data: task.dataset has no test split")
            return test
        arrays = load_task_data(self.task).arrays
        if arrays is None:
            raise TrialFailed("ctx.data: task.dataset's loader returned tf.data datasets")
        if split == "train":
            return arrays.x_train, arrays.y_train
        return arrays.x_val, arrays.y_val

    def report(self, step: int, metrics: dict[str, float] | float) -> None:
        """Log one epoch's metrics, track the best value and let the pruner decide.

        Args:
            step: the epoch number, counted from 1.
            metrics: scalar values by name; a bare float is taken as the study metric.

        Raises:
            TrialPruned: the pruner stopped this trial.
            TrialFailed: the study metric or the loss is NaN or infinite.
        """
        if not isinstance(metrics, dict):
            metrics = {self.metric: metrics}
        values = {k: float(v) for k, v in metrics.items()}
        now = time.time()
        values.setdefault("epoch_time_s", now - self._last_epoch_end)
        self.epoch_seconds.append(values["epoch_time_s"])
        self._last_epoch_end = now
        if self.first_epoch_end is None:
            self.first_epoch_end = now
        self.epochs_run = step
        self.last = values
        for bad in (self.metric, "loss"):
            if bad in values and not math.isfinite(values[bad]):
                self.logger.scalars(step, values)
                raise TrialFailed(f"{bad} is {values[bad]} at epoch {step}")
        value = values.get(self.metric)
        if value is not None and self._better(value):
            self.best_value, self.best_epoch = value, step
        if self.best_value is not None:
            values[f"best/{self.metric}"] = self.best_value
        values["epochs_run"] = step
        values["duration_s"] = now - self.started_at
        self.logger.scalars(step, values)
        self.history.append((step, {k: v for k, v in values.items() if not k.startswith("best/")}))
        self._write_record()
        if value is not None and self._pruning is not None:
            ask = self.last_step is None or step < self.last_step
            if self._pruning(step, value, ask) and ask:
                raise TrialPruned(f"pruned at epoch {step}")

    # -- the best model: what `tbxsweep best` hands over once the trial completes --------
    def save_model(self, model: Any, epoch: int | None = None) -> bool:
        """Keep `model` as this trial's best model (`best.keras` in its run directory).

        Call it after `report` at every epoch, with the whole model (what
        `keras.models.load_model` should give back); it writes only when the sweep keeps
        models (`output.keep_models > 0`) and `epoch` (default: the last reported one) is
        the trial's best so far, so the file always holds the best epoch's model. Written
        to a temporary name, then renamed: a reader never sees half a model.

        Only completed trials keep theirs: the orchestrator deletes the model of a trial
        that is pruned or fails, and of one that falls out of the best
        `output.keep_models` trials; a trial whose best value is not beyond the kept
        models' worst when it started (`model_bar`) cannot get there and saves none. The
        model is saved with `model.save`: one compiled with a custom optimizer, loss or
        layer needs those registered (`keras.saving.register_keras_serializable`)
        wherever it is loaded.

        Returns:
            Whether it wrote the file.
        """
        if not self.keep_model:
            return False
        epoch = self.epochs_run if epoch is None else epoch
        if epoch != self.best_epoch or epoch == self._saved_epoch or not self._beats_bar():
            return False
        tmp = self.run_dir / f".{BEST_MODEL}.tmp.keras"  # Keras wants the suffix
        model.save(str(tmp))
        os.replace(tmp, self.run_dir / BEST_MODEL)
        self._saved_epoch = epoch
        return True

    # -- checkpoints: an interrupted trial's re-run continues from its last epoch ----------
    def save_checkpoint(self, step: int, save_weights: Any) -> bool:
        """Keep the state after epoch `step`: `save_weights(path)` writes the weights, this
        writes the epoch history next to them (both replaced atomically).

        Call it after every epoch: it writes only once `checkpoint_every_s` have passed
        since the trial started or last wrote one (so short epochs do not spend their time
        saving), and returns whether it wrote.
        """
        now = time.time()
        if now - self._last_checkpoint < self.checkpoint_every_s:
            return False
        self._last_checkpoint = now
        tmp = self.run_dir / f".{CHECKPOINT_WEIGHTS}"
        save_weights(str(tmp))
        os.replace(tmp, self.run_dir / CHECKPOINT_WEIGHTS)
        record = {"epoch": step, "history": self.history}
        tmp_json = self.run_dir / f".{CHECKPOINT_JSON}.tmp"
        tmp_json.write_text(json.dumps(record))
        os.replace(tmp_json, self.run_dir / CHECKPOINT_JSON)
        return True

    def resume_state(self) -> tuple[int, Path] | None:
        """(epochs done, weights file) of the run this trial re-runs, if it left one."""
        if self.resume_dir is None:
            return None
        try:
            record = json.loads((self.resume_dir / CHECKPOINT_JSON).read_text())
        except (OSError, ValueError):
            return None
        weights = self.resume_dir / CHECKPOINT_WEIGHTS
        epoch = int(record.get("epoch", 0))
        if not weights.exists() or not 0 < epoch < self.epochs:
            return None
        self._resumed_history = [(int(s), dict(v)) for s, v in record.get("history", [])]
        return epoch, weights

    def replay(self) -> None:
        """Write the resumed epochs into this run (its curves start at epoch 1) and give
        them to the pruner, as if this trial had trained them."""
        for step, values in getattr(self, "_resumed_history", []):
            value = values.get(self.metric)
            if value is not None and self._better(value):
                self.best_value, self.best_epoch = value, step
            logged = dict(values)
            if self.best_value is not None:
                logged[f"best/{self.metric}"] = self.best_value
            self.logger.scalars(step, logged)
            self.history.append((step, values))
            self.epochs_run = step
            if value is not None and self._pruning is not None:
                self._pruning(step, value, False)
        self.logger.text(
            "trial/resumed",
            f"continued from epoch {self.epochs_run} of "
            f"`{self.resume_dir}` (weights; the optimizer state starts afresh)",
        )
        self._last_epoch_end = time.time()
        self._write_record()

    def _beats_bar(self) -> bool:
        """Whether the best value so far may enter the best `output.keep_models`."""
        return self.beats(self.model_bar)

    def beats(self, bar: float | None) -> bool:
        """Whether the best value so far is beyond `bar` (None: any is), so that the trial
        may rank before the trial that holds it (a tie ranks after the earlier trial)."""
        best = self.best_value
        if bar is None or best is None:
            return True
        return best > bar if self.direction == "maximize" else best < bar

    def _better(self, value: float) -> bool:
        if self.best_value is None:
            return True
        if self.direction == "maximize":
            return value > self.best_value
        return value < self.best_value

    def _write_record(self) -> None:
        """trial.json: who runs this trial and when it last made progress (a heartbeat)."""
        record = {
            "number": self.number,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "device": self.device,
            "started_at": self.started_at,
            "heartbeat_at": time.time(),
            "epochs_run": self.epochs_run,
        }
        tmp = self.run_dir / f".{TRIAL_JSON}.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.run_dir / TRIAL_JSON)
