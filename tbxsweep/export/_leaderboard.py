"""Build the leaderboard from the study's storage (the single source of truth)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tbxsweep.jobs import TrialState
from tbxsweep.paths import SweepPaths
from tbxsweep.study import RECORD_ATTR, TEST_ATTR

if TYPE_CHECKING:  # pandas costs ~0.2 s: imported when a leaderboard is first built
    import pandas as pd

    from tbxsweep.study import TrialView

# Any kind of trial a reader holds: what goes in comes back out (FrozenTrial or LightTrial).
T = TypeVar("T", bound="TrialView")

HEAD_COLUMNS = ("rank", "trial", "state", "value")
TEST_COLUMNS = ("test_accuracy", "test_loss")
FIXED_COLUMNS = (
    "best_epoch",
    "epochs_run",
    "trainable_params",
    "feature_cache",  # trained on the cached features of the frozen base (trial/_cache.py)
    "cache_build_s",  # seconds the trial spent building feature caches
    "duration_s",
    "device",
    "worker_pid",
    "run",
    "model",  # the trial's kept model (best.keras), relative to the output dir; "" if none
    "error",
)
_STATE_ORDER = {
    TrialState.COMPLETE: 0,
    TrialState.PRUNED: 1,
    TrialState.INFEASIBLE: 2,
    TrialState.FAIL: 3,
    TrialState.RUNNING: 4,
}
# A multi-objective study's front rank column (0 = on the Pareto front), after `state`.
PARETO_COLUMN = "pareto"


def leaderboard_columns(param_names: list[str]) -> list[str]:
    return [*HEAD_COLUMNS, *param_names, *FIXED_COLUMNS]


def leaderboard_frame(
    trials: Sequence[TrialView],
    param_names: list[str],
    direction: str,
    aside: set[int] | None = None,
    tests: dict[int, dict[str, float]] | None = None,
    models: dict[int, str] | None = None,
) -> pd.DataFrame:
    """Rank Optuna trials: completed by value, then pruned, infeasible, failed, running.

    A multi-objective study (its trials' records name two objectives or more) gets a
    `pareto` column after `state` (the front rank of each completed trial: 0 = on the
    Pareto front, by non-dominated sorting) and a `value_<name>` column for every
    objective after the first (`value`); completed trials sort by front, then by `value`.

    Args:
        trials: Optuna FrozenTrials.
        param_names: the search-space keys, in the spec's order (one column each).
        direction: "maximize" or "minimize".
        aside: trials whose partial run was moved out of TensorBoard's view (re-run as
            another trial); their `run` is empty.
        tests: the held-out test results by trial number (`test_results`); given, the
            columns test_accuracy and test_loss follow `value`, NaN for the trials
            that were not evaluated on the test split.
        models: the kept models by trial number (`export.kept_models`), the `model`
            column; empty for the other trials (and for all when not given).
    """
    import pandas as pd

    rows: list[dict[str, Any]] = []
    repeated = False
    for t in trials:
        state = _state(t)
        if state is None:
            continue
        rec = dict(t.user_attrs.get(RECORD_ATTR, {}))
        value = first_value(t) if t.state.name == "COMPLETE" else rec.get("best_value")
        row: dict[str, Any] = {
            "trial": t.number,
            "state": state.label,
            "value": value,
            **{k: t.params.get(k) for k in param_names},
            "best_epoch": rec.get("best_epoch"),
            "epochs_run": rec.get("epochs_run"),
            "trainable_params": rec.get("trainable_params"),
            "feature_cache": rec.get("feature_cache"),
            "cache_build_s": _round(rec.get("cache_build_s")),
            "duration_s": _round(rec.get("duration_s")),
            "device": rec.get("device"),
            "worker_pid": rec.get("worker_pid"),
            "run": ""
            if aside and t.number in aside
            else rec.get("run", SweepPaths.run_name(t.number)),
            "model": (models or {}).get(t.number, ""),
            "error": rec.get("error"),
            "_order": _STATE_ORDER[state],
        }
        for goal in rec.get("objectives") or []:
            row[f"value_{goal['name']}"] = goal["value"]
        values = rec.get("values") or []
        if len(values) > 1:
            repeated = True
            mean = sum(values) / len(values)
            row["value_std"] = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
            row["repeats"] = len(values)
        rows.append(row)
    cols = leaderboard_columns(param_names)
    if repeated:
        cols[cols.index("value") + 1 : cols.index("value") + 1] = ["value_std", "repeats"]
    if tests is not None:
        at = cols.index("repeats" if repeated else "value") + 1
        cols[at:at] = list(TEST_COLUMNS)
        for row in rows:
            result = tests.get(row["trial"], {})
            for col in TEST_COLUMNS:
                row[col] = float(result.get(col, float("nan")))
    goals = _goals(trials)
    if len(goals) > 1:
        at = cols.index("value") + 1
        cols[at:at] = [f"value_{name}" for name, _ in goals[1:]]
        cols.insert(cols.index("state") + 1, PARETO_COLUMN)
        ranks = front_ranks(trials)
        for row in rows:
            row[PARETO_COLUMN] = ranks.get(row["trial"])
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)
    sign = -1.0 if direction == "maximize" else 1.0
    df["_key"] = df["value"].map(lambda v: sign * v if v is not None and v == v else float("inf"))
    order = ["_order", "_key", "trial"]
    if PARETO_COLUMN in df:
        df["_front"] = df[PARETO_COLUMN].map(lambda r: float("inf") if r is None or r != r else r)
        order.insert(1, "_front")
    df = df.sort_values(order, kind="stable").reset_index(drop=True)
    df.insert(0, "rank", range(1, len(df) + 1))
    for col in ("best_epoch", "epochs_run", "trainable_params", "worker_pid", "repeats", "pareto"):
        if col in df:
            df[col] = df[col].astype("Int64")
    return df[cols]


def test_results(study_user_attrs: dict[str, Any]) -> dict[int, dict[str, float]] | None:
    """The held-out test results a sweep recorded in its study, by trial number; None when
    it recorded none (the leaderboard then has no test columns)."""
    raw = study_user_attrs.get(TEST_ATTR)
    if not isinstance(raw, dict):
        return None
    return {int(k): {c: float(v[c]) for c in TEST_COLUMNS if c in v} for k, v in raw.items()}


def write_csv_atomic(df: pd.DataFrame, path: str | Path) -> None:
    """Write a CSV so readers never see it half-written (temp file, then rename).

    No fsync: the rename is atomic for readers, and after a power loss the study's
    storage, not this file, is the record (`tbxsweep leaderboard` rebuilds it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        df.to_csv(fh, index=False)
    os.replace(tmp, path)


def _state(t: TrialView) -> TrialState | None:
    name = t.state.name
    if name in ("COMPLETE", "PRUNED") and infeasible(t):
        return TrialState.INFEASIBLE
    return TrialState(name) if name in TrialState.__members__ else None


def infeasible(t: TrialView) -> bool:
    """Whether a finished trial broke a constraint (out of memory, study.constraints), as
    its record says (the fast SQL read carries no Optuna system attributes)."""
    constraints = t.user_attrs.get(RECORD_ATTR, {}).get("constraints") or {}
    return any(float(v) > 0 for v in constraints.values())


def first_value(t: TrialView) -> float | None:
    """The first objective's value (`FrozenTrial.value` refuses multi-objective trials)."""
    values: list[float] | None = getattr(t, "values", None)
    if values is not None:
        return float(values[0]) if values else None
    return t.value  # the fast SQL read's trials carry the first objective only


def _goals(trials: Sequence[TrialView]) -> list[tuple[str, str]]:
    """(name, direction) of every objective, from the first record that lists them."""
    for t in trials:
        goals = t.user_attrs.get(RECORD_ATTR, {}).get("objectives")
        if goals:
            return [(g["name"], g["direction"]) for g in goals]
    return []


def front_ranks(trials: Sequence[TrialView]) -> dict[int, int]:
    """Pareto front rank by trial number of every completed, feasible trial whose record
    holds its objective values (0 = on the front; none for a single objective)."""
    goals = _goals(trials)
    points: dict[int, list[float]] = {}
    for t in trials:
        rec = t.user_attrs.get(RECORD_ATTR, {})
        values = [g.get("value") for g in rec.get("objectives") or []]
        if (
            _state(t) is TrialState.COMPLETE
            and len(values) == len(goals) > 1
            and all(isinstance(v, (int, float)) for v in values)
        ):
            points[t.number] = [float(v) for v in values]
    ranks = pareto_ranks(list(points.values()), [d for _, d in goals])
    return dict(zip(points, ranks, strict=True))


def pareto_ranks(points: list[list[float]], directions: list[str]) -> list[int]:
    """Non-dominated sorting: the front rank of every point (0 = no point dominates it;
    r = only points of ranks < r do). Equal points share a rank."""
    import numpy as np

    if not points:
        return []
    # Every objective turned into one to minimise.
    x = np.asarray(points, dtype=float) * [-1.0 if d == "maximize" else 1.0 for d in directions]
    # dominates[i, j]: i is no worse than j everywhere and better somewhere.
    dominates = (x[:, None, :] <= x[None, :, :]).all(-1) & (x[:, None, :] < x[None, :, :]).any(-1)
    ranks = np.full(len(x), -1)
    left = np.ones(len(x), dtype=bool)
    rank = 0
    while left.any():
        front = left & ~(dominates & left[:, None]).any(0)
        ranks[front] = rank
        left &= ~front
        rank += 1
    return [int(r) for r in ranks]


def ranked_complete(trials: Sequence[T], direction: str) -> list[T]:
    """Completed, feasible trials, best first: by Pareto front rank (multi-objective),
    then by the first objective, then the earlier trial."""
    ranks = front_ranks(trials)
    sign = -1.0 if direction == "maximize" else 1.0
    done = [t for t in trials if _state(t) is TrialState.COMPLETE and first_value(t) is not None]
    return sorted(
        done, key=lambda t: (ranks.get(t.number, 0), sign * float(first_value(t) or 0), t.number)
    )


def _round(v: Any) -> Any:
    return round(float(v), 3) if isinstance(v, (int, float)) else v
