"""Code that runs inside joblib/loky worker processes.

A worker binds itself to one slot (a GPU id as CUDA_VISIBLE_DEVICES takes it, or the
CPU) on its first task, its warm-up, which imports TensorFlow without its start-up lines
(`TBXSWEEP_TF_LOGS=1` shows them) for the built-in task and for a `task.train` function
whose code imports it, then the task's data and cached base model, or the function's
module. It runs trials one after another, keeping all of that loaded between them.
"""

from __future__ import annotations

from tbxsweep.worker._bind import bind_slot
from tbxsweep.worker._entry import (
    SKIP_BASE,
    describe,
    evaluate_test,
    prepare_base,
    run_job,
    warm_up,
)

__all__ = [
    "SKIP_BASE",
    "bind_slot",
    "describe",
    "evaluate_test",
    "prepare_base",
    "run_job",
    "warm_up",
]
