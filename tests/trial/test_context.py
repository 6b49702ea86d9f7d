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


def test_data_serves_the_splits_a_training_function_asks_for(tmp_path) -> None:
    import numpy as np
    import pytest

    from tbxsweep.errors import TrialFailed
    from tbxsweep.spec import TaskSpec

    ctx = _ctx(tmp_path, every_s=0)
    ctx.task = TaskSpec()  # digits: fine-tuned on 5-9, 20% held out as the test split
    (x_tr, y_tr), (x_val, y_val), (x_te, y_te) = (ctx.data(s) for s in ("train", "val", "test"))
    assert x_tr.shape[1:] == x_val.shape[1:] == x_te.shape[1:] == (8, 8, 1)
    assert set(np.unique(y_tr)) == set(np.unique(y_val)) == set(np.unique(y_te)) == set(range(5))
    # the three splits share no image
    seen = {x.tobytes() for x in x_tr}
    assert not any(x.tobytes() in seen for x in (*x_val, *x_te))
    assert len(x_te) == 179
    with pytest.raises(
        TrialFailed, match=r"^ctx.data: split must be 'train', 'val' or 'test', got 'dev'$"
    ):
        ctx.data("dev")
    np.savez(tmp_path / "d.npz", x_train=x_tr, y_train=y_tr, x_val=x_val, y_val=y_val)
    ctx.task = TaskSpec(dataset={"npz": str(tmp_path / "d.npz")}, base_model="mobilenet_v2")
    assert len(ctx.data("val")[0]) == len(x_val)
    with pytest.raises(TrialFailed, match=r"^ctx.data: task.dataset has no test split$"):
        ctx.data("test")


def test_the_last_epoch_is_reported_but_never_pruned(tmp_path) -> None:
    """The built-in task passes its last epoch as `last_step`: the value still goes to the
    storage (the hook is called), but the pruner is not asked, and a trial that trained to
    the end completes. A `task.train` function (no last_step) is asked at every step."""
    import pytest

    from tbxsweep.trial import TrialPruned

    asked: list[tuple[int, bool]] = []

    def always(step: int, value: float, ask: bool) -> bool:
        asked.append((step, ask))
        return True  # a pruner that would stop every trial

    def ctx(run: str, last_step: int | None) -> TrialContext:
        (tmp_path / run).mkdir()
        return TrialContext(
            number=0,
            params={},
            seed=0,
            device="cpu",
            run_dir=tmp_path / run,
            logger=TrialLogger(tmp_path / run),
            metric="val_accuracy",
            direction="maximize",
            epochs=3,
            pruning=always,
            last_step=last_step,
        )

    builtin = ctx("builtin", 3)
    with pytest.raises(TrialPruned, match="pruned at epoch 2"):
        builtin.report(2, {"val_accuracy": 0.5})
    builtin.report(3, {"val_accuracy": 0.4})  # not pruned
    assert asked == [(2, True), (3, False)]
    assert builtin.epochs_run == 3 and builtin.best_value == 0.5
    custom = ctx("custom", None)
    with pytest.raises(TrialPruned, match="pruned at epoch 3"):
        custom.report(3, {"val_accuracy": 0.4})
    assert asked[-1] == (3, True)
