"""The Dask pool: a second Ctrl-C stops the trials on a cluster's workers, and a trial past
its timeout on a worker that cannot be stopped is reported as such (real Dask processes)."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import cli_env, spawn_cli

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[str]:
    """A Dask scheduler and two single-thread workers (with nannies), as separate processes
    that outlive the orchestrator, as a real cluster would."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = cli_env()
    log = open(tmp_path / "dask.log", "w")  # noqa: SIM115 - closed below
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--dashboard-address",
                ":0",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    ]
    time.sleep(2.0)
    procs.append(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_worker",
                address,
                "--nworkers",
                "2",
                "--nthreads",
                "1",
                "--dashboard-address",
                ":0",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    )
    try:
        yield address
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(20)
            if p.poll() is None:
                p.kill()
        log.close()


def _beats(out: Path) -> dict[str, float]:
    beats = {}
    for p in out.glob("trial-*/trial.json"):
        with contextlib.suppress(ValueError, OSError):
            beats[p.parent.name] = json.loads(p.read_text())["heartbeat_at"]
    return beats


def _wait(predicate, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)


def test_a_second_ctrl_c_stops_the_trials_on_dask_workers(make_spec, tmp_path, dask_cluster):
    path = make_spec(
        study={"n_trials": 4},
        task={"epochs": 60},  # a report (and a trial.json heartbeat) every 0.5 s for 30 s
        search_space={
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "sleep": {"type": "categorical", "choices": [30.0]},
        },
        resources={"gpus": "none", "backend": "dask", "scheduler": dask_cluster},
    )
    out = tmp_path / "out"
    proc = spawn_cli("start", str(path))
    _wait(lambda: len(_beats(out)) >= 2)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    time.sleep(3.0)  # a restarting worker may finish the epoch it is in
    before = _beats(out)
    time.sleep(3.0)
    assert _beats(out) == before, "trials still train on the Dask workers"


def test_a_dask_trial_past_its_timeout_is_reported_and_not_blamed_on_another(
    make_spec, tmp_path, run_cli
):
    path = make_spec(
        study={"n_trials": 2},
        task={"trial_timeout_s": 1.0},
        search_space={
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "sleep": {"type": "categorical", "choices": [3.0]},
        },
        resources={"gpus": "none", "n_jobs": 1, "backend": "dask", "scheduler": "local"},
    )
    res = run_cli("start", str(path))
    assert res.returncode == 0, res.stderr
    for n in (0, 1):
        assert (
            f"warning: trial {n} ran past task.trial_timeout_s=1 s, but its worker cannot be "
            "stopped from here; it runs on"
        ) in res.stdout
    assert "timed out" not in res.stdout
