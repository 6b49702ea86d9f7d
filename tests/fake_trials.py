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
