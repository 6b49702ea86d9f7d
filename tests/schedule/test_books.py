"""The books: the per-trial record, what a trial is told with, the counts the progress display
shows and leaderboard.csv, read back from a real SQLite study (schedule/_books.py)."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from tbxsweep.jobs import SlotPlan, TrialJob, TrialOutcome, TrialState
from tbxsweep.paths import SweepPaths
from tbxsweep.schedule import _books
from tbxsweep.schedule._books import Books, SweepCounts, count_trials, told, trial_record
from tbxsweep.schedule._crashes import StorageRetry
from tbxsweep.spec import load_spec
from tbxsweep.study import RECORD_ATTR, SEEDED_ATTR

DIST = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
S = optuna.trial.TrialState


def _add(study: optuna.Study, state: S, value: float | None, x: float, **record) -> None:
    study.add_trial(
        optuna.trial.create_trial(
            state=state,
            value=value,
            params={"x": x},
            distributions=DIST,
            user_attrs={RECORD_ATTR: {"run": "", **record}} if record else {},
        )
    )


@pytest.fixture
def books(make_spec, tmp_path) -> Books:
    spec = load_spec(make_spec(study={"n_trials": 6}))
    study = optuna.create_study(
        study_name="fake", storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize"
    )
    _add(study, S.COMPLETE, 0.5, 0.1, constraints={})
    _add(study, S.COMPLETE, 0.8, 0.2, constraints={})
    _add(study, S.PRUNED, None, 0.3, constraints={})
    _add(study, S.FAIL, None, 0.4, error="boom")
    _add(study, S.COMPLETE, 0.9, 0.5, constraints={"c": 0.2})  # infeasible: never the best
    study.ask(DIST)  # running
    # a trial copied from a forked study: not this study's own
    study.add_trial(
        optuna.trial.create_trial(
            value=1.0, params={"x": 0.6}, distributions=DIST, user_attrs={SEEDED_ATTR: "old#0"}
        )
    )
    paths = SweepPaths(spec.output_dir)
    paths.root.mkdir(parents=True)
    return Books(spec, study, paths, StorageRetry(lambda k, i: None))


def test_the_counts_are_read_back_from_the_studys_own_trials(books) -> None:
    assert books.states() == {"COMPLETE": 3, "PRUNED": 1, "FAIL": 1, "RUNNING": 1}
    books.refresh_counts()
    c = books.counts
    assert (c.finished, c.complete, c.pruned, c.failed, c.infeasible) == (4, 2, 1, 1, 1)
    assert (c.best_value, c.best_trial, c.best_params) == (0.8, 1, {"x": 0.2})
    assert c.front == []


def test_a_minimizing_study_counts_the_lowest_value_best(books) -> None:
    c = SweepCounts(n_trials=6)
    count_trials(c, books.own_trials(), "minimize", multi=False)
    assert (c.best_value, c.best_trial) == (0.5, 0)


def test_the_leaderboard_is_written_after_a_tell_at_most_every_interval(books, monkeypatch) -> None:
    monkeypatch.setattr(_books, "LEADERBOARD_EVERY_S", 3600.0)
    before = time.monotonic()
    books.trial_told()
    assert books.leaderboard_written_at >= before
    df = pd.read_csv(books.paths.leaderboard_csv)
    # the leaderboard lists every trial, those copied by --fork too
    assert df[["rank", "trial", "state"]].values.tolist() == [
        [1, 6, "complete"],
        [2, 1, "complete"],
        [3, 0, "complete"],
        [4, 2, "pruned"],
        [5, 4, "infeasible"],
        [6, 3, "failed"],
        [7, 5, "running"],
    ]
    books.paths.leaderboard_csv.unlink()
    books.trial_told()
    assert not books.paths.leaderboard_csv.exists()  # within the interval
    books.write_leaderboard()  # when the sweep stops: always
    assert books.paths.leaderboard_csv.is_file()


def _o(state: TrialState, value: float | None = None, values=(), **kw) -> TrialOutcome:
    return TrialOutcome(number=3, state=state, value=value, values=tuple(values), **kw)


def test_each_outcome_is_told_in_a_state_the_samplers_learn_from() -> None:
    assert told(_o(TrialState.COMPLETE, 0.5, (0.5,)), multi=False) == ("COMPLETE", 0.5)
    assert told(_o(TrialState.COMPLETE, 0.5, (0.5, 3.0)), multi=True) == ("COMPLETE", [0.5, 3.0])
    assert told(_o(TrialState.COMPLETE, 0.5), multi=False) == ("COMPLETE", 0.5)
    # outside study.constraints: told with its values (its constraint > 0 says infeasible)
    assert told(_o(TrialState.INFEASIBLE, 0.7, (0.7,)), multi=False) == ("COMPLETE", 0.7)
    # out of memory: no value to tell
    assert told(_o(TrialState.INFEASIBLE), multi=False) == ("PRUNED", None)
    assert told(_o(TrialState.PRUNED, 0.2), multi=False) == ("PRUNED", None)
    assert told(_o(TrialState.FAIL), multi=False) == ("FAIL", None)


def test_the_record_of_a_trial_with_repeats_lists_the_runs_of_its_row(make_spec) -> None:
    spec = load_spec(make_spec(study={"repeats": 2}))

    def job(r: int) -> TrialJob:
        return TrialJob(
            number=3,
            trial_id=4,
            params={"x": 0.5},
            seed=6 + r,
            run_dir=f"/out/trial-0003/r{r}",
            run_name=f"trial-0003/r{r}",
            group="trial-0003",
            spec=spec,
            storage_url=None,
            slots=SlotPlan("", ("",), 1),
            base_model_path=None,
            dispatched_at=10.0 + r,
        )

    r0 = _o(TrialState.COMPLETE, 0.5, (0.5,), cache_build_s=1.5, worker_pid=11)
    r1 = _o(TrialState.COMPLETE, 0.7, (0.7,), cache_build_s=0.5, worker_pid=12)
    out = _o(
        TrialState.COMPLETE,
        0.6,
        (0.6,),
        worker_pid=11,
        best_epoch=2,
        epochs_run=3,
        duration_s=4.0,
        started_at=10.5,
        ended_at=14.0,
        epoch_seconds=(1.0, 0.5),
        constraints={"c": -1.0},
    )
    assert trial_record(out, [(job(0), r0), (job(1), r1)], job(0), spec) == {
        "run": "trial-0003",
        "runs": ["trial-0003/r0", "trial-0003/r1"],
        "device": "cpu",
        "cuda_visible_devices": None,
        "worker_pid": 11,
        "host": "",
        "best_value": 0.6,
        "values": [0.5, 0.7],
        "best_epoch": 2,
        "epochs_run": 3,
        "duration_s": 4.0,
        "trainable_params": None,
        "feature_cache": None,
        "cache_build_s": 2.0,
        "error": None,
        "dispatched_at": 10.0,
        "started_at": 10.5,
        "ended_at": 14.0,
        "first_epoch_end": None,
        "epoch_seconds": [1.0, 0.5],
        "seeds": [6, 7],
        "constraints": {"c": -1.0},
    }


def test_the_record_of_a_multi_objective_trial_names_its_objectives(make_spec) -> None:
    spec = load_spec(
        make_spec(
            study={
                "metric": [
                    {"name": "score", "direction": "maximize"},
                    {"name": "seconds", "direction": "minimize"},
                ]
            }
        )
    )
    rec = _books.objective_record(_o(TrialState.COMPLETE, 0.5, (0.5, 3.0)), spec)
    assert rec == {
        "constraints": {},
        "objectives": [
            {"name": "score", "direction": "maximize", "value": 0.5},
            {"name": "seconds", "direction": "minimize", "value": 3.0},
        ],
    }


def test_books_see_no_trial_of_a_study_that_has_none(make_spec, tmp_path: Path) -> None:
    spec = load_spec(make_spec())
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'empty.db'}")
    books = Books(spec, study, SweepPaths(spec.output_dir), StorageRetry(lambda k, i: None))
    books.refresh_counts()
    assert (books.counts.finished, books.counts.best_value, books.states()) == (0, None, {})
