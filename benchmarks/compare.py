"""The same sweep run by tbxsweep, a plain Optuna loop, Keras Tuner and Ray Tune, side by side.

    python benchmarks/compare.py                          # 12 configs x 6 epochs, every tool
    python benchmarks/compare.py --only tbxsweep,optuna --configs 2 --epochs 1
    python benchmarks/compare.py --synthetic              # fixed-duration trials: scheduling only
    python benchmarks/compare.py --json                   # figures as JSON

The workload (bench_task.py): the first N of a fixed, seeded shuffle of 80
(learning_rate, batch_size, finetune_depth) combinations, fine-tuned for E epochs on
digits 5-9 (tbxsweep's fixed split) from one base pretrained once on digits 0-4
(tbxsweep's own `ensure_pretrained`) into a temporary cache shared by every tool. The
training code is the same function for every tool; the tools differ in scheduling only.
Every tool runs on the CPU (CUDA_VISIBLE_DEVICES=-1), in a fresh process of its own, with
no pruning.

How each tool runs exactly that list, in that order:
  tbxsweep          `tbxsweep start` on a spec with `task.train: bench_task:train`, categorical
                    learning_rate/batch_size and int finetune_depth, n_trials N, pruner none,
                    the N configurations as the spec's `study.enqueue` (run first, in order,
                    before the sampler's own). Workers: `resources.n_jobs` (default auto).
  tbxsweep-builtin  the same, with tbxsweep's built-in digits task instead of the shared
                    function (adds its TensorBoard logging, confusion matrix, PR curves).
  handglued         the loop a careful user writes by hand: Optuna ask/tell in the parent
                    (TPE seed 0, SQLite, configurations enqueued), `joblib.Parallel(n_jobs=W,
                    backend="loky", return_as="generator_unordered")` streaming the trials to W
                    reused worker processes (W = tbxsweep's workers), tensorboardX scalars per
                    epoch and `add_hparams` at the end. The anchor: every ratio is to it.
  optuna            a sequential ask/tell loop in one process (TPE seed 0, SQLite storage like
                    tbxsweep's; --optuna-storage memory for in-memory), configurations
                    enqueued.
  keras-tuner       GridSearch over one choice, the index into the list (a grid over the
                    three hyperparameters would run their cartesian product, not the list);
                    the HyperModel builds and fits the same model; one process.
  ray / ray-reuse   Ray Tune with OptunaSearch (TPE seed 0, the list as points_to_evaluate),
                    the same number of concurrent trials as tbxsweep's workers, one CPU each;
                    `ray` keeps Tune's default reuse_actors=False, `ray-reuse` sets it True.
                    Skipped with a note when `ray[tune]` is not installed or does not
                    import (keras-tuner likewise).

Figures (per tool; the table shows each as a ratio to handglued's, else tbxsweep's):
  wall_s            process start to exit (TF imports, pool start-up and shutdown included)
  overhead_s        mean per trial: dispatch -> end of its first epoch, minus one steady-state
                    epoch (the median of its epochs 2..E; 0 when E=1). Dispatch is the moment
                    the tool hands the trial over after its sampler's ask: tbxsweep's
                    `dispatched_at`, after study.ask() for optuna, Tuner.on_trial_begin for
                    Keras Tuner, a Tune Callback's on_trial_start for Ray. The first trial in
                    a process pays for importing TensorFlow there (Keras Tuner builds a
                    model, so imports it, before its first dispatch; tbxsweep-builtin's
                    workers before theirs).
  overhead_warm_s   the same over the trials that were not the first in their worker
                    process: the fixed cost of a warm worker ("-" for Ray without
                    reuse_actors, which starts a new actor per trial)
  slot_overhead_s   mean per trial of everything that is not a steady-state epoch in the time
                    the trial held its worker: from the previous trial's end on the same
                    worker (or its own dispatch) to its end, minus E steady epochs. This adds
                    what overhead_s leaves out: the tell, the next ask, logging after training.
  utilisation       time inside the training function / (wall_s x workers)
  peak_rss_mb       peak of the summed RSS of the tool's process tree (psutil, every 0.2 s);
                    shared pages (TF's libraries) count once per process.
  best_value        best validation accuracy (same configurations: should agree closely)

--synthetic: tbxsweep vs the plain Optuna loop on trials that only sleep
(tests/fake_trials.py `train`, FAKE_TRIAL_SLEEP=--sleep, split over --epochs reported epochs),
TPE seed 0, no pruning, --workers (default 1) tbxsweep workers:
  sched_overhead_ms (trial phase x workers - trials x sleep) / trials; trial phase = first
                    trial's start in a worker -> last trial's end (so the worker pool's
                    start-up is not spread over the trials)
  utilisation       trials x sleep / (trial phase x workers)
  startup_s         process start -> the first trial's start in a worker (CLI, spec, study,
                    worker pool); first_dispatch_s in --json: process start -> first dispatch
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_task
from _common import (
    BENCH,
    TESTS,
    RunResult,
    TrialTiming,
    bench_env,
    check,
    place_base,
    pretrain_base,
    pretrained_by_tbxsweep,
    print_table,
    run_measured,
    summarize,
    tbxsweep_records,
    tbxsweep_start,
    timings_from_records,
)

TOOLS = ("tbxsweep", "tbxsweep-builtin", "handglued", "optuna", "keras-tuner", "ray", "ray-reuse")
DEFAULT_TOOLS = ("tbxsweep", "tbxsweep-builtin", "handglued", "optuna", "keras-tuner", "ray")
SYNTHETIC_TOOLS = ("tbxsweep", "optuna")
REAL_FIGURES = (
    "wall_s",
    "overhead_s",
    "overhead_warm_s",
    "slot_overhead_s",
    "utilisation",
    "peak_rss_mb",
)
SYNTHETIC_FIGURES = ("wall_s", "startup_s", "sched_overhead_ms", "utilisation", "peak_rss_mb")
NEEDS = {"keras-tuner": "keras_tuner", "ray": "ray.tune", "ray-reuse": "ray.tune"}
INSTALL = {"keras-tuner": "pip install keras-tuner", "ray": "pip install 'ray[tune]'"}
INSTALL["ray-reuse"] = INSTALL["ray"]


def missing(tool: str) -> str | None:
    """Why `tool` cannot run here (not installed), or None."""
    mod = NEEDS.get(tool)
    if mod is None:
        return None
    try:
        found = importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return f"{mod.split('.')[0]} is not installed ({INSTALL[tool]})"
    # Installed is not importable: Ray in particular can fail on import (wheels, protobuf).
    probe = f"import {mod}" + (", ray.tune.search.optuna" if mod.startswith("ray") else "")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"{mod.split('.')[0]} does not import: {last[:200]}"
    return None


# -- the real workload ------------------------------------------------------------------------


def run_tbxsweep(
    tool: str, work: Path, base: Path, a: argparse.Namespace, env: dict[str, str]
) -> tuple[RunResult, list[TrialTiming], int]:
    cfgs = bench_task.configs(a.configs)
    out = work / "out"
    task: dict[str, Any] = {"epochs": a.epochs, "seed": 0}
    if tool == "tbxsweep":
        task["train"] = "bench_task:train"
    else:
        task["pretrain_epochs"] = a.pretrain_epochs
        place_base(base, out)
    spec = bench_task.sweep_spec(
        "compare",
        cfgs,
        task=task,
        resources={"gpus": "none", "n_jobs": a.workers or "auto"},
        out=out,
    )
    # As a user would: the known configurations in the spec, not a study made beforehand.
    spec["study"]["enqueue"] = cfgs
    spec_path = work / "spec.yaml"
    work.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    res = tbxsweep_start(spec_path, out, env=env)
    check(res, tool)
    if tool == "tbxsweep-builtin" and pretrained_by_tbxsweep(res):
        print(f"note: {tool} pretrained its own base (its cache name changed?)", file=sys.stderr)
    recs = tbxsweep_records(out)
    bad = [
        f"trial {r['number']} {r['state']}: {r.get('error')}"
        for r in recs
        if r["state"] != "COMPLETE"
    ]
    if bad or len(recs) != len(cfgs):
        sys.exit(
            f"{tool}: {len(recs) - len(bad)} of {len(cfgs)} trials completed:\n" + "\n".join(bad)
        )
    _check_configs(tool, [r["params"] for r in recs], cfgs)
    if tool == "tbxsweep":
        dispatch = {str(r["number"]): float(r["dispatched_at"]) for r in recs}
        timings = _from_lines(
            bench_task.read_timings(Path(env["TBXSWEEP_BENCH_TIMINGS"])), dispatch
        )
    else:
        timings = timings_from_records(recs)
    m = re.search(r"(\d+) CPU worker", res.stdout)
    workers = int(m.group(1)) if m else len({t.worker for t in timings})
    return res, timings, workers


def run_other(
    tool: str, work: Path, a: argparse.Namespace, env: dict[str, str], workers: int
) -> tuple[RunResult, list[TrialTiming], int]:
    res, result = _run_runner(tool, tool, work, a, env, "--workers", str(workers))
    lines = bench_task.read_timings(Path(env["TBXSWEEP_BENCH_TIMINGS"]))
    failed = [ln for ln in lines if not ln["epochs"]]
    if failed or len(lines) != a.configs:
        sys.exit(
            f"{tool}: {len(lines) - len(failed)} of {a.configs} trials trained "
            f"(see {work}):\n{res.stderr[-2000:]}"
        )
    _check_configs(tool, [ln["params"] for ln in lines], bench_task.configs(a.configs))
    return res, _from_lines(lines, result["dispatch"]), int(result["workers"])


def _run_runner(
    tool: str, label: str, work: Path, a: argparse.Namespace, env: dict[str, str], *extra: str
) -> tuple[RunResult, dict[str, Any]]:
    """Run `_runners.py TOOL` on the workload `a` describes, in `work`; returns the run and
    the result.json the runner wrote there (exits naming `label` if it failed)."""
    args = [
        sys.executable,
        str(BENCH / "_runners.py"),
        tool,
        "--workdir",
        str(work),
        "--configs",
        str(a.configs),
        "--epochs",
        str(a.epochs),
        "--storage",
        a.optuna_storage,
        *extra,
    ]
    res = run_measured(args, env=env)
    check(res, label)
    return res, json.loads((work / "result.json").read_text())


def _from_lines(lines: list[dict[str, Any]], dispatch: dict[str, float]) -> list[TrialTiming]:
    out = []
    for ln in lines:
        key = str(ln["trial"])
        out.append(
            TrialTiming(
                dispatch=dispatch.get(key, ln["start"]),
                start=ln["start"],
                end=ln["end"],
                epochs=tuple(ln["epochs"]),
                first_epoch_end=ln["first_epoch_end"],
                worker=int(ln["pid"]),
                value=ln["value"],
            )
        )
    return out


def _check_configs(tool: str, ran: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    """Every tool must have run exactly the listed configurations (a warning otherwise)."""

    def key(c: dict[str, Any]) -> tuple[float, int, int]:
        return (float(c["learning_rate"]), int(c["batch_size"]), int(c["finetune_depth"]))

    if sorted(map(key, ran)) != sorted(map(key, want)):
        print(
            f"warning: {tool} ran {sorted(map(key, ran))}, not the listed {sorted(map(key, want))}",
            file=sys.stderr,
        )


def compare_real(a: argparse.Namespace, root: Path, tools: list[str]) -> dict[str, Any]:
    base = pretrain_base(root / "cache", a.pretrain_epochs)
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    workers = a.workers
    for tool in tools:
        why = missing(tool)
        if why:
            skipped[tool] = why
            print(f"skip {tool}: {why}", file=sys.stderr)
            continue
        work = _fresh(root / tool)
        env = bench_env(
            BENCH,
            TBXSWEEP_BENCH_BASE=str(base),
            TBXSWEEP_BENCH_TIMINGS=str(work / "timings.jsonl"),
            CUDA_VISIBLE_DEVICES="-1",
        )
        print(f"running {tool} ...", file=sys.stderr)
        if tool.startswith("tbxsweep"):
            res, timings, n = run_tbxsweep(tool, work, base, a, env)
            workers = workers or n
        else:
            parallel = tool.startswith("ray") or tool == "handglued"
            w = min(workers or _cores(), a.configs) if parallel else 1
            res, timings, n = run_other(tool, work, a, env, w)
        row = {"tool": tool, **summarize(timings, wall_s=res.wall_s, workers=n)}
        row["peak_rss_mb"] = res.peak_rss_mb
        # Worker processes that ran trials: more than `workers` means some were replaced
        # (a crash, or loky's memory-leak heuristic) and the next trial there paid again.
        row["processes"] = len({t.worker for t in timings})
        row["replaced"] = max(0, row["processes"] - n)
        rows.append(row)
    return {
        "mode": "real",
        "configs": a.configs,
        "epochs": a.epochs,
        "rows": _with_ratios(rows, REAL_FIGURES),
        "skipped": skipped,
    }


def _fresh(work: Path) -> Path:
    """An empty work directory (a rerun with the same --out starts from scratch)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


def _cores() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# -- the synthetic workload ----------------------------------------------------------------


def compare_synthetic(a: argparse.Namespace, root: Path, tools: list[str]) -> dict[str, Any]:
    rows = []
    skipped = {t: "not part of --synthetic (tbxsweep and optuna only)" for t in tools}
    workers = a.workers or 1
    for tool in [t for t in SYNTHETIC_TOOLS if t in tools]:
        skipped.pop(tool, None)
        work = _fresh(root / f"synthetic-{tool}")
        env = bench_env(TESTS, FAKE_TRIAL_SLEEP=str(a.sleep), CUDA_VISIBLE_DEVICES="-1")
        print(f"running {tool} (synthetic) ...", file=sys.stderr)
        if tool == "tbxsweep":
            res, trials, w = _synthetic_tbxsweep(work, a, env, workers)
        else:
            res, result = _run_runner("optuna-synthetic", "optuna (synthetic)", work, a, env)
            trials, w = result["trials"], int(result["workers"])
        rows.append({"tool": tool, **_synthetic_figures(res, trials, w, a.sleep)})
    for tool in skipped:
        print(f"skip {tool}: {skipped[tool]}", file=sys.stderr)
    return {
        "mode": "synthetic",
        "configs": a.configs,
        "epochs": a.epochs,
        "sleep_s": a.sleep,
        "rows": _with_ratios(rows, SYNTHETIC_FIGURES),
        "skipped": skipped,
    }


def _synthetic_tbxsweep(
    work: Path, a: argparse.Namespace, env: dict[str, str], workers: int
) -> tuple[RunResult, list[dict[str, Any]], int]:
    out = work / "out"
    spec = {
        "study": {
            "name": "synthetic",
            "direction": "maximize",
            "metric": "score",
            "n_trials": a.configs,
            "sampler": {"name": "tpe", "seed": 0},
            "pruner": {"name": "none"},
        },
        "search_space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "task": {"train": "fake_trials:train", "epochs": a.epochs},
        "resources": {"gpus": "none", "n_jobs": workers},
        "output": {"dir": str(out)},
    }
    spec_path = work / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    res = tbxsweep_start(spec_path, out, env=env)
    check(res, "tbxsweep (synthetic)")
    return res, tbxsweep_records(out), workers


def _synthetic_figures(
    res: RunResult, trials: list[dict[str, Any]], workers: int, sleep: float
) -> dict[str, float]:
    n = len(trials)
    first = min(t["dispatched_at"] for t in trials)
    # From the first trial's start: the worker pool's start-up is in startup_s, not here.
    phase = max(t["ended_at"] for t in trials) - min(t["started_at"] for t in trials)
    d2s = [t["started_at"] - t["dispatched_at"] for t in trials]
    return {
        "trials": n,
        "workers": workers,
        "wall_s": res.wall_s,
        "startup_s": min(t["started_at"] for t in trials) - res.t0,
        "first_dispatch_s": first - res.t0,
        "trial_phase_s": phase,
        "sched_overhead_ms": 1000 * (phase * workers - n * sleep) / n,
        "dispatch_to_start_ms": 1000 * sum(d2s) / n,
        "utilisation": n * sleep / (phase * workers),
        "peak_rss_mb": res.peak_rss_mb,
    }


# -- output ------------------------------------------------------------------------------------


def _with_ratios(rows: list[dict[str, Any]], figures: tuple[str, ...]) -> list[dict[str, Any]]:
    """Each row's figures divided by the hand-written loop's (`handglued`, the anchor to
    beat), else tbxsweep's, else the first row's."""
    if not rows:
        return rows
    by_tool = {r["tool"]: r for r in rows}
    ref = by_tool.get("handglued") or by_tool.get("tbxsweep") or rows[0]
    for r in rows:
        r["ratio"] = {}
        for k in figures:
            v, base = r.get(k), ref.get(k)
            if isinstance(v, (int, float)) and isinstance(base, (int, float)) and base:
                r["ratio"][k] = v / base
            else:
                r["ratio"][k] = float("nan")
        r["ratio_to"] = ref["tool"]
    return rows


def print_report(report: dict[str, Any]) -> None:
    figures = REAL_FIGURES if report["mode"] == "real" else SYNTHETIC_FIGURES
    rows = report["rows"]
    if not rows:
        print("no tool ran")
        return
    ref = rows[0]["ratio_to"]
    head = (
        f"{report['configs']} configurations x {report['epochs']} epochs"
        if report["mode"] == "real"
        else f"{report['configs']} synthetic trials of {report['sleep_s']:g} s"
    )
    print(f"{head}; each figure, then its ratio to {ref} (x)")
    table = []
    for r in rows:
        cells: dict[str, Any] = {"tool": r["tool"], "workers": r.get("workers", "")}
        if "processes" in r:
            cells["processes"] = f"{r['processes']} ({r['replaced']} replaced)"
        for k in figures:
            v = r.get(k, float("nan"))
            spec = ".1f" if k in ("wall_s", "peak_rss_mb", "sched_overhead_ms") else ".3f"
            cells[k] = f"{_f(v, spec)} ({_f(r['ratio'][k], '.2f')}x)"
        if "best_value" in r:
            cells["best_value"] = r["best_value"]
        table.append(cells)
    cols = [("tool", "tool"), ("workers", "workers")] + [(k, k) for k in figures]
    if any("processes" in r for r in rows):
        cols.insert(2, ("processes", "processes"))
    if report["mode"] == "real":
        cols.append(("best_value", "best_value"))
    print_table(table, cols)
    for tool, why in report["skipped"].items():
        print(f"skipped {tool}: {why}")


def _f(v: Any, spec: str) -> str:
    return "-" if not isinstance(v, (int, float)) or v != v else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", type=int, default=None, help="configurations (trials)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per trial")
    ap.add_argument(
        "--only",
        default=None,
        help=f"comma-separated, out of {', '.join(TOOLS)} (default {','.join(DEFAULT_TOOLS)})",
    )
    ap.add_argument("--workers", type=int, default=None, help="tbxsweep n_jobs / Ray concurrency")
    ap.add_argument("--synthetic", action="store_true", help="fixed-duration trials")
    ap.add_argument("--sleep", type=float, default=0.2, help="synthetic trial length, s")
    ap.add_argument("--pretrain-epochs", type=int, default=8)
    ap.add_argument("--optuna-storage", choices=["sqlite", "memory"], default="sqlite")
    ap.add_argument("--out", type=Path, default=None, help="work dir (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    a = ap.parse_args()
    a.configs = a.configs or (50 if a.synthetic else 12)
    a.epochs = a.epochs or (2 if a.synthetic else 6)
    tools = a.only.split(",") if a.only else list(SYNTHETIC_TOOLS if a.synthetic else DEFAULT_TOOLS)
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        ap.error(f"--only: unknown tool(s) {unknown}; choose from {', '.join(TOOLS)}")
    if not a.synthetic:
        try:
            bench_task.configs(a.configs)
        except ValueError as exc:
            ap.error(f"--configs: {exc}")
    root = a.out or Path(tempfile.mkdtemp(prefix="tbxsweep-compare-"))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    report = compare_synthetic(a, root, tools) if a.synthetic else compare_real(a, root, tools)
    report["total_s"] = time.time() - t0
    report["workdir"] = str(root)
    if a.json:
        print(json.dumps(report))
    else:
        print_report(report)


if __name__ == "__main__":
    main()
