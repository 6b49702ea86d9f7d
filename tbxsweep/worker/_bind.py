"""Claim one slot per worker process and pin the process to its device before TF loads."""

from __future__ import annotations

import fcntl
import os
import signal
import time
from pathlib import Path

from tbxsweep.errors import FatalError
from tbxsweep.jobs import SlotPlan

_bound: tuple[str, str, int] | None = None  # (slots_dir, device, fd)


def bind_slot(plan: SlotPlan, wait_s: float = 60.0) -> str:
    """Claim a free slot of `plan` for this process (once) and return its device label.

    The CUDA device and TF thread counts are set in the environment; TensorFlow reads them
    when it is first imported, which must happen after this call.

    Raises:
        FatalError: no slot became free within `wait_s` seconds.
    """
    global _bound
    if _bound is not None and _bound[0] == plan.slots_dir:
        return _bound[1]
    if not plan.slots_dir:
        # A Dask worker: its operator pinned it (CUDA_VISIBLE_DEVICES, --resources GPU=1).
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        label = f"gpu:{visible}" if visible and not visible.startswith("-") else "cpu"
        os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
        _bound = ("", label, -1)
        return label
    deadline = time.monotonic() + wait_s
    while True:
        for i, dev in enumerate(plan.devices):
            fd = os.open(Path(plan.slots_dir) / f"slot-{i}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            _pin(dev, plan.threads_per_worker)
            # Ctrl-C reaches every process of the terminal's group: workers leave it to the
            # orchestrator, which lets running trials finish within resources.grace_s.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            label = f"gpu:{dev}" if dev else "cpu"
            _bound = (plan.slots_dir, label, fd)
            return label
        if time.monotonic() > deadline:
            raise FatalError(f"no free worker slot in {plan.slots_dir} after {wait_s:.0f} s")
        time.sleep(0.05)


def _pin(device: str, threads: int) -> None:
    if "CUDA_VISIBLE_DEVICES" not in os.environ:
        # The slot's id came from nvidia-smi or the spec, which number GPUs in PCI bus
        # order; CUDA's default order (fastest first) may differ. Ids taken from the
        # orchestrator's own CUDA_VISIBLE_DEVICES keep the order they were written in.
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    # The id as given (an index, "GPU-<uuid>" or "MIG-<uuid>"): a position among the
    # visible GPUs would name another GPU once this variable is set. "" hides every GPU
    # from TensorFlow: CPU workers must not grab GPU memory.
    os.environ["CUDA_VISIBLE_DEVICES"] = device
    os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(max(1, min(2, threads)))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
