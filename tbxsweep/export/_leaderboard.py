"""Build the leaderboard from the study's storage (the single source of truth)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tbxsweep.jobs import TrialState
from tbxsweep.paths import SweepPaths

if TYPE_CHECKING:  # pandas costs ~0.2 s: imported when a leaderboard is first built
    import pandas as pd

ATTR = "tbxsweep"  # the trial user attribute holding what the worker recorded
# The study user attribute holding the held-out test results: {"<trial>": {column: value}}
# (a finished trial's own attributes can no longer be changed).
TEST_ATTR = "tbxsweep_test"
HEAD_COLUMNS = ("rank", "trial", "state", "value")
TEST_COLUMNS = ("test_accuracy", "test_loss")
FIXED_COLUMNS = (
    "best_epoch",
    "epochs_run",
    "trainable_params",
    "duration_s",
    "device",
    "worker_pid",
    "run",
    "error",
)
_STATE_ORDER = {
    TrialState.COMPLETE: 0,
    TrialState.PRUNED: 1,
    TrialState.FAIL: 2,
    TrialState.RUNNING: 3,
}


def leaderboard_columns(param_names: list[str]) -> list[str]:
    return [*HEAD_COLUMNS, *param_names, *FIXED_COLUMNS]


def leaderboard_frame(
    trials: list[Any],
    param_names: list[str],
    direction: str,
    aside: set[int] | None = None,
    tests: dict[int, dict[str, float]] | None = None,
) -> pd.DataFrame:
    """Rank Optuna trials: completed by value, then pruned, then failed, then running.

    Args:
        trials: Optuna FrozenTrials.
        param_names: the search-space keys, in the spec's order (one column each).
        direction: "maximize" or "minimize".
        aside: trials whose partial run was moved out of TensorBoard's view (re-run as
            another trial); their `run` is empty.
        tests: the held-out test results by trial number (`test_results`); given, the
            columns test_accuracy and test_loss follow `value`, NaN for the trials
            that were not evaluated on the test split.
    """
    import pandas as pd

    rows: list[dict[str, Any]] = []
    repeated = False
    for t in trials:
        state = _state(t)
        if state is None:
            continue
        rec = dict(t.user_attrs.get(ATTR, {}))
        value = t.value if state is TrialState.COMPLETE else rec.get("best_value")
        row: dict[str, Any] = {
            "trial": t.number,
            "state": state.label,
            "value": value,
            **{k: t.params.get(k) for k in param_names},
            "best_epoch": rec.get("best_epoch"),
            "epochs_run": rec.get("epochs_run"),
            "trainable_params": rec.get("trainable_params"),
            "duration_s": _round(rec.get("duration_s")),
            "device": rec.get("device"),
            "worker_pid": rec.get("worker_pid"),
            "run": ""
            if aside and t.number in aside
            else rec.get("run", SweepPaths.run_name(t.number)),
            "error": rec.get("error"),
            "_order": _STATE_ORDER[state],
        }
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
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)
    sign = -1.0 if direction == "maximize" else 1.0
    df["_key"] = df["value"].map(lambda v: sign * v if v is not None and v == v else float("inf"))
    df = df.sort_values(["_order", "_key", "trial"], kind="stable").reset_index(drop=True)
    df.insert(0, "rank", range(1, len(df) + 1))
    for col in ("best_epoch", "epochs_run", "trainable_params", "worker_pid", "repeats"):
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


def _state(t: Any) -> TrialState | None:
    name = t.state.name
    return TrialState(name) if name in TrialState.__members__ else None


def _round(v: Any) -> Any:
    return round(float(v), 3) if isinstance(v, (int, float)) else v
