"""The functions the orchestrator submits to the worker pool."""

from __future__ import annotations

from tbxsweep.jobs import PrepareJob, TrialJob, TrialOutcome
from tbxsweep.worker._bind import bind_slot


def run_job(job: TrialJob) -> TrialOutcome:
    """Run one trial in this worker process (pinning the process to a slot first)."""
    device = bind_slot(job.slots)
    from tbxsweep.trial import run_trial  # after the pin: it may import TensorFlow

    return run_trial(job, device)


def prepare_base(job: PrepareJob) -> int:
    """Make sure the base model exists; returns its number of weighted (fine-tunable) layers."""
    bind_slot(job.slots)
    from tbxsweep.trial import prepare_base_model

    return prepare_base_model(job.spec, job.base_model_path)
