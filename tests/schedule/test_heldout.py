"""The held-out evaluation at the end of a sweep (schedule/_heldout.py submits it, export/
picks the trials and records the results): real Keras on the built-in digits task."""

from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest

from tbxsweep.schedule import run_sweep
from tbxsweep.spec import load_spec
from tbxsweep.study import RECORD_ATTR, TEST_ATTR

pytestmark = pytest.mark.slow


def test_a_trial_with_repeats_is_evaluated_from_its_best_repeats_weights(
    make_spec, tmp_path
) -> None:
    # best.weights.h5 lives in each repeat's run (trial-0000/r1/), not in trial-0000/
    path = make_spec(
        base="digits",
        study={
            "n_trials": 1,
            "repeats": 2,
            "test_top_k": 1,
            "pruner": {"name": "none"},
            "sampler": {"name": "random", "seed": 0},
        },
        task={"epochs": 1},
        resources={"gpus": "none", "n_jobs": 2},
        search_space={"learning_rate": {"type": "float", "low": 0.01, "high": 0.02}},
    )
    events: list[tuple[str, dict]] = []
    counts = run_sweep(load_spec(path), on_event=lambda kind, info: events.append((kind, info)))
    assert counts.complete == 1
    out = tmp_path / "out"
    df = pd.read_csv(out / "leaderboard.csv").set_index("trial")
    study = optuna.load_study(study_name="lr", storage=f"sqlite:///{out / 'study.db'}")
    tested = study.user_attrs[TEST_ATTR]
    assert sorted(tested) == ["0"]
    for t in study.trials:
        row = df.loc[t.number]
        assert 0.0 < row["test_accuracy"] <= 1.0 and row["test_loss"] > 0
        assert not math.isnan(row["test_accuracy"])
        assert tested[str(t.number)]["test_accuracy"] == pytest.approx(row["test_accuracy"])
        rec = t.user_attrs[RECORD_ATTR]
        values = rec["values"]
        best = rec["runs"][values.index(max(values))]
        # the results went into the best repeat's own run (the HParams tab's test columns)
        assert list((out / best).glob("*tfevents*")), best
        assert (out / best / "best.weights.h5").is_file()
    assert [info["number"] for kind, info in events if kind == "tested"] == [0]


def test_a_trial_that_cannot_be_tested_writes_no_best_weights(make_spec, tmp_path) -> None:
    """One worker, test_top_k: 1. Trial n starts after the trials before n-1 are told (the
    loop hands a free worker its next trial before it tells the one that ended): it writes
    best.weights.h5 only beyond their best value, and the best trial has its weights.
    Resumed with test_top_k: 3, the sweep names the next best that have none."""
    path = make_spec(
        base="digits",
        study={
            "n_trials": 6,
            "test_top_k": 1,
            "pruner": {"name": "none"},
            "sampler": {"name": "random", "seed": 1},
            # a good configuration first, then worse ones (in the top 3 after it)
            "enqueue": [
                {"learning_rate": 0.01, "batch_size": 16, "finetune_depth": 4},
                *[
                    {"learning_rate": lr, "batch_size": 64, "finetune_depth": 0}
                    for lr in (1e-4, 1e-3, 2e-4, 5e-4, 3e-4)
                ],
            ],
        },
        task={"epochs": 1},
        resources={"gpus": "none", "n_jobs": 1},
        search_space={"learning_rate": {"type": "float", "low": 1e-4, "high": 0.1, "log": True}},
        output={"keep_models": 0},
    )
    run_sweep(load_spec(path), on_event=lambda kind, info: None)
    out = tmp_path / "out"
    study = optuna.load_study(study_name="lr", storage=f"sqlite:///{out / 'study.db'}")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 6

    def best_before(n: int) -> float:
        return max((t.value for t in done if t.number < n), default=float("-inf"))

    written = [t for t in done if (out / f"trial-{t.number:04d}" / "best.weights.h5").is_file()]
    skipped = [t for t in done if t not in written]
    assert skipped, "every trial wrote its weights: the bar was never applied"
    assert all(t.value > best_before(t.number - 1) for t in written)
    assert all(t.value <= best_before(t.number) for t in skipped)
    best = max(done, key=lambda t: (t.value, -t.number))
    assert best in written
    assert list(study.user_attrs[TEST_ATTR]) == [str(best.number)]
    # Resumed with a larger test_top_k: the next best that wrote no weights are named
    top3 = sorted(done, key=lambda t: (-t.value, t.number))[:3]
    events: list[tuple[str, dict]] = []
    run_sweep(
        load_spec(path, ["study.test_top_k=3"]),
        on_event=lambda kind, info: events.append((kind, info)),
    )
    warned = [info["message"] for kind, info in events if kind == "warning"]
    missing = [t for t in top3[1:] if t in skipped]
    assert missing, "the top 3 all wrote weights: nothing to warn about"
    assert warned == [
        f"trial {t.number} is not evaluated on the test split: {out / f'trial-{t.number:04d}'} "
        "has no best.weights.h5 (a trial seeded from a forked study, or one that ran while "
        "study.test_top_k was smaller)"
        for t in missing
    ]
    tested = [info["number"] for kind, info in events if kind == "tested"]
    assert tested == [t.number for t in top3[1:] if t in written]
