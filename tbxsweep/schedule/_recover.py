"""Nothing lost, nothing counted twice: trial ownership, heartbeats, stale trials, re-runs.

Every trial an orchestrator asks for carries its owner (host, pid, process start time)
and a heartbeat the owner refreshes while the trial runs. A RUNNING trial whose owner is
gone (same host: the process is dead; any host: no heartbeat for study.stale_after_s) is
stale: it is failed with the reason, its partial TensorBoard run is moved aside (so the
HParams tab shows no ghost row) and its parameters are queued to run again, continuing
from its last checkpoint where there is one.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from tbxsweep.paths import SweepPaths

OWNER_ATTR = "tbxsweep_owner"
HEARTBEAT_ATTR = "tbxsweep_heartbeat"
RETRY_ATTR = "tbxsweep_retry_of"
ASIDE_ATTR = "tbxsweep_aside"  # study attr: {trial number: moved-aside run dir}
RECORD_ATTR = "tbxsweep"


def host_name() -> str:
    """This machine's name in owner records (TBXSWEEP_HOST overrides, e.g. in containers
    that share a hostname)."""
    return os.environ.get("TBXSWEEP_HOST") or socket.gethostname()


def heartbeat_interval(stale_after_s: float) -> float:
    """Beat often enough that a live orchestrator is never mistaken for a dead one."""
    return max(0.5, min(10.0, stale_after_s / 6))


def owner() -> dict[str, Any]:
    """This orchestrator's identity, stored on every trial it asks for."""
    return {"host": host_name(), "pid": os.getpid(), "start": _start_time(os.getpid())}


def _start_time(pid: int) -> float | None:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:  # gone, or no permission: treated as unknown
        return None


def owner_alive(own: dict[str, Any]) -> bool | None:
    """True/False when the owner runs on this host; None when only a heartbeat can tell."""
    if own.get("host") != host_name():
        return None
    pid = int(own.get("pid", -1))
    started = _start_time(pid)
    if started is None:
        return False
    want = own.get("start")
    return want is None or abs(started - float(want)) < 1.0  # pid reuse check


def stale_reason(trial: Any, now: float, stale_after_s: float) -> str | None:
    """Why a RUNNING trial is stale, or None when its orchestrator is still at work."""
    own = trial.user_attrs.get(OWNER_ATTR)
    if own is None:
        return "its orchestrator left no owner record (started by another tool?)"
    alive = owner_alive(own)
    if alive is False:
        return f"its orchestrator (pid {own['pid']} on {own['host']}) is gone"
    if alive is None:
        beat = (
            float(trial.user_attrs.get(HEARTBEAT_ATTR, 0.0))
            or float(own.get("beat", 0.0))
            or _started(trial)
        )
        if now - beat > stale_after_s:
            return (
                f"no heartbeat from its orchestrator (pid {own['pid']} on {own['host']}) "
                f"for {now - beat:.0f} s"
            )
    return None


def _started(trial: Any) -> float:
    return trial.datetime_start.timestamp() if trial.datetime_start else 0.0


def move_aside(paths: SweepPaths, run_dir: Path, tag: str) -> Path | None:
    """Move a partial run out of TensorBoard's view; returns where it went.

    The event files are renamed (`*.tfevents.*` -> `*.tfev-aside.*`) because TensorBoard
    reads every event file below its log directory, `_aside/` included.
    """
    if not run_dir.exists():
        return None
    dest = paths.aside_dir / f"{run_dir.name}.{tag}"
    n = 1
    while dest.exists():
        n += 1
        dest = paths.aside_dir / f"{run_dir.name}.{tag}.{n}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(run_dir), str(dest))
    for f in dest.rglob("*tfevents*"):
        f.rename(f.with_name(f.name.replace("tfevents", "tfev-aside")))
    return dest


def mark_aside(study: Any, number: int, dest: Path | None) -> None:
    aside = dict(study.user_attrs.get(ASIDE_ATTR, {}))
    aside[str(number)] = str(dest) if dest else ""
    study.set_user_attr(ASIDE_ATTR, aside)


def aside_numbers(study_user_attrs: dict[str, Any]) -> set[int]:
    return {int(k) for k in study_user_attrs.get(ASIDE_ATTR, {})}


def recover_stale(
    study: Any,
    paths: SweepPaths,
    on_event: Any,
    stale_after_s: float = 120.0,
    exclude: set[int] | None = None,
) -> list[int]:
    """Fail stale RUNNING trials, move their runs aside and queue their parameters again.

    Returns the numbers of the trials recovered.
    """
    import optuna

    now = time.time()
    recovered = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if exclude and t.number in exclude:
            continue
        reason = stale_reason(t, now, stale_after_s)
        if reason is None:
            continue
        fail_and_requeue(study, paths, t, f"interrupted: {reason}")
        recovered.append(t.number)
        on_event("recovered", {"number": t.number, "reason": reason})
    return recovered


def fail_and_requeue(study: Any, paths: SweepPaths, trial: Any, reason: str) -> None:
    """Record a trial that could not finish through no fault of its own, and run its
    parameters again as a new trial (which continues from the old run's checkpoint)."""
    import optuna

    storage = study._storage
    rec = dict(trial.user_attrs.get(RECORD_ATTR, {}))
    rec.update({"error": reason, "run": paths.run_name(trial.number)})
    try:
        storage.set_trial_user_attr(trial._trial_id, RECORD_ATTR, rec)
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    except (RuntimeError, ValueError):
        return  # another orchestrator finished it first
    if not paths.trial_dir(trial.number).exists():
        mark_aside(study, trial.number, None)  # it never started: it has no run to show
    study.enqueue_trial(
        dict(trial.params), user_attrs={RETRY_ATTR: trial.number}, skip_if_exists=False
    )


def prepare_retry(study: Any, paths: SweepPaths, trial: Any) -> str | None:
    """For an asked trial that re-runs an earlier one: move the old run aside (it is not a
    row any more) and return its directory, where the checkpoint of its last epoch is."""
    old = trial.user_attrs.get(RETRY_ATTR)
    if old is None:
        return None
    old = int(old)
    known = study.user_attrs.get(ASIDE_ATTR, {})
    if str(old) in known:
        return known[str(old)] or None
    dest = move_aside(paths, paths.trial_dir(old), f"retried-as-{trial.number}")
    mark_aside(study, old, dest)
    return str(dest) if dest else None
