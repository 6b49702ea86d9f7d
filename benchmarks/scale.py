"""How tbxsweep copes with a long study: leaderboard export, restart, sampler on 2,000 trials.

    python benchmarks/scale.py                          # makes a 2,000-trial study first
    python benchmarks/scale.py --dir /tmp/big           # one made by make_big_study.py
    python benchmarks/scale.py --trials 200 --json      # a smaller study

Measures, on a study written by make_big_study.py (never modified: each step works on a
copy):
  cli_s            `tbxsweep --help`: the CLI's own start-up, to read the others against
  leaderboard_s    `tbxsweep leaderboard DIR --csv x.csv` (best of --repeat runs)
  first_dispatch_s `tbxsweep start` continuing the study with --extra more fake trials
                   (tests/fake_trials.py, --sleep s each, one worker): process start -> its
                   first `trial N started` line; the same on an empty study for comparison
  sched_ms         per-trial scheduling cost of those extra trials, (trial phase -
                   trials x sleep) / trials, phase = first start -> last end in the worker
                   (tell, leaderboard rewrite, pruner reads: the costs that grow with the study)
  ask_ms, tell_ms  the sampler tbxsweep builds for the spec (TPE, seed from the study's
                   progress), one ask and one tell on the big study, median of --asks;
                   get_trials_ms: one study.get_trials(), which the scheduler calls per ask
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    TESTS,
    bench_env,
    check,
    first_started_line,
    load_study,
    print_table,
    tbxsweep_records,
    tbxsweep_start,
)


def timed(args: list[str], repeat: int) -> float:
    """The best wall time of `repeat` runs of a command that must succeed."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.time()
        proc = subprocess.run(args, env=bench_env(TESTS), capture_output=True, text=True)
        best = min(best, time.time() - t0)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return best


def continue_study(
    big: Path, work: Path, extra: int, sleep: float, *, empty: bool = False
) -> dict[str, float]:
    """`tbxsweep start` adding `extra` fake trials to a copy of the study in `big` (or, with
    `empty`, to a new study of the same spec)."""
    if empty:
        work.mkdir(parents=True)
        shutil.copy2(big / "spec.yaml", work / "spec.yaml")
        before = finished = 0
    else:
        shutil.copytree(big, work)
        trials = load_study(work).get_trials(deepcopy=False)
        before = len(trials)
        finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    res = tbxsweep_start(
        work / "spec.yaml",
        work,
        [f"study.n_trials={finished + extra}", "resources.n_jobs=1"],
        env=bench_env(TESTS, FAKE_TRIAL_SLEEP=str(sleep)),
    )
    check(res, "tbxsweep start")
    new = [r for r in tbxsweep_records(work) if r["number"] >= before and r.get("ended_at")]
    phase = max(r["ended_at"] for r in new) - min(r["started_at"] for r in new)
    first_line = first_started_line(res)
    return {
        "existing": before,
        "first_dispatch_s": first_line if first_line is not None else float("nan"),
        "first_dispatch_record_s": min(r["dispatched_at"] for r in new) - res.t0,
        "sched_ms": 1000 * (phase - len(new) * sleep) / len(new),
        "wall_s": res.wall_s,
    }


def sampler_times(src: Path, work: Path, asks: int) -> dict[str, Any]:
    """Ask and tell with the sampler tbxsweep builds for this spec, on a copy of the study."""
    import optuna

    from tbxsweep.spec import load_spec
    from tbxsweep.study import distributions, open_study

    shutil.copytree(src, work)
    spec = load_spec(str(work / "spec.yaml"), (f"output.dir={work}",))
    dists = distributions(spec)
    study = open_study(spec, f"sqlite:///{(work / 'study.db').resolve()}", dists=dists)
    ask, tell, get = [], [], []
    for _ in range(asks):
        t0 = time.perf_counter()
        study.get_trials(deepcopy=False)
        t1 = time.perf_counter()
        trial = study.ask(dists)
        t2 = time.perf_counter()
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        t3 = time.perf_counter()
        get.append(t1 - t0)
        ask.append(t2 - t1)
        tell.append(t3 - t2)
    return {
        "sampler": type(study.sampler).__name__,
        "ask_ms": 1000 * statistics.median(ask),
        "tell_ms": 1000 * statistics.median(tell),
        "get_trials_ms": 1000 * statistics.median(get),
    }


def run(a: argparse.Namespace, root: Path) -> dict[str, Any]:
    big = a.dir
    made: dict[str, Any] = {}
    if big is None:
        import make_big_study

        big = root / "big"
        print(f"making a {a.trials}-trial study in {big} ...", file=sys.stderr)
        made = make_big_study.make(big, a.trials, 0)
    n = len(load_study(big).get_trials(deepcopy=False))
    cli = [sys.executable, "-m", "tbxsweep"]
    res: dict[str, Any] = {"dir": str(big), "trials": n, **({"made": made} if made else {})}
    res["cli_s"] = timed([*cli, "--help"], a.repeat)
    csv = root / "leaderboard.csv"
    res["leaderboard_s"] = timed([*cli, "leaderboard", str(big), "--csv", str(csv)], a.repeat)
    print("continuing the study ...", file=sys.stderr)
    res["big"] = continue_study(big, root / "continued", a.extra, a.sleep)
    res["empty"] = continue_study(big, root / "empty", a.extra, a.sleep, empty=True)
    res.update(sampler_times(big, root / "asked", a.asks))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=None, help="a study from make_big_study.py")
    ap.add_argument("--trials", type=int, default=2000, help="trials when making the study")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each CLI command (best)")
    ap.add_argument("--extra", type=int, default=10, help="fake trials added by `start`")
    ap.add_argument("--sleep", type=float, default=0.05, help="seconds per fake trial")
    ap.add_argument("--asks", type=int, default=5, help="asks timed on the big study")
    ap.add_argument("--out", type=Path, default=None, help="work dir (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    a = ap.parse_args()
    root = a.out or Path(tempfile.mkdtemp(prefix="tbxsweep-scale-"))
    for sub in ("continued", "empty", "asked", "leaderboard.csv"):
        p = root / sub
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    res = run(a, root)
    if a.json:
        print(json.dumps(res))
        return
    b, e = res["big"], res["empty"]
    print(f"study: {res['trials']} trials in {res['dir']}")
    rows = [
        {"what": "tbxsweep --help", "big": res["cli_s"], "empty": float("nan"), "unit": "s"},
        {
            "what": "leaderboard --csv",
            "big": res["leaderboard_s"],
            "empty": float("nan"),
            "unit": "s",
        },
        {
            "what": "start -> first dispatch",
            "big": b["first_dispatch_s"],
            "empty": e["first_dispatch_s"],
            "unit": "s",
        },
        {
            "what": "scheduling per trial",
            "big": b["sched_ms"],
            "empty": e["sched_ms"],
            "unit": "ms",
        },
        {
            "what": f"{res['sampler']} ask",
            "big": res["ask_ms"],
            "empty": float("nan"),
            "unit": "ms",
        },
        {"what": "tell", "big": res["tell_ms"], "empty": float("nan"), "unit": "ms"},
        {"what": "get_trials()", "big": res["get_trials_ms"], "empty": float("nan"), "unit": "ms"},
    ]
    print_table(
        rows,
        [
            ("what", "what"),
            ("big", f"{res['trials']} trials"),
            ("empty", "empty study"),
            ("unit", "unit"),
        ],
    )


if __name__ == "__main__":
    main()
