"""Cheap training functions for scheduler tests: no Keras, known timings and failures."""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any


def train(params: dict[str, Any], ctx: Any) -> float:
    """Reports `ctx.epochs` epochs of a made-up curve, recording where it ran."""
    record = {
        "number": ctx.number,
        "pid": os.getpid(),
        "device": ctx.device,
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "start": time.time(),
    }
    sleep = float(params.get("sleep", os.environ.get("FAKE_TRIAL_SLEEP", 0.2)))
    x = float(params.get("x", 0.5))
    for epoch in range(1, ctx.epochs + 1):
        time.sleep(sleep / ctx.epochs)
        ctx.report(epoch, {"score": 1.0 - (x - 0.3) ** 2 + 0.01 * epoch, "loss": x})
    record["end"] = time.time()
    with open(ctx.run_dir / "fake.json", "w") as fh:
        json.dump(record, fh)
    return 1.0 - (x - 0.3) ** 2 + 0.01 * ctx.epochs


def failing(params: dict[str, Any], ctx: Any) -> float:
    if float(params.get("x", 0.0)) > 0.5:
        raise ValueError(f"x={params['x']} is too large for this model")
    return train(params, ctx)


def nan(params: dict[str, Any], ctx: Any) -> float:
    ctx.report(1, {"score": math.nan, "loss": math.nan})
    return 0.0


def crash(params: dict[str, Any], ctx: Any) -> float:
    if ctx.number == 1:
        os._exit(3)
    return train(params, ctx)


def hang(params: dict[str, Any], ctx: Any) -> float:
    if ctx.number == 0:
        ctx.report(1, {"score": 0.5})
        time.sleep(600)
    return train(params, ctx)


# --- chaos: one trial function whose behaviour is drawn per trial (tests/chaos.py) ----------

CHAOS_ENV = "FAKE_CHAOS"
CHAOS_KINDS = ("prune", "fail", "nan_report", "nan_return", "hang", "crash")
_stack_file: list[Any] = []  # kept open for faulthandler, once per worker process


def chaos(params: dict[str, Any], ctx: Any) -> float | None:
    """Trains normally, or prunes, fails, reports or returns NaN, hangs or crashes its
    worker: drawn from the JSON in $FAKE_CHAOS (`seed`, a probability per kind, `sleep`
    [low, high] seconds per trial, `hang_s`) and the trial's number and seed, so each
    repeat of a trial draws on its own and a replayed case draws the same."""
    import faulthandler
    import random
    import signal
    from pathlib import Path

    plan = json.loads(os.environ.get(CHAOS_ENV) or "{}")
    if plan.get("stacks") and not _stack_file:
        # `kill -USR1 <worker>` writes where it is (tests/chaos.py does when one stalls)
        _stack_file.append(open(Path(plan["stacks"]) / f"{os.getpid()}.txt", "a"))  # noqa: SIM115
        faulthandler.register(signal.SIGUSR1, file=_stack_file[0], all_threads=True)
    rng = random.Random(f"{plan.get('seed', 0)}/{ctx.number}/{ctx.seed}")
    kind, u = "ok", rng.random()
    for k in CHAOS_KINDS:
        u -= float(plan.get(k, 0.0))
        if u < 0:
            kind = k
            break
    low, high = plan.get("sleep", (0.1, 1.0))
    per_epoch = rng.uniform(low, high) / ctx.epochs
    at = rng.randint(1, ctx.epochs)  # the epoch where a fault strikes
    x = float(params.get("x", 0.5))
    for epoch in range(1, ctx.epochs + 1):
        time.sleep(per_epoch)
        if epoch == at:
            if kind == "fail":
                raise ValueError(f"chaos: trial {ctx.number} fails at epoch {epoch}")
            if kind == "crash":
                os._exit(3)
            if kind == "hang":
                _hang(float(plan.get("hang_s", 30.0)))
        if kind == "nan_report" and epoch == at:
            score = math.nan
        elif kind == "prune":
            score = -10.0 - epoch  # far below every other trial: the median pruner stops it
        else:
            score = 1.0 - (x - 0.3) ** 2 + 0.01 * epoch + rng.uniform(0.0, 0.01)
        ctx.report(epoch, {"score": score, "loss": x})
    return math.nan if kind == "nan_return" else None


def _hang(seconds: float) -> None:
    """Sleep like a stuck trial, but end with the orchestrator: an orphaned worker left
    hanging by a killed orchestrator would only burn the test machine's time."""
    parent = os.getppid()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(0.2)


def regularized_base(input_shape: tuple[int, int, int]) -> Any:
    """A small CNN base (a `base_model: {builder: ...}`) whose kernels carry an L2 penalty."""
    import keras

    l2 = keras.regularizers.L2(0.05)
    inp = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(
        8, 3, padding="same", activation="relu", kernel_regularizer=l2, name="conv1"
    )(inp)
    x = keras.layers.Conv2D(
        8, 3, padding="same", activation="relu", kernel_regularizer=l2, name="conv2"
    )(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(16, activation="relu", kernel_regularizer=l2, name="dense")(x)
    return keras.Model(inp, x, name="regularized_base")


def seeded(params: dict[str, Any], ctx: Any) -> float:
    """Like `train`, but each repeat scores differently (by its seed), so a mean is visible."""
    train(params, ctx)
    return float(params.get("x", 0.5)) + 0.1 * (ctx.seed % 5)


def repeat_dies(params: dict[str, Any], ctx: Any) -> float:
    """Repeat r0 of trial 1 kills its worker (exit code 3) half a second in."""
    if ctx.number == 1 and ctx.run_dir.name == "r0":
        time.sleep(0.5)
        os._exit(3)
    return seeded(params, ctx)


def repeat_pruned(params: dict[str, Any], ctx: Any) -> float:
    """Repeat r0 of trial 0 is pruned after one epoch; its sibling would train for 60 s."""
    from tbxsweep.trial._context import TrialPruned

    if ctx.number == 0 and ctx.run_dir.name == "r0":
        time.sleep(1.0)
        ctx.report(1, {"score": 0.25})
        raise TrialPruned("pruned at epoch 1")
    if ctx.number == 0:
        for epoch in range(1, 301):
            time.sleep(0.2)
            ctx.report(epoch, {"score": 0.5})
    return seeded(params, ctx)


def imports_tensorflow(params: dict[str, Any], ctx: Any) -> float:
    """Imports TensorFlow in its body, as training code often does: the first trial of a
    worker that did not import it beforehand pays seconds and grows by hundreds of MB.
    Writes tf.json in its run: its pid and whether TensorFlow was imported already."""
    import sys

    record = {"pid": os.getpid(), "preloaded": "tensorflow" in sys.modules}
    import tensorflow as tf

    x = float(params.get("x", 0.5))
    ctx.report(1, {"score": float(tf.constant(x).numpy())})
    time.sleep(0.2)
    with open(ctx.run_dir / "tf.json", "w") as fh:
        json.dump(record, fh)
    return x


_held: list[bytearray] = []


def grows(params: dict[str, Any], ctx: Any) -> float:
    """Keeps 400 MB from its worker's first trial on, as a library imported inside a trial
    does (TensorFlow is ~700 MB): loky's memory-leak heuristic would replace the worker."""
    if not _held:
        block = bytearray(400 * 1024 * 1024)
        block[::4096] = b"\x01" * len(block[::4096])  # touch every page: real RSS
        _held.append(block)
    time.sleep(1.2)  # loky checks at most once a second
    return train(params, ctx)


def repeat_lags(params: dict[str, Any], ctx: Any) -> float:
    """Repeat r1 of trial 0 trains for a minute; every other run ends at once."""
    if ctx.number == 0 and ctx.run_dir.name == "r1":
        for epoch in range(1, 301):
            time.sleep(0.2)
            ctx.report(epoch, {"score": 0.5})
    return seeded(params, ctx)


# --- multi-objective studies and out-of-memory trials (tests/schedule/test_multi_objective.py,
# test_oom.py) ---------------------------------------------------------------------------


class ResourceExhaustedError(Exception):
    """Named as `tensorflow.errors.ResourceExhaustedError` is: tbxsweep recognises an
    out-of-memory error by that name, and importing TensorFlow would cost each loky worker
    ~5 s and ~700 MB (test_oom.py checks the real class is matched by the same rule)."""


def oom(params: dict[str, Any], ctx: Any) -> float:
    """Runs out of memory after one epoch when x > 0.5 (as a too-large batch would)."""
    if float(params.get("x", 0.0)) > 0.5:
        ctx.report(1, {"score": 0.1, "loss": 1.0})
        raise ResourceExhaustedError("OOM when allocating tensor with shape[4096,4096,64]")
    return train(params, ctx)


# case -> (score, trainable params): fronts 0 = {0, 1, 3}, 1 = {2, 4}, 2 = {5} when score is
# maximised and trainable params minimised (3 repeats 0; 5 is dominated only by 2).
COSTLY_CASES = {
    0: (0.90, 1000),
    1: (0.80, 500),
    2: (0.70, 2000),
    3: (0.90, 1000),
    4: (0.60, 600),
    5: (0.50, 3000),
}


def costly(params: dict[str, Any], ctx: Any) -> float:
    """A known (score, trainable_params) per `case`; the score peaks at epoch 1, and the
    loss reported there is case / 10 (a recorded metric at the best epoch)."""
    case = int(params["case"])
    score, n_params = COSTLY_CASES[case]
    ctx.trainable_params = n_params
    ctx.report(1, {"score": score, "loss": case / 10})
    ctx.report(2, {"score": score - 0.5, "loss": 9.0})
    return score


def _cnn_layers() -> list[Any]:
    import keras

    return [
        keras.layers.Conv2D(8, 3, activation="relu", name="conv_a"),
        keras.layers.Conv2D(8, 3, name="conv_b"),
        keras.layers.BatchNormalization(name="bn_b"),
        keras.layers.ReLU(name="relu_b"),
        keras.layers.MaxPooling2D(name="pool_b"),
        keras.layers.Conv2D(16, 3, activation="relu", name="conv_c"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(16, activation="relu", name="dense_d"),
    ]


def small_sequential_cnn(input_shape: tuple[int, int, int]) -> Any:
    """A `base_model: {builder: ...}` for the feature cache's tests: a Sequential CNN of
    four weighted layers (and a frozen BatchNormalization)."""
    import keras

    return keras.Sequential([keras.Input(input_shape), *_cnn_layers()], name="small_cnn")


def noisy_sequential_cnn(input_shape: tuple[int, int, int]) -> Any:
    """`small_sequential_cnn` with a GaussianNoise layer at the bottom: random below
    every cut."""
    import keras

    noise = keras.layers.GaussianNoise(0.1, name="noise")
    return keras.Sequential([keras.Input(input_shape), noise, *_cnn_layers()], name="noisy_cnn")


# --- the best model in hand (tests/export/test_best.py) --------------------------------------


class FakeModel:
    """Stands in for a Keras model in `ctx.save_model`: `save` writes which run and epoch
    it is, as JSON."""

    def __init__(self, ctx: Any, epoch: int) -> None:
        self.record = {"number": ctx.number, "run": str(ctx.run_dir), "epoch": epoch}

    def save(self, path: str) -> None:
        with open(path, "w") as fh:
            json.dump(self.record, fh)
        with open(os.path.join(os.path.dirname(path), "saves.log"), "a") as fh:
            fh.write(f"{self.record['epoch']}\n")  # every save, also those deleted since


def keeps_model(params: dict[str, Any], ctx: Any) -> None:
    """Three epochs peaking at epoch 2, `ctx.save_model` after each report. Trial 1 fails
    at epoch 2 and trial 2 is pruned after epoch 1 (both after saving a model); repeats
    score apart by their seed."""
    from tbxsweep.trial._context import TrialPruned

    score = 1.0 - (float(params.get("x", 0.5)) - 0.3) ** 2 + 0.01 * (ctx.seed % 5)
    for epoch, bump in ((1, 0.0), (2, 0.05), (3, 0.02)):
        if epoch == 2 and ctx.number == 1:
            raise ValueError("trial 1 fails at epoch 2")
        ctx.report(epoch, {"score": score + bump})
        ctx.save_model(FakeModel(ctx, epoch))
        if ctx.number == 2:
            raise TrialPruned("pruned at epoch 1")


def tf_data_batches() -> Any:
    """A `task.dataset.loader` returning tf.data batches: 24 + 8 32x32 RGB images, 3 classes."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.random((32, 32, 32, 3), dtype=np.float32)
    y = np.arange(32) % 3

    def ds(a: Any, b: Any) -> Any:
        return tf.data.Dataset.from_tensor_slices((a, b)).batch(8)

    return ds(x[:24], y[:24]), ds(x[24:], y[24:])


def kernel_oom(params: dict[str, Any], ctx: Any) -> float:
    """Where x > 0.5, moves this worker into the memory cgroup named by the `cgroup`
    parameter (a small limit, set up by the test; a parameter, not an environment variable:
    a reused worker started before the test would not see one) and allocates past it: the
    kernel's OOM killer ends the worker with SIGKILL, as it would a trial too big for its
    machine or container."""
    import os

    if float(params.get("x", 0.0)) <= 0.5:
        return train(params, ctx)
    ctx.report(1, {"score": 0.1, "loss": 1.0})
    cgroup = str(params["cgroup"])
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as fh:
        fh.write(str(os.getpid()))
    # 50 MB at a time (zero-filled: resident), so no single allocation is refused up front
    # by the kernel's overcommit check on a busy machine: the cgroup's limit ends it.
    hog = [bytearray(50_000_000) for _ in range(200)]
    return float(len(hog))


def frozen(params: dict[str, Any], ctx: Any) -> float:
    """`train`, recording in `frozen.json` how many objects this worker's garbage
    collector has frozen (gc.freeze: modules loaded by the warm-up, skipped by every
    collection)."""
    import gc

    with open(ctx.run_dir / "frozen.json", "w") as fh:
        json.dump({"pid": os.getpid(), "frozen": gc.get_freeze_count()}, fh)
    return train(params, ctx)


def subclassed_base(input_shape: tuple[int, int, int]) -> Any:
    """A `base_model: {builder: ...}` that Keras cannot clone (a subclassed model without
    get_config): every trial clones its base."""
    import keras

    class Net(keras.Model):
        def __init__(self) -> None:
            super().__init__(name="subclassed")
            self.conv = keras.layers.Conv2D(4, 3, name="conv")

        def call(self, x: Any) -> Any:
            return self.conv(x)

    net = Net()
    net(keras.ops.zeros((1, *input_shape)))
    return net
