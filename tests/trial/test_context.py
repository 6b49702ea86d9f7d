"""TrialContext: what a training function sees of its trial."""

from __future__ import annotations

import json
import time

from tbxsweep.tblog import TrialLogger
from tbxsweep.trial import TrialContext


def _ctx(tmp_path, every_s: float) -> TrialContext:
    return TrialContext(
        number=0,
        params={},
        seed=0,
        device="cpu",
        run_dir=tmp_path,
        logger=TrialLogger(tmp_path),
        metric="val_accuracy",
        direction="maximize",
        epochs=10,
        pruning=None,
        checkpoint_every_s=every_s,
    )


def _writer(calls: list[str]):
    def save(path: str) -> None:
        calls.append(path)
        with open(path, "w") as f:
            f.write("weights")

    return save


def test_save_checkpoint_writes_at_most_every_checkpoint_every_s(tmp_path) -> None:
    ctx = _ctx(tmp_path, every_s=0.3)
    calls: list[str] = []
    assert ctx.save_checkpoint(1, _writer(calls)) is False  # 0.3 s have not passed yet
    assert calls == [] and not (tmp_path / "checkpoint.json").exists()
    time.sleep(0.35)
    assert ctx.save_checkpoint(2, _writer(calls)) is True
    assert ctx.save_checkpoint(3, _writer(calls)) is False  # just wrote one
    assert len(calls) == 1
    assert json.loads((tmp_path / "checkpoint.json").read_text())["epoch"] == 2
    assert (tmp_path / "checkpoint.weights.h5").read_text() == "weights"
    ctx.logger.close()


def test_save_checkpoint_with_zero_writes_every_call(tmp_path) -> None:
    ctx = _ctx(tmp_path, every_s=0)
    calls: list[str] = []
    assert [ctx.save_checkpoint(step, _writer(calls)) for step in (1, 2, 3)] == [True] * 3
    assert len(calls) == 3
    assert json.loads((tmp_path / "checkpoint.json").read_text())["epoch"] == 3
    ctx.logger.close()
