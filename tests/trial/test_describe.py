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
