"""Shared fixtures: spec factory, CLI runner, a finished real sweep."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # fake_trials, for in-process tests and loky workers

FAKE_SPEC: dict[str, Any] = {
    "study": {
        "name": "fake",
        "direction": "maximize",
        "metric": "score",
        "n_trials": 4,
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
    },
    "search_space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
    "task": {"train": "fake_trials:train", "epochs": 2},
    "resources": {"gpus": "none", "n_jobs": 2},
}

DIGITS_SPEC: dict[str, Any] = yaml.safe_load((REPO / "sweeps" / "lr.yaml").read_text())


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


@pytest.fixture
def make_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write a spec YAML into tmp_path: `make_spec(base="fake"|"digits", **section_overrides)`.

    The output dir defaults to tmp_path/"out".
    """

    def _make(base: str = "fake", name: str = "spec.yaml", **over: Any) -> Path:
        raw = merge(FAKE_SPEC if base == "fake" else DIGITS_SPEC, over)
        raw.setdefault("output", {})
        if "output" not in over or "dir" not in over.get("output", {}):
            raw["output"]["dir"] = str(tmp_path / "out")
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return _make


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def spawn_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[str]:
    """Start `tbxsweep ARGS` in a real subprocess (stdout and stderr piped, text) and
    return it running: for tests that signal, kill or read it while it runs."""
    return subprocess.Popen(
        [sys.executable, "-m", "tbxsweep", *args],
        cwd=cwd,
        env=env or cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `tbxsweep ARGS` in a real subprocess; returns the completed process."""

    def _run(
        *args: str, cwd: Path | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tbxsweep", *args],
            cwd=cwd or REPO,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return _run
