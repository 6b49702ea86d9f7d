"""One trial inside a worker: data, model, fine-tune, fit, report.

Nothing here is imported by the orchestrator except `static_task_info` (pure Python) and
through `tbxsweep.worker`, so TensorFlow loads only in worker processes.
"""

from __future__ import annotations

from tbxsweep.trial._context import TrialContext, TrialPruned
from tbxsweep.trial._data import has_test_data
from tbxsweep.trial._describe import describe_task, static_task_info
from tbxsweep.trial._heldout import HeldOutJob as HeldOutJob
from tbxsweep.trial._heldout import evaluate_held_out as evaluate_held_out
from tbxsweep.trial._run import preload_base, prepare_base_model, run_trial, warm_up_worker

__all__ = [
    "TrialContext",
    "TrialPruned",
    "describe_task",
    "has_test_data",
    "preload_base",
    "prepare_base_model",
    "run_trial",
    "static_task_info",
    "warm_up_worker",
]
