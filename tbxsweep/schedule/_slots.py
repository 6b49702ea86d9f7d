"""How many workers, on which devices: GPUs x trials_per_gpu slots, or CPU workers."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from tbxsweep.jobs import SlotPlan
from tbxsweep.spec import ResourcesSpec

WORKER_MEMORY_BYTES = 1_500_000_000  # one TF worker with a small model, measured ~0.9-1.2 GB


@dataclass(frozen=True)
class DevicePlan:
    """The resolved devices of a sweep and any warning the user should see."""

    gpus: tuple[int, ...]
    devices: tuple[str, ...]
    threads_per_worker: int
    warning: str | None = None


def detect_gpus() -> tuple[int, ...]:
    """The machine's GPU ids, found without initialising CUDA in this process.

    `CUDA_VISIBLE_DEVICES` wins when set (its ids are what workers may use); otherwise
    `nvidia-smi` is asked; no driver means no GPUs.
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [p.strip() for p in env.split(",") if p.strip()]
        if ids and all(p.isdigit() for p in ids):
            return tuple(int(p) for p in ids)
        if ids and not any(p.startswith("-") for p in ids):
            return tuple(range(len(ids)))  # UUIDs: address them by position
        return ()
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(int(line) for line in out.split() if line.strip().isdigit())


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def auto_n_jobs(cores: int, available_memory: int | None) -> int:
    """Workers for a CPU sweep: one per core on small machines, one per two cores beyond 4,
    never more than memory allows."""
    n = cores if cores <= 4 else cores // 2
    if available_memory is not None:
        n = min(n, max(1, available_memory // WORKER_MEMORY_BYTES))
    return max(1, n)


def plan_devices(resources: ResourcesSpec, n_trials: int) -> DevicePlan:
    """Resolve `gpus`, `trials_per_gpu` and `n_jobs` into one device per worker slot."""
    cores = cpu_count()
    warning = None
    if resources.gpus == "none":
        gpus: tuple[int, ...] = ()
    elif resources.gpus == "auto":
        gpus = detect_gpus()
    else:
        gpus = tuple(resources.gpus)
        visible = detect_gpus()
        missing = [g for g in gpus if g not in visible]
        if missing:
            warning = (
                f"resources.gpus lists {list(gpus)} but GPU(s) {missing} are not visible on this "
                "machine: those slots keep their GPU id but their trials will run on the CPU"
            )
    if gpus:
        devices = tuple(str(g) for g in gpus for _ in range(resources.trials_per_gpu))
        threads = max(1, cores // len(devices))
    else:
        if resources.n_jobs == "auto":
            n = auto_n_jobs(cores, _available_memory())
            n = min(n, n_trials)
        else:
            n = int(resources.n_jobs)
        devices = ("",) * n
        threads = max(1, cores // n)
    return DevicePlan(gpus=gpus, devices=devices, threads_per_worker=threads, warning=warning)


def slot_plan(plan: DevicePlan) -> SlotPlan:
    """A fresh directory of slot lock files for this orchestrator's workers."""
    slots_dir = tempfile.mkdtemp(prefix="tbxsweep-slots-")
    return SlotPlan(
        slots_dir=slots_dir, devices=plan.devices, threads_per_worker=plan.threads_per_worker
    )


def _available_memory() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        return None
