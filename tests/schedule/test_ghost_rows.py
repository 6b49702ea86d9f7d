"""A trial that storage calls failed is never a running (or missing) row in the HParams tab,
whether or not its re-run ever happens (real CLI, real TensorBoard)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from conftest import spawn_cli

from tbxsweep.cli.board import start_board
from tbxsweep.cli.check import compare

pytestmark = pytest.mark.slow


def _space(sleep: float) -> dict:
    return {
        "x": {"type": "float", "low": 0.0, "high": 1.0},
        "sleep": {"type": "categorical", "choices": [sleep]},
    }


def _start(path: Path) -> subprocess.Popen[str]:
    return spawn_cli("start", str(path))


def _running(out: Path) -> list[dict]:
    recs = []
    for p in sorted(out.glob("trial-*/trial.json")):
        with contextlib.suppress(ValueError):
            recs.append(json.loads(p.read_text()))
    return recs


def _wait(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def test_trials_stopped_by_a_second_ctrl_c_show_as_failed_in_the_tab(make_spec, tmp_path):
    path = make_spec(study={"n_trials": 4}, search_space=_space(6.0), task={"epochs": 3})
    out = tmp_path / "out"
    proc = _start(path)
    _wait(lambda: len(_running(out)) >= 2)
    # at once: a worker killed this early may not have its session start on disk yet
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    with start_board(out) as board:
        problems, _, groups = compare(board, out)
    assert problems == []
    assert sorted(g["name"] for g in groups) == ["trial-0000", "trial-0001"]
    for g in groups:
        assert [s["status"] for s in g["sessions"]] == ["STATUS_FAILURE"]
        values = {m["name"]["tag"]: m.get("value") for m in g.get("metricValues", [])}
        assert values["state"] == 3.0  # failed, not 0 (running)


def test_a_trial_stopped_by_a_second_ctrl_c_shows_each_of_its_repeats_as_failed(
    make_spec, tmp_path
):
    path = make_spec(
        study={"n_trials": 1, "repeats": 2},
        search_space=_space(6.0),
        task={"epochs": 3},
        resources={"gpus": "none", "n_jobs": 2},
    )
    out = tmp_path / "out"
    proc = _start(path)
    _wait(lambda: len(list(out.glob("trial-0000/r*/trial.json"))) >= 2)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    with start_board(out) as board:
        problems, _, groups = compare(board, out)
    assert problems == []  # the record names both runs: two sessions in one group
    assert [g["name"] for g in groups] == ["trial-0000"]
    assert [s["status"] for s in groups[0]["sessions"]] == ["STATUS_FAILURE"] * 2


def test_recovered_trials_whose_re_run_never_comes_leave_no_row(make_spec, tmp_path, run_cli):
    path = make_spec(
        study={"n_trials": 4},
        resources={"gpus": "none", "n_jobs": 2},
        search_space={
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "sleep": {"type": "categorical", "choices": [1.0]},
        },
        task={"train": "fake_trials:seeded"},
    )
    out = tmp_path / "out"
    proc = _start(path)
    # two trials finished, two running: then the orchestrator dies
    _wait(lambda: len(list(out.glob("trial-*/fake.json"))) >= 2 and len(_running(out)) >= 4)
    proc.kill()
    proc.wait(30)
    storage = f"sqlite:///{out / 'study.db'}"
    states = [t.state.name for t in optuna.load_study(study_name="fake", storage=storage).trials]
    assert states.count("RUNNING") >= 1
    # resumed with a budget already met: the recovered trials are never run again
    res = run_cli("start", str(path), "--set", "study.n_trials=2")
    assert res.returncode == 0, res.stderr
    assert "was left running: its orchestrator (pid " in res.stdout
    states = [t.state.name for t in optuna.load_study(study_name="fake", storage=storage).trials]
    assert "RUNNING" not in states and "FAIL" in states
    res = run_cli("check", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
