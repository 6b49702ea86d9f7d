"""What the orchestrator learns about a task without TensorFlow."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tbxsweep.jobs import TaskInfo
from tbxsweep.spec import validate_spec
from tbxsweep.trial import static_task_info


def _spec(**task):
    raw = {
        "study": {"name": "t"},
        "search_space": {"learning_rate": {"type": "float", "low": 0.001, "high": 0.01}},
        "task": task,
    }
    return validate_spec(raw, "spec.yaml")


def test_static_info_for_the_digits_task_and_custom_functions() -> None:
    info = static_task_info(_spec())
    assert info is not None and info.depth_max == 4
    assert info.base_cache_key is not None and len(info.base_cache_key) == 12
    assert info.description == "digits 5-9, base CNN pretrained on digits 0-4 (4 weighted layers)"
    assert static_task_info(_spec(train="my_pkg.train:run")) == TaskInfo(
        depth_max=None, description="custom training function my_pkg.train:run"
    )


def test_anything_that_needs_a_built_model_is_left_to_a_worker() -> None:
    for task in (
        {"dataset": "cifar10", "base_model": "mobilenet_v2"},
        {"base_model": "mobilenet_v2", "input_shape": [32, 32, 3]},
        {"dataset": {"npz": "x.npz"}, "base_model": "models/base.keras"},
        {"dataset": {"loader": "a.b:c"}, "base_model": {"builder": "a.b:d"}},
    ):
        assert static_task_info(_spec(**task)) is None, task


def test_static_info_imports_neither_tensorflow_nor_keras() -> None:
    code = textwrap.dedent(
        """
        import sys
        from tbxsweep.spec import validate_spec
        from tbxsweep.trial import static_task_info
        for task in ({}, {"dataset": "mnist", "base_model": "resnet50"}, {"train": "a.b:c"}):
            raw = {"study": {"name": "t"}, "task": task,
                   "search_space": {"learning_rate": {"type": "float", "low": 0.1, "high": 1}}}
            static_task_info(validate_spec(raw, "s.yaml"))
        heavy = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
        print(heavy)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"


def test_a_base_that_cannot_be_cloned_is_one_line_before_any_trial(tmp_path) -> None:
    """Every trial clones the base: the worker that describes the task tries once for a
    model of the user's (Keras's applications always clone, and are not tried)."""
    import numpy as np
    import pytest

    from tbxsweep.errors import SpecError
    from tbxsweep.trial import describe_task

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8), np.arange(20) % 2
    np.savez(tmp_path / "d.npz", x_train=x[:16], y_train=y[:16], x_val=x[16:], y_val=y[16:])
    spec = _spec(
        dataset={"npz": str(tmp_path / "d.npz")},
        base_model={"builder": "fake_trials:subclassed_base"},
    )
    with pytest.raises(SpecError) as err:
        describe_task(spec)
    (line,) = str(err.value).splitlines()
    assert line.startswith(
        "task.base_model: fake_trials:subclassed_base, input 16x16x3 cannot be cloned for "
        "each trial (TypeError: "
    ), line
    assert line.endswith("); build it as a functional or Sequential model"), line
