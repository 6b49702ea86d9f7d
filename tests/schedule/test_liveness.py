"""Heartbeats, other orchestrators' stale trials, trials taken over and the trial timeout
(schedule/_liveness.py), on a real SQLite study and a clock the test turns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest

from tbxsweep.jobs import SlotPlan, TrialJob
from tbxsweep.paths import TRIAL_JSON, SweepPaths
from tbxsweep.schedule._crashes import StorageRetry
from tbxsweep.schedule._liveness import Heartbeats, TrialTimer, others_in_flight
from tbxsweep.schedule._repeats import Pending
from tbxsweep.study import HEARTBEAT_ATTR, OWNER_ATTR, RETRY_ATTR

DIST = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}


class Clock:
    """time.monotonic as the test sets it."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def study(tmp_path: Path) -> optuna.Study:
    return optuna.create_study(
        study_name="live", storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize"
    )


def _beats(study: optuna.Study) -> dict[int, Any]:
    return {t.number: t.user_attrs.get(HEARTBEAT_ATTR) for t in study.get_trials()}


def _pending(trial: Any) -> Pending:
    return Pending(trial=trial, jobs=[], queued=[])


def _heartbeats(study, tmp_path, events, clock, stale_after_s=6.0) -> Heartbeats:
    record = lambda kind, info: events.append((kind, info))  # noqa: E731
    return Heartbeats(
        study,
        SweepPaths(tmp_path / "out"),
        stale_after_s,
        StorageRetry(record),
        record,
        clock=clock,
    )


def test_the_heartbeat_changes_once_per_interval_on_every_trial_in_flight(study, tmp_path) -> None:
    clock, events = Clock(), []
    hb = _heartbeats(study, tmp_path, events, clock)  # stale after 6 s: a beat a second
    pending = [_pending(study.ask(DIST)) for _ in range(2)]
    assert hb.beat(pending) == []
    assert _beats(study) == {0: 1, 1: 1}
    clock.now += 0.9
    hb.beat(pending)
    assert _beats(study) == {0: 1, 1: 1}  # not yet
    clock.now += 0.1
    pending[1].taken_over = "elsewhere"
    hb.beat(pending)
    assert _beats(study) == {0: 2, 1: 1}  # a taken-over trial is no longer ours to beat
    assert events == []


def test_a_trial_another_orchestrator_finished_is_taken_over_not_told(study, tmp_path) -> None:
    clock, events = Clock(), []
    hb = _heartbeats(study, tmp_path, events, clock)
    mine, theirs = (_pending(study.ask(DIST)) for _ in range(2))
    study.tell(theirs.trial.number, state=optuna.trial.TrialState.FAIL)  # recovered elsewhere
    assert hb.beat([mine, theirs]) == [theirs]
    assert hb.finished_elsewhere(1) and not hb.finished_elsewhere(0)
    hb.take_over(theirs)
    assert theirs.taken_over == "another orchestrator recorded it as failed and queued it again"
    assert events == [("taken_over", {"number": 1, "reason": theirs.taken_over})]


def test_a_silent_trial_of_another_orchestrator_is_recovered_after_stale_after_s(
    study, tmp_path
) -> None:
    clock, events = Clock(), []
    hb = _heartbeats(study, tmp_path, events, clock, stale_after_s=4.0)
    other = study.ask(DIST)  # a trial with no owner record, and no heartbeat
    ours = study.ask(DIST)
    ours.set_user_attr(OWNER_ATTR, hb.owner)
    assert hb.recover_others(exclude={ours.number}) == []  # the first look starts the clock
    clock.now += 0.5
    assert hb.recover_others(exclude={ours.number}) == []  # looked less than 1 s ago
    clock.now += 4.0
    assert hb.recover_others(exclude={ours.number}) == [other.number]
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "RUNNING", "WAITING"]
    assert trials[2].user_attrs[RETRY_ATTR] == other.number
    assert events == [
        (
            "recovered",
            {
                "number": 0,
                "reason": "it has no owner record (started by another tool?) and no heartbeat "
                "for 4 s",
            },
        )
    ]


def test_the_budget_waits_for_others_only_while_their_trials_could_finish_it() -> None:
    assert others_in_flight({"COMPLETE": 2, "RUNNING": 1}, 4)
    assert not others_in_flight({"COMPLETE": 3, "PRUNED": 1, "RUNNING": 1}, 4)
    assert not others_in_flight({"COMPLETE": 1, "FAIL": 2}, 4)


def _job(tmp_path: Path, number: int, pid: int | None) -> TrialJob:
    from tbxsweep.spec import Spec

    run = tmp_path / f"trial-{number:04d}"
    run.mkdir(parents=True, exist_ok=True)
    if pid is not None:
        (run / TRIAL_JSON).write_text(json.dumps({"pid": pid}))
    return TrialJob(
        number=number,
        trial_id=number,
        params={},
        seed=0,
        run_dir=str(run),
        run_name=run.name,
        group=run.name,
        spec=Spec.model_construct(),
        storage_url=None,
        slots=SlotPlan("", ("",), 1),
        base_model_path=None,
        dispatched_at=0.0,
    )


def test_a_trial_past_the_timeout_is_killed_once_timed_from_when_it_started(tmp_path) -> None:
    clock, events, killed = Clock(), [], []
    timer = TrialTimer(2.5, lambda k, i: events.append((k, i)), clock=clock)
    started, waiting = _job(tmp_path, 0, pid=4242), _job(tmp_path, 1, pid=None)
    kill = lambda pid: killed.append(pid) or True  # noqa: E731
    timer.enforce([started, waiting], kill)  # trial 0's clock starts now; 1 has not started
    clock.now += 2.5
    timer.enforce([started, waiting], kill)
    assert killed == [] and not timer.timed_out("trial-0000")
    clock.now += 0.1
    timer.enforce([started, waiting], kill)
    timer.enforce([started, waiting], kill)
    assert killed == [4242] and timer.timed_out("trial-0000")
    assert events == [("timed_out", {"number": 0, "limit": 2.5})]
    # a re-run of the same run gets a clock of its own
    timer.forget("trial-0000")
    assert not timer.timed_out("trial-0000")
    timer.enforce([started], kill)
    clock.now += 2.0
    timer.enforce([started], kill)
    assert killed == [4242]


def test_a_worker_out_of_reach_is_reported_once_and_left_running(tmp_path) -> None:
    clock, events = Clock(), []
    timer = TrialTimer(1.0, lambda k, i: events.append((k, i)), clock=clock)
    job = _job(tmp_path, 5, pid=4242)
    timer.enforce([job], lambda pid: False)
    clock.now += 5
    timer.enforce([job], lambda pid: False)
    timer.enforce([job], lambda pid: False)
    assert events == [
        (
            "warning",
            {
                "message": "trial 5 ran past task.trial_timeout_s=1 s, but its worker cannot "
                "be stopped from here; it runs on"
            },
        )
    ]
    assert not timer.timed_out(job.run_name)


def test_no_timeout_kills_nothing(tmp_path) -> None:
    clock = Clock()
    timer = TrialTimer(None, lambda k, i: pytest.fail("event"), clock=clock)
    timer.enforce([_job(tmp_path, 0, 1)], lambda pid: pytest.fail("killed"))
    clock.now += 1e6
    timer.enforce([_job(tmp_path, 0, 1)], lambda pid: pytest.fail("killed"))
