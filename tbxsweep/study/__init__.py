"""The Optuna study of a sweep: sampler, pruner, storage, search-space distributions."""

from __future__ import annotations

from tbxsweep.study._build import (
    FINISHED_STATES,
    build_pruner,
    build_sampler,
    distributions,
    load_existing_study,
    open_study,
    redact_url,
    resolve_storage_url,
)

__all__ = [
    "FINISHED_STATES",
    "build_pruner",
    "build_sampler",
    "distributions",
    "load_existing_study",
    "open_study",
    "redact_url",
    "resolve_storage_url",
]
