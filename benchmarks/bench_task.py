"""The workload every tool runs in compare.py: a fixed list of configurations and one
fine-tuning function for the digits transfer task.

The training code is shared so that the tools differ only in how they schedule it:

- `fit_digits` fine-tunes the pretrained digits base (path in $TBXSWEEP_BENCH_BASE) on
  digits 5-9 with tbxsweep's own fixed split (`tbxsweep.trial._digits.load_split`);
- `train` wraps it for tbxsweep's `task.train` ("bench_task:train");
- compare.py's runners call `fit_digits` from Optuna, Keras Tuner and Ray Tune.

Every call appends one JSON line of timings to $TBXSWEEP_BENCH_TIMINGS (when set), so
all tools are timed by the same code: entry, each epoch's end, return.

Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LEARNING_RATES = (1e-3, 3e-3, 1e-2, 3e-4)
BATCH_SIZES = (16, 32, 64, 128)
DEPTHS = (0, 1, 2, 3, 4)  # weighted layers of the base unfrozen from the top (4 = all)
CONFIG_SEED = 0
TRAIN_SEED = 0
DIGITS_FINETUNE = (5, 6, 7, 8, 9)

_base: dict[str, Any] = {}


def configs(n: int) -> list[dict[str, Any]]:
    """The first `n` of the 80 (learning_rate, batch_size, finetune_depth) combinations,
    shuffled once with a fixed seed: the same list on every machine and every run."""
    grid = [
        {"learning_rate": lr, "batch_size": bs, "finetune_depth": d}
        for lr, bs, d in itertools.product(LEARNING_RATES, BATCH_SIZES, DEPTHS)
    ]
    random.Random(CONFIG_SEED).shuffle(grid)
    if not 1 <= n <= len(grid):
        raise ValueError(f"`1 <= configs <= {len(grid)}` must hold, got configs={n}")
    return grid[:n]


def load_base() -> Any:
    """The pretrained base at $TBXSWEEP_BENCH_BASE, loaded once per process."""
    path = os.environ["TBXSWEEP_BENCH_BASE"]
    if path not in _base:
        import keras

        _base[path] = keras.models.load_model(path, compile=False)
    return _base[path]


def data() -> tuple[Any, Any, Any, Any]:
    """(x_train, y_train, x_val, y_val) of digits 5-9: tbxsweep's fixed split."""
    from tbxsweep.trial._digits import load_split

    return load_split(DIGITS_FINETUNE)


def build_model(base: Any, learning_rate: float, depth: int, n_classes: int) -> Any:
    """A fresh copy of the base (same weights), a new softmax head, the top `depth`
    weighted layers trainable, compiled with Adam(learning_rate)."""
    import keras

    copy = keras.models.clone_model(base)
    copy.set_weights(base.get_weights())
    weighted = [layer for layer in copy.layers if getattr(layer, "kernel", None) is not None]
    trainable = {layer.name for layer in weighted[len(weighted) - depth :]} if depth else set()
    # Unfreeze from the lowest trainable weighted layer up (its BatchNorm included).
    unfrozen = False
    for layer in copy.layers:
        unfrozen = unfrozen or layer.name in trainable
        layer.trainable = unfrozen
    inp = keras.Input(base.input_shape[1:], name="image")
    x = copy(inp, training=False)  # BatchNorm in inference mode, as tbxsweep does
    out = keras.layers.Dense(n_classes, activation="softmax", name="head")(x)
    model = keras.Model(inp, out)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


class EpochClock:
    """Epoch timings for the JSON line, and a hook per epoch (the tool's report)."""

    def __init__(self, on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> None:
        self.on_epoch = on_epoch
        self.epochs: list[float] = []
        self.first_epoch_end: float | None = None
        self.best: float | None = None
        self._t0 = time.time()

    def callback(self) -> Any:
        import keras

        clock = self

        class Clock(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                clock._t0 = time.time()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                now = time.time()
                clock.epochs.append(now - clock._t0)
                if clock.first_epoch_end is None:
                    clock.first_epoch_end = now
                values = {k: float(v) for k, v in (logs or {}).items()}
                acc = values.get("val_accuracy")
                if acc is not None and (clock.best is None or acc > clock.best):
                    clock.best = acc
                if clock.on_epoch is not None:
                    clock.on_epoch(epoch + 1, values)

        return Clock()


def search_space(cfgs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A tbxsweep search space (YAML form) holding exactly the values in `cfgs`."""
    return {
        "learning_rate": {
            "type": "categorical",
            "choices": sorted({float(c["learning_rate"]) for c in cfgs}),
        },
        "batch_size": {
            "type": "categorical",
            "choices": sorted({int(c["batch_size"]) for c in cfgs}),
        },
        "finetune_depth": {"type": "int", "low": min(DEPTHS), "high": max(DEPTHS)},
    }


def sweep_spec(
    name: str,
    cfgs: list[dict[str, Any]],
    *,
    task: dict[str, Any],
    resources: dict[str, Any],
    out: Path,
) -> dict[str, Any]:
    """A tbxsweep spec (YAML form) for running exactly `cfgs` (the spec's `study.enqueue`,
    run first and in order): TPE seed 0, no pruning, the study's metric val_accuracy."""
    return {
        "study": {
            "name": name,
            "direction": "maximize",
            "metric": "val_accuracy",
            "n_trials": len(cfgs),
            "sampler": {"name": "tpe", "seed": 0},
            "pruner": {"name": "none"},
            "enqueue": [dict(c) for c in cfgs],
        },
        "search_space": search_space(cfgs),
        "task": task,
        "resources": resources,
        "output": {"dir": str(out)},
    }


def distributions(cfgs: list[dict[str, Any]]) -> dict[str, Any]:
    """The Optuna distributions of `search_space(cfgs)`, as tbxsweep builds them."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    space = search_space(cfgs)
    return {
        "learning_rate": CategoricalDistribution(space["learning_rate"]["choices"]),
        "batch_size": CategoricalDistribution(space["batch_size"]["choices"]),
        "finetune_depth": IntDistribution(min(DEPTHS), max(DEPTHS)),
    }


def fit_digits(
    params: dict[str, Any],
    epochs: int,
    *,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    extra_callbacks: list[Any] | None = None,
    tool: str = "",
    trial: Any = None,
) -> float:
    """Fine-tune one configuration; returns the best epoch's validation accuracy."""
    start = time.time()
    import keras

    base = load_base()
    x_tr, y_tr, x_val, y_val = data()
    keras.utils.set_random_seed(TRAIN_SEED)
    model = build_model(
        base, float(params["learning_rate"]), int(params["finetune_depth"]), len(DIGITS_FINETUNE)
    )
    clock = EpochClock(on_epoch)
    try:
        model.fit(
            x_tr,
            y_tr,
            batch_size=int(params["batch_size"]),
            epochs=epochs,
            validation_data=(x_val, y_val),
            callbacks=[*(extra_callbacks or []), clock.callback()],
            verbose=0,
        )
    finally:
        del model
        keras.backend.clear_session()
        record_timing(tool, trial, params, start, clock)
    return float(clock.best if clock.best is not None else "nan")


def record_timing(tool: str, trial: Any, params: dict[str, Any], start: float, clock: Any) -> None:
    """Append this call's timings to $TBXSWEEP_BENCH_TIMINGS (one JSON line, O_APPEND)."""
    path = os.environ.get("TBXSWEEP_BENCH_TIMINGS")
    if not path:
        return
    line = {
        "tool": tool,
        "trial": trial,
        "params": params,
        "pid": os.getpid(),
        "start": start,
        "end": time.time(),
        "epochs": clock.epochs,
        "first_epoch_end": clock.first_epoch_end,
        "value": clock.best,
    }
    with open(path, "a") as fh:
        fh.write(json.dumps(line) + "\n")


def read_timings(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train(params: dict[str, Any], ctx: Any) -> float:
    """tbxsweep's `task.train` entry: the shared fine-tuning, reporting every epoch."""
    return fit_digits(
        params,
        ctx.epochs,
        on_epoch=lambda step, logs: ctx.report(step, logs),
        tool="tbxsweep",
        trial=ctx.number,
    )


def handglued_trial(
    number: int, params: dict[str, Any], epochs: int, logdir: str
) -> tuple[int, float]:
    """One trial of the hand-written loop (compare.py `handglued`), run in a loky worker.

    What a careful user writes: the shared fine-tuning, a tensorboardX writer per trial
    with per-epoch scalars, flushed each epoch, and `add_hparams` at the end.
    """
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(Path(logdir) / f"trial-{number:04d}"))

    def on_epoch(step: int, logs: dict[str, float]) -> None:
        for k, v in logs.items():
            writer.add_scalar(k, float(v), step)
        writer.flush()

    try:
        value = fit_digits(params, epochs, on_epoch=on_epoch, tool="handglued", trial=number)
        writer.add_hparams(
            {k: (float(v) if isinstance(v, float) else int(v)) for k, v in params.items()},
            {"hparam/val_accuracy": value},
        )
    finally:
        writer.close()
    return number, value
