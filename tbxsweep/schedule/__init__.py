"""Scheduling: worker slots over GPUs or CPU cores, and the ask/tell loop."""

from __future__ import annotations

from tbxsweep.schedule._loop import Scheduler, SweepCounts, get_executor
from tbxsweep.schedule._recover import recover_stale
from tbxsweep.schedule._slots import DevicePlan, detect_gpus, plan_devices, slot_plan
from tbxsweep.schedule._stop import StopRequest, handle_signals

__all__ = [
    "DevicePlan",
    "Scheduler",
    "StopRequest",
    "SweepCounts",
    "detect_gpus",
    "get_executor",
    "handle_signals",
    "plan_devices",
    "recover_stale",
    "slot_plan",
]
