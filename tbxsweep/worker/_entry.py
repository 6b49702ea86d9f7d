"""The functions the orchestrator submits to the worker pool."""

from __future__ import annotations

from tbxsweep.jobs import PrepareJob, SlotPlan, TaskInfo, TrialJob, TrialOutcome
from tbxsweep.spec import Spec
from tbxsweep.worker._bind import bind_slot
from tbxsweep.worker._quiet import import_tensorflow


def run_job(job: TrialJob) -> TrialOutcome:
    """Run one trial in this worker process (pinning the process to a slot first)."""
    device = _ready(job.spec, job.slots)
    from tbxsweep.trial import run_trial

    return run_trial(job, device)


def prepare_base(job: PrepareJob) -> None:
    """Make sure the base model exists (pretraining it once if the task needs it)."""
    _ready(job.spec, job.slots)
    from tbxsweep.trial import prepare_base_model

    prepare_base_model(job.spec, job.base_model_path)


def warm_up(job: PrepareJob) -> None:
    """Ready an idle worker for its first trial while another one prepares the base."""
    _ready(job.spec, job.slots)
    from tbxsweep.trial import warm_up_worker

    warm_up_worker(job.spec)


def describe(job: PrepareJob) -> TaskInfo:
    """Build the base model (without training or writing anything) and describe it."""
    _ready(job.spec, job.slots)
    from tbxsweep.trial import describe_task

    return describe_task(job.spec)


def _ready(spec: Spec, slots: SlotPlan) -> str:
    """Pin this process to its slot, then (built-in task) import TensorFlow quietly.

    The pin must come first: TensorFlow reads CUDA_VISIBLE_DEVICES when it is imported.
    A `task.train` function may not use TensorFlow at all, so it is not imported for one.
    """
    device = bind_slot(slots)
    if spec.task.train is None:
        import_tensorflow()
    return device
