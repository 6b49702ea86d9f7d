"""A sweep closes its storage itself: nothing is left to the garbage collector at exit."""

from __future__ import annotations

import optuna

from tbxsweep.study import close_storage, get_storage


def test_closing_a_sqlite_storage_folds_its_log_into_the_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=get_storage(url))
    study.enqueue_trial({"x": 1.0})
    assert (tmp_path / "study.db-wal").exists()  # WAL mode: the open connection's log
    close_storage(study)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.db"]
    # still usable: it connects again
    study.enqueue_trial({"x": 2.0})
    assert [t.params for t in study.get_trials()] == [{}, {}]
    assert [t.system_attrs["fixed_params"] for t in study.get_trials()] == [
        {"x": 1.0},
        {"x": 2.0},
    ]


def test_a_finished_sweep_leaves_no_database_log_behind(make_spec, tmp_path, run_cli):
    # The command freezes its objects at exit (its last garbage collection took 0.5 s);
    # the storage is closed before, so SQLite's -wal and -shm files are gone.
    path = make_spec(study={"n_trials": 2})
    res = run_cli("start", str(path))
    assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert [n for n in names if n.startswith("study.db")] == ["study.db"]
