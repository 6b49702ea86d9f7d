"""The leaderboard's direct SQL read gives exactly what Optuna gives."""

from __future__ import annotations

import optuna

from tbxsweep.spec import load_spec
from tbxsweep.study import read_study_trials
from tbxsweep.sweep import run_sweep


def _as_tuples(trials):
    return [(t.number, t.state.name, t.value, t.params, t.user_attrs) for t in trials]


def test_direct_read_matches_optuna(make_spec, tmp_path) -> None:
    path = make_spec(
        study={
            "n_trials": 6,
            "max_consecutive_failures": 50,
            "sampler": {"name": "random", "seed": 3},
            "pruner": {"name": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
        },
        search_space={
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "k": {"type": "int", "low": 1, "high": 8, "log": True},
            "opt": {"type": "categorical", "choices": ["adam", "sgd", 3, True]},
        },
        task={"epochs": 4, "train": "fake_trials:failing"},
        resources={"gpus": "none", "n_jobs": 1},
    )
    run_sweep(load_spec(path), on_event=lambda k, i: None)
    url = f"sqlite:///{tmp_path / 'out' / 'study.db'}"
    study = optuna.load_study(study_name="fake", storage=url)
    trials, attrs = read_study_trials(url, "fake")
    assert {t.state.name for t in trials} >= {"COMPLETE", "FAIL"}
    assert _as_tuples(trials) == _as_tuples(study.get_trials(deepcopy=False))
    assert attrs == study.user_attrs
