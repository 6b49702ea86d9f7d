"""End to end through the CLI: real Keras fine-tuning, SQLite storage, TensorBoard over HTTP."""

from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest

from tbxsweep.cli.board import start_board

pytestmark = pytest.mark.slow

COLUMNS = [
    "rank",
    "trial",
    "state",
    "value",
    "test_accuracy",
    "test_loss",
    "learning_rate",
    "batch_size",
    "finetune_depth",
    "best_epoch",
    "epochs_run",
    "trainable_params",
    "feature_cache",
    "cache_build_s",
    "duration_s",
    "device",
    "worker_pid",
    "run",
    "model",
    "error",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, request):
    """A finished 4-trial digits sweep with 2 CPU workers, run through the CLI."""
    import subprocess
    import sys

    from conftest import REPO, cli_env

    out = tmp_path_factory.mktemp("e2e") / "lr"
    args = [
        "start",
        str(REPO / "sweeps" / "lr.yaml"),
        "--set",
        "study.n_trials=4",
        "--set",
        "task.epochs=3",
        "--set",
        f"output.dir={out}",
        "--set",
        "resources.n_jobs=2",
        "--set",
        "study.pruner.name=none",
    ]
    env = cli_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user runs it: TensorFlow's start-up unquieted
    env.pop("TBXSWEEP_TF_LOGS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "tbxsweep", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_the_sweep_reports_progress_and_where_things_are(sweep):
    out, proc = sweep
    lines = proc.stdout.splitlines()
    assert lines[0] == "tbxsweep: study 'lr', 4 trials, maximize val_accuracy"
    assert lines[1].startswith("2 CPU worker(s), 1 thread(s) each; storage sqlite:///")
    assert sum(1 for line in lines if line.startswith("trial ") and " complete: " in line) == 4
    assert "done: 4/4 finished (4 complete, 0 pruned), 0 failed" in lines
    assert f"TensorBoard: tensorboard --logdir {out}   then open the HPARAMS tab" in lines
    assert "Traceback" not in proc.stderr


def test_tensorflow_start_up_lines_stay_off_the_screen(sweep):
    """Each worker's `import tensorflow` writes these from C++; TBXSWEEP_TF_LOGS=1 shows
    them (tests/worker/test_quiet.py)."""
    _, proc = sweep
    start_up = (
        "absl::InitializeLog",
        "oneDNN custom operations",
        "Could not find cuda drivers",
        "cpu_feature_guard",
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    assert [line for line in lines if any(s in line for s in start_up)] == []


def test_leaderboard_csv_matches_the_storage(sweep):
    out, _ = sweep
    df = pd.read_csv(out / "leaderboard.csv")
    assert list(df.columns) == COLUMNS
    study = optuna.load_study(study_name="lr", storage=f"sqlite:///{out / 'study.db'}")
    trials = {t.number: t for t in study.trials}
    assert sorted(df["trial"]) == [0, 1, 2, 3]
    assert list(df["rank"]) == [1, 2, 3, 4]
    assert list(df["value"]) == sorted(df["value"], reverse=True)
    for _, row in df.iterrows():
        t = trials[row["trial"]]
        assert t.state.name == "COMPLETE" and row["state"] == "complete"
        assert math.isclose(row["value"], t.value, rel_tol=1e-12)
        for key in ("learning_rate", "batch_size", "finetune_depth"):
            assert row[key] == pytest.approx(t.params[key])
        assert row["run"] == f"trial-{row['trial']:04d}"
        assert row["device"] == "cpu" and row["epochs_run"] == 3
        assert 1 <= row["best_epoch"] <= 3
    # real training: the best trial learned the new digits
    assert df["value"].max() > 0.85


def test_hparams_tab_has_one_row_per_trial_with_the_leaderboard_values(sweep):
    out, _ = sweep
    df = pd.read_csv(out / "leaderboard.csv")
    with start_board(out) as board:
        exp = board.experiment()
        groups = board.session_groups()
    infos = {h["name"]: h for h in exp["hparamInfos"]}
    assert infos["learning_rate"]["domainInterval"] == {"minValue": 0.0001, "maxValue": 0.1}
    assert infos["batch_size"]["domainDiscrete"] == ["16", "32", "64", "128"]
    assert infos["finetune_depth"]["domainDiscrete"] == ["0", "1", "2", "3", "4"]
    assert [m["name"]["tag"] for m in exp["metricInfos"]][:2] == [
        "best/val_accuracy",
        "val_accuracy",
    ]
    assert sorted(g["name"] for g in groups) == [
        "trial-0000",
        "trial-0001",
        "trial-0002",
        "trial-0003",
    ]
    for g in groups:
        row = df[df["run"] == g["name"]].iloc[0]
        assert len(g["sessions"]) == 1
        assert g["sessions"][0]["status"] == "STATUS_SUCCESS"
        assert g["hparams"] == {
            "learning_rate": pytest.approx(row["learning_rate"]),
            "batch_size": str(row["batch_size"]),
            "finetune_depth": str(row["finetune_depth"]),
        }
        metrics = {m["name"]["tag"]: m["value"] for m in g["metricValues"]}
        assert metrics["best/val_accuracy"] == pytest.approx(row["value"], rel=1e-6)
        assert metrics["epochs_run"] == 3.0


def test_check_and_leaderboard_commands(sweep, run_cli, tmp_path):
    out, _ = sweep
    res = run_cli("check", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == (
        "OK: 4 HParams rows match the 4 trials of the study and the leaderboard"
    )
    res = run_cli("leaderboard", str(out), "--csv", str(tmp_path / "lb.csv"))
    assert res.returncode == 0
    assert res.stdout.strip() == f"wrote 4 trials to {tmp_path / 'lb.csv'}"
    assert list(pd.read_csv(tmp_path / "lb.csv").columns) == COLUMNS
    res = run_cli("leaderboard", str(tmp_path))
    assert res.returncode == 2
    assert res.stderr == (
        f"error: {tmp_path}: not a tbxsweep output directory (no sweep.json); give the "
        "output.dir of a sweep started with `tbxsweep start`\n"
    )
