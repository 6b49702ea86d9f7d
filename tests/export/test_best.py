"""The best model in hand: each completed trial's best-epoch model, kept for the best
`output.keep_models` trials, and `tbxsweep best` (real loky workers, real SQLite; the
digits test trains real Keras models and loads one in a fresh process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from conftest import FAKE_SPEC, REPO, cli_env, merge

from tbxsweep.cli import main
from tbxsweep.errors import FatalError, SpecError
from tbxsweep.schedule import run_sweep
from tbxsweep.spec import load_spec
from tbxsweep.tblog import TrialLogger
from tbxsweep.trial import TrialContext

LEADERBOARD_TAIL = [
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


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), prog_name="tbxsweep")


def _study(out: Path, name: str = "fake") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")


def _top(out: Path, k: int, name: str = "fake") -> list[optuna.trial.FrozenTrial]:
    """The k best completed trials, best first, as Optuna holds them (ties: earlier)."""
    done = [t for t in _study(out, name).trials if t.state.name == "COMPLETE"]
    return sorted(done, key=lambda t: (-t.value, t.number))[:k]


def _models(out: Path) -> dict[str, dict[str, Any]]:
    """Every best.keras under the output dir (fake ones: JSON), by path relative to it."""
    return {
        str(p.relative_to(out)): json.loads(p.read_text()) for p in sorted(out.rglob("best.keras"))
    }


# -- the spec ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "output.keep_models: `keep_models >= 0` must hold, got keep_models=-1"),
        (
            "all",
            "output.keep_models: must be an integer >= 0 (how many of the best trials keep "
            "their model), got 'all'",
        ),
        (
            True,
            "output.keep_models: must be an integer >= 0 (how many of the best trials keep "
            "their model), got True",
        ),
    ],
)
def test_keep_models_must_be_a_count(make_spec, value, message) -> None:
    path = make_spec(output={"keep_models": value})
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(err.value) == f"{path}: {message}"


def test_keep_models_defaults_to_3_and_takes_0(make_spec) -> None:
    assert load_spec(make_spec()).output.keep_models == 3
    assert load_spec(make_spec(output={"keep_models": 0})).output.keep_models == 0


# -- ctx.save_model ------------------------------------------------------------------------


def _ctx(tmp_path: Path, keep_model: bool) -> TrialContext:
    run = tmp_path / ("keep" if keep_model else "none")
    run.mkdir()
    return TrialContext(
        number=0,
        params={},
        seed=0,
        device="cpu",
        run_dir=run,
        logger=TrialLogger(run),
        metric="score",
        direction="maximize",
        epochs=4,
        pruning=None,
        keep_model=keep_model,
    )


class _Model:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def save(self, path: str) -> None:
        assert path.endswith(".keras")  # Keras refuses any other name
        Path(path).write_text(str(self.epoch))


def test_save_model_writes_only_the_best_epoch_so_far(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, keep_model=True)
    wrote = []
    for epoch, score in ((1, 0.5), (2, 0.7), (3, 0.6), (4, 0.7)):
        ctx.report(epoch, score)
        wrote.append(ctx.save_model(_Model(epoch)))
        assert ctx.save_model(_Model(epoch)) is False  # once per epoch
    assert wrote == [True, True, False, False]  # a tie is not better
    assert (ctx.run_dir / "best.keras").read_text() == "2"
    assert sorted(p.name for p in ctx.run_dir.iterdir() if "keras" in p.name) == ["best.keras"]
    # the built-in task saves after training, naming the best epoch
    assert ctx.save_model(_Model(3), epoch=3) is False
    ctx.logger.close()


def test_save_model_writes_nothing_when_the_sweep_keeps_no_models(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, keep_model=False)
    ctx.report(1, 0.5)
    assert ctx.save_model(_Model(1)) is False
    assert not (ctx.run_dir / "best.keras").exists()
    ctx.logger.close()


def test_save_model_skips_a_trial_that_cannot_enter_the_best_k(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, keep_model=True)
    ctx.model_bar = 0.6  # the worst kept model's value when the trial started
    wrote = []
    for epoch, score in ((1, 0.5), (2, 0.6), (3, 0.65)):
        ctx.report(epoch, score)
        wrote.append(ctx.save_model(_Model(epoch)))
    assert wrote == [False, False, True]  # a tie ranks after the earlier trial
    assert (ctx.run_dir / "best.keras").read_text() == "3"
    ctx.logger.close()


# -- a sweep keeps the best k -------------------------------------------------------------


KEEP_2 = {
    "study": {"n_trials": 4, "max_consecutive_failures": 3},
    "task": {"train": "fake_trials:keeps_model", "epochs": 3},
    "output": {"keep_models": 2},
}


@pytest.fixture(scope="module")
def kept_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 trials of `keeps_model` (trial 1 fails, trial 2 is pruned), keep_models: 2: run
    once for the tests that only read it (they must not change it)."""
    root = tmp_path_factory.mktemp("best")
    spec = root / "spec.yaml"
    raw = merge(FAKE_SPEC, {**KEEP_2, "output": {**KEEP_2["output"], "dir": str(root / "out")}})
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    counts = run_sweep(load_spec(spec), on_event=lambda kind, info: None)
    assert (counts.complete, counts.pruned, counts.failed) == (3, 1, 1)
    return root / "out"


@pytest.fixture
def fake_sweep(kept_sweep: Path, tmp_path: Path) -> Path:
    """A copy of `kept_sweep` at tmp_path/"out" (make_spec's output.dir), for a test that
    changes it. The copy is whole: its study is the SQLite file inside it."""
    return Path(shutil.copytree(kept_sweep, tmp_path / "out"))


def test_only_the_best_k_completed_trials_keep_their_best_epochs_model(kept_sweep) -> None:
    out = kept_sweep
    top = _top(out, 2)
    assert _models(out) == {
        f"trial-{t.number:04d}/best.keras": {
            "number": t.number,
            "run": str(out / f"trial-{t.number:04d}"),
            "epoch": 2,
        }
        for t in top
    }
    assert [t.user_attrs["tbxsweep"]["best_epoch"] for t in top] == [2, 2]
    df = pd.read_csv(out / "leaderboard.csv", keep_default_na=False)
    assert list(df.columns) == ["rank", "trial", "state", "value", "x", *LEADERBOARD_TAIL]
    want = {t.number: f"trial-{t.number:04d}/best.keras" for t in top}
    assert list(df["model"]) == [want.get(n, "") for n in df["trial"]]
    assert list(df["model"])[:2] == [want[top[0].number], want[top[1].number]]


def test_best_prints_the_best_trial_and_saves_its_model(kept_sweep, tmp_path: Path) -> None:
    out = kept_sweep
    best, second = _top(out, 2)
    n = len([t for t in _study(out).trials if t.state.name == "COMPLETE"])
    res = _cli("best", str(out))
    assert res.exit_code == 0, res.stderr
    model = out / f"trial-{best.number:04d}" / "best.keras"
    assert res.stdout == (
        f"trial {best.number}: score={best.value:.4f}, rank 1 of {n} completed\n"
        f"params: x={best.params['x']:.4g}\n"
        f"model: {model}\n"
    )
    dest = tmp_path / "mine.keras"
    res = _cli("best", str(out), "--trial", str(second.number), "--save", str(dest))
    assert res.exit_code == 0, res.stderr
    assert res.stdout.splitlines()[0] == (
        f"trial {second.number}: score={second.value:.4f}, rank 2 of {n} completed"
    )
    assert res.stdout.splitlines()[-1] == f"saved: {dest}"
    assert json.loads(dest.read_text())["number"] == second.number
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".mine")] == []

    # an existing file is replaced only with --force
    res = _cli("best", str(out), "--save", str(dest))
    assert (res.exit_code, res.stdout) == (2, "")
    assert res.stderr == f"error: --save: {dest} exists; add --force to replace it\n"
    assert json.loads(dest.read_text())["number"] == second.number
    res = _cli("best", str(out), "--save", str(dest), "--force")
    assert res.exit_code == 0, res.stderr
    assert json.loads(dest.read_text())["number"] == best.number


def test_best_says_why_a_trial_has_no_model(kept_sweep, tmp_path: Path) -> None:
    out = kept_sweep
    third = _top(out, 3)[2]

    def error(*args: str) -> str:
        res = _cli("best", str(out), *args)
        assert (res.exit_code, res.stdout) == (2, "")
        return res.stderr

    assert error("--trial", "1") == (
        f"error: {out}: --trial 1: no kept model: trial 1 failed (only completed trials keep one)\n"
    )
    assert error("--trial", "2") == (
        f"error: {out}: --trial 2: no kept model: trial 2 was pruned at epoch 1 (only "
        "completed trials keep one)\n"
    )
    assert error("--trial", str(third.number)) == (
        f"error: {out}: --trial {third.number}: no kept model: trial {third.number} ranks 3 "
        "of 3 completed trials, and only the best 2 keep theirs (output.keep_models)\n"
    )
    assert error("--trial", "9") == (
        f"error: {out}: --trial 9: study 'fake' has no trial 9 (its trials are 0-4)\n"
    )
    assert error("--save", str(tmp_path / "m.h5")) == (
        f"error: --save: {tmp_path / 'm.h5'}: must end in .keras (keras.models.load_model "
        "reads the format from the name)\n"
    )
    assert error("--save", str(tmp_path / "no" / "m.keras")) == (
        f"error: --save: {tmp_path / 'no'} is not a directory\n"
    )
    assert not (tmp_path / "m.h5").exists() and not (tmp_path / "no").exists()
    assert error_of(_cli("best", str(tmp_path / "nowhere"))) == (
        f"error: {tmp_path / 'nowhere'}: not a tbxsweep output directory (no sweep.json); "
        "give the output.dir of a sweep started with `tbxsweep start`\n"
    )


def error_of(res: Any) -> str:
    assert res.exit_code == 2
    return str(res.stderr)


def test_a_sweep_with_keep_models_0_writes_no_model(make_spec, tmp_path: Path) -> None:
    path = make_spec(
        study={"n_trials": 3, "max_consecutive_failures": 3},
        task={"train": "fake_trials:keeps_model", "epochs": 3},
        output={"keep_models": 0},
    )
    run_sweep(load_spec(path), on_event=lambda kind, info: None)
    out = tmp_path / "out"
    assert _models(out) == {}
    (best,) = _top(out, 1)
    assert error_of(_cli("best", str(out))) == (
        f"error: {out}: trial {best.number} (the best): no kept model: trial {best.number} "
        "ranks 1 of 2 completed trials and none keeps a model (output.keep_models: 0, or a "
        "task.train function that does not call ctx.save_model)\n"
    )


def test_a_model_missing_from_a_kept_run_is_named(fake_sweep) -> None:
    out = fake_sweep
    best = _top(out, 1)[0]  # the second keeps its model: the first's should be there
    (out / f"trial-{best.number:04d}" / "best.keras").unlink()
    assert error_of(_cli("best", str(out))) == (
        f"error: {out}: trial {best.number} (the best): no kept model: its run "
        f"trial-{best.number:04d} holds no best.keras: the trial saved none (a task.train "
        "function saves one with ctx.save_model; a trial resumed from a checkpoint taken "
        "after its best epoch, or run by another host, has none here)\n"
    )


def test_a_study_without_a_completed_trial_has_no_best(make_spec, tmp_path: Path) -> None:
    path = make_spec(
        study={"n_trials": 1, "max_consecutive_failures": 1},
        task={"train": "fake_trials:failing"},
        search_space={"x": {"type": "float", "low": 0.9, "high": 1.0}},
    )
    with pytest.raises(FatalError, match="consecutive failed trials"):
        run_sweep(load_spec(path), on_event=lambda kind, info: None)
    out = tmp_path / "out"
    assert error_of(_cli("best", str(out))) == (
        f"error: {out}: no completed trial in study 'fake' yet (1 failed)\n"
    )


def test_a_resumed_sweep_keeps_the_models_still_in_the_top_k(make_spec, fake_sweep) -> None:
    out = fake_sweep
    before = {p: os.stat(out / p).st_ino for p in _models(out)}
    path = make_spec(
        study={"n_trials": 7, "max_consecutive_failures": 3},
        task={"train": "fake_trials:keeps_model", "epochs": 3},
        output={"keep_models": 2},
    )
    run_sweep(load_spec(path), on_event=lambda kind, info: None)
    now = _models(out)
    assert sorted(now) == sorted(f"trial-{t.number:04d}/best.keras" for t in _top(out, 2))
    for p in set(now) & set(before):  # a model still kept is the same file, untouched
        assert os.stat(out / p).st_ino == before[p]


def test_a_trial_that_cannot_enter_the_best_k_saves_no_model(make_spec, tmp_path: Path) -> None:
    """One worker, keep_models: 1. Trial n starts after the trials before n-1 are told
    (the loop hands a free worker its next trial before it tells the one that ended):
    it saves a model only beyond their best value."""
    path = make_spec(
        study={"n_trials": 8, "max_consecutive_failures": 3},
        task={"train": "fake_trials:keeps_model", "epochs": 3},
        resources={"n_jobs": 1},
        output={"keep_models": 1},
    )
    run_sweep(load_spec(path), on_event=lambda kind, info: None)
    out = tmp_path / "out"
    trials = _study(out).trials

    def best_before(n: int) -> float:
        done = [t.value for t in trials if t.number < n and t.state.name == "COMPLETE"]
        return max(done, default=float("-inf"))

    saved, skipped = [], []
    for t in trials:
        if t.state.name == "COMPLETE":
            log = out / f"trial-{t.number:04d}" / "saves.log"
            (saved if log.exists() else skipped).append(t)
    assert skipped, "every trial saved a model: the bar was never applied"
    assert all(t.value > best_before(t.number - 1) for t in saved)
    assert all(t.value <= best_before(t.number) for t in skipped)
    assert _models(out).keys() == {f"trial-{_top(out, 1)[0].number:04d}/best.keras"}


def test_with_repeats_the_trial_keeps_its_best_repeats_model(make_spec, tmp_path: Path) -> None:
    path = make_spec(
        study={"n_trials": 2, "repeats": 2},
        task={"train": "fake_trials:keeps_model", "epochs": 3},
        output={"keep_models": 1},
    )
    run_sweep(load_spec(path), on_event=lambda kind, info: None)
    out = tmp_path / "out"
    (best,) = _top(out, 1)
    rec = best.user_attrs["tbxsweep"]
    assert rec["runs"] == [f"trial-{best.number:04d}/r0", f"trial-{best.number:04d}/r1"]
    assert rec["values"][0] != rec["values"][1]
    run = rec["runs"][rec["values"].index(max(rec["values"]))]
    assert _models(out) == {
        f"{run}/best.keras": {"number": best.number, "run": str(out / run), "epoch": 2}
    }
    res = _cli("best", str(out))
    assert res.stdout.splitlines()[-1] == f"model: {out / run / 'best.keras'}"
    df = pd.read_csv(out / "leaderboard.csv", keep_default_na=False)
    assert df.loc[df["trial"] == best.number, "model"].tolist() == [f"{run}/best.keras"]


# -- the built-in task: a real Keras model, loaded in a fresh process ------------------------

EVALUATE = textwrap.dedent(
    """
    import json, sys
    import keras

    model = keras.models.load_model(sys.argv[1])  # no custom objects, tbxsweep not imported
    assert not [m for m in sys.modules if m.startswith("tbxsweep")], "tbxsweep was imported"
    from tbxsweep.spec import load_spec
    from tbxsweep.trial._data import load_task_data

    arrays = load_task_data(load_spec(sys.argv[2]).task).arrays
    loss, accuracy = model.evaluate(arrays.x_val, arrays.y_val, verbose=0)
    print(json.dumps({"val_accuracy": accuracy, "optimizer": type(model.optimizer).__name__}))
    """
)


@pytest.mark.slow
def test_the_builtin_tasks_best_model_reproduces_its_validation_accuracy(tmp_path: Path) -> None:
    out = tmp_path / "lr"
    sets = {
        "study.n_trials": 3,
        "task.epochs": 2,
        "task.pretrain_epochs": 1,  # the base's quality is not what this checks
        "resources.n_jobs": 1,
        "study.pruner.name": "none",
        "output.keep_models": 2,
        "output.dir": out,
    }
    args = [arg for k, v in sets.items() for arg in ("--set", f"{k}={v}")]
    spec = REPO / "sweeps" / "lr.yaml"
    run = [sys.executable, "-m", "tbxsweep"]
    env = cli_env()
    proc = subprocess.run(
        [*run, "start", str(spec), *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    best, second = _top(out, 2, "lr")
    kept = [f"trial-{t.number:04d}/best.keras" for t in (best, second)]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("best.keras")) == sorted(kept)
    df = pd.read_csv(out / "leaderboard.csv", keep_default_na=False)
    assert list(df.columns) == [
        *["rank", "trial", "state", "value", "test_accuracy", "test_loss"],
        *["learning_rate", "batch_size", "finetune_depth", *LEADERBOARD_TAIL],
    ]
    assert list(df["model"]) == [*kept, ""]

    res = subprocess.run(
        [*run, "best", str(out), "--save", str(tmp_path / "best.keras")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    p = best.params
    assert res.stdout == (
        f"trial {best.number}: val_accuracy={best.value:.4f}, rank 1 of 3 completed\n"
        f"params: learning_rate={p['learning_rate']:.4g} batch_size={p['batch_size']} "
        f"finetune_depth={p['finetune_depth']}\n"
        f"model: {out / kept[0]}\n"
        f"saved: {tmp_path / 'best.keras'}\n"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", EVALUATE, str(tmp_path / "best.keras"), str(spec)],
        env={**env, "PYTHONWARNINGS": "error::UserWarning"},  # e.g. optimizer state skipped
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    got = json.loads(fresh.stdout.splitlines()[-1])
    assert got["optimizer"] == "Adam"  # compiled as saved: evaluate works at once
    assert got["val_accuracy"] == pytest.approx(best.value, abs=1e-6)
