"""The leaderboard's direct SQL read gives exactly what Optuna gives, on SQLite and PostgreSQL.

`read_study_trials` falls back to Optuna when the SQL read fails, so comparing it with Optuna
alone proves nothing about the SQL: these tests call the SQL reader (`read_trials`) itself,
and check that `read_study_trials` took that path (it returns `LightTrial`s, Optuna
`FrozenTrial`s).
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from tbxsweep.schedule import run_sweep
from tbxsweep.spec import load_spec
from tbxsweep.study import read_study_trials
from tbxsweep.study._fastread import LightTrial, read_trials

DEFAULT_PG = "postgresql://tbxsweep:tbxsweep@127.0.0.1:5432/postgres"


def _as_tuples(trials: Any) -> list[tuple[Any, ...]]:
    return [(t.number, t.state.name, t.value, t.params, t.user_attrs) for t in trials]


def _fill(url: str) -> optuna.Study:
    """A study with every state, value type (finite, +inf, -inf, none), distribution kind and
    attribute shape the reader decodes, plus a second study whose rows must not leak in."""
    dists = {
        "x": FloatDistribution(0.0, 1.0),
        "lr": FloatDistribution(1e-5, 1e-1, log=True),
        "k": IntDistribution(1, 8, log=True),
        "step": IntDistribution(0, 10, step=2),
        "opt": CategoricalDistribution(["adam", "sgd", 3, True, None, 0.5]),
    }
    cases: list[tuple[TrialState, float | None, dict[str, Any]]] = [
        (TrialState.COMPLETE, 0.25, {"x": 0.1, "lr": 1e-3, "k": 4, "step": 6, "opt": "adam"}),
        (TrialState.COMPLETE, math.inf, {"x": 0.9, "opt": 3}),
        (TrialState.COMPLETE, -math.inf, {"k": 1, "opt": True}),
        (TrialState.PRUNED, None, {"x": 0.5, "opt": None}),
        (TrialState.FAIL, None, {"opt": 0.5}),
        (TrialState.RUNNING, None, {"step": 10}),
        (TrialState.WAITING, None, {}),
    ]
    other = optuna.create_study(study_name="other", storage=url)
    other.add_trial(create_trial(value=9.0, params={"x": 0.5}, distributions={"x": dists["x"]}))
    study = optuna.create_study(study_name="fake", storage=url, direction="maximize")
    study.set_user_attr("tbxsweep_spec", {"study": {"name": "fake"}, "n": [1, 2.5, None]})
    study.set_user_attr("note", "ü ✓")
    for i, (state, value, params) in enumerate(cases):
        trial = create_trial(
            state=state,
            value=value if state == TrialState.COMPLETE else None,
            params=params,
            distributions={k: dists[k] for k in params},
            user_attrs={"tbxsweep": {"i": i, "error": None, "nested": {"a": [1, "b"]}}},
            intermediate_values={1: 0.5} if state == TrialState.PRUNED else None,
        )
        study.add_trial(trial)
    return study


def _check_direct_read(url: str) -> None:
    study = _fill(url)
    trials, attrs = read_trials(url, "fake")
    expected = study.get_trials(deepcopy=False)
    assert {t.state.name for t in trials} == {s.name for s in TrialState}
    assert [t.value for t in trials][:3] == [0.25, math.inf, -math.inf]
    assert _as_tuples(trials) == _as_tuples(expected)
    assert attrs == study.user_attrs
    # the leaderboard's entry point takes the SQL path, not its Optuna fallback
    via_entry, entry_attrs = read_study_trials(url, "fake")
    assert all(isinstance(t, LightTrial) for t in via_entry)
    assert _as_tuples(via_entry) == _as_tuples(expected) and entry_attrs == attrs


def test_direct_read_matches_optuna_on_sqlite(tmp_path: Path) -> None:
    _check_direct_read(f"sqlite:///{tmp_path / 'study.db'}")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database (TBXSWEEP_TEST_PG_URL's server); skipped outside CI when
    there is no server."""
    import sqlalchemy

    server = os.environ.get("TBXSWEEP_TEST_PG_URL", DEFAULT_PG)
    try:
        admin = sqlalchemy.create_engine(
            server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
        )
        with admin.connect():
            pass
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL must run in CI (.ci/run starts it): {exc}")
        pytest.skip(f"no PostgreSQL server at {server.rpartition('@')[2]}: {type(exc).__name__}")
    name = f"tbx_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    try:
        yield server.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def test_direct_read_matches_optuna_on_postgresql(pg_url: str) -> None:
    _check_direct_read(pg_url)


def test_direct_read_of_a_real_sweep(make_spec, tmp_path) -> None:
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
    trials, attrs = read_trials(url, "fake")
    assert {t.state.name for t in trials} >= {"COMPLETE", "FAIL"}
    assert _as_tuples(trials) == _as_tuples(study.get_trials(deepcopy=False))
    assert attrs == study.user_attrs
    via_entry, _ = read_study_trials(url, "fake")
    assert all(isinstance(t, LightTrial) for t in via_entry)


def test_what_the_sql_reader_does_not_know_is_left_to_optuna(tmp_path: Path) -> None:
    """A LookupError is what makes `read_study_trials` fall back to Optuna."""
    journal = f"journal:///{tmp_path / 'j.log'}"
    with pytest.raises(LookupError):
        read_trials(journal, "fake")
    optuna.create_study(
        study_name="fake",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log"))
        ),
    ).add_trial(create_trial(value=1.0))
    fallback, _ = read_study_trials(journal, "fake")
    assert [(type(t).__name__, t.value) for t in fallback] == [("FrozenTrial", 1.0)]

    url = f"sqlite:///{tmp_path / 'study.db'}"
    _fill(url)
    with pytest.raises(LookupError, match="no study 'missing'"):
        read_trials(url, "missing")
    import sqlalchemy  # another Optuna schema revision: its layout may differ

    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = 'v9.0.0.a'"))
    engine.dispose()
    with pytest.raises(LookupError, match=r"Optuna schema \['v9.0.0.a'\] is not one"):
        read_trials(url, "fake")
