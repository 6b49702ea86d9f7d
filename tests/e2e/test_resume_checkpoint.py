"""An interrupted real fine-tune continues from its last finished epoch when resumed."""

from __future__ import annotations

import json
import signal
import time

import optuna
import pytest
from conftest import REPO, spawn_cli

pytestmark = pytest.mark.slow

# Enough epochs that the two Ctrl-Cs (sent once 3 have ended) land well before the last.
EPOCHS = 20


def test_the_rerun_of_an_interrupted_trial_continues_from_its_checkpoint(tmp_path, run_cli):
    out = tmp_path / "lr"
    args = [
        "start",
        str(REPO / "sweeps" / "lr.yaml"),
        "--set",
        "study.n_trials=1",
        "--set",
        f"task.epochs={EPOCHS}",
        "--set",
        "task.pretrain_epochs=1",  # the base's quality is not what this checks
        "--set",
        f"output.dir={out}",
        "--set",
        "resources.n_jobs=1",
        "--set",
        "study.pruner.name=none",
        "--set",
        "search_space.batch_size.choices=[16]",
        "--set",
        "task.checkpoint_every_s=0",
    ]
    proc = spawn_cli(*args)
    record = out / "trial-0000" / "trial.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if json.loads(record.read_text())["epochs_run"] >= 3:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    done = json.loads((out / "trial-0000" / "checkpoint.json").read_text())["epoch"]
    assert 3 <= done < EPOCHS

    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    study = optuna.load_study(study_name="lr", storage=f"sqlite:///{out / 'study.db'}")
    first, rerun = study.trials
    assert first.state.name == "FAIL" and rerun.state.name == "COMPLETE"
    assert rerun.user_attrs["tbxsweep_retry_of"] == 0
    assert rerun.params == first.params
    rec = rerun.user_attrs["tbxsweep"]
    assert rec["epochs_run"] == EPOCHS
    assert len(rec["epoch_seconds"]) == EPOCHS - done  # only the remaining epochs trained
    assert 1 <= rec["best_epoch"] <= EPOCHS
    res = run_cli("check", str(out))
    assert res.returncode == 0, res.stdout
    assert res.stdout.strip() == (
        "OK: 1 HParams rows match the 2 trials of the study and the leaderboard"
    )
