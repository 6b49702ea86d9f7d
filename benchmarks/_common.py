"""Shared by the benchmark scripts: running a command while sampling the memory of its
process tree, reading what tbxsweep recorded per trial, the pretrained base, tables.

Nothing here imports TensorFlow: the scripts measure other processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
TESTS = REPO / "tests"
SAMPLE_S = 0.2


# -- running a command and watching its memory ------------------------------------------


@dataclass
class RunResult:
    """One measured command: exit code, output, wall time and memory of its process tree."""

    returncode: int
    stdout: str
    stderr: str
    t0: float  # time.time() just before the process started
    wall_s: float
    peak_rss_mb: float
    lines: list[tuple[float, str]] = field(default_factory=list)  # (time.time(), stdout line)
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, pid, rss bytes)


def tree_rss(proc: Any) -> list[tuple[int, int]]:
    """(pid, RSS) of a psutil process and all its descendants; vanished ones are skipped."""
    import psutil

    out: list[tuple[int, int]] = []
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return out
    for p in procs:
        with contextlib.suppress(psutil.Error):
            out.append((p.pid, int(p.memory_info().rss)))
    return out


def bench_env(*paths: Path, **extra: str) -> dict[str, str]:
    """This environment with `paths` prepended to PYTHONPATH and TF's C++ logs quiet."""
    env = dict(os.environ)
    parts = [str(p) for p in paths] + [env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra)
    return env


def run_measured(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    every_s: float = SAMPLE_S,
    keep_samples: bool = False,
    timeout_s: float | None = None,
) -> RunResult:
    """Run `args`, sampling the summed RSS of its process tree every `every_s` seconds.

    stdout is read line by line with the time each line arrived (to find events such as
    a trial's start without a second clock); stderr is kept whole.
    """
    import psutil

    t0 = time.time()
    proc = subprocess.Popen(
        list(args),
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    ps = psutil.Process(proc.pid)
    lines: list[tuple[float, str]] = []
    err: list[str] = []
    samples: list[tuple[float, int, int]] = []
    peak = 0

    def read_out() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.time(), line.rstrip("\n")))

    def read_err() -> None:
        assert proc.stderr is not None
        err.append(proc.stderr.read())

    readers = [threading.Thread(target=f, daemon=True) for f in (read_out, read_err)]
    for r in readers:
        r.start()
    while proc.poll() is None:
        now = time.time()
        tree = tree_rss(ps)
        peak = max(peak, sum(rss for _, rss in tree))
        if keep_samples:
            samples.extend((now, pid, rss) for pid, rss in tree)
        if timeout_s is not None and now - t0 > timeout_s:
            _kill_tree(ps)
            break
        time.sleep(every_s)
    proc.wait()
    wall = time.time() - t0
    for r in readers:
        r.join(timeout=5)
    return RunResult(
        returncode=proc.returncode,
        stdout="\n".join(text for _, text in lines),
        stderr="".join(err),
        t0=t0,
        wall_s=wall,
        peak_rss_mb=peak / 2**20,
        lines=lines,
        samples=samples,
    )


def _kill_tree(ps: Any) -> None:
    import psutil

    try:
        procs = [ps, *ps.children(recursive=True)]
    except psutil.Error:
        return
    for p in reversed(procs):
        with contextlib.suppress(psutil.Error):
            p.kill()


def check(res: RunResult, what: str) -> None:
    """Stop the benchmark with the tail of the output when a measured command failed."""
    if res.returncode != 0:
        tail = (res.stdout[-1500:] + "\n" + res.stderr[-2500:]).strip()
        sys.exit(f"{what} failed (exit {res.returncode}):\n{tail}")


def tbxsweep_start(
    spec: Path | str,
    out: Path,
    overrides: Iterable[str] = (),
    *,
    env: dict[str, str] | None = None,
    keep_samples: bool = False,
    every_s: float = SAMPLE_S,
) -> RunResult:
    """`tbxsweep start SPEC --set output.dir=OUT --set ...`, measured."""
    args = [sys.executable, "-m", "tbxsweep", "start", str(spec), "--set", f"output.dir={out}"]
    for o in overrides:
        args += ["--set", o]
    return run_measured(
        args, env=env or bench_env(TESTS), keep_samples=keep_samples, every_s=every_s
    )


# -- what tbxsweep recorded ----------------------------------------------------------------


def load_study(out: Path) -> Any:
    """The Optuna study of a tbxsweep output directory, found through its sweep.json."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    info = json.loads((out / "sweep.json").read_text())
    storage = info.get("storage") or f"sqlite:///{(out / 'study.db').resolve()}"
    return optuna.load_study(study_name=info["study_name"], storage=storage)


def tbxsweep_records(out: Path) -> list[dict[str, Any]]:
    """Every trial's "tbxsweep" user attr, plus its `number`, `state` and `params`."""
    recs = []
    for t in load_study(out).get_trials(deepcopy=False):
        rec = t.user_attrs.get("tbxsweep")
        if rec is None:
            continue
        recs.append({**rec, "number": t.number, "state": t.state.name, "params": dict(t.params)})
    return sorted(recs, key=lambda r: r["number"])


def first_started_line(res: RunResult) -> float | None:
    """Seconds from the command's start to its first `trial N started` line."""
    for t, line in res.lines:
        if re.match(r"trial \d+ started", line):
            return t - res.t0
    return None


# -- per-trial timings, whatever tool ran them ----------------------------------------------


@dataclass(frozen=True)
class TrialTiming:
    """When one trial happened, on one clock (time.time() on this host).

    dispatch: the tool handed the trial to a worker (after the sampler's ask).
    start, end: the training function was entered / returned.
    epochs: each epoch's duration, in order.
    first_epoch_end: when the first epoch ended (None if no epoch ran).
    worker: the process that ran it.
    """

    dispatch: float
    start: float
    end: float
    epochs: tuple[float, ...]
    first_epoch_end: float | None
    worker: int
    value: float | None = None


def timings_from_records(recs: list[dict[str, Any]]) -> list[TrialTiming]:
    """TrialTimings from tbxsweep's own trial records (start/end = run_trial in the worker)."""
    out = []
    for r in recs:
        if r.get("started_at") is None or r.get("ended_at") is None:
            continue
        out.append(
            TrialTiming(
                dispatch=float(r["dispatched_at"]),
                start=float(r["started_at"]),
                end=float(r["ended_at"]),
                epochs=tuple(float(s) for s in r.get("epoch_seconds") or ()),
                first_epoch_end=r.get("first_epoch_end"),
                worker=int(r.get("worker_pid") or 0),
                value=r.get("best_value"),
            )
        )
    return out


def steady_epoch(t: TrialTiming) -> float:
    """The trial's steady-state epoch: the median of epochs 2..N (0 with one epoch)."""
    rest = t.epochs[1:]
    return statistics.median(rest) if rest else 0.0


def summarize(timings: list[TrialTiming], *, wall_s: float, workers: int) -> dict[str, float]:
    """The figures compare.py reports for one tool (see its docstring for definitions)."""
    nan = float("nan")
    if not timings:
        return {"trials": 0, "wall_s": wall_s, "workers": workers}
    fixed = [
        t.first_epoch_end - t.dispatch - steady_epoch(t)
        for t in timings
        if t.first_epoch_end is not None
    ]
    by_worker: dict[int, list[TrialTiming]] = {}
    for t in sorted(timings, key=lambda t: t.dispatch):
        by_worker.setdefault(t.worker, []).append(t)
    warm = [
        t.first_epoch_end - t.dispatch - steady_epoch(t)
        for ts in by_worker.values()
        for t in ts[1:]
        if t.first_epoch_end is not None
    ]
    slot = []
    for ts in by_worker.values():
        prev_end: float | None = None
        for t in ts:
            begin = t.dispatch if prev_end is None else prev_end
            slot.append(t.end - begin - len(t.epochs) * steady_epoch(t))
            prev_end = t.end
    busy = sum(t.end - t.start for t in timings)
    first, last = min(t.dispatch for t in timings), max(t.end for t in timings)
    phase = last - first
    values = [t.value for t in timings if t.value is not None]
    return {
        "trials": len(timings),
        "workers": workers,
        "wall_s": wall_s,
        "trial_phase_s": phase,
        "overhead_s": statistics.mean(fixed) if fixed else nan,
        "overhead_warm_s": statistics.mean(warm) if warm else nan,
        "slot_overhead_s": statistics.mean(slot) if slot else nan,
        "steady_epoch_s": statistics.mean(steady_epoch(t) for t in timings),
        "utilisation": busy / (wall_s * workers) if wall_s > 0 and workers else nan,
        "utilisation_trial_phase": busy / (phase * workers) if phase > 0 and workers else nan,
        "best_value": max(values) if values else nan,
    }


# -- the pretrained base, shared by every tool ------------------------------------------------


def pretrain_base(cache: Path, pretrain_epochs: int = 8, seed: int = 0) -> Path:
    """Pretrain the digits base once into `cache` (in a subprocess: TF stays out of here).

    Uses tbxsweep's own `ensure_pretrained`, so the file is what `tbxsweep start` would
    have cached; returns its path, named as tbxsweep names it.
    """
    from tbxsweep.trial._digits import base_key

    path = cache / f"base-{base_key(pretrain_epochs, seed)}.keras"
    if path.exists():
        return path
    code = (
        "import sys; from pathlib import Path; "
        "from tbxsweep.trial._digits import ensure_pretrained; "
        "ensure_pretrained(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path), str(pretrain_epochs), str(seed)],
        env=bench_env(),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not path.exists():
        sys.exit(f"pretraining the base failed:\n{proc.stderr[-2000:]}")
    return path


def place_base(base: Path, out: Path) -> Path:
    """Copy the pretrained base where `tbxsweep start` looks for it in `out` (so it does not
    pretrain again). The name is the cache key tbxsweep computes for the same spec."""
    dest = out / "cache" / base.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(base, dest)
    return dest


def pretrained_by_tbxsweep(res: RunResult) -> bool:
    """The sweep pretrained its own base (the shared one was not found where it looked)."""
    return "pretraining the base model" in res.stdout


# -- printing ------------------------------------------------------------------------------


def fmt(v: Any, spec: str = ".3f") -> str:
    if isinstance(v, float):
        if v != v:  # NaN
            return "-"
        return format(v, spec)
    return str(v)


def print_table(
    rows: list[dict[str, Any]], columns: list[tuple[str, str]], out: Callable[[str], None] = print
) -> None:
    """A plain fixed-width table: `columns` is [(key, header)]."""
    cells = [[h for _, h in columns]] + [[fmt(r.get(k, "")) for k, _ in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for n, row in enumerate(cells):
        out(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            out("  ".join("-" * w for w in widths))


def slope(ys: Sequence[float]) -> float:
    """Least-squares slope of ys against 0..n-1 (per step); NaN with fewer than 2 points."""
    n = len(ys)
    if n < 2:
        return float("nan")
    mx = (n - 1) / 2
    my = sum(ys) / n
    num = sum((i - mx) * (y - my) for i, y in enumerate(ys))
    den = sum((i - mx) ** 2 for i in range(n))
    return num / den
