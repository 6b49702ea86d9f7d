"""Scheduling: worker slots over GPUs or CPU cores, and the ask/tell loop."""

from __future__ import annotations

from tbxsweep.schedule._loop import Scheduler, SweepCounts, get_executor
from tbxsweep.schedule._slots import DevicePlan, detect_gpus, plan_devices, slot_plan

__all__ = [
    "DevicePlan",
    "Scheduler",
    "SweepCounts",
    "detect_gpus",
    "get_executor",
    "plan_devices",
    "slot_plan",
]
