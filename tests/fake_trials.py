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
