"""Stale trials are judged by a heartbeat that stops, timed by the observer's own clock:
never by comparing clocks, never by a pid alone (real orchestrator processes)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import cli_env

from tbxsweep.cli.board import start_board
from tbxsweep.cli.check import compare
from tbxsweep.schedule._recover import HeartbeatWatch, owner, owner_gone

pytestmark = pytest.mark.slow


def _space(sleep: float) -> dict:
    return {
        "x": {"type": "float", "low": 0.0, "high": 1.0},
        "sleep": {"type": "categorical", "choices": [sleep]},
    }


def _start(path: Path, *, host: str | None = None, skew_s: float = 0.0) -> subprocess.Popen[str]:
    """`tbxsweep start` in its own process, optionally as another host with a clock that is
    `skew_s` seconds behind."""
    env = cli_env()
    if host:
        env["TBXSWEEP_HOST"] = host
    code = (
        "import time, runpy\n"
        f"_real = time.time\ntime.time = lambda: _real() - {skew_s!r}\n"
        "runpy.run_module('tbxsweep', run_name='__main__')\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, "start", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_files(out: Path, pattern: str, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(list(out.glob(pattern))) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {n} {pattern} within {timeout} s")
        time.sleep(0.1)


def _trials(out: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="fake", storage=f"sqlite:///{out / 'study.db'}").trials


def _check(out: Path) -> None:
    with start_board(out) as board:
        problems, _, _ = compare(board, out)
    assert problems == []


def test_owner_identity_proves_death_only_on_the_same_kernel_and_pid_space():
    me = owner()
    assert me["boot"] and me["pidns"] and me["start"] and len(me["token"]) == 16
    assert not owner_gone(me)  # alive
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert owner_gone({**me, "pid": dead.pid, "start": "1"})
    # the same pid on another kernel or in another pid namespace proves nothing
    assert not owner_gone({**me, "pid": dead.pid, "boot": "another-boot"})
    assert not owner_gone({**me, "pid": dead.pid, "pidns": "pid:[1]"})
    # a reused pid (another start time) is not the owner
    assert owner_gone({**me, "start": "1"})


def test_the_heartbeat_watch_times_silence_by_its_own_clock():
    now = [100.0]
    watch = HeartbeatWatch(clock=lambda: now[0])
    assert watch.silent_for(3, "a") == 0.0  # first sight: the clock starts
    now[0] = 105.0
    assert watch.silent_for(3, "a") == 5.0
    assert watch.silent_for(3, "b") == 0.0  # changed: alive, whatever its value says
    now[0] = 106.0
    assert watch.silent_for(3, "b") == 1.0


def test_a_stopped_orchestrator_is_found_by_its_silent_heartbeat_and_steps_aside(
    make_spec, tmp_path, run_cli
):
    path = make_spec(
        study={"n_trials": 2, "stale_after_s": 3},
        resources={"gpus": "none", "n_jobs": 1},
        search_space=_space(5.0),
    )
    out = tmp_path / "out"
    first = _start(path)
    try:
        _wait_files(out, "trial-*/trial.json", 1)
        first.send_signal(signal.SIGSTOP)  # Ctrl-Z: alive, same host, but silent
        res = run_cli("start", str(path), timeout=120)
        assert res.returncode == 0, res.stderr
        assert (
            f"trial 0 was left running: no heartbeat from its orchestrator (pid {first.pid} on "
        ) in res.stdout
    finally:
        first.send_signal(signal.SIGCONT)
    # the first one finds its trial taken over, drops it and ends cleanly
    out_first, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert "internal error" not in err
    assert "trial 0 complete" not in out_first and "trial 0 failed" not in out_first
    trials = _trials(out)
    assert [t.state.name for t in trials].count("COMPLETE") == 2
    assert "RUNNING" not in [t.state.name for t in trials]
    assert trials[0].state.name == "FAIL"
    _check(out)


def test_a_live_orchestrator_with_a_skewed_clock_on_another_host_is_not_stale(
    make_spec, tmp_path, run_cli
):
    path = make_spec(
        study={"n_trials": 2, "stale_after_s": 4},
        resources={"gpus": "none", "n_jobs": 2},
        search_space=_space(7.0),
    )
    out = tmp_path / "out"
    first = _start(path, host="host-a", skew_s=3600.0)
    _wait_files(out, "trial-*/trial.json", 2)
    res = run_cli("start", str(path), timeout=120)  # waits for host-a's trials
    assert res.returncode == 0, res.stderr
    assert "was left running" not in res.stdout
    _out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert [t.state.name for t in _trials(out)] == ["COMPLETE", "COMPLETE"]


def test_an_exited_orchestrator_not_yet_reaped_is_gone() -> None:
    # A launcher that has not waited for its child leaves a zombie: it holds its pid but
    # runs nothing, so its trials must be recovered like those of any dead orchestrator.
    from tbxsweep.schedule._recover import owner, owner_gone, process_start

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        own = {**owner(), "pid": child.pid, "start": "1"}
        assert process_start(child.pid) is None
        assert owner_gone(own)
    finally:
        child.wait()


def test_a_trial_found_stale_after_the_own_trials_ended_is_run_again(make_spec, tmp_path):
    """A trial left running without an owner (its orchestrator was killed between the ask
    and the owner record) counts as in flight until its silence is long enough; once it is
    failed and queued again, the sweep runs it before it ends (it used to end with
    n_trials - 1 finished: chaos seed 1007)."""
    from tbxsweep.schedule import run_sweep
    from tbxsweep.spec import load_spec

    path = make_spec(
        study={"n_trials": 1, "stale_after_s": 2},
        resources={"gpus": "none", "n_jobs": 1},
        search_space=_space(0.1),
    )
    out = tmp_path / "out"
    run_sweep(load_spec(path), on_event=lambda kind, info: None)
    study = optuna.load_study(study_name="fake", storage=f"sqlite:///{out / 'study.db'}")
    orphan = study.ask()  # RUNNING, no owner record, no heartbeat
    events: list[str] = []
    counts = run_sweep(
        load_spec(path, ["study.n_trials=3"]), on_event=lambda kind, info: events.append(kind)
    )
    assert counts.finished == 3
    states = {t.number: t.state.name for t in _trials(out)}
    assert states[orphan.number] == "FAIL"
    assert list(states.values()).count("COMPLETE") + list(states.values()).count("PRUNED") == 3
    assert "RUNNING" not in states.values()
    assert events.count("recovered") == 1
