"""Time to a good model with and without pruning: none vs median vs hyperband.

    python benchmarks/pruning.py                         # the demo sweep, 20 trials each
    python benchmarks/pruning.py --trials 30 --pruners none,median,hyperband,successive_halving

Runs `tbxsweep start sweeps/lr.yaml` once per pruner (`--set study.pruner.name=...`), each
in a fresh output directory with the same sampler seed, the same n_trials and the same base
(pretrained once beforehand and copied into each sweep's cache). Then, from the trials'
records:
  target        (1 - tolerance) x the best validation accuracy any run reached (a completed
                trial's best epoch); tolerance 1% by default
  reach_s       process start -> end of the first completed trial at or above the target
                ("never" when no trial of that run reached it)
  wall_s        process start -> exit
  best_value    the run's best completed trial
  epochs_run    epochs trained in total (what pruning saves)
TPE sees pruned trials too, so runs sample differently after the first pruned trial:
the comparison is of whole sweeps, not of identical trial sequences.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    REPO,
    check,
    place_base,
    pretrain_base,
    print_table,
    tbxsweep_records,
    tbxsweep_start,
)


def run(a: argparse.Namespace, root: Path) -> dict[str, Any]:
    from tbxsweep.spec import load_spec

    common = [
        f"study.n_trials={a.trials}",
        f"study.sampler.seed={a.seed}",
        "resources.gpus=none",
        *a.overrides,
    ]
    spec = load_spec(a.spec, tuple(common))
    base = pretrain_base(root / "cache", spec.task.pretrain_epochs, spec.task.seed)
    runs = []
    for pruner in a.pruners:
        out = root / pruner
        shutil.rmtree(out, ignore_errors=True)
        place_base(base, out)
        print(f"running pruner {pruner} ...", file=sys.stderr)
        res = tbxsweep_start(a.spec, out, [*common, f"study.pruner.name={pruner}"])
        check(res, f"the sweep with pruner {pruner}")
        recs = tbxsweep_records(out)
        runs.append({"pruner": pruner, "t0": res.t0, "wall_s": res.wall_s, "recs": recs})
    done = [
        r["best_value"]
        for run in runs
        for r in run["recs"]
        if r["state"] == "COMPLETE" and r.get("best_value") is not None
    ]
    best = max(done) if done else float("nan")
    target = (1 - a.tolerance) * best
    rows = []
    for run in runs:
        recs = run["recs"]
        complete = [r for r in recs if r["state"] == "COMPLETE" and r.get("best_value") is not None]
        hits = [r["ended_at"] - run["t0"] for r in complete if r["best_value"] >= target]
        rows.append(
            {
                "pruner": run["pruner"],
                "reach_s": min(hits) if hits else float("nan"),
                "wall_s": run["wall_s"],
                "best_value": max((r["best_value"] for r in complete), default=float("nan")),
                "complete": len(complete),
                "pruned": sum(r["state"] == "PRUNED" for r in recs),
                "failed": sum(r["state"] == "FAIL" for r in recs),
                "epochs_run": sum(int(r.get("epochs_run") or 0) for r in recs),
            }
        )
    return {
        "trials": a.trials,
        "seed": a.seed,
        "tolerance": a.tolerance,
        "best_value": best,
        "target": target,
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(REPO / "sweeps" / "lr.yaml"))
    ap.add_argument("--pruners", default="none,median,hyperband")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0, help="study.sampler.seed, the same for all")
    ap.add_argument("--tolerance", type=float, default=0.01, help="relative, 0.01 = within 1%%")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="spec override")
    ap.add_argument("--out", type=Path, default=None, help="work dir (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    a = ap.parse_args()
    a.pruners = a.pruners.split(",")
    root = a.out or Path(tempfile.mkdtemp(prefix="tbxsweep-pruning-"))
    root.mkdir(parents=True, exist_ok=True)
    res = run(a, root)
    if a.json:
        print(json.dumps(res))
        return
    print(
        f"{res['trials']} trials per run, sampler seed {res['seed']}; target "
        f"{res['target']:.4f} = {1 - res['tolerance']:.2f} x best {res['best_value']:.4f}"
    )
    rows = [
        {**r, "reach_s": r["reach_s"] if r["reach_s"] == r["reach_s"] else "never"}
        for r in res["rows"]
    ]
    print_table(
        rows,
        [
            ("pruner", "pruner"),
            ("reach_s", "time to target, s"),
            ("wall_s", "wall s"),
            ("best_value", "best"),
            ("complete", "complete"),
            ("pruned", "pruned"),
            ("failed", "failed"),
            ("epochs_run", "epochs trained"),
        ],
    )


if __name__ == "__main__":
    main()
