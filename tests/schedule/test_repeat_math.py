"""`study.repeats` as bookkeeping: which outcome a trial is told with, which repeats stop,
run again or leave its TensorBoard group (schedule/_repeats.py, no workers)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from tbxsweep.jobs import SlotPlan, TrialJob, TrialOutcome, TrialState
from tbxsweep.paths import SweepPaths
from tbxsweep.schedule._repeats import (
    Pending,
    Taken,
    combine,
    mean_values,
    repeat_jobs,
    resume_dir,
)
from tbxsweep.spec import load_spec

SLOTS = SlotPlan("", ("",), 1)


def _out(r: int, state: TrialState = TrialState.COMPLETE, value: float | None = None, **kw):
    return TrialOutcome(number=7, state=state, value=value, worker_pid=100 + r, **kw)


def _jobs(make_spec, tmp_path: Path, repeats: int) -> tuple[Pending, list[TrialJob]]:
    spec = load_spec(make_spec(study={"repeats": repeats, "n_trials": 4}))
    tmp_path.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    jobs = repeat_jobs(
        trial,
        spec,
        SweepPaths(spec.output_dir),
        resume_from=None,
        storage_url="sqlite:///s.db",
        slots=SLOTS,
        base_model_path=None,
        model_bar=0.5,
    )
    return Pending(trial=trial, jobs=jobs, queued=list(jobs)), jobs


def test_combine_takes_the_mean_value_the_worst_margin_and_the_sum_of_durations() -> None:
    outs = [
        _out(
            0,
            value=0.5,
            values=(0.5, 10.0),
            duration_s=2.0,
            ended_at=5.0,
            epochs_run=3,
            constraints={"c": -0.5},
        ),
        _out(
            1,
            value=0.75,
            values=(0.75, 20.0),
            duration_s=3.0,
            ended_at=9.0,
            epochs_run=2,
            constraints={"c": -0.25},
        ),
    ]
    out = combine(outs)
    assert out.state is TrialState.COMPLETE
    assert out.value == 0.625
    assert out.values == (0.625, 15.0)
    assert out.constraints == {"c": -0.25}
    assert (out.duration_s, out.ended_at, out.epochs_run) == (5.0, 9.0, 3)
    assert out.worker_pid == 100  # the rest is the first repeat's


def test_combine_takes_the_worst_state_failure_over_infeasible_over_pruned() -> None:
    pruned = _out(0, TrialState.PRUNED, 0.1)
    infeasible = _out(1, TrialState.INFEASIBLE, constraints={"oom": 1.0})
    failed = replace_number(_out(2, TrialState.FAIL, error="boom"), 9)
    assert combine([pruned, infeasible, failed]) == replace_number(failed, 7)
    assert combine([pruned, infeasible]) is not infeasible
    assert combine([pruned, infeasible]) == infeasible
    assert combine([_out(0, value=0.9), pruned]) == pruned
    assert mean_values([pruned, _out(1, value=1.0, values=(1.0, 3.0))]) == (1.0, 3.0)
    assert mean_values([pruned]) == ()


def replace_number(out: TrialOutcome, number: int) -> TrialOutcome:
    from dataclasses import replace

    return replace(out, number=number)


def test_a_trial_has_one_job_per_repeat_each_with_its_run_and_seed(make_spec, tmp_path) -> None:
    pending, jobs = _jobs(make_spec, tmp_path, 3)
    out = tmp_path / "out"
    assert [(j.repeat, j.run_name, j.run_dir, j.group) for j in jobs] == [
        (r, f"trial-0000/r{r}", str(out / f"trial-0000/r{r}"), "trial-0000") for r in range(3)
    ]
    assert [j.seed for j in jobs] == [0, 1, 2]  # task.seed 0 + number * repeats + r
    # only the first repeat reports to the pruner
    assert [j.storage_url for j in jobs] == ["sqlite:///s.db", None, None]
    assert {j.model_bar for j in jobs} == {0.5}
    assert pending.number == 0 and not pending.done


def test_a_pruned_repeat_decides_the_trial_and_stops_the_running_sibling(
    make_spec, tmp_path
) -> None:
    pending, jobs = _jobs(make_spec, tmp_path, 3)
    for job in list(pending.queued[:2]):  # r0 and r1 run, r2 is queued
        pending.queued.remove(job)
        pending.running.add(job.repeat)
    assert pending.take(jobs[0], _out(0, value=0.5)) is Taken.KEPT
    assert pending.take(jobs[1], _out(1, TrialState.PRUNED, 0.2)) is Taken.DECIDES
    assert pending.queued == [] and pending.stopping == set() and pending.done
    pending, jobs = _jobs(make_spec, tmp_path / "b", 3)
    for job in jobs:
        pending.queued.remove(job)
        pending.running.add(job.repeat)
    assert pending.take(jobs[1], _out(1, TrialState.PRUNED, 0.2)) is Taken.DECIDES
    assert pending.stopping == {0, 2} and pending.to_stop() == [0, 2]
    pending.stopped.add(0)
    assert pending.to_stop() == [2]
    assert pending.take(jobs[0], _out(0, value=0.9)) is Taken.UNNEEDED
    assert pending.take(jobs[2], _out(2, TrialState.FAIL)) is Taken.UNNEEDED
    assert pending.done and sorted(pending.outcomes) == [1]
    assert pending.kept(TrialState.PRUNED) == [1]
    assert pending.combined().state is TrialState.PRUNED


def test_a_collateral_repeat_runs_again_from_its_checkpoint_unless_the_trial_is_decided(
    make_spec, tmp_path
) -> None:
    pending, jobs = _jobs(make_spec, tmp_path, 2)
    pending.queued.clear()
    pending.running = {0, 1}
    crash = _out(0, TrialState.FAIL, metrics={"collateral": 1.0})
    assert pending.take(jobs[0], crash) is Taken.COLLATERAL
    assert pending.reruns_collateral()
    pending.run_again(jobs[0], "/aside/trial-0000.r0.interrupted", at=123.0)
    assert [(j.repeat, j.resume_dir, j.dispatched_at) for j in pending.queued] == [
        (0, "/aside/trial-0000.r0.interrupted", 123.0)
    ]
    assert pending.take(jobs[1], _out(1, TrialState.FAIL, error="boom")) is Taken.DECIDES
    assert pending.queued == [] and not pending.reruns_collateral()


def test_a_lone_run_does_not_run_again_on_its_own(make_spec, tmp_path) -> None:
    pending, jobs = _jobs(make_spec, tmp_path, 1)
    pending.queued.clear()
    pending.running = {0}
    crash = _out(0, TrialState.FAIL, metrics={"collateral": 1.0})
    assert pending.take(jobs[0], crash) is Taken.COLLATERAL
    assert not pending.reruns_collateral() and pending.done and pending.outcomes == {}


def test_an_interrupted_trial_moves_aside_only_its_repeats_that_ended_well(
    make_spec, tmp_path
) -> None:
    pending, jobs = _jobs(make_spec, tmp_path, 3)
    pending.outcomes = {0: _out(0, value=0.5), 2: _out(2, TrialState.FAIL)}
    assert pending.ended_before_interrupt() == [jobs[0]]
    lone, _ = _jobs(make_spec, tmp_path / "lone", 1)
    lone.outcomes = {0: _out(0, value=0.5)}
    assert lone.ended_before_interrupt() == []


def test_a_taken_over_trial_needs_none_of_its_repeats(make_spec, tmp_path) -> None:
    pending, jobs = _jobs(make_spec, tmp_path, 2)
    pending.queued.remove(jobs[0])
    pending.running = {0}
    pending.give_up("taken")
    assert pending.queued == [] and pending.stopping == {0}
    assert pending.take(jobs[0], _out(0, value=1.0)) is Taken.UNNEEDED
    assert pending.done and pending.outcomes == {}


@pytest.mark.parametrize(
    ("old", "run", "group", "expected"),
    [
        (None, "trial-0004", "trial-0004", None),
        ("/a/trial-0001.interrupted", "trial-0004", "trial-0004", "/a/trial-0001.interrupted"),
        (
            "/a/trial-0001.interrupted",
            "trial-0004/r1",
            "trial-0004",
            "/a/trial-0001.interrupted/r1",
        ),
    ],
)
def test_a_rerun_repeat_resumes_from_the_same_repeat_of_the_old_run(old, run, group, expected):
    assert resume_dir(old, run, group) == expected
