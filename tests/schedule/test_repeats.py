"""`study.repeats`: each trial is told once, with the mean of its repeats, whatever ends them
(real loky workers, real SQLite, real TensorBoard reading the event files)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import optuna
import pytest
from conftest import spawn_cli

from tbxsweep.cli.board import start_board
from tbxsweep.cli.check import compare
from tbxsweep.schedule import Scheduler, run_sweep
from tbxsweep.spec import load_spec

pytestmark = pytest.mark.slow


def _trials(out: Path) -> dict[int, optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="fake", storage=f"sqlite:///{out / 'study.db'}")
    return {t.number: t for t in study.trials}


def _check_board(out: Path) -> None:
    with start_board(out) as board:
        problems, _, _ = compare(board, out)
    assert problems == []


def _assert_mean(t: optuna.trial.FrozenTrial, repeats: int) -> None:
    rec = t.user_attrs["tbxsweep"]
    assert len(rec["values"]) == repeats and len(set(rec["values"])) > 1
    assert t.value == pytest.approx(sum(rec["values"]) / repeats)


def test_repeats_that_end_in_one_wait_are_told_once_with_their_mean(
    make_spec, tmp_path, monkeypatch
):
    # The loop is held up while every repeat of a trial finishes, so that one wait()
    # returns them all (as it does when their work is equal, or a worker dies).
    real = Scheduler._heartbeat
    held: set[int] = set()

    def slow_books(self: Scheduler) -> None:
        numbers = {j.number for j in self.running.values()}
        if len(self.running) == 3 and not numbers & held:
            held.update(numbers)
            time.sleep(2.0)
        real(self)

    monkeypatch.setattr(Scheduler, "_heartbeat", slow_books)
    path = make_spec(
        study={"n_trials": 2, "repeats": 3},
        task={"train": "fake_trials:seeded"},
        resources={"gpus": "none", "n_jobs": 3},
    )
    events: list[str] = []
    counts = run_sweep(load_spec(path), on_event=lambda kind, info: events.append(kind))
    assert counts.finished == 2
    trials = _trials(tmp_path / "out")
    assert sorted(trials) == [0, 1]
    for t in trials.values():
        assert t.state.name == "COMPLETE"
        _assert_mean(t, 3)
    assert events.count("finished") == 2
    _check_board(tmp_path / "out")


def test_a_repeat_whose_worker_dies_fails_its_trial_once_and_spares_the_others(
    make_spec, tmp_path, run_cli
):
    # trial 1's r0 kills its worker: loky fails every running future at once, so trial
    # 1's r1 and trial 0's repeats come back together with it.
    path = make_spec(
        study={"n_trials": 2, "repeats": 2, "max_consecutive_failures": 2},
        task={"train": "fake_trials:repeat_dies"},
        resources={"gpus": "none", "n_jobs": 3},
        search_space={
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "sleep": {"type": "categorical", "choices": [1.5]},
        },
    )
    res = run_cli("start", str(path))
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out"
    trials = _trials(out)
    failed = [t for t in trials.values() if t.state.name == "FAIL"]
    assert [t.number for t in failed] == [1]
    assert failed[0].user_attrs["tbxsweep"]["error"] == (
        "worker process died (exit code 3) while running this trial"
    )
    assert failed[0].user_attrs["tbxsweep"]["runs"] == ["trial-0001/r0"]
    complete = [t for t in trials.values() if t.state.name == "COMPLETE"]
    assert len(complete) == 2
    for t in complete:
        _assert_mean(t, 2)
    # the sibling stopped with its trial left the trial's row in TensorBoard
    assert (out / "_aside" / "trial-0001.r1.stopped").is_dir()
    _check_board(out)


def test_a_repeat_run_again_after_a_crash_gets_a_timeout_clock_of_its_own(
    make_spec, tmp_path, run_cli
):
    # Trial 0's repeats (1.5 s each) are stopped by trial 1's crash and run again after the
    # pool restarts, more than 2.5 s after their first attempt started: timed from that
    # first attempt they would be killed for task.trial_timeout_s as soon as they restart.
    path = make_spec(
        study={"n_trials": 2, "repeats": 2, "max_consecutive_failures": 2},
        task={"train": "fake_trials:repeat_dies", "trial_timeout_s": 2.5},
        resources={"gpus": "none", "n_jobs": 3},
        search_space={
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "sleep": {"type": "categorical", "choices": [1.5]},
        },
    )
    res = run_cli("start", str(path))
    assert res.returncode == 0, res.stderr
    assert "ran past task.trial_timeout_s" not in res.stdout
    trials = _trials(tmp_path / "out")
    assert sorted(t.state.name for t in trials.values()) == ["COMPLETE", "COMPLETE", "FAIL"]
    for t in trials.values():
        assert "timed out" not in str(t.user_attrs["tbxsweep"].get("error"))


def test_a_pruned_repeat_stops_its_running_sibling_and_the_row_agrees(make_spec, tmp_path):
    path = make_spec(
        study={"n_trials": 2, "repeats": 2},
        task={"train": "fake_trials:repeat_pruned", "epochs": 2},
        resources={"gpus": "none", "n_jobs": 2},
    )
    t0 = time.monotonic()
    counts = run_sweep(load_spec(path), on_event=lambda kind, info: None)
    assert time.monotonic() - t0 < 40  # the sibling would train for 60 s
    assert counts.finished == 2 and counts.pruned == 1
    out = tmp_path / "out"
    trials = _trials(out)
    assert trials[0].state.name == "PRUNED"
    rec = trials[0].user_attrs["tbxsweep"]
    assert rec["runs"] == ["trial-0000/r0"] and rec["best_value"] == 0.25
    assert (out / "_aside" / "trial-0000.r1.stopped").is_dir()
    assert [t.state.name for n, t in sorted(trials.items()) if n > 0].count("COMPLETE") == 1
    _check_board(out)


def test_an_interrupted_trial_whose_other_repeat_had_ended_shows_as_failed(make_spec, tmp_path):
    # r0 of trial 0 ends (session end SUCCESS), r1 runs on; the stop after the grace period
    # fails the trial as interrupted. TensorBoard keeps a run's first session end, so r0's
    # run must leave the group, or the tab shows a failed trial as a success.
    path = make_spec(
        study={"n_trials": 1, "repeats": 2},
        task={"train": "fake_trials:repeat_lags", "epochs": 1},
        resources={"gpus": "none", "n_jobs": 2, "grace_s": 0.5},
    )
    out = tmp_path / "out"
    proc = spawn_cli("start", str(path))
    deadline = time.monotonic() + 60
    while not (out / "trial-0000" / "r0" / "fake.json").exists():
        assert time.monotonic() < deadline, "r0 did not finish within 60 s"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    trial = _trials(out)[0]
    assert trial.state.name == "FAIL"
    assert (out / "_aside" / "trial-0000.r0.stopped").is_dir()
    _check_board(out)
