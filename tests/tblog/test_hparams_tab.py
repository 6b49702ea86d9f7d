"""The HParams tab as TensorBoard serves it: statuses, live rows, resume, repeats, domains."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import spawn_cli

from tbxsweep.cli.board import start_board
from tbxsweep.cli.check import compare
from tbxsweep.schedule import run_sweep
from tbxsweep.spec import load_spec

pytestmark = pytest.mark.slow


def _sweep(path: Path) -> None:
    run_sweep(load_spec(path), on_event=lambda kind, info: None)


def _metrics(group: dict) -> dict[str, float]:
    return {m["name"]["tag"]: m["value"] for m in group["metricValues"]}


def test_failed_and_pruned_trials_show_their_status_and_state(make_spec, tmp_path):
    path = make_spec(
        study={
            "n_trials": 8,
            "sampler": {"name": "random", "seed": 3},
            "max_consecutive_failures": 50,
            "pruner": {"name": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
        },
        task={"epochs": 4, "train": "fake_trials:failing"},
        resources={"gpus": "none", "n_jobs": 1},
    )
    _sweep(path)
    out = tmp_path / "out"
    df = pd.read_csv(out / "leaderboard.csv")
    assert {"complete", "pruned", "failed"} <= set(df["state"])
    with start_board(out) as board:
        problems, _, groups = compare(board, out)
        exp = board.experiment()
    assert problems == []
    by_name = {g["name"]: g for g in groups}
    want = {
        "complete": ("STATUS_SUCCESS", 1.0),
        "pruned": ("STATUS_UNKNOWN", 2.0),
        "failed": ("STATUS_FAILURE", 3.0),
    }
    for _, row in df.iterrows():
        g = by_name[row["run"]]
        status, code = want[row["state"]]
        assert g["sessions"][0]["status"] == status
        assert _metrics(g)["state"] == code
    assert exp["hparamInfos"] == [
        {
            "name": "x",
            "displayName": "x",
            "type": "DATA_TYPE_FLOAT64",
            "domainInterval": {"minValue": 0.0, "maxValue": 1.0},
            "description": "",
            "differs": False,
        }
    ]
    assert [m["name"]["tag"] for m in exp["metricInfos"]] == [
        "best/score",
        "score",
        "epochs_run",
        "duration_s",
        "state",
    ]


def test_a_running_trial_is_a_row_while_the_sweep_runs(make_spec, tmp_path):
    path = make_spec(
        study={"n_trials": 1},
        search_space={
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "sleep": {"type": "categorical", "choices": [12.0]},
        },
        task={"epochs": 3},
        resources={"gpus": "none", "n_jobs": 1},
    )
    out = tmp_path / "out"
    proc = spawn_cli("start", str(path))
    try:
        deadline = time.monotonic() + 60
        while not (out / "trial-0000").is_dir() and time.monotonic() < deadline:
            time.sleep(0.2)
        with start_board(out, reload_interval=1) as board:
            groups: list = []
            while time.monotonic() < deadline and not (groups and "state" in _metrics(groups[0])):
                groups = board.session_groups()
                time.sleep(0.5)
            assert proc.poll() is None, "the sweep should still be running"
            assert [g["name"] for g in groups] == ["trial-0000"]
            assert groups[0]["sessions"][0]["status"] == "STATUS_UNKNOWN"
            assert _metrics(groups[0])["state"] == 0.0
            assert proc.wait(60) == 0
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                g = board.session_groups()[0]
                if g["sessions"][0]["status"] == "STATUS_SUCCESS":
                    break
                time.sleep(0.5)
            assert g["sessions"][0]["status"] == "STATUS_SUCCESS"
            assert _metrics(g)["state"] == 1.0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_resumed_sweep_has_exactly_one_row_per_trial(make_spec, tmp_path):
    _sweep(make_spec(study={"n_trials": 2}))
    _sweep(make_spec(study={"n_trials": 4}))
    out = tmp_path / "out"
    with start_board(out) as board:
        problems, _, groups = compare(board, out)
    assert problems == []
    assert sorted(g["name"] for g in groups) == [f"trial-000{i}" for i in range(4)]
    assert all(len(g["sessions"]) == 1 for g in groups)


def test_repeats_share_a_group_that_tensorboard_aggregates(make_spec, tmp_path):
    _sweep(
        make_spec(
            study={"n_trials": 2, "repeats": 3},
            search_space={
                "x": {"type": "float", "low": 0.0, "high": 1.0},
                "sleep": {"type": "categorical", "choices": [0.05]},
            },
        )
    )
    out = tmp_path / "out"
    df = pd.read_csv(out / "leaderboard.csv")
    assert list(df.columns[:6]) == ["rank", "trial", "state", "value", "value_std", "repeats"]
    assert list(df["repeats"]) == [3, 3]
    with start_board(out) as board:
        problems, _, groups = compare(board, out)
    assert problems == []
    for g in groups:
        assert sorted(s["name"] for s in g["sessions"]) == [f"{g['name']}/r{i}" for i in range(3)]
        row = df[df["run"] == g["name"]].iloc[0]
        per_run = [_metrics(s)["best/score"] for s in g["sessions"]]
        assert _metrics(g)["best/score"] == pytest.approx(sum(per_run) / 3)
        assert row["value"] == pytest.approx(sum(per_run) / 3)


def test_board_prints_a_local_url_that_answers(make_spec, tmp_path):
    import urllib.request

    _sweep(make_spec(study={"n_trials": 1}))
    out = tmp_path / "out"
    proc = spawn_cli("board", str(out))
    try:
        line = proc.stdout.readline().strip() if proc.stdout else ""
        prefix = f"TensorBoard on {out}: http://127.0.0.1:"
        assert line.startswith(prefix) and line.endswith("/#hparams  (Ctrl-C to stop)"), line
        url = line.split(": ", 1)[1].split("/#hparams")[0]
        with urllib.request.urlopen(f"{url}/data/plugins_listing", timeout=10) as resp:
            assert "hparams" in resp.read().decode()
    finally:
        proc.terminate()
        proc.wait(20)


def test_check_reports_each_mismatch_and_exits_3(make_spec, tmp_path, run_cli):
    import shutil

    _sweep(make_spec(study={"n_trials": 3}))
    out = tmp_path / "out"
    res = run_cli("check", str(out))
    assert res.returncode == 0, res.stdout
    shutil.rmtree(out / "trial-0001")  # as if someone deleted a run by hand
    res = run_cli("check", str(out))
    assert res.returncode == 3
    assert res.stdout.splitlines() == [
        "MISMATCH trial-0001: trial 1 (complete) has no row in TensorBoard",
        "1 mismatch(es) between TensorBoard and the study",
    ]
