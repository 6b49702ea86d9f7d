"""compare.py, its synthetic mode and make_big_study.py run on tiny configurations.

Figures are not asserted (a benchmark is not a timed test); what is checked is that each
script runs the workload it claims and reports every figure it documents.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, cli_env

pytestmark = pytest.mark.slow

BENCH = REPO / "benchmarks"
REAL_FIGURES = {
    "wall_s",
    "overhead_s",
    "overhead_warm_s",
    "slot_overhead_s",
    "utilisation",
    "peak_rss_mb",
}
SYNTHETIC_FIGURES = {"wall_s", "startup_s", "sched_overhead_ms", "utilisation", "peak_rss_mb"}
# The per-trial record the scheduler writes (schedule/_loop.py `_finish`).
RECORD_KEYS = {
    "run",
    "runs",
    "device",
    "cuda_visible_devices",
    "worker_pid",
    "host",
    "best_value",
    "values",
    "best_epoch",
    "epochs_run",
    "duration_s",
    "trainable_params",
    "feature_cache",
    "cache_build_s",
    "error",
    "dispatched_at",
    "started_at",
    "ended_at",
    "first_epoch_end",
    "epoch_seconds",
    "seeds",
}


def bench(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def rows_by_tool(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["tool"]: r for r in report["rows"]}


def test_compare_runs_the_same_configurations_in_tbxsweep_handglued_and_optuna(
    tmp_path: Path,
) -> None:
    proc = bench(
        "compare.py",
        "--only",
        "tbxsweep,handglued,optuna",
        "--configs",
        "2",
        "--epochs",
        "1",
        "--workers",
        "1",
        "--pretrain-epochs",
        "1",
        "--json",
        "--out",
        str(tmp_path),
    )
    report = json.loads(proc.stdout)
    rows = rows_by_tool(report)
    assert list(rows) == ["tbxsweep", "handglued", "optuna"]
    assert report["skipped"] == {}
    for tool, row in rows.items():
        assert set(row) >= REAL_FIGURES, tool
        assert set(row["ratio"]) == REAL_FIGURES
        assert row["ratio_to"] == "handglued"  # the hand-written loop is the anchor
        assert row["trials"] == 2 and row["workers"] == 1
        assert 0 < row["utilisation"] <= 1, tool
        assert row["peak_rss_mb"] > 100, tool  # TensorFlow was in the measured tree
    assert all(v == 1.0 for v in rows["handglued"]["ratio"].values())
    assert rows["tbxsweep"]["ratio"]["wall_s"] == pytest.approx(
        rows["tbxsweep"]["wall_s"] / rows["handglued"]["wall_s"]
    )
    # One worker process ran both trials of each parallel tool: none was replaced.
    for tool in ("tbxsweep", "handglued"):
        assert (rows[tool]["processes"], rows[tool]["replaced"]) == (1, 0), tool
    # The hand-written loop logged like a user would: one tensorboardX run per trial.
    runs = sorted(p.name for p in (tmp_path / "handglued" / "runs").iterdir())
    assert runs == ["trial-0000", "trial-0001"]
    # Same configurations, seed and code: the same models, up to float noise.
    for tool in ("handglued", "optuna"):
        assert rows["tbxsweep"]["best_value"] == pytest.approx(rows[tool]["best_value"], abs=0.02)
    # Each tool trained exactly the first two listed configurations.
    sys.path.insert(0, str(BENCH))
    import bench_task

    want = sorted(json.dumps(c, sort_keys=True) for c in bench_task.configs(2))
    for tool in rows:
        lines = bench_task.read_timings(tmp_path / tool / "timings.jsonl")
        assert sorted(json.dumps(ln["params"], sort_keys=True) for ln in lines) == want, tool
        assert all(len(ln["epochs"]) == 1 for ln in lines), tool


def test_synthetic_mode_reports_scheduling_overhead(tmp_path: Path) -> None:
    proc = bench(
        "compare.py",
        "--synthetic",
        "--configs",
        "4",
        "--epochs",
        "1",
        "--sleep",
        "0.05",
        "--json",
        "--out",
        str(tmp_path),
    )
    report = json.loads(proc.stdout)
    rows = rows_by_tool(report)
    assert report["mode"] == "synthetic" and list(rows) == ["tbxsweep", "optuna"]
    for tool, row in rows.items():
        assert set(row) >= SYNTHETIC_FIGURES, tool
        assert row["trials"] == 4, tool
        assert 0 < row["utilisation"] <= 1, tool
        # A trial cannot take less than its sleep: the overhead is never negative.
        assert row["sched_overhead_ms"] > 0, tool
    # The plain table names every figure and both tools.
    sys.path.insert(0, str(BENCH))
    import compare

    out = io.StringIO()
    with redirect_stdout(out):
        compare.print_report(report)
    text = out.getvalue()
    header = text.splitlines()[1].split()
    assert header == ["tool", "workers", *compare.SYNTHETIC_FIGURES]
    assert {line.split()[0] for line in text.splitlines()[3:5]} == {"tbxsweep", "optuna"}


def test_make_big_study_writes_a_study_tbxsweep_reads(tmp_path: Path) -> None:
    out = tmp_path / "big"
    proc = bench("make_big_study.py", "--out", str(out), "--trials", "50", "--json")
    made = json.loads(proc.stdout)
    assert made["trials"] == 50
    assert made["complete"] + made["pruned"] + made["fail"] == 50
    assert made["finished"] == made["complete"] + made["pruned"]
    assert json.loads((out / "sweep.json").read_text())["study_name"] == "big"

    import optuna

    study = optuna.load_study(study_name="big", storage=f"sqlite:///{out / 'study.db'}")
    trials = study.get_trials()
    assert len(trials) == 50
    assert all(set(t.user_attrs["tbxsweep"]) == RECORD_KEYS for t in trials)

    lb = tmp_path / "lb.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "tbxsweep", "leaderboard", str(out), "--csv", str(lb)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader(lb.open()))
    assert len(rows) == 50
    assert sum(r["state"] == "complete" for r in rows) == made["complete"]
