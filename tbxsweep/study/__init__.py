"""The Optuna study of a sweep: sampler, pruner, storage, search-space distributions."""

from __future__ import annotations

from tbxsweep.study._build import (
    FINISHED_STATES,
    SEEDED_ATTR,
    build_pruner,
    build_sampler,
    distributions,
    fork_study,
    get_storage,
    load_existing_study,
    open_study,
    read_study_trials,
    redact_text,
    redact_url,
    resolve_storage_url,
    seed_from,
    spec_differences,
    study_exists,
)
from tbxsweep.study._lock import study_lock

__all__ = [
    "FINISHED_STATES",
    "SEEDED_ATTR",
    "build_pruner",
    "build_sampler",
    "distributions",
    "fork_study",
    "get_storage",
    "load_existing_study",
    "open_study",
    "read_study_trials",
    "redact_text",
    "redact_url",
    "resolve_storage_url",
    "seed_from",
    "spec_differences",
    "study_exists",
    "study_lock",
]
