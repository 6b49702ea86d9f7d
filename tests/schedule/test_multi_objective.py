"""Accuracy against cost: multi-objective studies, Pareto fronts, user constraints."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from fake_trials import COSTLY_CASES

from tbxsweep.cli.check import compare
from tbxsweep.errors import SpecError
from tbxsweep.export import leaderboard_columns, pareto_ranks
from tbxsweep.schedule import run_sweep
from tbxsweep.spec import load_spec
from tbxsweep.tblog import TrialLogger

TWO = [
    {"name": "score", "direction": "maximize"},
    {"name": "trainable_params", "direction": "minimize"},
]
# Every case once: the grid sampler over `case` (6 trials, 6 cases; the fake spec's `x`
# pinned to one value).
CASES = {
    "x": {"type": "int", "low": 0, "high": 0},
    "case": {"type": "categorical", "choices": sorted(COSTLY_CASES)},
}


def _spec(make_spec, **study):
    return make_spec(
        study={"metric": TWO, "n_trials": 6, "sampler": {"name": "grid", "seed": 0}, **study},
        search_space=CASES,
        task={"train": "fake_trials:costly", "epochs": 2},
    )


def _errors(path: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return info.value.problems


def test_pareto_ranks_by_non_dominated_sorting():
    points = [[0.9, 1000], [0.8, 500], [0.7, 2000], [0.9, 1000], [0.6, 600], [0.5, 3000]]
    assert pareto_ranks(points, ["maximize", "minimize"]) == [0, 0, 1, 0, 1, 2]
    # both minimised: (0.5, 3000) is now the best score
    assert pareto_ranks(points, ["minimize", "minimize"]) == [1, 0, 1, 1, 0, 0]
    assert pareto_ranks([], ["maximize", "minimize"]) == []


def test_multi_objective_sweep_ranks_fronts_in_the_storage_leaderboard_and_tab(make_spec, tmp_path):
    from tbxsweep.cli.board import start_board

    counts = run_sweep(load_spec(_spec(make_spec)), on_event=lambda kind, info: None)
    out = tmp_path / "out"
    study = optuna.load_study(study_name="fake", storage=f"sqlite:///{out / 'study.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    case_of = {t.number: t.params["case"] for t in study.trials}
    assert sorted(case_of.values()) == [0, 1, 2, 3, 4, 5]
    assert {case_of[t.number]: t.values for t in study.trials} == {
        c: [s, float(p)] for c, (s, p) in COSTLY_CASES.items()
    }
    assert sorted(case_of[t.number] for t in study.best_trials) == [0, 1, 3]
    # the final lines' front: every trial on it, by number
    assert [(n, case_of[n]) for n, _, _ in counts.front] == sorted(
        (n, c) for n, c in case_of.items() if c in (0, 1, 3)
    )

    df = pd.read_csv(out / "leaderboard.csv")
    cols = leaderboard_columns(["x", "case"])
    cols.insert(cols.index("state") + 1, "pareto")
    cols.insert(cols.index("value") + 1, "value_trainable_params")
    assert list(df.columns) == cols
    # front 0 first (0.9, 0.9 by trial number, then 0.8), then front 1, then front 2
    first = sorted(n for n, c in case_of.items() if c in (0, 3))
    assert [case_of[n] for n in df["trial"]] == [case_of[first[0]], case_of[first[1]], 1, 2, 4, 5]
    assert list(df["pareto"]) == [0, 0, 0, 1, 1, 2]
    assert list(df["value"]) == [0.9, 0.9, 0.8, 0.7, 0.6, 0.5]
    assert list(df["value_trainable_params"]) == [1000, 1000, 500, 2000, 600, 3000]
    assert set(df["state"]) == {"complete"}

    with start_board(out) as board:
        exp = board.experiment()
        groups = board.session_groups()
        # `tbxsweep check` compares every objective and the front rank with the study
        assert compare(board, out)[0] == []
        run = df["run"].iloc[0]
        wrong = TrialLogger(out / run)  # a stale rank written into one run
        wrong.scalars(99, {"pareto": 7.0})
        wrong.close()
        rank = int(df["pareto"].iloc[0])
        want = f"{run}: pareto is 7.0 in TensorBoard, {rank} in the leaderboard"
        deadline = time.monotonic() + 30
        while (problems := compare(board, out)[0]) != [want]:
            assert time.monotonic() < deadline, problems
            time.sleep(1)
    tags = [m["name"]["tag"] for m in exp["metricInfos"]]
    assert tags[-6:] == [
        "objective/score",
        "objective/trainable_params",
        "pareto",
        "epochs_run",
        "duration_s",
        "state",
    ]
    shown = {m["name"]["tag"]: m["displayName"] for m in exp["metricInfos"]}
    assert shown["objective/trainable_params"] == "trainable_params (objective 2, minimize)"
    assert shown["pareto"] == "pareto front rank (0 = on the front)"
    by_run = {g["name"]: {m["name"]["tag"]: m["value"] for m in g["metricValues"]} for g in groups}
    for _, row in df.iterrows():
        values = by_run[row["run"]]
        assert values["pareto"] == row["pareto"]
        assert values["objective/score"] == pytest.approx(row["value"])
        assert values["objective/trainable_params"] == row["value_trainable_params"]


def test_constraints_make_trials_infeasible_and_off_the_front(make_spec, tmp_path):
    path = _spec(make_spec, constraints={"trainable_params": {"max": 1500}})
    counts = run_sweep(load_spec(path), on_event=lambda kind, info: None)
    assert (counts.complete, counts.infeasible, counts.finished) == (4, 2, 6)
    out = tmp_path / "out"
    study = optuna.load_study(study_name="fake", storage=f"sqlite:///{out / 'study.db'}")
    by_case = {t.params["case"]: t for t in study.trials}
    # every trial carries its margin: params - 1500 (> 0: infeasible)
    assert {c: t.constraints for c, t in by_case.items()} == {
        c: {"trainable_params": float(p - 1500)} for c, (_, p) in COSTLY_CASES.items()
    }
    assert sorted(t.params["case"] for t in study.best_trials) == [0, 1, 3]

    df = pd.read_csv(out / "leaderboard.csv")
    cases = [by_case_n for by_case_n in df["trial"].map({t.number: c for c, t in by_case.items()})]
    assert cases[3:] == [4, 2, 5]
    assert list(df["state"]) == ["complete"] * 4 + ["infeasible"] * 2
    assert list(df["pareto"].astype("Float64").fillna(-1)) == [0, 0, 0, 1, -1, -1]
    assert list(df["error"][4:]) == [
        "outside study.constraints: `trainable_params <= 1500` must hold, got "
        "trainable_params=2000",
        "outside study.constraints: `trainable_params <= 1500` must hold, got "
        "trainable_params=3000",
    ]


@pytest.mark.parametrize(
    ("study", "message"),
    [
        (
            {"metric": [{"name": "score", "direction": "up"}]},
            "study.metric[0].direction: must be one of 'maximize', 'minimize', got 'up'",
        ),
        (
            {"metric": [{"name": "score", "direction": "maximize"}, {"name": "trainable_params"}]},
            "study.metric[1].direction: is required",
        ),
        (
            {"metric": [TWO[0], TWO[0]]},
            "study.metric: objective names must be unique, got 'score' twice",
        ),
        (
            {"metric": TWO, "direction": "minimize"},
            "study.direction: each objective in study.metric has its own direction, got "
            "direction='minimize' and 'maximize' for 'score': drop study.direction",
        ),
        (
            {"metric": TWO[::-1], "direction": "minimize"},
            "study.metric[0].name: the first objective must be a metric the trial records (it "
            "picks each trial's best epoch), got 'trainable_params': list it after one",
        ),
        (
            {"metric": TWO, "pruner": {"name": "median"}},
            "study.pruner.name: Optuna prunes single-objective studies only, got 'median' with "
            "2 objectives in study.metric: drop study.pruner (or set name: none)",
        ),
        (
            {"metric": TWO, "sampler": {"name": "cmaes"}},
            "study.sampler.name: 'cmaes' optimises one objective, got 2 objectives in "
            "study.metric: use 'tpe', 'random', 'grid' or 'qmc'",
        ),
        (
            {"constraints": {"trainable_params": {}}},
            "study.constraints.trainable_params: must have `min` or `max` (or both), got neither",
        ),
        (
            {"constraints": {"seconds": {"min": 5, "max": 1}}},
            "study.constraints.seconds: `min < max` must hold, got min=5.0, max=1.0",
        ),
    ],
)
def test_bad_objectives_and_constraints_get_one_exact_line(make_spec, study, message):
    path = make_spec(study=study)
    assert _errors(path) == [f"{path}: {message}"]


def test_builtin_task_objectives_and_constraints_name_what_it_records(make_spec):
    metric = [
        {"name": "val_accuracy", "direction": "maximize"},
        {"name": "trainable_param", "direction": "minimize"},
    ]
    path = make_spec(
        base="digits",
        study={"metric": metric, "pruner": {"name": "none"}, "constraints": {"secs": {"max": 9}}},
    )
    known = "'val_accuracy', 'val_loss', 'accuracy', 'loss', 'seconds', 'trainable_params'"
    assert _errors(path) == [
        f"{path}: study.metric[1].name: must be one of {known} for the built-in task, got "
        "'trainable_param' (did you mean 'trainable_params'?)",
        f"{path}: study.constraints: unknown key 'secs' for the built-in task (did you mean "
        "'seconds'?)",
    ]


def test_a_multi_objective_spec_round_trips_through_its_stored_form(make_spec):
    from tbxsweep.spec import Spec

    spec = load_spec(_spec(make_spec, constraints={"seconds": {"max": 60}}))
    assert (spec.study.metric, spec.study.direction, spec.study.pruner.name) == (
        "score",
        "maximize",
        "none",
    )
    assert [(g.name, g.direction) for g in spec.study.goals] == [
        ("score", "maximize"),
        ("trainable_params", "minimize"),
    ]
    assert Spec.model_validate(spec.model_dump(mode="json")) == spec
