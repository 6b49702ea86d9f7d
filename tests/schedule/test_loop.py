"""The scheduler with cheap fake trials in real loky worker processes (no Keras)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd

from tbxsweep.schedule import run_sweep
from tbxsweep.spec import load_spec


def _run(path: Path) -> tuple[object, list[str]]:
    events: list[str] = []
    counts = run_sweep(load_spec(path), on_event=lambda kind, info: events.append(kind))
    return counts, events


def _records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("trial-*/fake.json"))]


def test_fake_gpu_list_binds_each_trial_to_one_gpu_within_the_per_gpu_limit(make_spec, tmp_path):
    path = make_spec(
        study={"n_trials": 16},
        resources={"gpus": [0, 1, 2, 3], "trials_per_gpu": 2},
        search_space={
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "sleep": {"type": "categorical", "choices": [0.6]},
        },
    )
    counts, events = _run(path)
    assert "warning" in events  # no GPU is visible here: the slots keep their ids
    assert counts.finished == 16
    recs = _records(tmp_path / "out")
    assert len(recs) == 16
    for r in recs:
        assert r["cuda"] in {"0", "1", "2", "3"}
        assert r["device"] == f"gpu:{r['cuda']}"
    for gpu in "0123":
        spans = [(r["start"], r["end"]) for r in recs if r["cuda"] == gpu]
        for t, _ in spans:
            assert sum(1 for s, e in spans if s <= t < e) <= 2
    # every worker process kept one GPU for its whole life
    by_pid: dict[int, set[str]] = {}
    for r in recs:
        by_pid.setdefault(r["pid"], set()).add(r["cuda"])
    assert all(len(g) == 1 for g in by_pid.values())
    # and it shows in the leaderboard's device column
    df = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    assert len(df) == 16
    by_trial = {r["number"]: f"gpu:{r['cuda']}" for r in recs}
    assert {int(t): d for t, d in zip(df["trial"], df["device"], strict=True)} == by_trial


def test_cpu_sweep_records_worker_and_device_and_resumes_to_n_trials(make_spec, tmp_path):
    path = make_spec(study={"n_trials": 3})
    counts, _ = _run(path)
    assert counts.finished == 3
    df = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    assert list(df["trial"]) and set(df["device"]) == {"cpu"}
    assert df["worker_pid"].notna().all()
    # run again with a larger budget: the same study continues up to n_trials finished
    path = make_spec(study={"n_trials": 5})
    counts, _ = _run(path)
    assert counts.finished == 5
    storage = f"sqlite:///{tmp_path / 'out' / 'study.db'}"
    trials = optuna.load_study(study_name="fake", storage=storage).trials
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    # the resumed sampler did not repeat the first run's parameters
    xs = [t.params["x"] for t in trials]
    assert len(set(xs)) == 5


def test_failures_and_nan_fail_their_trial_and_the_sweep_goes_on(make_spec, tmp_path):
    path = make_spec(
        study={"n_trials": 6, "max_consecutive_failures": 50}, task={"train": "fake_trials:failing"}
    )
    counts, _ = _run(path)
    assert counts.finished == 6
    df = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    failed = df[df["state"] == "failed"]
    assert len(failed) == counts.failed >= 1
    for _, row in failed.iterrows():
        assert (
            row["error"].startswith("ValueError: x=")
            and "is too large for this model" in row["error"]
        )
    # completed rows come first
    states = list(df["state"])
    assert states == sorted(states, key=lambda s: {"complete": 0, "pruned": 1, "failed": 2}[s])

    path = make_spec(
        study={"n_trials": 2, "max_consecutive_failures": 2},
        task={"train": "fake_trials:nan"},
        output={"dir": str(tmp_path / "nan")},
    )
    try:
        _run(path)
    except Exception as exc:  # FatalError after 2 failures in a row
        assert (
            str(exc)
            == "stopped after 2 consecutive failed trials; last error: score is nan at epoch 1"
        )
    else:
        raise AssertionError("a sweep that only fails must stop")


def test_pruned_trials_stop_early_and_are_recorded_as_pruned(make_spec, tmp_path):
    path = make_spec(
        study={
            "n_trials": 8,
            "sampler": {"name": "random", "seed": 3},
            "pruner": {"name": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
        },
        task={"epochs": 4},
        resources={"gpus": "none", "n_jobs": 1},
    )
    counts, _ = _run(path)
    assert counts.finished == 8
    assert counts.pruned >= 1
    df = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    pruned = df[df["state"] == "pruned"]
    assert len(pruned) == counts.pruned
    assert (pruned["epochs_run"] < 4).all()
    assert pruned["value"].notna().all()
    # pruned rows come after every completed row
    assert df["state"].tolist().index("pruned") == counts.complete


def test_study_timeout_stops_asking_for_new_trials(make_spec, tmp_path):
    path = make_spec(
        study={"n_trials": 50, "timeout": 1.5},
        search_space={
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "sleep": {"type": "categorical", "choices": [1.0]},
        },
        resources={"gpus": "none", "n_jobs": 1},
    )
    counts, events = _run(path)
    assert "timeout" in events
    assert 1 <= counts.finished <= 3
    assert counts.running == 0


def test_grid_sampler_runs_the_grid_without_stopping_the_loop(make_spec, tmp_path):
    path = make_spec(
        study={"n_trials": 4, "sampler": {"name": "grid", "seed": 0}},
        search_space={"x": {"type": "float", "low": 0.0, "high": 0.3, "step": 0.1}},
    )
    counts, _ = _run(path)
    assert counts.finished == 4
    df = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    assert sorted(round(v, 6) for v in df["x"]) == [0.0, 0.1, 0.2, 0.3]


def test_leaderboard_csv_is_rewritten_at_most_every_interval_and_when_the_sweep_ends(
    make_spec, tmp_path, monkeypatch
):
    from tbxsweep.schedule import _books

    written: list[int] = []
    real = _books.write_csv_atomic

    def counting(df, path):
        written.append(len(df))
        real(df, path)

    monkeypatch.setattr(_books, "write_csv_atomic", counting)
    monkeypatch.setattr(_books, "LEADERBOARD_EVERY_S", 3600.0)
    counts, _ = _run(make_spec(study={"n_trials": 5}))
    assert counts.finished == 5
    # when the first trial finished (its row and the running ones), then at the end
    assert len(written) == 2 and written[-1] == 5
    assert len(pd.read_csv(tmp_path / "out" / "leaderboard.csv")) == 5

    written.clear()
    monkeypatch.setattr(_books, "LEADERBOARD_EVERY_S", 0.0)
    counts, _ = _run(make_spec(study={"n_trials": 8}))
    assert counts.finished == 8
    assert len(written) == 3 + 1 and written[-1] == 8  # after each new trial, and at the end
