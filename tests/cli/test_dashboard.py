"""`tbxsweep dashboard`: optuna-dashboard started for real on a finished sweep's storage and
read over its HTTP API (the routes its own frontend reads): every trial with its params,
intermediate values and user attributes, each shown whole (no pickled or cut values)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import FAKE_SPEC, REPO, cli_env, merge, spawn_cli

from tbxsweep.schedule import run_sweep
from tbxsweep.spec import load_spec

pytest.importorskip("optuna_dashboard", reason='pip install "tbxsweep[dashboard]"')

SPACE = {
    "x": {"type": "float", "low": 0.0, "high": 1.0},
    "finetune_depth": {"type": "int", "low": 0, "high": 2},
    "batch_size": {"type": "categorical", "choices": [16, 32]},
}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tbxsweep", *args],
        cwd=REPO,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _sweep(root: Path, storage: str | None = None) -> Path:
    """A finished fake sweep of 4 trials, without a pruner: the per-epoch values still
    reach the study (for the dashboard's and the report's curves)."""
    over: dict[str, Any] = {
        "study": {"n_trials": 4, "pruner": {"name": "none"}},
        "search_space": SPACE,
        "task": {"epochs": 3},
        "output": {"dir": str(root / "out")},
    }
    if storage:
        over["study"]["storage"] = storage
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump(merge(FAKE_SPEC, over), sort_keys=False))
    # in this process: `tbxsweep start` in a fresh one spends ~3 s importing before it runs
    counts = run_sweep(load_spec(spec), on_event=lambda kind, info: None)
    assert (counts.complete, counts.failed) == (4, 0)
    return root / "out"


@pytest.fixture(scope="module")
def sqlite_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _sweep(tmp_path_factory.mktemp("dash"))


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


@contextmanager
def _dashboard(out: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run `tbxsweep dashboard OUT`, yield the URL it prints, stop it with Ctrl-C."""
    proc = spawn_cli("dashboard", str(out), cwd=REPO, env=env)
    timer = threading.Timer(120, proc.kill)  # a stuck start fails the test, not the suite
    timer.start()
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        timer.cancel()
        found = re.fullmatch(
            rf"optuna-dashboard on {re.escape(str(out))}: "
            r"(http://127\.0\.0\.1:\d+)/dashboard/studies/(\d+)  \(Ctrl-C to stop\)\n",
            line,
        )
        assert found, (line, proc.stderr.read() if proc.poll() is not None else "")
        yield found.group(1)
    finally:
        timer.cancel()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _check_api(base: str, study: optuna.Study) -> None:
    studies = _get(f"{base}/api/studies")["study_summaries"]
    (summary,) = [s for s in studies if s["study_name"] == study.study_name]
    detail = _get(f"{base}/api/studies/{summary['study_id']}")
    assert detail["has_intermediate_values"] is True
    shown = {t["number"]: t for t in detail["trials"]}
    trials = study.get_trials()
    assert sorted(shown) == [t.number for t in trials] == [0, 1, 2, 3]
    for t in trials:
        got = shown[t.number]
        assert got["state"] == t.state.name.capitalize()
        assert {p["name"]: p["param_external_value"] for p in got["params"]} == {
            k: str(v) for k, v in t.params.items()
        }
        assert sorted(t.params) == sorted(SPACE)
        assert [(v["step"], v["value"]) for v in got["intermediate_values"]] == sorted(
            t.intermediate_values.items()
        )
        assert sorted(t.intermediate_values) == [1, 2, 3]
        # every user attribute, whole: JSON that reads back as what tbxsweep stored
        attrs = {a["key"]: a["value"] for a in got["user_attrs"]}
        assert sorted(attrs) == sorted(t.user_attrs)
        for key, value in t.user_attrs.items():
            assert attrs[key] != "<binary object>"
            assert (attrs[key] if isinstance(value, str) else json.loads(attrs[key])) == value
        assert t.user_attrs["tbxsweep"]["run"] == f"trial-{t.number:04d}"


def test_dashboard_serves_every_trial_of_a_sqlite_study(sqlite_sweep: Path) -> None:
    study = optuna.load_study(study_name="fake", storage=f"sqlite:///{sqlite_sweep / 'study.db'}")
    with _dashboard(sqlite_sweep) as base:
        _check_api(base, study)


def test_dashboard_on_postgresql(tmp_path: Path) -> None:
    """The same over a PostgreSQL study (the URL, with its password, reaches the server
    through TBXSWEEP_STORAGE as for every other command)."""
    server = os.environ.get("TBXSWEEP_TEST_PG_URL")
    if not server:
        pytest.skip("TBXSWEEP_TEST_PG_URL is not set")
    import sqlalchemy

    name = f"tbx_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    url = server.rsplit("/", 1)[0] + "/" + name
    try:
        out = _sweep(tmp_path, storage=url)
        study = optuna.load_study(study_name="fake", storage=url)
        with _dashboard(out, env={**cli_env(), "TBXSWEEP_STORAGE": url}) as base:
            _check_api(base, study)
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def test_dashboard_not_installed_is_one_line(sqlite_sweep: Path) -> None:
    # `sys.modules[name] = None` is how Python marks a module as not importable
    code = (
        "import sys; sys.modules['optuna_dashboard'] = None; from tbxsweep.cli import main; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "dashboard", str(sqlite_sweep)],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        'error: optuna-dashboard is not installed; pip install "tbxsweep[dashboard]"\n'
    )


def test_dashboard_of_a_directory_without_a_sweep(tmp_path: Path) -> None:
    done = _cli("dashboard", str(tmp_path))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"error: {tmp_path}: not a tbxsweep output directory (no sweep.json); "
        "give the output.dir of a sweep started with `tbxsweep start`\n"
    )
