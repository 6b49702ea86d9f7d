"""How many workers, on which devices: GPUs x trials_per_gpu slots, or CPU workers."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from tbxsweep.errors import SpecError
from tbxsweep.jobs import SlotPlan
from tbxsweep.spec import ResourcesSpec

WORKER_MEMORY_BYTES = 1_500_000_000  # one TF worker with a small model, measured ~0.9-1.2 GB


@dataclass(frozen=True)
class DevicePlan:
    """The resolved devices of a sweep and any warning the user should see.

    `gpus` holds each GPU's id exactly as CUDA_VISIBLE_DEVICES takes it (an index like
    "2", a UUID like "GPU-8932f937-…" or a MIG id like "MIG-…"); `devices` holds one of
    them per worker slot ("" for a CPU worker), written unchanged into that worker's
    CUDA_VISIBLE_DEVICES.
    """

    gpus: tuple[str, ...]
    devices: tuple[str, ...]
    threads_per_worker: int
    warning: str | None = None


def visible_ids(env: str) -> tuple[str, ...]:
    """The device ids a CUDA_VISIBLE_DEVICES value lets a process use, as written there.

    CUDA reads the list up to its first invalid entry: "-1" (or any "-…") hides every GPU
    after it, so "0,-1,1" is GPU 0 alone and "-1" is none.
    """
    ids: list[str] = []
    for part in env.split(","):
        part = part.strip()
        if not part or part.startswith("-"):
            break
        ids.append(part)
    return tuple(ids)


def detect_gpus() -> tuple[str, ...]:
    """The machine's GPU ids, found without initialising CUDA in this process.

    `CUDA_VISIBLE_DEVICES` wins when set: its ids (indices, UUIDs or MIG ids) are the GPUs
    this process was given, and they are passed through unchanged. A position among them
    would name a different GPU once a worker sets its own CUDA_VISIBLE_DEVICES. Otherwise
    `nvidia-smi` is asked for its indices; no driver means no GPUs.
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return visible_ids(env)
    return tuple(index for index, _ in _smi_gpus())


def _smi_gpus() -> list[tuple[str, str]]:
    """(index, UUID) of each GPU nvidia-smi lists, in its (PCI bus) order; [] without it."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index,uuid", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [[c.strip() for c in line.split(",")] for line in out.splitlines()]
    return [(r[0], r[1] if len(r) > 1 else "") for r in rows if r and r[0].isdigit()]


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
    """Resolve `gpus`, `trials_per_gpu` and `n_jobs` into one device per worker slot.

    Raises:
        SpecError: `resources.gpus` lists a GPU that CUDA_VISIBLE_DEVICES does not give
            this process (a worker would otherwise use a GPU that was not allocated).
    """
    cores = cpu_count()
    warning = None
    if resources.gpus == "none":
        gpus: tuple[str, ...] = ()
    elif resources.gpus == "auto":
        gpus = detect_gpus()
    else:
        gpus = tuple(str(g) for g in resources.gpus)
        warning = _check_listed(gpus)
    if gpus:
        devices = tuple(g for g in gpus for _ in range(resources.trials_per_gpu))
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


def _check_listed(gpus: tuple[str, ...]) -> str | None:
    """Refuse listed GPUs outside CUDA_VISIBLE_DEVICES; a warning for ones nvidia-smi lacks."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        allowed = visible_ids(env)
        outside = [g for g in gpus if g not in allowed]
        if outside:
            raise SpecError(
                f"resources.gpus: every GPU must be one CUDA_VISIBLE_DEVICES gives this "
                f"process ({', '.join(allowed) or 'none'}), got {', '.join(outside)} "
                "(list those ids, or use gpus: auto)"
            )
        return None
    known = {i for pair in _smi_gpus() for i in pair if i}
    # MIG ids are not in nvidia-smi's GPU query: leave them to CUDA.
    missing = [g for g in gpus if g not in known and not g.startswith("MIG-")]
    if not missing:
        return None
    return (
        f"resources.gpus lists {_ids(gpus)} but GPU(s) {_ids(tuple(missing))} are not "
        "visible on this machine: those slots keep their GPU id but their trials will run "
        "on the CPU"
    )


def _ids(gpus: tuple[str, ...]) -> str:
    """[0, 5] for indices, as the spec writes them; ['GPU-…'] for UUIDs."""
    return "[" + ", ".join(g if g.isdigit() else repr(g) for g in gpus) + "]"


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
