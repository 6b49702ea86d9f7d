"""Code that runs inside joblib/loky worker processes.

A worker binds itself to one slot (a GPU id as CUDA_VISIBLE_DEVICES takes it, or the
CPU) on its first task, then, for the built-in task, imports TensorFlow without its
start-up lines (`TBXSWEEP_TF_LOGS=1` shows them), and runs trials one after another,
keeping TensorFlow, the dataset and the base model loaded between them.
"""

from __future__ import annotations

from tbxsweep.worker._bind import bind_slot
from tbxsweep.worker._entry import describe, prepare_base, run_job, warm_up

__all__ = ["bind_slot", "describe", "prepare_base", "run_job", "warm_up"]
