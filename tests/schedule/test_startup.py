"""Start-up of a sweep whose `task.train` imports TensorFlow: the workers import it in their
warm-up, so no trial pays for it and no worker is replaced after its first trial.

Importing TensorFlow inside a trial grows the worker by ~700 MB; loky's memory-leak
heuristic (with psutil installed) then restarts that worker after the trial, printing
"UserWarning: A worker stopped while some jobs were given to the executor ...", and the
next trial there imports TensorFlow again.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import yaml
from conftest import FAKE_SPEC, cli_env, merge


def test_a_training_function_importing_tensorflow_keeps_its_workers(tmp_path) -> None:
    out = tmp_path / "out"
    spec = merge(
        FAKE_SPEC,
        {
            "study": {"n_trials": 6},
            "task": {"train": "fake_trials:imports_tensorflow", "epochs": 1},
            "output": {"dir": str(out)},
        },
    )
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = cli_env()
    env.pop("TBXSWEEP_TF_LOGS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "tbxsweep", "start", str(path)],
        cwd=tmp_path,  # not the repository: PYTHONPATH decides which tbxsweep runs
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    # Neither loky's warning nor TensorFlow's start-up lines: nothing at all.
    assert proc.stderr.splitlines() == []
    with (out / "leaderboard.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["state"] for r in rows] == ["complete"] * 6
    ran = [json.loads((out / r["run"] / "tf.json").read_text()) for r in rows]
    # Every trial ran in one of the two workers the sweep started with (the leaderboard's
    # worker_pid is the trial's own pid), with TensorFlow imported before it began.
    assert [str(t["pid"]) for t in ran] == [r["worker_pid"] for r in rows]
    assert len({t["pid"] for t in ran}) <= 2
    assert [t["preloaded"] for t in ran] == [True] * 6


_IMPORTS = """
import sys, threading
from tbxsweep.spec import load_spec
from tbxsweep.schedule import run_sweep

seen = {}

def on_event(kind, info):
    if kind in ("plan", "started") and kind not in seen:
        seen[kind] = "sklearn" in sys.modules
    if kind == "finished":
        for t in threading.enumerate():
            if t.name == "tbxsweep-prefetch":
                t.join()
        seen.setdefault("finished", "sklearn" in sys.modules)

run_sweep(load_spec(sys.argv[1]), on_event=on_event)
print(seen["plan"], seen["started"], seen["finished"])
"""


def test_what_only_the_end_needs_is_imported_after_the_first_dispatch(make_spec, tmp_path):
    # Parameter importances (Optuna's fANOVA) import scikit-learn: 1-3 s, done in the
    # background once the first trial is out, instead of before it or after the last.
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORTS, str(make_spec(study={"n_trials": 4}))],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False", "True"]
