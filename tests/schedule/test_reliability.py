"""Nothing lost: signals, kill -9 of the orchestrator or a worker, crashes, hangs, resume."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pandas as pd
import psutil
import pytest
from conftest import spawn_cli

from tbxsweep.cli.board import start_board
from tbxsweep.cli.check import compare

SLOW = {
    "x": {"type": "float", "low": 0.0, "high": 1.0},
    "sleep": {"type": "categorical", "choices": [3.0]},
}


def _start(path: Path) -> subprocess.Popen[str]:
    return spawn_cli("start", str(path))


def _wait_running(out: Path, n: int, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recs = []
        for p in sorted(out.glob("trial-*/trial.json")):
            with contextlib.suppress(ValueError):
                recs.append(json.loads(p.read_text()))
        if len(recs) >= n:
            return recs
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} trials started within {timeout} s")


def _wait_gone(pid: int, what: str, timeout: float) -> None:
    """Wait until process `pid` has exited (a zombie nobody reaped counts as exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} (pid {pid}) still runs {timeout:.0f} s later")


def _trials(out: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="fake", storage=f"sqlite:///{out / 'study.db'}").trials


def _resume_and_check(run_cli, path: Path, out: Path, n_trials: int) -> pd.DataFrame:
    res = run_cli("start", str(path))
    assert res.returncode == 0, res.stderr
    trials = _trials(out)
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == n_trials
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert all(t.state.name != "RUNNING" for t in trials)
    with start_board(out) as board:
        problems, df, groups = compare(board, out)
    assert problems == []
    assert sorted(g["name"] for g in groups) == sorted(r for r in df["run"] if r)
    return df


@pytest.mark.slow
def test_first_ctrl_c_lets_running_trials_finish_then_exits_130(make_spec, tmp_path, run_cli):
    path = make_spec(study={"n_trials": 6}, search_space=SLOW)
    out = tmp_path / "out"
    proc = _start(path)
    _wait_running(out, 2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "stopping: no new trials; waiting for running trials (up to 30 s)" in stdout
    assert stderr.strip().splitlines()[-1] == (
        "error: interrupted: no trial left running, 2/6 finished; run the same command to resume"
    )
    trials = _trials(out)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert len(pd.read_csv(out / "leaderboard.csv")) == 2
    _resume_and_check(run_cli, path, out, 6)


@pytest.mark.slow
def test_second_ctrl_c_stops_now_records_interrupted_and_resume_reruns(
    make_spec, tmp_path, run_cli
):
    path = make_spec(study={"n_trials": 4}, search_space=SLOW)
    out = tmp_path / "out"
    proc = _start(path)
    _wait_running(out, 2)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == (
        "error: interrupted: 2 running trial(s) recorded as failed (reason: interrupted) and "
        "queued to run again; run the same command to resume"
    )
    df = pd.read_csv(out / "leaderboard.csv")
    assert list(df["state"]) == ["failed", "failed"]
    assert list(df["error"]) == ["interrupted", "interrupted"]
    df = _resume_and_check(run_cli, path, out, 4)
    # the interrupted trials' parameters ran again as new trials; their old runs are aside
    trials = {t.number: t for t in _trials(out)}
    retried = {
        t.user_attrs["tbxsweep_retry_of"]: t
        for t in trials.values()
        if "tbxsweep_retry_of" in t.user_attrs
    }
    assert sorted(retried) == [0, 1]
    for old, new in retried.items():
        assert new.params == trials[old].params
    assert sorted(p.name for p in (out / "_aside").iterdir()) == [
        f"trial-0000.retried-as-{retried[0].number}",
        f"trial-0001.retried-as-{retried[1].number}",
    ]
    assert list((out / "_aside").rglob("*tfevents*")) == []
    assert set(df.loc[df["trial"].isin([0, 1]), "run"].fillna("")) == {""}


@pytest.mark.slow
def test_kill_9_of_the_orchestrator_then_resume_finishes_exactly_n_trials(
    make_spec, tmp_path, run_cli
):
    path = make_spec(study={"n_trials": 4}, search_space=SLOW)
    out = tmp_path / "out"
    proc = _start(path)
    recs = _wait_running(out, 2)
    proc.kill()
    proc.wait(30)
    # the orphaned workers notice their parent is gone (loky's call queue ends) and exit,
    # without recording anything: their trials stay RUNNING until a resume recovers them
    for r in recs:
        _wait_gone(r["pid"], f"orphaned worker of trial {r['number']}", timeout=30)
    assert [t.state.name for t in _trials(out)] == ["RUNNING", "RUNNING"]
    res = run_cli("start", str(path))
    assert res.returncode == 0, res.stderr
    assert "trial 0 was left running: its orchestrator (pid " in res.stdout
    _resume_and_check(run_cli, path, out, 4)


@pytest.mark.slow
def test_kill_9_of_a_worker_fails_only_its_trial(make_spec, tmp_path):
    path = make_spec(
        study={"n_trials": 4, "max_consecutive_failures": 10},
        search_space={
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "sleep": {"type": "categorical", "choices": [4.0]},
        },
    )
    out = tmp_path / "out"
    proc = _start(path)
    recs = _wait_running(out, 2)
    victim = recs[0]
    os.kill(victim["pid"], signal.SIGKILL)
    _stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    trials = {t.number: t for t in _trials(out)}
    victim_trial = trials[victim["number"]]
    assert victim_trial.state.name == "FAIL"
    assert victim_trial.user_attrs["tbxsweep"]["error"] == (
        "worker process died (killed by SIGKILL) while running this trial"
    )
    finished = [t for t in trials.values() if t.state.name == "COMPLETE"]
    assert len(finished) == 4
    # the other trial running at that moment was not counted as a failure of its own
    failed = [t for t in trials.values() if t.state.name == "FAIL"]
    for t in failed:
        if t.number != victim["number"]:
            assert (
                t.user_attrs["tbxsweep"]["error"] == "interrupted: another trial's worker crashed"
            )


@pytest.mark.slow
def test_crash_hang_and_nan_trials_fail_with_their_reason(make_spec, tmp_path):
    from tbxsweep.schedule import run_sweep
    from tbxsweep.spec import load_spec

    path = make_spec(
        study={"n_trials": 3, "max_consecutive_failures": 10},
        task={"train": "fake_trials:crash"},
        resources={"gpus": "none", "n_jobs": 1},
    )
    run_sweep(load_spec(path), on_event=lambda k, i: None)
    trials = {t.number: t for t in _trials(tmp_path / "out")}
    assert trials[1].state.name == "FAIL"
    assert trials[1].user_attrs["tbxsweep"]["error"] == (
        "worker process died (exit code 3) while running this trial"
    )
    assert sum(t.state.name == "COMPLETE" for t in trials.values()) == 3

    path = make_spec(
        study={"n_trials": 2, "max_consecutive_failures": 10},
        task={"train": "fake_trials:hang", "trial_timeout_s": 3},
        resources={"gpus": "none", "n_jobs": 1},
        output={"dir": str(tmp_path / "h")},
    )
    t0 = time.monotonic()
    run_sweep(load_spec(path), on_event=lambda k, i: None)
    assert time.monotonic() - t0 < 60
    trials = {t.number: t for t in _trials(tmp_path / "h")}
    assert trials[0].state.name == "FAIL"
    assert trials[0].user_attrs["tbxsweep"]["error"] == (
        "timed out after 3 s (task.trial_timeout_s)"
    )
    assert sum(t.state.name == "COMPLETE" for t in trials.values()) == 2


@pytest.mark.slow
def test_two_orchestrators_on_one_study_share_the_budget(make_spec, tmp_path, run_cli):
    path = make_spec(
        study={"n_trials": 6},
        resources={"gpus": "none", "n_jobs": 1},
        search_space={
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "sleep": {"type": "categorical", "choices": [1.0]},
        },
    )
    out = tmp_path / "out"
    first, second = _start(path), _start(path)
    assert first.wait(120) == 0, first.stderr.read() if first.stderr else ""
    assert second.wait(120) == 0, second.stderr.read() if second.stderr else ""
    trials = _trials(out)
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state.name == "COMPLETE" for t in trials)
    owners = {t.user_attrs["tbxsweep_owner"]["pid"] for t in trials}
    assert owners == {first.pid, second.pid}
    with start_board(out) as board:
        problems, _, groups = compare(board, out)
    assert problems == []
    assert len(groups) == 6
