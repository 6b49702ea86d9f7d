"""The command line: one clear line and exit code 2 for every mistake, nothing written."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
from click.testing import CliRunner

from tbxsweep.cli import main


def _run(*args: str):
    return CliRunner().invoke(main, list(args), prog_name="tbxsweep")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["start"], "error: Missing argument 'SPEC'. (see 'tbxsweep start --help')"),
        (
            ["start", "x.yaml", "--bogus"],
            "error: No such option '--bogus'. (see 'tbxsweep start --help')",
        ),
        (["frob"], "error: No such command 'frob'. (see 'tbxsweep --help')"),
        (
            ["leaderboard", "out", "--top", "many"],
            "error: Invalid value for '--top': 'many' is not a valid integer. "
            "(see 'tbxsweep leaderboard --help')",
        ),
    ],
)
def test_usage_mistakes_are_one_line_with_exit_2(args, message) -> None:
    res = _run(*args)
    assert res.exit_code == 2
    assert res.stderr == message + "\n"


def test_spec_given_as_a_directory(tmp_path: Path) -> None:
    res = _run("start", str(tmp_path))
    assert res.exit_code == 2
    assert res.stderr == f"error: {tmp_path}: is a directory, not a spec file\n"


def test_storage_that_cannot_be_opened_is_refused_and_the_password_never_shown(
    make_spec, tmp_path
) -> None:
    url = "postgresql+psycopg2://sweeper:hunter2@127.0.0.1:1/db"
    path = make_spec(study={"storage": url})
    res = _run("start", str(path))
    assert res.exit_code == 2
    assert res.stderr.startswith(
        f"error: {path}: study.storage: cannot open "
        "postgresql+psycopg2://sweeper:***@127.0.0.1:1/db: "
    )
    assert "hunter2" not in res.stderr + res.stdout
    assert not (tmp_path / "out").exists()

    path = make_spec(study={"storage": f"sqlite:///{tmp_path}/missing/dir/study.db"})
    res = _run("start", str(path))
    assert res.exit_code == 2
    assert res.stderr == (
        f"error: {path}: study.storage: cannot open sqlite:///{tmp_path}/missing/dir/study.db: "
        f"{tmp_path}/missing/dir is not a writable directory\n"
    )
    path = make_spec(study={"storage": "mystudy.db"})
    res = _run("start", str(path))
    assert res.exit_code == 2
    assert res.stderr == (
        f"error: {path}: study.storage: must be an Optuna storage URL like "
        "'sqlite:///path/study.db', 'postgresql://user@host/db' or 'journal:///path/study.log', "
        "got 'mystudy.db'\n"
    )


def test_leaderboard_errors(tmp_path: Path) -> None:
    res = _run("leaderboard", str(tmp_path / "nowhere"))
    assert res.exit_code == 2
    assert res.stderr == (
        f"error: {tmp_path / 'nowhere'}: not a tbxsweep output directory (no sweep.json); "
        "give the output.dir of a sweep started with `tbxsweep start`\n"
    )
    res = _run("check", str(tmp_path))
    assert res.exit_code == 2


def test_a_resumed_study_may_change_its_run_time_keys(make_spec, tmp_path) -> None:
    """trial_timeout_s and checkpoint_every_s steer how trials run, not what they compute."""
    from tbxsweep.schedule import run_sweep
    from tbxsweep.spec import load_spec

    run_sweep(load_spec(make_spec(study={"n_trials": 2})), on_event=lambda k, i: None)
    res = _run(
        "start",
        str(make_spec(study={"n_trials": 3}, task={"trial_timeout_s": 120})),
        "--set",
        "task.checkpoint_every_s=0",
    )
    assert res.exit_code == 0, res.stderr
    db = tmp_path / "out" / "study.db"
    assert len(optuna.load_study(study_name="fake", storage=f"sqlite:///{db}").trials) == 3


def test_a_study_stored_without_a_newer_key_reads_it_as_its_default(make_spec, tmp_path) -> None:
    """A spec key added by a later tbxsweep is absent from an older study's stored spec:
    there it counts as its default, not as a change."""
    from tbxsweep.schedule import run_sweep
    from tbxsweep.spec import load_spec
    from tbxsweep.study import SPEC_ATTR

    run_sweep(load_spec(make_spec(study={"n_trials": 1})), on_event=lambda k, i: None)
    db = tmp_path / "out" / "study.db"
    study = optuna.load_study(study_name="fake", storage=f"sqlite:///{db}")
    older = study.user_attrs[SPEC_ATTR]
    del older["task"]["head_epochs"]  # as if stored before head_epochs existed
    study.set_user_attr(SPEC_ATTR, older)

    res = _run("start", str(make_spec(study={"n_trials": 2})))
    assert res.exit_code == 0, res.stderr
    res = _run("start", str(make_spec(study={"n_trials": 3}, task={"head_epochs": 2})))
    assert res.exit_code == 2
    assert "another spec: task.head_epochs was 0, now 2. Give this spec" in res.stderr


def test_a_changed_spec_is_refused_with_what_differs_and_fork_starts_a_seeded_study(
    make_spec, tmp_path
) -> None:
    from tbxsweep.schedule import run_sweep
    from tbxsweep.spec import load_spec

    run_sweep(load_spec(make_spec(study={"n_trials": 3})), on_event=lambda k, i: None)
    changed = make_spec(
        study={"n_trials": 3},
        search_space={"x": {"type": "float", "low": 0.0, "high": 2.0}},
        task={"epochs": 3},
    )
    before = sorted(p.name for p in (tmp_path / "out").iterdir())
    res = _run("start", str(changed))
    assert res.exit_code == 2
    db = tmp_path / "out" / "study.db"
    assert res.stderr == (
        f"error: {changed}: study 'fake' in sqlite:///{db} was started with another spec: "
        "search_space.x.high was 1.0, now 2.0; task.epochs was 2, now 3. Give this spec a new "
        "study.name and its own output.dir, or add --fork to start a new study seeded with the "
        "3 finished trial(s)\n"
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before

    res = _run("start", str(changed), "--fork")
    assert res.exit_code == 0, res.stderr
    fork = tmp_path / "out-fork1"
    assert (
        f"forked: new study 'fake-fork1' in {fork}, seeded with 3 finished trial(s) of 'fake'"
        in res.stdout
    )
    study = optuna.load_study(study_name="fake-fork1", storage=f"sqlite:///{fork / 'study.db'}")
    seeded = [t for t in study.trials if "tbxsweep_seeded_from" in t.user_attrs]
    own = [t for t in study.trials if "tbxsweep_seeded_from" not in t.user_attrs]
    assert len(seeded) == 3 and len(own) == 3  # seeded trials do not count towards n_trials
    df = pd.read_csv(fork / "leaderboard.csv")
    assert len(df) == 6
    assert df["run"].isna().sum() == 3
    res = _run(
        "start", str(make_spec(name="other.yaml", output={"dir": str(tmp_path / "new")})), "--fork"
    )
    assert res.exit_code == 2
    assert "--fork: there is no study 'fake' in sqlite:///" in res.stderr
    assert not (tmp_path / "new").exists()


def test_worker_refuses_to_create_a_study(make_spec, tmp_path) -> None:
    path = make_spec()
    res = _run("worker", str(path))
    assert res.exit_code == 2
    db = tmp_path / "out" / "study.db"
    assert res.stderr == (
        f"error: {path}: there is no study 'fake' in sqlite:///{db} to join: start it with "
        "`tbxsweep start` first\n"
    )
    assert not (tmp_path / "out").exists()
