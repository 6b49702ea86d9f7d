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


_BASE_ONCE = """
import sys, time
from pathlib import Path
from tbxsweep.jobs import PrepareJob, SlotPlan, TrialJob
from tbxsweep.paths import SweepPaths
from tbxsweep.spec import load_spec
from tbxsweep.trial import _base, prepare_base_model, run_trial, static_task_info
from tbxsweep.worker import warm_up

spec = load_spec(sys.argv[1], ["task.pretrain_epochs=1", "task.epochs=1",
                               "study.pruner.name=none", "output.dir=" + sys.argv[2]])
base = SweepPaths(spec.output_dir).base_model(static_task_info(spec).base_cache_key)
prepare_base_model(spec, str(base))  # as a sweep's first start does, in some worker
_base._cache.clear()  # this process stands for another worker, fresh
slots = SlotPlan("", ("",), 1)
warm_up(PrepareJob(spec, "", slots))
after_warm_up = len(_base._cache)
run = Path(sys.argv[2]) / "trial-0000"
outcome = run_trial(TrialJob(number=0, trial_id=0, seed=0, run_dir=str(run), run_name=run.name,
    group=run.name, params={"learning_rate": 0.01, "batch_size": 64, "finetune_depth": 1},
    spec=spec, storage_url=None, slots=slots, base_model_path=str(base),
    dispatched_at=time.time()), "cpu")
print(after_warm_up, len(_base._cache), outcome.state.name)
"""


def test_a_cached_base_is_loaded_in_the_warm_up_and_not_again_by_the_trial(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _BASE_ONCE, str(REPO / "sweeps" / "lr.yaml"), str(tmp_path)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "1", "COMPLETE"]
