"""What `tbxsweep start` checks at the edge, before it writes anything: the search space
against the base model, the output directory, the study it holds, secrets in the storage
URL; and what two orchestrators started together draw."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from conftest import REPO, cli_env, spawn_cli

from tbxsweep.cli import main
from tbxsweep.errors import SpecError
from tbxsweep.schedule import run_sweep
from tbxsweep.spec import load_spec, resolve_space
from tbxsweep.study import distributions


def _start(*args: str):
    return CliRunner().invoke(main, ["start", *args], prog_name="tbxsweep")


def _refused(res, line: str, out: Path) -> None:
    """Exit 2, the one line, no header before it, nothing written."""
    assert (res.exit_code, res.stderr, res.stdout) == (2, f"error: {line}\n", "")
    assert not out.exists()


# --- the search space against the base model (defects 5 and 8) -------------------------------


@pytest.mark.parametrize(
    ("depth", "message"),
    [
        (
            "{type: int, low: 10, high: max}",
            "search_space.finetune_depth.low: `low <= 4` must hold (high: max is the base "
            "model's 4 weighted layers), got low=10",
        ),
        (
            "{type: int, low: 0, high: max, log: true}",
            "search_space.finetune_depth: `low > 0` must hold when log is true, got low=0",
        ),
        (
            "{type: categorical, choices: [0, 2, 6]}",
            "search_space.finetune_depth.choices: `choice <= 4` must hold (the base model has "
            "4 weighted layers), got choice=6",
        ),
    ],
)
def test_a_depth_the_base_model_lacks_is_refused_before_anything_is_written(
    make_spec, tmp_path, depth, message
) -> None:
    path = make_spec(base="digits")
    res = _start(str(path), "--set", f"search_space.finetune_depth={depth}")
    _refused(res, f"{path}: {message}", tmp_path / "out")


def test_high_max_is_resolved_and_checked_once_the_depth_is_known() -> None:
    """A base that a worker must build to count its units (here MobileNetV2's 19 blocks)."""
    where = "mobilenet.yaml"
    spec = load_spec(REPO / "sweeps" / "mobilenet.yaml", ["search_space.finetune_depth.high=max"])
    resolved = resolve_space(spec, 19, where)
    assert resolved.search_space["finetune_depth"].high == 19
    assert distributions(resolved)["finetune_depth"].high == 19
    spec = load_spec(
        REPO / "sweeps" / "mobilenet.yaml",
        ["search_space.finetune_depth={type: int, low: 20, high: max}"],
    )
    with pytest.raises(SpecError) as info:
        resolve_space(spec, 19, where)
    assert info.value.problems == [
        f"{where}: search_space.finetune_depth.low: `low <= 19` must hold (high: max is the "
        "base model's 19 blocks), got low=20"
    ]
    with pytest.raises(ValueError, match="'max' must be resolved first"):
        distributions(spec)


# --- the output directory (defect 11) ----------------------------------------------------------


def test_an_output_dir_that_cannot_be_written_is_one_line_before_the_header(
    make_spec, tmp_path
) -> None:
    """Root may write anywhere by `os.access`; /proc refuses new directories all the same."""
    path = make_spec()
    res = _start(str(path), "--set", "output.dir=/proc/x/sweep")
    assert (res.exit_code, res.stderr, res.stdout) == (
        2,
        f"error: {path}: output.dir: cannot write to /proc/x/sweep: creating a directory in "
        "/proc fails (No such file or directory)\n",
        "",
    )
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub" / "deeper"):
        res = _start(str(path), "--set", f"output.dir={out}")
        assert (res.exit_code, res.stderr, res.stdout) == (
            2,
            f"error: {path}: output.dir: {blocker} is a file, not a directory\n",
            "",
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "spec.yaml"]


# --- one study per output directory (defect 2) ---------------------------------------------------


def test_a_second_study_in_an_output_dir_is_refused_naming_both(make_spec, tmp_path) -> None:
    run_sweep(load_spec(make_spec(study={"n_trials": 2})), on_event=lambda k, i: None)
    out = tmp_path / "out"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    db = f"sqlite:///{out / 'study.db'}"

    path = make_spec(study={"name": "fake2", "n_trials": 2})
    res = _start(str(path))
    assert (res.exit_code, res.stderr, res.stdout) == (
        2,
        f"error: {path}: output.dir: {out} holds study 'fake' ({db}); this spec's study is "
        f"'fake2': give it its own output.dir (--set output.dir={tmp_path / 'fake2'})\n",
        "",
    )
    other = f"sqlite:///{tmp_path / 'other.db'}"
    res = _start(str(make_spec()), "--set", f"study.storage={other}")
    assert res.exit_code == 2
    assert res.stderr == (
        f"error: {tmp_path / 'spec.yaml'}: output.dir: {out} holds study 'fake' ({db}); this "
        f"spec's study is 'fake' ({other}): give it its own output.dir "
        f"(--set output.dir={out}-2)\n"
    )
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert not (tmp_path / "other.db").exists()

    # the same study goes on, from `start` or from `worker` (which joins it)
    res = CliRunner().invoke(main, ["worker", str(make_spec(study={"n_trials": 3}))])
    assert res.exit_code == 0, res.stderr
    res = _start(str(make_spec(study={"n_trials": 4})))
    assert res.exit_code == 0, res.stderr
    study = optuna.load_study(study_name="fake", storage=db)
    assert len(study.trials) == 4


# --- two orchestrators on one study (defect 3) -------------------------------------------------


def _params(out: Path) -> list[float]:
    study = optuna.load_study(study_name="fake", storage=f"sqlite:///{out / 'study.db'}")
    return [t.params["x"] for t in sorted(study.trials, key=lambda t: t.number)]


def test_two_orchestrators_started_together_draw_different_configurations(
    make_spec, tmp_path
) -> None:
    space = {
        "x": {"type": "float", "low": 0.0, "high": 1.0},
        "sleep": {"type": "categorical", "choices": [1.0]},  # both run while the other asks
    }
    path = make_spec(
        study={"n_trials": 6}, search_space=space, resources={"gpus": "none", "n_jobs": 1}
    )
    procs = [spawn_cli("start", str(path)) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    together = _params(tmp_path / "out")
    assert len(together) == 6
    assert len(set(together)) == 6, together

    # one orchestrator alone stays reproducible: the same command on a fresh directory
    alone = []
    for name in ("a", "b"):
        out = tmp_path / name
        run_sweep(
            load_spec(path, [f"output.dir={out}", "search_space.sleep.choices=[0.0]"]),
            on_event=lambda k, i: None,
        )
        alone.append(_params(out))
    assert alone[0] == alone[1] and len(set(alone[0])) == 6


# --- secrets in the storage URL (defect 10) ------------------------------------------------------

SECRET = "Zq9-not-a-real-password"


def test_no_secret_of_the_storage_url_reaches_the_terminal_files_or_the_study(
    make_spec, tmp_path
) -> None:
    """SQLite ignores (and warns about) a `password` query parameter: a real sweep can carry one."""
    out = tmp_path / "out"
    url = f"sqlite:///{out / 'study.db'}?password={SECRET}"
    out.mkdir()
    path = make_spec(study={"n_trials": 2, "storage": url})
    res = subprocess.run(
        [sys.executable, "-m", "tbxsweep", "start", str(path)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert f"storage sqlite:///{out / 'study.db'}?password=***; logs in {out}" in res.stdout
    assert SECRET not in res.stdout + res.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert out / "sweep.json" in files and out / "leaderboard.csv" in files
    assert any(p.name.startswith("events.out.tfevents") for p in files)
    assert [p for p in files if SECRET.encode() in p.read_bytes()] == []
    assert json.loads((out / "sweep.json").read_text())["storage"] == (
        f"sqlite:///{out / 'study.db'}?password=***"
    )
    study = optuna.load_study(study_name="fake", storage=url)
    assert SECRET not in json.dumps([study.user_attrs, [t.user_attrs for t in study.trials]])
    # the stored spec (without the password) still recognises the same spec on resume
    res = subprocess.run(
        [sys.executable, "-m", "tbxsweep", "start", str(path), "--set", "study.n_trials=3"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert len(optuna.load_study(study_name="fake", storage=url).trials) == 3


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"postgresql://sweeper@127.0.0.1:1/db?sslmode=disable&password={SECRET}",
            "postgresql://sweeper@127.0.0.1:1/db?sslmode=disable&password=***",
        ),
        (f"postgresql://:{SECRET}@127.0.0.1:1/db", "postgresql://:***@127.0.0.1:1/db"),
        (
            f"postgresql://sweeper:{SECRET}@127.0.0.1:1/db?token={SECRET}x",
            "postgresql://sweeper:***@127.0.0.1:1/db?token=***",
        ),
    ],
)
def test_a_storage_that_cannot_be_opened_shows_no_secret(make_spec, tmp_path, url, shown) -> None:
    path = make_spec(study={"storage": url})
    res = _start(str(path))
    assert res.exit_code == 2
    assert res.stderr.startswith(f"error: {path}: study.storage: cannot open {shown}: ")
    assert SECRET not in res.stderr + res.stdout
    assert not (tmp_path / "out").exists()
