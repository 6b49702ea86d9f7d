"""The Optuna study of a sweep: sampler, pruner, storage, search-space distributions."""

from __future__ import annotations

from tbxsweep.study._build import (
    ENQUEUED_ATTR,
    FINISHED_STATES,
    SEEDED_ATTR,
    build_pruner,
    build_sampler,
    distributions,
    enqueue_known,
    fork_study,
    get_storage,
    load_existing_study,
    no_study_to_join,
    open_study,
    queued_known,
    read_study_trials,
    redact_text,
    redact_url,
    resolve_storage_url,
    seed_from,
    spec_differences,
    study_exists,
)
from tbxsweep.study._info import SweepInfo, read_sweep_info, recorded_study, write_sweep_info
from tbxsweep.study._lock import study_lock
from tbxsweep.study._probe import probe_storage

__all__ = [
    "ENQUEUED_ATTR",
    "FINISHED_STATES",
    "SEEDED_ATTR",
    "SweepInfo",
    "build_pruner",
    "build_sampler",
    "distributions",
    "enqueue_known",
    "fork_study",
    "get_storage",
    "load_existing_study",
    "no_study_to_join",
    "open_study",
    "probe_storage",
    "queued_known",
    "read_study_trials",
    "read_sweep_info",
    "recorded_study",
    "redact_text",
    "redact_url",
    "resolve_storage_url",
    "seed_from",
    "spec_differences",
    "study_exists",
    "study_lock",
    "write_sweep_info",
]
