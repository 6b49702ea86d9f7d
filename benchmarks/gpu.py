"""Trials per minute on the GPU(s) with 1, 2 and 4 trials sharing each GPU.

    python benchmarks/gpu.py                       # prints a SKIP line when no GPU is visible
    python benchmarks/gpu.py --per-gpu 1,2,4 --trials 16 --epochs 6 --json

For each `resources.trials_per_gpu` value, runs `tbxsweep start` on the built-in digits
task with `gpus: auto` (every visible GPU), no pruning, and the same fixed list of
configurations as compare.py (bench_task.py; enqueued on the study, so every run trains
the same models), the base pretrained once beforehand and copied into each sweep's cache.
  trials_per_min        trials / trial phase x 60; trial phase = first dispatch -> last end
  trials_per_min_wall   trials / process wall time x 60 (worker start-up and CUDA
                        initialisation included)
  speedup               trials_per_min / that of the first --per-gpu value
  trial_s               mean trial duration in its worker
  gpu_util_pct          mean of nvidia-smi's utilisation.gpu (over the GPUs, sampled
                        once a second while the sweep runs, start-up included)
  gpu_mem_peak_mb       peak of nvidia-smi's memory.used, summed over the GPUs
  devices               the devices the trials recorded (`gpu:<id>`: the worker's slot; a
                        GPU that TensorFlow cannot use still reads gpu:<id>, hence the
                        TensorFlow check before anything runs)
Then the feature cache on and off (feature_cache.py's MobileNetV2 sweep, one worker per
GPU; `--no-cache-row` skips it).
It needs TensorFlow with its CUDA libraries (`pip install -e ".[cuda]"`); when nvidia-smi
sees GPUs and TensorFlow does not, it says so and skips. A few minutes on one GPU.
`--dry-run-on-cpu` runs the same steps with `resources.gpus=[0]` where no GPU is visible
(tbxsweep then warns and runs on the CPU): a check of the script, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_task
from _common import (
    bench_env,
    check,
    place_base,
    pretrain_base,
    print_table,
    tbxsweep_records,
    tbxsweep_start,
)


def visible_gpus() -> list[str]:
    """GPU names as nvidia-smi lists them (honouring CUDA_VISIBLE_DEVICES), or []."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None and (not cvd.strip() or cvd.strip().startswith("-")):
        return []
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index,name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = [line.strip() for line in out.splitlines() if line.strip()]
    if cvd:
        keep = {p.strip() for p in cvd.split(",")}
        gpus = [g for g in gpus if g.split(",")[0].strip() in keep] or gpus[: len(keep)]
    return gpus


def tf_gpus() -> int:
    """How many GPUs TensorFlow sees (in a subprocess: none of TF in this one)."""
    code = "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"
    proc = subprocess.run(
        [sys.executable, "-c", code], env=bench_env(), capture_output=True, text=True
    )
    try:
        return int(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return 0


class GpuSampler:
    """Samples nvidia-smi's utilisation and memory of every visible GPU once a second."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.util: list[float] = []
        self.mem_mb: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GpuSampler:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        args = [
            "nvidia-smi",
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
        ]
        while not self._stop.wait(1.0):
            try:
                out = subprocess.run(args, capture_output=True, text=True, timeout=10).stdout
            except (OSError, subprocess.SubprocessError):
                continue
            rows = [line.split(",") for line in out.splitlines() if "," in line]
            try:
                self.util.append(sum(float(u) for u, _ in rows) / max(1, len(rows)))
                self.mem_mb.append(sum(float(m) for _, m in rows))
            except ValueError:
                continue


def run_one(
    per_gpu: int, root: Path, base: Path, a: argparse.Namespace, gpus: str
) -> dict[str, Any]:
    cfgs = bench_task.configs(a.trials)
    out = root / f"per-gpu-{per_gpu}"
    shutil.rmtree(out, ignore_errors=True)
    spec = bench_task.sweep_spec(
        "gpu",
        cfgs,
        task={"epochs": a.epochs, "seed": 0, "pretrain_epochs": a.pretrain_epochs},
        resources={"gpus": gpus, "trials_per_gpu": per_gpu},
        out=out,
    )
    spec_path = root / f"spec-{per_gpu}.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    place_base(base, out)
    print(f"running trials_per_gpu={per_gpu} ...", file=sys.stderr)
    with GpuSampler(gpus == "auto") as smi:
        res = tbxsweep_start(spec_path, out, a.overrides)
    check(res, f"the sweep with trials_per_gpu={per_gpu}")
    recs = [r for r in tbxsweep_records(out) if r.get("ended_at")]
    phase = max(r["ended_at"] for r in recs) - min(r["dispatched_at"] for r in recs)
    devices = Counter(str(r.get("device")) for r in recs)
    return {
        "trials_per_gpu": per_gpu,
        "workers": len({r["worker_pid"] for r in recs}),
        "trials": len(recs),
        "trials_per_min": 60 * len(recs) / phase,
        "trials_per_min_wall": 60 * len(recs) / res.wall_s,
        "trial_s": sum(r["ended_at"] - r["started_at"] for r in recs) / len(recs),
        "wall_s": res.wall_s,
        "peak_rss_mb": res.peak_rss_mb,
        "gpu_util_pct": sum(smi.util) / len(smi.util) if smi.util else float("nan"),
        "gpu_mem_peak_mb": max(smi.mem_mb) if smi.mem_mb else float("nan"),
        "devices": " ".join(f"{d}x{n}" for d, n in sorted(devices.items())),
    }


def cache_row(root: Path, gpus: Any, quick: bool) -> dict[str, Any]:
    """The feature cache on and off (feature_cache.py's MobileNetV2 sweep) on the GPU(s):
    one worker per GPU. Expected: the frozen base is a smaller share of a GPU's epoch than
    of a CPU's, but the cached epochs skip it and the images' resize and preprocessing on
    the host, so the head-only trials gain most."""
    import feature_cache as fc

    ns = argparse.Namespace(
        images=300 if quick else 2000,
        size=64 if quick else 96,
        trials=4 if quick else 12,
        epochs=2 if quick else 4,
        depths=1 if quick else 4,
        workers=1,
        gpus=gpus,
    )
    npz = fc.make_npz(root / "cache-images.npz", ns.images, ns.size)
    cfgs = fc.configs(ns.trials, ns.depths)
    spec_path = root / "cache-mobilenet_v2.yaml"
    spec_path.write_text(yaml.safe_dump(fc.mobilenet_spec(npz, cfgs, ns), sort_keys=False))
    runs = {}
    for cache in (True, False):
        out = root / f"cache-{'on' if cache else 'off'}"
        shutil.rmtree(out, ignore_errors=True)
        runs[cache] = fc.run(spec_path, out, cache, [])
    return fc.compare("MobileNetV2 on the GPU", runs[True], runs[False])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-gpu", default="1,2,4", help="trials_per_gpu values")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--pretrain-epochs", type=int, default=8)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="spec override")
    ap.add_argument("--dry-run-on-cpu", action="store_true", help="check the script without a GPU")
    ap.add_argument("--out", type=Path, default=None, help="work dir (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--no-cache-row", action="store_true", help="skip the feature cache on/off")
    a = ap.parse_args()
    per_gpu = [int(k) for k in a.per_gpu.split(",")]
    names = visible_gpus()
    gpus: Any = "auto"
    if not names:
        if not a.dry_run_on_cpu:
            print("SKIP gpu.py: no NVIDIA GPU visible (nvidia-smi absent or lists none)")
            return
        gpus = [0]
    elif tf_gpus() == 0:
        print(
            f"SKIP gpu.py: nvidia-smi lists {len(names)} GPU(s) but TensorFlow sees none; "
            "install its CUDA libraries: pip install -e '.[cuda]' (tensorflow[and-cuda])"
        )
        return
    root = a.out or Path(tempfile.mkdtemp(prefix="tbxsweep-gpu-"))
    root.mkdir(parents=True, exist_ok=True)
    base = pretrain_base(root / "cache", a.pretrain_epochs)
    rows = [run_one(k, root, base, a, gpus) for k in per_gpu]
    for r in rows:
        r["speedup"] = r["trials_per_min"] / rows[0]["trials_per_min"]
    report = {
        "gpus": names or ["none (dry run on the CPU)"],
        "trials": a.trials,
        "epochs": a.epochs,
        "rows": rows,
        "feature_cache": None if a.no_cache_row else cache_row(root, gpus, a.dry_run_on_cpu),
    }
    if a.json:
        print(json.dumps(report, default=str))
        return
    print(f"GPUs: {'; '.join(report['gpus'])}; {a.trials} trials x {a.epochs} epochs per run")
    print_table(
        rows,
        [
            ("trials_per_gpu", "trials_per_gpu"),
            ("workers", "workers"),
            ("trials_per_min", "trials/min"),
            ("speedup", "speed-up"),
            ("trials_per_min_wall", "trials/min (wall)"),
            ("trial_s", "trial s"),
            ("peak_rss_mb", "host RSS MB"),
            ("gpu_util_pct", "GPU util %"),
            ("gpu_mem_peak_mb", "GPU mem MB"),
            ("devices", "devices"),
        ],
    )
    if report["feature_cache"] is not None:
        import feature_cache as fc

        fc.print_report({"sweeps": [report["feature_cache"]]})


if __name__ == "__main__":
    main()
