"""`tbxsweep check`: what TensorBoard's HParams tab shows, compared with the study and CSV."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from tbxsweep.cli.board import Board
from tbxsweep.export import leaderboard_frame

# Optuna state -> the HParams session status the tab must show for it.
EXPECTED_STATUS = {
    "complete": "STATUS_SUCCESS",
    "pruned": "STATUS_UNKNOWN",
    "failed": "STATUS_FAILURE",
    "infeasible": "STATUS_FAILURE",
    "running": "STATUS_UNKNOWN",
}


def compare(
    board: Board, output_dir: str | Path
) -> tuple[list[str], pd.DataFrame, list[dict[str, Any]]]:
    """Compare the HParams plugin's answer with the study's storage and leaderboard.csv.

    Returns:
        (mismatches, leaderboard from storage, session groups from TensorBoard).
    """
    from tbxsweep.study import RECORD_ATTR, aside_numbers, read_study_trials, read_sweep_info

    info, paths = read_sweep_info(output_dir)
    trials, study_attrs = read_study_trials(info.storage_url(paths), info.study_name)
    aside = aside_numbers(study_attrs)
    df = leaderboard_frame(trials, list(info.params), info.direction, aside)
    groups = board.session_groups()
    problems: list[str] = []
    if paths.leaderboard_csv.is_file():
        csv = pd.read_csv(paths.leaderboard_csv)
        finished = df[df["state"] != "running"]
        if list(csv["trial"]) != list(finished["trial"]):
            problems.append(
                f"leaderboard.csv lists trials {list(csv['trial'])}, the storage "
                f"{list(finished['trial'])}"
            )
    n_runs = {t.number: len(t.user_attrs.get(RECORD_ATTR, {}).get("runs", [None])) for t in trials}
    by_name = {g["name"]: g for g in groups}
    # Runs moved aside (their trial re-ran as another one) must not be rows.
    expected = {row["run"]: row for _, row in df.iterrows() if row["run"]}
    for name in sorted(set(by_name) - set(expected)):
        problems.append(f"{name}: a row in TensorBoard with no trial in the study")
    metric_tag = f"best/{info.metric}"
    # A multi-objective study's columns: each objective's value and the Pareto front rank.
    columns = [(metric_tag, "value")] + [
        (f"objective/{c.removeprefix('value_')}", c)
        for c in df.columns
        if c.startswith("value_") and c != "value_std"
    ]
    if "pareto" in df.columns:
        columns.append(("pareto", "pareto"))
    for run, row in expected.items():
        group = by_name.get(run)
        if group is None:
            problems.append(
                f"{run}: trial {row['trial']} ({row['state']}) has no row in TensorBoard"
            )
            continue
        sessions = group.get("sessions", [])
        want_sessions = n_runs.get(int(row["trial"]), 1)
        if len(sessions) != want_sessions:
            problems.append(f"{run}: {len(sessions)} sessions, expected {want_sessions}")
        for key in info.params:
            want, got = row[key], group.get("hparams", {}).get(key)
            if not _same(want, got):
                problems.append(
                    f"{run}: hparam {key} is {got!r} in TensorBoard, {want!r} in the study"
                )
        statuses = {x.get("status") for x in sessions}
        status = sessions[0].get("status") if len(statuses) == 1 else sorted(statuses)
        if status != EXPECTED_STATUS[row["state"]]:
            problems.append(
                f"{run}: status {status} in TensorBoard, expected "
                f"{EXPECTED_STATUS[row['state']]} for a {row['state']} trial"
            )
        if row["state"] not in ("complete", "pruned"):
            continue
        # a group's metric values are the mean over its sessions (TensorBoard's default)
        values = {m["name"]["tag"]: m.get("value") for m in group.get("metricValues", [])}
        for tag, column in columns:
            if not _present(row[column]):
                continue
            got = values.get(tag)
            if not _same(row[column], got):
                problems.append(
                    f"{run}: {tag} is {got!r} in TensorBoard, {row[column]!r} in the leaderboard"
                )
    return problems, df, groups


def _present(v: Any) -> bool:
    return v is not None and not bool(pd.isna(v))


def _same(want: Any, got: Any) -> bool:
    if isinstance(got, str) and got == "NaN":
        got = math.nan
    if isinstance(want, bool) or isinstance(got, bool):
        return bool(want) == bool(got) and type(want) is type(got)
    try:
        w, g = float(want), float(got)
    except (TypeError, ValueError):
        return str(want) == str(got)
    if math.isnan(w) and math.isnan(g):
        return True
    return math.isclose(w, g, rel_tol=1e-6, abs_tol=1e-9)
