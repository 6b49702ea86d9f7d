"""Scheduling: the orchestrator of a sweep (`run_sweep`), worker slots over GPUs or CPU
cores, the worker pools, the ask/tell loop and its parts (repeats, crashes, liveness, books),
and the held-out evaluation at the end.

Each name is imported from its module on first use: `tbxsweep start` starts its workers
(`_slots`, `_pool`) before it imports the loop (`_loop`: Optuna, pandas), so that the
workers' TensorFlow import and the orchestrator's own imports overlap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tbxsweep.schedule._books import SweepCounts
    from tbxsweep.schedule._loop import Scheduler
    from tbxsweep.schedule._pool import DaskPool, LokyPool, release_workers
    from tbxsweep.schedule._recover import recover_stale
    from tbxsweep.schedule._slots import DevicePlan, detect_gpus, plan_devices, slot_plan
    from tbxsweep.schedule._stop import StopRequest, handle_signals
    from tbxsweep.schedule._sweep import Workers, check_spec, run_sweep, start_workers

_MODULE_OF = {
    "Scheduler": "_loop",
    "SweepCounts": "_books",
    "DaskPool": "_pool",
    "LokyPool": "_pool",
    "release_workers": "_pool",
    "recover_stale": "_recover",
    "DevicePlan": "_slots",
    "detect_gpus": "_slots",
    "plan_devices": "_slots",
    "slot_plan": "_slots",
    "StopRequest": "_stop",
    "handle_signals": "_stop",
    "Workers": "_sweep",
    "check_spec": "_sweep",
    "run_sweep": "_sweep",
    "start_workers": "_sweep",
}

__all__ = [
    "DaskPool",
    "DevicePlan",
    "LokyPool",
    "Scheduler",
    "StopRequest",
    "SweepCounts",
    "Workers",
    "check_spec",
    "detect_gpus",
    "handle_signals",
    "plan_devices",
    "recover_stale",
    "release_workers",
    "run_sweep",
    "slot_plan",
    "start_workers",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value
