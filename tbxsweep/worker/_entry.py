"""The functions the orchestrator submits to the worker pool."""

from __future__ import annotations

from tbxsweep.jobs import PrepareJob, TaskInfo, TrialJob, TrialOutcome
from tbxsweep.worker._bind import bind_slot


def run_job(job: TrialJob) -> TrialOutcome:
    """Run one trial in this worker process (pinning the process to a slot first)."""
    device = bind_slot(job.slots)
    from tbxsweep.trial import run_trial  # after the pin: it may import TensorFlow

    return run_trial(job, device)


def prepare_base(job: PrepareJob) -> None:
    """Make sure the base model exists (pretraining it once if the task needs it)."""
    bind_slot(job.slots)
    from tbxsweep.trial import prepare_base_model

    prepare_base_model(job.spec, job.base_model_path)


def warm_up(job: PrepareJob) -> None:
    """Ready an idle worker for its first trial while another one prepares the base."""
    bind_slot(job.slots)
    from tbxsweep.trial import warm_up_worker

    warm_up_worker(job.spec)


def describe(job: PrepareJob) -> TaskInfo:
    """Build the base model (without training or writing anything) and describe it."""
    bind_slot(job.slots)
    from tbxsweep.trial import describe_task

    return describe_task(job.spec)
