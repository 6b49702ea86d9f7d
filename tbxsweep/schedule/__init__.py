"""Scheduling: worker slots over GPUs or CPU cores, and the ask/tell loop."""

from __future__ import annotations

from tbxsweep.schedule._loop import Scheduler, SweepCounts
from tbxsweep.schedule._pool import DaskPool, LokyPool
from tbxsweep.schedule._recover import recover_stale
from tbxsweep.schedule._slots import DevicePlan, detect_gpus, plan_devices, slot_plan
from tbxsweep.schedule._stop import StopRequest, handle_signals

__all__ = [
    "DaskPool",
    "DevicePlan",
    "LokyPool",
    "Scheduler",
    "StopRequest",
    "SweepCounts",
    "detect_gpus",
    "handle_signals",
    "plan_devices",
    "recover_stale",
    "slot_plan",
]
