"""What a worker's warm-up leaves for its trials: modules loaded once, out of the garbage
collector's way."""

from __future__ import annotations

import json

import optuna


def test_trials_run_with_the_warm_up_s_objects_frozen(make_spec, tmp_path, run_cli):
    # loky collects garbage in a worker after every task, before it takes the next trial:
    # a full collection of a process with TensorFlow loaded is a third of a second, unless
    # what the warm-up loaded is frozen (gc.freeze) and skipped.
    path = make_spec(study={"n_trials": 4}, task={"train": "fake_trials:frozen", "epochs": 3})
    res = run_cli("start", str(path))
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out"
    records = [json.loads((out / f"trial-{n:04d}" / "frozen.json").read_text()) for n in range(4)]
    assert len({r["pid"] for r in records}) == 2  # n_jobs: 2, none replaced
    assert all(r["frozen"] > 1000 for r in records), records
    # pruner: none still keeps every trial's curve in the study (one write per epoch)
    study = optuna.load_study(study_name="fake", storage=f"sqlite:///{out / 'study.db'}")
    assert [sorted(t.intermediate_values) for t in study.trials] == [[1, 2, 3]] * 4
