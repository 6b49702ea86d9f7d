"""The feature cache on and off, in one run: the same sweeps, the same trials, both ways.

    python benchmarks/feature_cache.py              # the full measurement (minutes: quiet machine)
    python benchmarks/feature_cache.py --quick      # a check of the script (small sizes)
    python benchmarks/feature_cache.py --json

1. MobileNetV2 (`weights: null`: ImageNet's compute, nothing downloaded) at 96x96 on a
   generated npz of 2,000 images in 5 classes (1,600 train / 400 validation),
   `finetune_unit: block`, finetune_depth 0-4, 12 trials (a fixed, enqueued list: both
   runs train the same configurations), 4 epochs, 2 CPU workers, no pruning; with
   `--runs N`, on and off alternate N times and the median run of each is compared.
2. The digits demo (sweeps/lr.yaml as shipped), on and off alternating three times
   (`--digits-runs`), the median run of each compared.

Each sweep runs with `task.feature_cache: true`, then `false`. Reported per run:
  wall_s             `tbxsweep start` end to end (worker start-up, cache builds included)
  epoch_s[d]         mean seconds per epoch of the trials at finetune_depth d (all epochs)
  cache_build_s      seconds the trials spent building caches (leaderboard column, summed)
  cache_mb           size of the cache's feature files on disk
  cached_trials      trials that trained on the cache
and, per trial, the value (val_accuracy) of both runs side by side with the largest
difference. Targets (issue 15): the MobileNetV2 sweep >= 4x faster end to end, head-only
(depth 0) epochs >= 20x faster, equal metrics; the digits demo not slower.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, check, print_table, tbxsweep_records, tbxsweep_start


def make_npz(path: Path, n: int, size: int, classes: int = 5, seed: int = 0) -> Path:
    """`n` learnable images: class c has a brighter channel band and a bright stripe."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(0, 120, (n, size, size, 3), dtype=np.uint8)
    band = size // classes
    for c in range(classes):
        rows = slice(c * band, (c + 1) * band)
        x[y == c, rows, :, c % 3] += 120
    order = rng.permutation(n)
    x, y = x[order], y[order]
    cut = n * 4 // 5
    np.savez(path, x_train=x[:cut], y_train=y[:cut], x_val=x[cut:], y_val=y[cut:])
    return path


def configs(n: int, depths: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` trials: every depth in turn, learning rates drawn once."""
    rng = random.Random(seed)
    return [
        {
            "learning_rate": round(10 ** rng.uniform(-3.5, -2), 6),
            "batch_size": 32,
            "finetune_depth": i % (depths + 1),
        }
        for i in range(n)
    ]


def mobilenet_spec(npz: Path, cfgs: list[dict[str, Any]], a: argparse.Namespace) -> dict:
    return {
        "study": {
            "name": "feature_cache",
            "direction": "maximize",
            "metric": "val_accuracy",
            "n_trials": len(cfgs),
            "sampler": {"name": "random", "seed": 0},
            "pruner": {"name": "none"},
            "enqueue": cfgs,  # run first, in this order: both runs train the same list
        },
        "search_space": {
            "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            "batch_size": {"type": "categorical", "choices": [32]},
            "finetune_depth": {"type": "int", "low": 0, "high": a.depths},
        },
        "task": {
            "dataset": {"npz": str(npz)},
            "base_model": "mobilenet_v2",
            "weights": None,
            "finetune_unit": "block",
            "epochs": a.epochs,
            "seed": 0,
        },
        "resources": {"gpus": a.gpus, "n_jobs": a.workers},
        "output": {"keep_models": 0},
    }


def run(spec_path: Path, out: Path, cache: bool, overrides: list[str]) -> dict[str, Any]:
    print(
        f"running {spec_path.stem} with the cache {'on' if cache else 'off'} ...", file=sys.stderr
    )
    res = tbxsweep_start(spec_path, out, [f"task.feature_cache={str(cache).lower()}", *overrides])
    check(res, f"{spec_path.stem} (cache {'on' if cache else 'off'})")
    recs = sorted(tbxsweep_records(out), key=lambda r: r["number"])
    by_depth: dict[int, list[float]] = {}
    for r in recs:
        by_depth.setdefault(int(r["params"].get("finetune_depth", -1)), []).extend(
            r.get("epoch_seconds") or []
        )
    files = [f for d in (out / "cache").glob("features-*/") for f in d.iterdir()]
    return {
        "cache": "on" if cache else "off",
        "wall_s": res.wall_s,
        "trials": len(recs),
        "cached_trials": sum(bool(r.get("feature_cache")) for r in recs),
        "cache_build_s": sum(float(r.get("cache_build_s") or 0.0) for r in recs),
        "cache_mb": sum(f.stat().st_size for f in files) / 2**20,
        "epoch_s": {d: sum(v) / len(v) for d, v in sorted(by_depth.items()) if v},
        "values": {r["number"]: r.get("best_value") for r in recs},
        "notice": next((ln for ln in res.stdout.splitlines() if "feature cache:" in ln), ""),
    }


def alternate(
    spec_path: Path, root: Path, name: str, n: int, overrides: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sweep `n` times with the cache on, then off, alternating; returns (on, off):
    the median run of each (by wall time), with every run's wall time (`wall_runs`) and
    the speed-up of each on/off pair (`pair_speedups`)."""
    runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for i in range(n):
        for cache in (True, False):
            out = (
                root / f"{name}-{'on' if cache else 'off'}"
                if n == 1
                else root / (f"{name}-{'on' if cache else 'off'}-{i}")
            )
            shutil.rmtree(out, ignore_errors=True)
            runs[cache].append(run(spec_path, out, cache, overrides))
    pairs = [off["wall_s"] / on["wall_s"] for on, off in zip(runs[True], runs[False], strict=True)]
    medians = []
    for cache in (True, False):
        ordered = sorted(runs[cache], key=lambda r: r["wall_s"])
        median = {**ordered[len(ordered) // 2], "wall_runs": [r["wall_s"] for r in runs[cache]]}
        medians.append(median | {"pair_speedups": pairs})
    return medians[0], medians[1]


def compare(name: str, on: dict[str, Any], off: dict[str, Any]) -> dict[str, Any]:
    diffs = [
        abs(on["values"][k] - off["values"][k])
        for k in on["values"]
        if on["values"][k] is not None and off["values"].get(k) is not None
    ]
    head = off["epoch_s"].get(0, float("nan")) / on["epoch_s"].get(0, float("nan"))
    return {
        "sweep": name,
        "speedup": off["wall_s"] / on["wall_s"],
        "head_epoch_speedup": head,
        "max_value_diff": max(diffs) if diffs else float("nan"),
        "on": on,
        "off": off,
    }


def print_report(report: dict[str, Any]) -> None:
    for c in report["sweeps"]:
        print(f"\n{c['sweep']}: {c['on']['notice']}")
        rows = [c["on"], c["off"]]
        depths = sorted({d for r in rows for d in r["epoch_s"]})
        for r in rows:
            for d in depths:
                r[f"epoch_s_{d}"] = r["epoch_s"].get(d, float("nan"))
        print_table(
            rows,
            [
                ("cache", "cache"),
                ("wall_s", "wall s"),
                ("cached_trials", "cached trials"),
                ("cache_build_s", "build s"),
                ("cache_mb", "cache MB"),
                *[(f"epoch_s_{d}", f"s/epoch d={d}") for d in depths],
            ],
        )
        if len(c["on"]["wall_runs"]) > 1:
            print(
                "wall s of every run (median shown above): on "
                + ", ".join(f"{w:.1f}" for w in c["on"]["wall_runs"])
                + "; off "
                + ", ".join(f"{w:.1f}" for w in c["off"]["wall_runs"])
                + "; speed-up of each pair "
                + ", ".join(f"{s:.2f}x" for s in c["on"]["pair_speedups"])
            )
        print(
            f"speed-up {c['speedup']:.2f}x end to end, {c['head_epoch_speedup']:.1f}x per "
            f"head-only epoch; largest val_accuracy difference {c['max_value_diff']:.2e}"
        )
        table = [
            {"trial": k, "on": v, "off": c["off"]["values"].get(k)}
            for k, v in sorted(c["on"]["values"].items())
        ]
        print_table(table, [("trial", "trial"), ("on", "value (cache on)"), ("off", "value (off)")])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a check of the script")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--depths", type=int, default=4, help="finetune_depth 0..this")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--gpus", default="none", help="resources.gpus (gpu.py passes auto)")
    ap.add_argument(
        "--runs", type=int, default=1, help="MobileNetV2 sweeps each way, alternating (median)"
    )
    ap.add_argument("--no-digits", action="store_true", help="skip the digits demo")
    ap.add_argument(
        "--digits-runs", type=int, default=3, help="digits demo runs each way (median compared)"
    )
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="spec override")
    ap.add_argument("--out", type=Path, default=None, help="work dir (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    a = ap.parse_args()
    if a.quick:
        a.images, a.size, a.trials, a.epochs, a.depths = 300, 64, 4, 2, 1
        a.digits_runs = 1
    root = a.out or Path(tempfile.mkdtemp(prefix="tbxsweep-feature-cache-"))
    root.mkdir(parents=True, exist_ok=True)
    npz = make_npz(root / "images.npz", a.images, a.size)
    cfgs = configs(a.trials, a.depths)
    spec_path = root / "mobilenet_v2.yaml"
    spec_path.write_text(yaml.safe_dump(mobilenet_spec(npz, cfgs, a), sort_keys=False))
    # This machine's speed drifts by up to 2x within minutes: with `--runs N` the sweeps
    # with the cache on and off alternate N times, and the median run of each is compared.
    mobilenet = alternate(spec_path, root, "mobilenet", a.runs, a.overrides)
    sweeps = [compare(f"MobileNetV2 {a.size}x{a.size}, blocks", *mobilenet)]
    if not a.no_digits:
        demo = REPO / "sweeps" / "lr.yaml"
        extra = ["study.n_trials=4", "task.epochs=2"] if a.quick else []
        # Both runs take the same path (the cache is off for `base_model: pretrain`): the
        # order and one slow run must not decide "not slower".
        digits = alternate(demo, root, "digits", a.digits_runs, [*extra, *a.overrides])
        sweeps.append(compare("digits demo (sweeps/lr.yaml)", *digits))
    report = {
        "images": a.images,
        "size": a.size,
        "trials": a.trials,
        "epochs": a.epochs,
        "workers": a.workers,
        "sweeps": sweeps,
    }
    if a.json:
        print(json.dumps(report, default=str))
        return
    print(
        f"{a.images} images of {a.size}x{a.size}, {a.trials} trials x {a.epochs} epochs, "
        f"depths 0-{a.depths}, {a.workers} workers"
    )
    print_report(report)


if __name__ == "__main__":
    main()
