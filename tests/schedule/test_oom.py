"""A trial that runs out of memory is infeasible (Optuna's constraint API), not a failure."""

from __future__ import annotations

import contextlib
import inspect

import optuna
import pandas as pd
import pytest
from fake_trials import oom

from tbxsweep.errors import FatalError
from tbxsweep.schedule import run_sweep
from tbxsweep.spec import load_spec
from tbxsweep.trial._run import out_of_memory


def _raise_line() -> int:
    lines, start = inspect.getsourcelines(oom)
    return start + next(i for i, line in enumerate(lines) if "raise ResourceExhaustedError" in line)


def test_oom_trials_are_infeasible_and_do_not_stop_the_sweep(make_spec, tmp_path):
    from tbxsweep.cli.board import start_board

    # Every trial runs out of memory, twice the failure limit in a row.
    path = make_spec(
        study={"n_trials": 4, "max_consecutive_failures": 2},
        search_space={"x": {"type": "float", "low": 0.6, "high": 1.0}},
        task={"train": "fake_trials:oom"},
    )
    counts = run_sweep(load_spec(path), on_event=lambda kind, info: None)
    assert (counts.finished, counts.infeasible, counts.failed, counts.complete) == (4, 4, 0, 0)
    out = tmp_path / "out"
    study = optuna.load_study(study_name="fake", storage=f"sqlite:///{out / 'study.db'}")
    # told as pruned (a state the samplers learn from) with a violated constraint
    assert [(t.state.name, t.constraints) for t in study.trials] == [("PRUNED", {"oom": 1.0})] * 4
    df = pd.read_csv(out / "leaderboard.csv")
    assert list(df["state"]) == ["infeasible"] * 4
    assert set(df["error"]) == {
        "out of memory: ResourceExhaustedError: OOM when allocating tensor with "
        f"shape[4096,4096,64] (fake_trials.py:{_raise_line()})"
    }
    with start_board(out) as board:
        groups = board.session_groups()
    assert sorted(g["name"] for g in groups) == sorted(df["run"])
    for g in groups:
        assert g["sessions"][0]["status"] == "STATUS_FAILURE"
        assert {m["name"]["tag"]: m["value"] for m in g["metricValues"]}["state"] == 4.0


def _late_share_above_half(make_spec, tmp_path, train: str) -> float:
    """The share of trials after TPE's start-up trials that drew x > 0.5."""
    out = tmp_path / train.replace(":", "-")
    path = make_spec(
        name=f"{out.name}.yaml",
        study={
            "n_trials": 20,
            "max_consecutive_failures": 8,
            "sampler": {"name": "tpe", "seed": 1, "n_startup_trials": 6},
        },
        task={"train": train, "epochs": 1},
        search_space={"x": {"type": "float", "low": 0.0, "high": 1.0}},
        resources={"gpus": "none", "n_jobs": 1},
        output={"dir": str(out)},
    )
    # failed trials do not count towards n_trials: TPE, which never sees them, keeps
    # drawing there until max_consecutive_failures stops the sweep
    with contextlib.suppress(FatalError):
        run_sweep(load_spec(path), on_event=lambda kind, info: None)
    study = optuna.load_study(study_name="fake", storage=f"sqlite:///{out / 'study.db'}")
    late = [t.params["x"] for t in sorted(study.trials, key=lambda t: t.number)][6:]
    return sum(x > 0.5 for x in late) / len(late)


def test_tpe_learns_to_avoid_the_parameters_that_ran_out_of_memory(make_spec, tmp_path):
    # x > 0.5 runs out of memory (infeasible) or raises a plain error (failed). TPE never
    # sees a failed trial and keeps drawing there; an infeasible one it models as bad.
    # (Measured with plain Optuna over seeds 0-9: 1-6 of the 14 later trials land there
    # when infeasible, 9-13 when failed.)
    infeasible = _late_share_above_half(make_spec, tmp_path, "fake_trials:oom")
    failed = _late_share_above_half(make_spec, tmp_path, "fake_trials:failing")
    assert infeasible <= 0.5 and failed >= 0.6, (infeasible, failed)


def test_tensorflow_resource_exhausted_error_is_out_of_memory():
    tf = pytest.importorskip("tensorflow")
    exc = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
    assert out_of_memory(exc)
    # raised from inside another error (a callback, a wrapped fit) it still counts
    try:
        try:
            raise exc
        except Exception as inner:
            raise RuntimeError("training failed") from inner
    except RuntimeError as outer:
        assert out_of_memory(outer)
    assert out_of_memory(MemoryError())
    assert not out_of_memory(tf.errors.InvalidArgumentError(None, None, "bad shape"))
    assert not out_of_memory(ValueError("x=0.9 is too large for this model"))


@pytest.fixture
def memory_cgroup(tmp_path):
    """A cgroup v1 memory controller group with a 300 MB limit (swap included), for a
    worker to move into; skipped where none can be made (not root, or cgroup v2 only)."""
    import os
    from pathlib import Path

    group = Path("/sys/fs/cgroup/memory") / f"tbxsweep-test-{os.getpid()}-{tmp_path.name}"
    try:
        group.mkdir()
    except OSError as exc:
        pytest.skip(f"no cgroup v1 memory controller to limit a worker with: {exc.strerror}")
    try:
        (group / "memory.limit_in_bytes").write_text("300000000")
        memsw = group / "memory.memsw.limit_in_bytes"
        if memsw.exists():  # else the worker would swap instead of being killed
            memsw.write_text("300000000")
        yield group
    finally:
        for _ in range(50):  # the killed worker leaves the group as the kernel reaps it
            with contextlib.suppress(OSError):
                group.rmdir()
                break
            import time

            time.sleep(0.1)


def test_a_worker_the_kernel_kills_for_memory_makes_its_trial_infeasible(
    make_spec, tmp_path, memory_cgroup
):
    # A real OOM kill: the trial's worker exceeds its memory cgroup and the kernel sends it
    # SIGKILL. One consecutive failure would stop the sweep: the two trials are not failures.
    path = make_spec(
        study={"n_trials": 2, "max_consecutive_failures": 1},
        search_space={
            "x": {"type": "float", "low": 0.6, "high": 1.0},
            "cgroup": {"type": "categorical", "choices": [str(memory_cgroup)]},
        },
        task={"train": "fake_trials:kernel_oom"},
        resources={"n_jobs": 1},
    )
    counts = run_sweep(load_spec(path), on_event=lambda kind, info: None)
    assert (counts.finished, counts.infeasible, counts.failed) == (2, 2, 0)
    out = tmp_path / "out"
    study = optuna.load_study(study_name="fake", storage=f"sqlite:///{out / 'study.db'}")
    assert [(t.state.name, t.constraints) for t in study.trials] == [("PRUNED", {"oom": 1.0})] * 2
    df = pd.read_csv(out / "leaderboard.csv")
    assert list(df["state"]) == ["infeasible"] * 2
    assert set(df["error"]) == {
        "out of memory: worker process died (killed by SIGKILL) while running this trial, "
        "and the kernel counted an OOM kill meanwhile"
    }
