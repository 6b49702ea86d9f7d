"""Memory of one reused tbxsweep worker across many digits trials (the Keras leak check).

    python benchmarks/memory.py                      # 50 trials of 2 epochs, one worker
    python benchmarks/memory.py --trials 100 --set task.epochs=6 --json

Runs `tbxsweep start sweeps/lr.yaml` with one worker (`resources.n_jobs=1`, no pruning,
the base pretrained beforehand) while sampling the RSS of every process of the sweep every
0.1 s (psutil; the same figure as VmRSS in /proc/<pid>/status). After the sweep, the
worker is the `worker_pid` of the trial records, and for each trial:
  rss_between_mb  the lowest RSS of the worker from the end of this trial to the end of
                  the next trial's first epoch: the floor the process returns to between
                  models. A leak raises this floor trial after trial. (For the last trial:
                  the 0.5 s after it, if the worker is still alive then.)
  rss_peak_mb     the highest RSS while the trial ran.
The slope is a least-squares fit in MB per trial, over all trials and over the second
half (after allocator warm-up).
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
    slope,
    tbxsweep_records,
    tbxsweep_start,
)

MB = 2**20


def measure(a: argparse.Namespace, root: Path) -> dict[str, Any]:
    from tbxsweep.spec import load_spec

    overrides = [
        f"study.n_trials={a.trials}",
        "study.pruner.name=none",
        "resources.n_jobs=1",
        "resources.gpus=none",
        "task.epochs=2",
        *a.overrides,
    ]
    out = root / "sweep"
    shutil.rmtree(out, ignore_errors=True)  # a fresh study, also when --out is reused
    spec = load_spec(a.spec, tuple([*overrides, f"output.dir={out}"]))
    if spec.task.train is None and spec.task.base_model == "pretrain":
        base = pretrain_base(root / "cache", spec.task.pretrain_epochs, spec.task.seed)
        place_base(base, out)
    res = tbxsweep_start(a.spec, out, overrides, keep_samples=True, every_s=0.1)
    check(res, "the sweep")
    recs = [r for r in tbxsweep_records(out) if r.get("ended_at")]
    pids = {r["worker_pid"] for r in recs}
    if len(pids) != 1:
        print(
            f"warning: trials ran in {len(pids)} worker processes {sorted(pids)}", file=sys.stderr
        )
    rows = []
    for i, r in enumerate(recs):
        pid = r["worker_pid"]
        nxt = recs[i + 1] if i + 1 < len(recs) else None
        # After the last trial the worker is shut down: look only briefly, and skip the
        # zero RSS of a process that is exiting.
        stop = (nxt.get("first_epoch_end") or nxt["ended_at"]) if nxt else r["ended_at"] + 0.5
        between = [
            rss for t, p, rss in res.samples if p == pid and r["ended_at"] <= t <= stop and rss
        ]
        during = [
            rss for t, p, rss in res.samples if p == pid and r["started_at"] <= t <= r["ended_at"]
        ]
        rows.append(
            {
                "trial": r["number"],
                "worker_pid": pid,
                "rss_between_mb": min(between) / MB if between else float("nan"),
                "rss_peak_mb": max(during) / MB if during else float("nan"),
                "duration_s": r["ended_at"] - r["started_at"],
            }
        )
    floor = [r["rss_between_mb"] for r in rows if r["rss_between_mb"] == r["rss_between_mb"]]
    peak = [r["rss_peak_mb"] for r in rows if r["rss_peak_mb"] == r["rss_peak_mb"]]
    half = len(floor) // 2
    return {
        "trials": len(rows),
        "workers": len(pids),
        "wall_s": res.wall_s,
        "series": rows,
        "slope_between_mb_per_trial": slope(floor),
        "slope_between_second_half_mb_per_trial": slope(floor[half:]),
        "slope_peak_mb_per_trial": slope(peak),
        "first_between_mb": floor[0] if floor else float("nan"),
        "last_between_mb": floor[-1] if floor else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(REPO / "sweeps" / "lr.yaml"))
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="spec override")
    ap.add_argument("--out", type=Path, default=None, help="work dir (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    a = ap.parse_args()
    root = a.out or Path(tempfile.mkdtemp(prefix="tbxsweep-memory-"))
    res = measure(a, root)
    if a.json:
        print(json.dumps(res))
        return
    print(f"one worker, {res['trials']} trials, {res['wall_s']:.1f} s")
    print_table(
        res["series"],
        [
            ("trial", "trial"),
            ("rss_between_mb", "RSS between trials, MB"),
            ("rss_peak_mb", "peak RSS in trial, MB"),
            ("duration_s", "trial s"),
        ],
    )
    print(
        f"slope: {res['slope_between_mb_per_trial']:+.2f} MB/trial between trials "
        f"({res['slope_between_second_half_mb_per_trial']:+.2f} over the second half), "
        f"{res['slope_peak_mb_per_trial']:+.2f} MB/trial at the peaks; "
        f"floor {res['first_between_mb']:.0f} -> {res['last_between_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()
