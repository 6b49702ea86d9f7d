"""Measure a tbxsweep sweep on this machine: wall time, per-trial fixed cost, utilisation.

    python benchmarks/demo.py                       # the demo sweep, sweeps/lr.yaml
    python benchmarks/demo.py --set study.n_trials=4 --set task.epochs=2

Runs `tbxsweep start` in a fresh output directory, then reads what every trial recorded
in the study's storage:
  fixed cost   dispatch -> end of the first epoch, minus one steady-state epoch
               (TF start-up, tracing, model build: what worker reuse can cut)
  steady epoch mean duration of epochs 2..N
  utilisation  busy worker time / (trial-phase wall time x workers)
  processes    distinct worker processes that ran trials; replaced = processes - workers
               the sweep started with (a crash, or a restart tbxsweep did not decide)
  noise_lines  stderr lines from loky or TensorFlow (expected: 0)
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(spec: str, overrides: list[str], out: Path) -> dict[str, float]:
    import optuna

    args = [
        sys.executable,
        "-m",
        "tbxsweep",
        "start",
        spec,
        "--set",
        f"output.dir={out}",
        *[a for o in overrides for a in ("--set", o)],
    ]
    t0 = time.time()
    proc = subprocess.run(args, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"sweep failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    info = json.loads((out / "sweep.json").read_text())
    study = optuna.load_study(
        study_name=info["study_name"], storage=f"sqlite:///{out / 'study.db'}"
    )
    recs = [t.user_attrs["tbxsweep"] for t in study.trials if "tbxsweep" in t.user_attrs]
    workers = len({(r["host"], r["worker_pid"]) for r in recs})
    m = re.search(r"(\d+) (?:CPU )?workers?\b|(\d+) workers on GPU", proc.stdout)
    slots = int(next(g for g in m.groups() if g)) if m else workers
    first_dispatch = min(r["dispatched_at"] for r in recs)
    last_end = max(r["ended_at"] for r in recs)
    trial_wall = last_end - first_dispatch
    steady = [s for r in recs for s in r["epoch_seconds"][1:]]
    steady_epoch = statistics.mean(steady) if steady else 0.0
    fixed = [
        r["first_epoch_end"] - r["dispatched_at"] - steady_epoch
        for r in recs
        if r.get("first_epoch_end")
    ]
    busy = sum(r["ended_at"] - r["started_at"] for r in recs)
    values = [t.value for t in study.trials if t.value is not None and t.state.name == "COMPLETE"]
    return {
        "trials": len(recs),
        "workers": slots,
        "processes": workers,
        "replaced": max(0, workers - slots),
        "noise_lines": len(_noise(proc.stderr)),
        "wall_s": wall,
        "setup_s": first_dispatch - t0,
        "trial_phase_s": trial_wall,
        "fixed_cost_mean_s": statistics.mean(fixed) if fixed else float("nan"),
        "fixed_cost_first_in_worker_s": _first_in_worker(recs, steady_epoch),
        "fixed_cost_warm_s": _warm(recs, steady_epoch),
        "steady_epoch_s": steady_epoch,
        "utilisation": busy / (trial_wall * workers) if workers else float("nan"),
        "best_value": max(values) if values else float("nan"),
    }


def _noise(stderr: str) -> list[str]:
    """Lines a user did not ask for: loky's worker warnings, TensorFlow's start-up logs."""
    pattern = re.compile(
        r"UserWarning|A worker stopped|absl::InitializeLog|oneDNN|cuda drivers|"
        r"tensorflow|TF-TRT|cuDNN|cuBLAS|cuFFT"
    )
    return [ln for ln in stderr.splitlines() if pattern.search(ln)]


def _first_in_worker(recs: list[dict], steady: float) -> float:
    firsts: dict[int, dict] = {}
    for r in sorted(recs, key=lambda r: r["dispatched_at"]):
        firsts.setdefault(r["worker_pid"], r)
    vals = [
        r["first_epoch_end"] - r["dispatched_at"] - steady
        for r in firsts.values()
        if r.get("first_epoch_end")
    ]
    return statistics.mean(vals) if vals else float("nan")


def _warm(recs: list[dict], steady: float) -> float:
    seen: set[int] = set()
    vals = []
    for r in sorted(recs, key=lambda r: r["dispatched_at"]):
        if r["worker_pid"] in seen and r.get("first_epoch_end"):
            vals.append(r["first_epoch_end"] - r["dispatched_at"] - steady)
        seen.add(r["worker_pid"])
    return statistics.mean(vals) if vals else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(REPO / "sweeps" / "lr.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", type=Path, default=None, help="output dir (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    a = ap.parse_args()
    out = a.out or Path(tempfile.mkdtemp(prefix="tbxsweep-bench-")) / "sweep"
    res = measure(a.spec, a.overrides, out)
    if a.json:
        print(json.dumps(res))
        return
    for k, v in res.items():
        print(f"{k:32s} {v:.3f}" if isinstance(v, float) else f"{k:32s} {v}")


if __name__ == "__main__":
    main()
