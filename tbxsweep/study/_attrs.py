"""The keys under which tbxsweep keeps its records in an Optuna study, one name each.

Every part of the sweep that reads or writes one of these (the scheduler, the leaderboard,
the held-out evaluation, `check`, `--fork`) imports it from here (`tbxsweep.study`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# -- a trial's user attributes ---------------------------------------------------------
# The per-trial record the scheduler writes when it tells a trial: its runs, values,
# device, timings, error, objectives and constraints (what the leaderboard shows).
RECORD_ATTR = "tbxsweep"
# The orchestrator that asked for a running trial (schedule: trial ownership).
OWNER_ATTR = "tbxsweep_owner"
# A counter the owner bumps while the trial runs; observers time its changes.
HEARTBEAT_ATTR = "tbxsweep_heartbeat"
# On a trial that re-runs another's parameters: the number of the trial it replaces.
RETRY_ATTR = "tbxsweep_retry_of"
# On a trial copied from another study (`--fork`): "<study>#<trial number>".
SEEDED_ATTR = "tbxsweep_seeded_from"
# On a trial queued from the spec's `study.enqueue`: its index there.
ENQUEUED_ATTR = "tbxsweep_enqueued"

# -- the study's user attributes -------------------------------------------------------
# The spec the study was created with (what may not change under it).
SPEC_ATTR = "tbxsweep_spec"
# How many orchestrators (`start` or `worker`) have opened the study: each adds it to its
# sampler's seed, so two started together draw different parameters.
STARTS_ATTR = "tbxsweep_starts"
# {"<trial number>": moved-aside run directory or ""}: trials whose runs left TensorBoard's
# view (recovered, re-run); they have no row there and an empty `run` in the leaderboard.
ASIDE_ATTR = "tbxsweep_aside"
# The held-out test results: {"<trial number>": {column: value}} (a finished trial's own
# attributes can no longer be changed).
TEST_ATTR = "tbxsweep_test"


def aside_numbers(study_user_attrs: Mapping[str, Any]) -> set[int]:
    """The trials whose runs were moved aside, from the study's user attributes."""
    return {int(k) for k in study_user_attrs.get(ASIDE_ATTR, {})}
