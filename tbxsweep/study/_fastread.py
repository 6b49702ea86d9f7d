"""Read a finished study's trials straight from its SQL tables, for the leaderboard.

Optuna's ORM loads every trial with all its attributes, intermediate values and system
attributes (about 1 s for 2,000 trials); the leaderboard needs four tables. Any surprise
(another schema version, another database) falls back to Optuna itself.

The table layout is Optuna's private business: the reader only trusts the schema versions
it was tested on (`KNOWN_SCHEMAS`, Optuna's alembic revision, the same from Optuna 3.2 to
5.0); a database with another one is read through Optuna.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

# Optuna's RDB schema revisions (the `alembic_version` table) whose layout this reader knows.
KNOWN_SCHEMAS = frozenset({"v3.2.0.a"})
_VALUE_TYPES = {"FINITE": None, "INF_POS": math.inf, "INF_NEG": -math.inf}


class _State(str, Enum):
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAIL = "FAIL"
    WAITING = "WAITING"


class TrialView(Protocol):
    """What readers of a study (leaderboard, `best`, `check`) see of a trial: Optuna's
    FrozenTrial, or the fast SQL read's LightTrial when the tables allow it."""

    @property
    def number(self) -> int: ...
    @property
    def state(self) -> Enum: ...  # its `name` is an Optuna TrialState's name
    @property
    def value(self) -> float | None: ...  # the first objective's (FrozenTrial: single only)
    @property
    def params(self) -> dict[str, Any]: ...
    @property
    def user_attrs(self) -> dict[str, Any]: ...


@dataclass
class LightTrial:
    """What the leaderboard reads of a trial (a subset of Optuna's FrozenTrial)."""

    number: int
    state: _State
    value: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    user_attrs: dict[str, Any] = field(default_factory=dict)


def read_trials(storage_url: str, study_name: str) -> tuple[list[LightTrial], dict[str, Any]]:
    """(trials, study user attributes) of a study in an RDB storage.

    Raises:
        LookupError: not an RDB URL, or the tables are not what this reader knows.
    """
    if not storage_url.startswith(("sqlite:///", "postgresql")):
        raise LookupError("not an RDB storage")
    import sqlalchemy
    from optuna.distributions import BaseDistribution, json_to_distribution

    engine = sqlalchemy.create_engine(storage_url)
    try:
        with engine.connect() as conn:

            def q(sql: str, **kw: object) -> Sequence[Sequence[Any]]:  # rows of any columns
                return conn.execute(sqlalchemy.text(sql), kw).fetchall()

            schemas = {v for (v,) in q("SELECT version_num FROM alembic_version")}
            if not schemas or not schemas <= KNOWN_SCHEMAS:
                raise LookupError(f"Optuna schema {sorted(schemas)} is not one this reader knows")
            row = q("SELECT study_id FROM studies WHERE study_name = :n", n=study_name)
            if not row:
                raise LookupError(f"no study {study_name!r}")
            sid = row[0][0]
            trials = {
                tid: LightTrial(number=num, state=_State(state))
                for tid, num, state in q(
                    "SELECT trial_id, number, state FROM trials WHERE study_id = :s", s=sid
                )
            }
            for tid, value, vtype in q(
                "SELECT v.trial_id, v.value, v.value_type FROM trial_values v "
                "JOIN trials t ON t.trial_id = v.trial_id "
                "WHERE t.study_id = :s AND v.objective = 0",
                s=sid,
            ):
                special = _VALUE_TYPES[vtype]
                trials[tid].value = value if special is None else special
            dists: dict[str, BaseDistribution] = {}
            for tid, name, value, dist_json in q(
                "SELECT p.trial_id, p.param_name, p.param_value, p.distribution_json "
                "FROM trial_params p JOIN trials t ON t.trial_id = p.trial_id "
                "WHERE t.study_id = :s",
                s=sid,
            ):
                dist = dists.get(dist_json)
                if dist is None:
                    dist = dists[dist_json] = json_to_distribution(dist_json)
                trials[tid].params[name] = dist.to_external_repr(value)
            for tid, key, value_json in q(
                "SELECT a.trial_id, a.key, a.value_json FROM trial_user_attributes a "
                "JOIN trials t ON t.trial_id = a.trial_id WHERE t.study_id = :s",
                s=sid,
            ):
                trials[tid].user_attrs[key] = json.loads(value_json)
            study_attrs = {
                key: json.loads(value_json)
                for key, value_json in q(
                    "SELECT key, value_json FROM study_user_attributes WHERE study_id = :s",
                    s=sid,
                )
            }
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise LookupError(str(exc)) from None
    finally:
        engine.dispose()
    return sorted(trials.values(), key=lambda t: t.number), study_attrs
