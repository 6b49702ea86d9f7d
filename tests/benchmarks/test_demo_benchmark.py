"""The demo benchmark script runs on a tiny configuration (figures are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, cli_env

pytestmark = pytest.mark.slow


def test_demo_benchmark_runs_and_reports_every_figure(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "demo.py"),
            "--json",
            "--out",
            str(tmp_path / "b"),
            "--set",
            "study.n_trials=2",
            "--set",
            "task.epochs=2",
            "--set",
            "study.pruner.name=none",
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert res["trials"] == 2
    assert set(res) == {
        "trials",
        "workers",
        "processes",
        "replaced",
        "noise_lines",
        "wall_s",
        "setup_s",
        "trial_phase_s",
        "fixed_cost_mean_s",
        "fixed_cost_first_in_worker_s",
        "fixed_cost_warm_s",
        "steady_epoch_s",
        "utilisation",
        "best_value",
    }
    assert 0 < res["utilisation"] <= 1.0
    assert res["steady_epoch_s"] > 0
    assert res["processes"] <= res["workers"] and res["replaced"] == 0
