"""A worker's warm-up: what it loads before its first trial, and what it leaves alone."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO, cli_env

_PROBE = """
import sys
from tbxsweep.spec import load_spec
from tbxsweep.trial import _data, warm_up_worker
warm_up_worker(load_spec({spec!r}, {overrides!r}))
print("tensorflow" in sys.modules, len(_data._cache))
"""


def _probe(*overrides: str) -> str:
    code = _PROBE.format(spec=str(REPO / "sweeps" / "lr.yaml"), overrides=list(overrides))
    proc = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_the_builtin_task_warms_up_tensorflow_and_its_data() -> None:
    assert _probe() == "True 1"


def test_a_training_function_of_the_users_is_left_alone() -> None:
    # fake_trials never imports TensorFlow; a warm-up must not either
    assert _probe("task.train=fake_trials:train") == "False 0"


def test_a_dataset_that_cannot_load_is_left_for_the_trial_to_report(tmp_path) -> None:
    missing = tmp_path / "nowhere.npz"
    assert _probe(f"task.dataset={{npz: {missing}}}", "task.base_model=mobilenet_v2") == "True 0"
