"""Nothing lost, nothing counted twice: trial ownership, heartbeats, stale trials, re-runs.

Design (what decides that a RUNNING trial's orchestrator is gone):

- **Owner identity.** Every trial an orchestrator asks for carries an owner record: host
  name, kernel boot id (`/proc/sys/kernel/random/boot_id`), pid namespace
  (`readlink /proc/self/ns/pid`), pid, the process's start time (clock ticks since boot,
  from `/proc/<pid>/stat`) and a random token. Host names alone prove nothing (two
  containers, two VMs can share one), so the pid is only looked at when host, boot id and
  pid namespace all match the observer's: then both run on one kernel in one pid space,
  and "no process with that pid and start time" is a definite *gone*.
- **Heartbeat, one clock.** The owner bumps a counter on each of its trials every
  `heartbeat_interval` seconds. An observer never compares its clock with the owner's: it
  keeps, per trial, the last heartbeat value it saw and when that value last changed by
  its *own* `time.monotonic()`, and calls the trial stale once the value has not changed
  for `study.stale_after_s`. Clock skew between hosts, a clock set back or forward, or a
  suspended VM therefore never make a live owner's trial stale; an owner that is alive
  but stopped (Ctrl-Z, SIGSTOP) or deadlocked is stale, since it no longer beats. A fresh
  observer has seen nothing yet: it waits `stale_after_s` of silence before it decides
  (except for the definite same-kernel verdict above).
- **Recovery.** A stale trial is failed with the reason, its runs are closed (HParams
  session end FAILURE, `state` 3) and moved aside at once (so the HParams tab never shows a
  row that storage calls FAIL, whether or not the re-run ever happens), and its
  parameters are queued to run again, continuing from its last checkpoint where there is
  one. Trials stopped by Ctrl-C or by another trial's worker crash are closed the same way
  but stay visible (as Failure) until their re-run is asked.
- **Taken over.** An owner that was only slow (stopped, partitioned) finds out when its
  next heartbeat or tell finds the trial finished: it stops that trial's worker where it
  can, drops the trial without telling it and goes on (event "taken_over").

What is not guaranteed: an owner that is silent for `stale_after_s` while it still
works (a storage partition longer than that) loses its trials, which then run twice (the
first copy's result is dropped). Pick `stale_after_s` well above the longest storage
outage you want to ride out.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tbxsweep.paths import TRIAL_JSON, SweepPaths
from tbxsweep.study import ASIDE_ATTR, HEARTBEAT_ATTR, OWNER_ATTR, RECORD_ATTR, RETRY_ATTR


def host_name() -> str:
    """This machine's name in owner records (TBXSWEEP_HOST overrides, e.g. in containers
    that share a hostname)."""
    return os.environ.get("TBXSWEEP_HOST") or socket.gethostname()


def heartbeat_interval(stale_after_s: float) -> float:
    """Beat often enough that a live orchestrator is never mistaken for a dead one."""
    return max(0.5, min(10.0, stale_after_s / 6))


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def boot_id() -> str | None:
    """The running kernel's boot id (Linux); None where there is none."""
    return _read("/proc/sys/kernel/random/boot_id")


def pid_namespace() -> str | None:
    """This process's pid namespace (`pid:[4026531836]`, Linux); None where there is none."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def process_start(pid: int) -> str | None:
    """When process `pid` started, in clock ticks since boot; None when there is no such
    live process (none, a zombie, or no /proc). Exact, so a reused pid is told from the
    original."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    # the command name (field 2) may hold spaces and parentheses: count from its end
    fields = stat.rsplit(")", 1)[-1].split()
    if fields and fields[0] in ("Z", "X"):
        return None  # a zombie (exited, not yet reaped by its parent) runs nothing
    return fields[19] if len(fields) > 19 else None


def owner() -> dict[str, Any]:
    """This orchestrator's identity, stored on every trial it asks for."""
    pid = os.getpid()
    return {
        "host": host_name(),
        "boot": boot_id(),
        "pidns": pid_namespace(),
        "pid": pid,
        "start": process_start(pid),
        "token": secrets.token_hex(8),
    }


def owner_gone(own: dict[str, Any]) -> bool:
    """True only when the owner is certainly dead: it ran on this kernel, in this pid
    namespace, and no process with its pid and start time exists. False means "cannot
    tell from here" (the heartbeat decides), not "alive"."""
    here = {"host": host_name(), "boot": boot_id(), "pidns": pid_namespace()}
    if not all(here[k] is not None and own.get(k) == here[k] for k in here):
        return False
    try:
        pid = int(own["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    started = process_start(pid)
    return started is None or (own.get("start") is not None and started != own["start"])


class HeartbeatWatch:
    """What one observer saw of other orchestrators' heartbeats, timed by its own clock.

    `silent_for` returns how long (by this observer's `time.monotonic()`) a trial's
    heartbeat has not changed; the first observation counts as a change.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[int, tuple[Any, float]] = {}

    def silent_for(self, number: int, beat: Any) -> float:
        now = self._clock()
        seen = self._seen.get(number)
        if seen is None or seen[0] != beat:
            self._seen[number] = (beat, now)
            return 0.0
        return now - seen[1]

    def keep_only(self, numbers: set[int]) -> None:
        for n in set(self._seen) - numbers:
            del self._seen[n]


def stale_reason(trial: Any, watch: HeartbeatWatch, stale_after_s: float) -> str | None:
    """Why a RUNNING trial is stale, or None when its orchestrator may still be at work."""
    own = trial.user_attrs.get(OWNER_ATTR)
    if isinstance(own, dict) and owner_gone(own):
        return f"its orchestrator (pid {own.get('pid')} on {own.get('host')}) is gone"
    token = own.get("token") if isinstance(own, dict) else None
    beat = json.dumps([token, trial.user_attrs.get(HEARTBEAT_ATTR)], default=str)
    silent = watch.silent_for(trial.number, beat)
    if silent <= stale_after_s:
        return None
    if not isinstance(own, dict):
        return (
            f"it has no owner record (started by another tool?) and no heartbeat for {silent:.0f} s"
        )
    return (
        f"no heartbeat from its orchestrator (pid {own.get('pid')} on {own.get('host')}) "
        f"for {silent:.0f} s"
    )


def move_aside(paths: SweepPaths, run_dir: Path, tag: str, name: str | None = None) -> Path | None:
    """Move a partial run out of TensorBoard's view; returns where it went.

    The event files are renamed (`*.tfevents.*` -> `*.tfev-aside.*`) because TensorBoard
    reads every event file below its log directory, `_aside/` included.
    """
    if not run_dir.exists():
        return None
    base = name or run_dir.name
    dest = paths.aside_dir / f"{base}.{tag}"
    n = 1
    while dest.exists():
        n += 1
        dest = paths.aside_dir / f"{base}.{tag}.{n}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(run_dir), str(dest))
    for f in dest.rglob("*tfevents*"):
        f.rename(f.with_name(f.name.replace("tfevents", "tfev-aside")))
    return dest


def trial_runs(trial_dir: Path) -> list[Path]:
    """The TensorBoard runs of a trial: its directory, or its repeats' below it."""
    if not trial_dir.is_dir():
        return []
    return sorted({p.parent for p in trial_dir.rglob("*tfevents*")})


def close_runs(
    runs: list[Path], start: tuple[Any, dict[str, Any], str] | None = None, state: str = "FAIL"
) -> None:
    """End the HParams sessions of runs whose worker could not end them (killed): status
    FAILURE and `state` 3, so the tab does not show them as running. TensorBoard keeps
    the first session end of a run, so a run its worker did end keeps its status.

    Args:
        start: (spec, params, group) to write the session start again: a worker killed
            within seconds of its start may not have it on disk (tensorboardX writes from
            a queue in a thread). A second, identical start does no harm.
    """
    from tbxsweep.tblog import STATE_CODES, HParamsStatus, TrialLogger

    for run in runs:
        rec: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            rec = dict(json.loads((run / TRIAL_JSON).read_text()))
        with contextlib.suppress(Exception):  # a run we cannot write stays as it is
            log = TrialLogger(run)
            if start is not None:
                spec, params, group = start
                log.start_session(spec, params, group, float(rec.get("started_at", time.time())))
            epochs = int(rec.get("epochs_run", 0) or 0)
            log.scalars(max(epochs, 1), {"state": STATE_CODES[state]})
            log.end_session(HParamsStatus.FAILURE)
            log.close()


def mark_aside(study: Any, number: int, dest: Path | None) -> None:
    aside = dict(study.user_attrs.get(ASIDE_ATTR, {}))
    aside[str(number)] = str(dest) if dest else ""
    study.set_user_attr(ASIDE_ATTR, aside)


def recover_stale(
    study: Any,
    paths: SweepPaths,
    on_event: Any,
    stale_after_s: float = 120.0,
    exclude: set[int] | None = None,
    watch: HeartbeatWatch | None = None,
) -> list[int]:
    """Fail stale RUNNING trials, move their runs aside and queue their parameters again.

    Args:
        watch: what this observer saw of heartbeats before; a fresh one (the default)
            can only find owners that are certainly gone, since silence takes time to see.

    Returns the numbers of the trials recovered.
    """
    import optuna

    watch = watch or HeartbeatWatch()
    recovered = []
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    watch.keep_only({t.number for t in running})
    for t in running:
        if exclude and t.number in exclude:
            continue
        reason = stale_reason(t, watch, stale_after_s)
        if reason is None:
            continue
        if fail_and_requeue(study, paths, t, f"interrupted: {reason}", aside=True):
            recovered.append(t.number)
            on_event("recovered", {"number": t.number, "reason": reason})
    return recovered


def _set_record(study: Any, trial: Any, rec: dict[str, Any]) -> None:
    """Store the trial record on an asked `Trial` or on a `FrozenTrial` read back.

    A live `optuna.trial.Trial` has the public `set_user_attr`. For a FrozenTrial Optuna has
    no public way from the study: `Study` keeps its storage private (`_storage`); the
    storage methods used here (`get_trial_id_from_study_id_trial_number`,
    `set_trial_user_attr`) are its public API."""
    import optuna

    if isinstance(trial, optuna.trial.Trial):
        trial.set_user_attr(RECORD_ATTR, rec)
        return
    # (FrozenTrial.set_user_attr only changes the local copy)
    storage = study._storage
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    storage.set_trial_user_attr(trial_id, RECORD_ATTR, rec)


def fail_and_requeue(
    study: Any,
    paths: SweepPaths,
    trial: Any,
    reason: str,
    *,
    aside: bool = False,
    spec: Any = None,
) -> bool:
    """Record a trial that could not finish through no fault of its own, and run its
    parameters again as a new trial (which continues from the old run's checkpoint).

    Its runs are closed as failed; with `aside` they are also moved out of TensorBoard's
    view now (recovery: the owner may be alive and still writing), else when the re-run
    is asked. With `spec`, a run that lost its session start gets it again. Returns False
    when the trial was already finished (another orchestrator was first).
    """
    import optuna

    rec = dict(trial.user_attrs.get(RECORD_ATTR, {}))
    rec.update({"error": reason, "run": paths.run_name(trial.number)})
    trial_dir = paths.trial_dir(trial.number)
    runs = trial_runs(trial_dir)
    if runs:  # with repeats, each that started is a session of the trial's group
        rec["runs"] = [run.relative_to(paths.root).as_posix() for run in runs]
    try:
        _set_record(study, trial, rec)
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    except (RuntimeError, ValueError):
        return False  # another orchestrator finished it first
    group = paths.run_name(trial.number)
    close_runs(trial_runs(trial_dir), (spec, dict(trial.params), group) if spec else None)
    if aside or not trial_dir.exists():
        # it never started (no run to show), or it must leave the tab now
        dest = move_aside(paths, trial_dir, "interrupted") if aside else None
        mark_aside(study, trial.number, dest)
    study.enqueue_trial(
        dict(trial.params), user_attrs={RETRY_ATTR: trial.number}, skip_if_exists=False
    )
    return True


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
