"""The loky pool: a worker is replaced only when tbxsweep decides so."""

from __future__ import annotations

import pandas as pd


def test_a_worker_that_grows_in_its_first_trial_keeps_running_the_next_ones(
    make_spec, tmp_path, run_cli
):
    # loky's own heuristic would restart a worker grown by 300 MB after its first task,
    # with "UserWarning: A worker stopped while some jobs were given to the executor".
    path = make_spec(study={"n_trials": 6}, task={"train": "fake_trials:grows", "epochs": 1})
    res = run_cli("start", str(path))
    assert res.returncode == 0, res.stderr
    assert "A worker stopped" not in res.stderr
    assert "loky" not in res.stderr
    df = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    assert len(df) == 6
    assert df["worker_pid"].nunique() == 2  # n_jobs: 2, none replaced
