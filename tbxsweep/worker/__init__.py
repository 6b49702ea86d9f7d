"""Code that runs inside joblib/loky worker processes.

A worker binds itself to one slot (a GPU id, or the CPU) on its first task, before
TensorFlow is imported, then runs trials one after another, keeping TensorFlow, the
dataset and the base model loaded between them.
"""

from __future__ import annotations

from tbxsweep.worker._bind import bind_slot
from tbxsweep.worker._entry import describe, prepare_base, run_job, warm_up

__all__ = ["bind_slot", "describe", "prepare_base", "run_job", "warm_up"]
