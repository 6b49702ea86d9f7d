"""Beyond one machine: one study in PostgreSQL shared by orchestrators on several "hosts",
and trials sent to a Dask cluster (a real local one, separate worker processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import cli_env, spawn_cli

pytestmark = pytest.mark.slow

DEFAULT_PG = "postgresql://tbxsweep:tbxsweep@127.0.0.1:5432/postgres"


@pytest.fixture(scope="module")
def pg_server() -> str:
    """The PostgreSQL server .ci/run starts; skipped outside CI when there is none."""
    import sqlalchemy

    url = os.environ.get("TBXSWEEP_TEST_PG_URL", DEFAULT_PG)
    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL must run in CI (.ci/run starts it): {exc}")
        pytest.skip(
            f"no PostgreSQL server at 127.0.0.1:5432 (bash .ci/postgres.sh starts one): "
            f"{type(exc).__name__}"
        )
    return url


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh database for one test."""
    import sqlalchemy

    name = f"tbx_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(pg_server, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    yield pg_server.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def _host(cmd: str, path: Path, host: str) -> subprocess.Popen[str]:
    env = cli_env()
    env["TBXSWEEP_HOST"] = host
    return spawn_cli(cmd, str(path), env=env)


def _wait_for(predicate, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


def _slow_space(sleep: float) -> dict:
    return {
        "x": {"type": "float", "low": 0.0, "high": 1.0},
        "sleep": {"type": "categorical", "choices": [sleep]},
    }


def test_two_hosts_share_one_postgresql_study(make_spec, tmp_path, pg_url, run_cli):
    spec = {
        "study": {"n_trials": 6, "storage": pg_url},
        "resources": {"gpus": "none", "n_jobs": 1},
        "search_space": _slow_space(0.6),
    }
    a = make_spec(name="a.yaml", output={"dir": str(tmp_path / "host-a")}, **spec)
    b = make_spec(name="b.yaml", output={"dir": str(tmp_path / "host-b")}, **spec)
    first = _host("start", a, "host-a")
    _wait_for(lambda: (tmp_path / "host-a" / "sweep.json").exists())
    second = _host("worker", b, "host-b")
    _out_a, err_a = first.communicate(timeout=120)
    _out_b, err_b = second.communicate(timeout=120)
    assert first.returncode == 0, err_a
    assert second.returncode == 0, err_b
    study = optuna.load_study(study_name="fake", storage=pg_url)
    assert [t.number for t in study.trials] == list(range(6))
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert {t.user_attrs["tbxsweep_owner"]["host"] for t in study.trials} == {"host-a", "host-b"}
    from tbxsweep.study._fastread import read_trials  # the leaderboard's SQL read, no fallback

    fast, _ = read_trials(pg_url, "fake")
    assert [(t.number, t.state.name, t.value, t.params, t.user_attrs) for t in fast] == [
        (t.number, t.state.name, t.value, t.params, t.user_attrs) for t in study.trials
    ]
    # each host's trials are in its own output directory; the leaderboard shows them all
    runs_a = {p.name for p in (tmp_path / "host-a").glob("trial-*")}
    runs_b = {p.name for p in (tmp_path / "host-b").glob("trial-*")}
    assert runs_a | runs_b == {f"trial-{i:04d}" for i in range(6)} and not runs_a & runs_b
    assert "tbxsweep:tbxsweep@" not in (tmp_path / "host-a" / "sweep.json").read_text()
    os.environ["TBXSWEEP_STORAGE"] = pg_url
    try:
        res = run_cli("leaderboard", str(tmp_path / "host-b"), "--csv", str(tmp_path / "lb.csv"))
    finally:
        del os.environ["TBXSWEEP_STORAGE"]
    assert res.returncode == 0, res.stderr
    assert sorted(pd.read_csv(tmp_path / "lb.csv")["trial"]) == list(range(6))


def test_a_host_that_dies_leaves_its_trial_to_the_other(make_spec, tmp_path, pg_url):
    spec = {
        "study": {"n_trials": 5, "storage": pg_url, "stale_after_s": 3},
        "resources": {"gpus": "none", "n_jobs": 1},
        "search_space": _slow_space(2.0),
    }
    a = make_spec(name="a.yaml", output={"dir": str(tmp_path / "host-a")}, **spec)
    b = make_spec(name="b.yaml", output={"dir": str(tmp_path / "host-b")}, **spec)
    first = _host("start", a, "host-a")
    _wait_for(lambda: list((tmp_path / "host-a").glob("trial-*/trial.json")))
    second = _host("worker", b, "host-b")
    time.sleep(1.0)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    out_b, err_b = second.communicate(timeout=180)
    assert second.returncode == 0, err_b
    study = optuna.load_study(study_name="fake", storage=pg_url)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 5 and "RUNNING" not in states
    dead = [t for t in study.trials if t.state.name == "FAIL"]
    assert dead, "the killed host's running trial must be failed"
    for t in dead:
        assert t.user_attrs["tbxsweep"]["error"].startswith(
            "interrupted: no heartbeat from its orchestrator (pid "
        )
        assert "on host-a) for " in t.user_attrs["tbxsweep"]["error"]
    retried = {t.user_attrs.get("tbxsweep_retry_of") for t in study.trials} - {None}
    assert retried == {t.number for t in dead}
    assert "was left running: no heartbeat from its orchestrator" in out_b


def test_a_dask_backed_sweep_gives_the_same_results_as_loky(make_spec, tmp_path, run_cli):
    common = {"study": {"n_trials": 4, "sampler": {"name": "random", "seed": 7}}}
    loky = make_spec(
        name="loky.yaml",
        output={"dir": str(tmp_path / "loky")},
        resources={"gpus": "none", "n_jobs": 2},
        **common,
    )
    dask = make_spec(
        name="dask.yaml",
        output={"dir": str(tmp_path / "dask")},
        resources={"gpus": "none", "n_jobs": 2, "backend": "dask", "scheduler": "local"},
        **common,
    )
    for path in (loky, dask):
        res = run_cli("start", str(path))
        assert res.returncode == 0, res.stderr
    assert "2 Dask worker slot(s) at local" in res.stdout
    cols = ["trial", "state", "value", "x", "epochs_run", "device"]
    a = pd.read_csv(tmp_path / "loky" / "leaderboard.csv")[cols].sort_values("trial")
    b = pd.read_csv(tmp_path / "dask" / "leaderboard.csv")[cols].sort_values("trial")
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    res = run_cli("check", str(tmp_path / "dask"))
    assert res.returncode == 0, res.stdout


def test_a_lost_database_connection_is_retried_and_reported(make_spec, tmp_path, pg_url):
    import shutil

    if shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        pytest.skip("needs Debian's pg_ctlcluster and root to restart the server")
    version = sorted(os.listdir("/usr/lib/postgresql"), key=int)[-1]
    path = make_spec(
        study={"n_trials": 4, "storage": pg_url},
        resources={"gpus": "none", "n_jobs": 1},
        search_space=_slow_space(1.5),
    )
    proc = _host("start", path, "host-a")
    _wait_for(lambda: list((tmp_path / "out").glob("trial-*/trial.json")))
    subprocess.run(["pg_ctlcluster", version, "main", "stop", "-m", "fast"], check=True)
    time.sleep(4)
    subprocess.run(["pg_ctlcluster", version, "main", "start"], check=True)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert "warning: the study's storage is unreachable (" in out
    study = optuna.load_study(study_name="fake", storage=pg_url)
    assert [t.state.name for t in study.trials].count("COMPLETE") == 4
