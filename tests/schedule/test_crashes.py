"""Who is to blame for a crash, riding out a lost storage connection, and the failure streak
that stops a sweep (schedule/_crashes.py, no workers)."""

from __future__ import annotations

import json
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
import sqlalchemy
from joblib.externals.loky.process_executor import TerminatedWorkerError

from tbxsweep.errors import FatalError
from tbxsweep.jobs import SlotPlan, TrialJob, TrialOutcome, TrialState
from tbxsweep.paths import TRIAL_JSON
from tbxsweep.schedule._crashes import (
    CrashJudge,
    FailureStreak,
    StorageRetry,
    connection_lost,
    exit_text,
    worker_pid,
)
from tbxsweep.spec import load_spec


@pytest.fixture
def job(make_spec, tmp_path) -> TrialJob:
    """Trial 3's job, whose worker (pid 4242) has written its trial.json."""
    run = tmp_path / "out" / "trial-0003"
    run.mkdir(parents=True)
    (run / TRIAL_JSON).write_text(json.dumps({"pid": 4242, "started_at": 1.0}))
    return TrialJob(
        number=3,
        trial_id=4,
        params={"x": 0.5},
        seed=3,
        run_dir=str(run),
        run_name="trial-0003",
        group="trial-0003",
        spec=load_spec(make_spec()),
        storage_url=None,
        slots=SlotPlan("", ("",), 1),
        base_model_path=None,
        dispatched_at=0.0,
    )


def _crash(judge: CrashJudge, job: TrialJob, exc: BaseException, dead: dict[int, int], **kw):
    out = judge.crash_outcome(job, exc, dead, **kw)
    return out.state, out.error, out.worker_pid, out.metrics


def test_the_worker_that_died_first_fails_its_trial_with_its_exit(job) -> None:
    judge = CrashJudge(None)
    broken = TerminatedWorkerError("A worker process managed by the executor was terminated")
    assert _crash(judge, job, broken, {4242: 3, 99: -9}) == (
        TrialState.FAIL,
        "worker process died (exit code 3) while running this trial",
        4242,
        {},
    )
    # SIGKILL with no OOM-kill counter snapshot taken at dispatch: a plain failure
    assert _crash(judge, job, broken, {4242: -9})[1] == (
        "worker process died (killed by SIGKILL) while running this trial"
    )


def test_a_trial_whose_worker_loky_killed_for_another_crash_is_collateral(job) -> None:
    judge = CrashJudge(None)
    for exc in (TerminatedWorkerError("terminated"), BrokenProcessPool("broken")):
        assert _crash(judge, job, exc, {777: 3}) == (
            TrialState.FAIL,
            None,
            4242,
            {"collateral": 1.0},
        )


def test_a_broken_pool_with_no_dead_worker_to_blame_fails_the_trial_rather_than_loop(
    job,
) -> None:
    exc = BrokenProcessPool("A process in the process pool was terminated abruptly")
    assert _crash(CrashJudge(None), job, exc, {}) == (
        TrialState.FAIL,
        "worker process died: worker process died: A process in the process pool was "
        "terminated abruptly",
        4242,
        {},
    )


def test_a_timed_out_trial_is_to_blame_whatever_its_worker_says(job) -> None:
    judge = CrashJudge(2.5)
    exc = TerminatedWorkerError("terminated")
    assert _crash(judge, job, exc, {4242: -9}, timed_out=True)[:2] == (
        TrialState.FAIL,
        "timed out after 2.5 s (task.trial_timeout_s)",
    )


def test_an_error_raised_in_the_worker_fails_the_trial_with_its_type_and_text(job) -> None:
    exc = ValueError("bad   x\n  value")
    assert _crash(CrashJudge(None), job, exc, {})[:2] == (
        TrialState.FAIL,
        "ValueError: bad x value",
    )


def test_the_outcome_of_a_future_is_its_result_or_the_crash_it_raised(job) -> None:
    judge = CrashJudge(None)
    ok: Future[TrialOutcome] = Future()
    result = TrialOutcome(number=3, state=TrialState.COMPLETE, value=0.5)
    ok.set_result(result)
    assert judge.outcome(ok, job, dict, timed_out=False) is result
    bad: Future[TrialOutcome] = Future()
    bad.set_exception(TerminatedWorkerError("terminated"))
    out = judge.outcome(bad, job, lambda: {4242: 1}, timed_out=False)
    assert out.error == "worker process died (exit code 1) while running this trial"


def test_worker_pid_is_read_from_the_trial_json_once_there(job, tmp_path) -> None:
    assert worker_pid(job) == 4242
    (Path(job.run_dir) / TRIAL_JSON).write_text("{not json")
    assert worker_pid(job) is None
    (Path(job.run_dir) / TRIAL_JSON).unlink()
    assert worker_pid(job) is None


def test_exit_codes_read_as_words() -> None:
    assert [exit_text(c) for c in (3, 0, -9, -15, -200)] == [
        "exit code 3",
        "exit code 0",
        "killed by SIGKILL",
        "killed by SIGTERM",
        "killed by signal 200",
    ]


def _unreachable(tmp_path: Path) -> tuple[sqlalchemy.Engine, Path]:
    """A real SQLite storage whose directory does not exist (yet): every connect fails."""
    where = tmp_path / "later"
    engine = sqlalchemy.create_engine(f"sqlite:///{where / 'study.db'}")
    return engine, where


def _select_one(engine: sqlalchemy.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sqlalchemy.text("select 1")).scalar_one())


def test_a_storage_that_fails_twice_is_retried_with_growing_delays(tmp_path) -> None:
    engine, where = _unreachable(tmp_path)
    events: list[tuple[str, dict]] = []
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        if len(slept) == 2:
            where.mkdir()  # the database comes back

    retry = StorageRetry(lambda k, i: events.append((k, i)), sleep=sleep)
    assert retry("read the trials", lambda: _select_one(engine)) == 1
    assert slept == [1, 2]
    assert events == [
        (
            "storage_retry",
            {
                "what": "read the trials",
                "attempt": n,
                "delay": d,
                "error": "unable to open database file",
            },
        )
        for n, d in ((1, 1), (2, 2))
    ]


def test_a_storage_that_stays_away_stops_the_sweep_with_one_line(tmp_path) -> None:
    engine, _ = _unreachable(tmp_path)
    slept: list[float] = []
    retry = StorageRetry(lambda k, i: None, delays=(0.5, 0.25), sleep=slept.append)
    with pytest.raises(FatalError) as err:
        retry("record a trial", lambda: _select_one(engine))
    assert str(err.value) == (
        "lost the connection to the study's storage while trying to record a trial "
        "(unable to open database file); finished trials are saved: run the same command "
        "to resume"
    )
    assert slept == [0.5, 0.25]


def test_an_error_that_is_not_a_lost_connection_is_raised_at_once() -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("no such trial")

    retry = StorageRetry(lambda k, i: None, sleep=lambda s: pytest.fail("slept"))
    with pytest.raises(ValueError, match="no such trial"):
        retry("read the trials", broken)
    assert calls == [1]
    # what optuna wraps a driver error in is looked through
    try:
        try:
            raise sqlalchemy.exc.OperationalError("select", {}, Exception("gone"))
        except sqlalchemy.exc.OperationalError as inner:
            raise RuntimeError("StorageInternalError") from inner
    except RuntimeError as outer:
        assert connection_lost(outer)
    assert not connection_lost(RuntimeError("other"))


def _o(state: TrialState, error: str | None = None) -> TrialOutcome:
    return TrialOutcome(number=0, state=state, value=None, error=error)


def test_the_failure_streak_counts_failures_in_a_row_and_infeasible_trials_do_not_break_it():
    streak = FailureStreak(3)
    seen = [
        streak.note(o)
        for o in (
            _o(TrialState.FAIL, "a"),
            _o(TrialState.FAIL, "b"),
            _o(TrialState.COMPLETE),
            _o(TrialState.FAIL, "c"),
            _o(TrialState.INFEASIBLE),
            _o(TrialState.FAIL, "d"),
            _o(TrialState.PRUNED),
            _o(TrialState.FAIL, "e"),
            _o(TrialState.FAIL, "f"),
            _o(TrialState.FAIL, "g"),
        )
    ]
    assert seen == [False] * 9 + [True]
    assert str(streak.fatal()) == "stopped after 3 consecutive failed trials; last error: g"
