"""Who is to blame when a worker dies, and riding out a lost storage connection.

loky kills every worker when one dies, so a crash comes back as an exception on every
running future at once. Only the trial whose worker died first failed (`CrashJudge`); the
others are collateral and run again. A worker the kernel killed for memory makes its trial
infeasible, not failed (`_oom`). A storage call that loses its database connection is
retried with growing delays before the sweep stops (`StorageRetry`).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from tbxsweep.errors import FatalError
from tbxsweep.jobs import TrialJob, TrialOutcome, TrialState
from tbxsweep.paths import TRIAL_JSON
from tbxsweep.schedule._oom import killed_for_memory, oom_kills

T = TypeVar("T")
Event = Callable[[str, dict[str, Any]], None]


def worker_pid(job: TrialJob) -> int | None:
    """The pid of the worker running `job`, from its trial.json once it has started."""
    try:
        rec = json.loads((Path(job.run_dir) / TRIAL_JSON).read_text())
    except (OSError, ValueError):
        return None
    pid = rec.get("pid") if isinstance(rec, dict) else None
    return int(pid) if isinstance(pid, int) else None


class CrashJudge:
    """Turns what a future returned or raised into the repeat's outcome.

    It keeps, per run, the OOM-kill counters at dispatch (`dispatched`), so that a worker
    killed by SIGKILL while a counter went up counts as out of memory.
    """

    def __init__(self, trial_timeout_s: float | None) -> None:
        self.trial_timeout_s = trial_timeout_s
        self._oom_before: dict[str, tuple[int | None, ...]] = {}  # run name -> at dispatch

    def dispatched(self, job: TrialJob) -> None:
        self._oom_before[job.run_name] = oom_kills()

    def outcome(
        self, fut: Future[Any], job: TrialJob, dead: Callable[[], dict[int, int]], timed_out: bool
    ) -> TrialOutcome:
        """The outcome `fut` holds, or the one its crash stands for (`dead`: the pool's
        pid -> exit code of the workers whose death broke it; `timed_out`: its worker was
        killed for `task.trial_timeout_s`)."""
        try:
            out = fut.result()
        except Exception as exc:  # a dead worker fails only its trial
            return self.crash_outcome(job, exc, dead(), timed_out)
        assert isinstance(out, TrialOutcome)
        return out

    def crash_outcome(
        self,
        job: TrialJob,
        exc: BaseException,
        dead: dict[int, int],
        timed_out: bool = False,
        pid: int | None = None,
    ) -> TrialOutcome:
        """Attribute a broken pool: the trial whose worker died (or was killed for the
        timeout) failed; one whose worker was killed as loky replaced the pool is
        collateral (`metrics["collateral"]`). `pid`: its worker (default: from trial.json)."""
        pid = worker_pid(job) if pid is None else pid
        if timed_out:
            reason = f"timed out after {self.trial_timeout_s:g} s (task.trial_timeout_s)"
            culprit = True
        elif pid is not None and pid in dead:
            reason = f"worker process died ({exit_text(dead[pid])}) while running this trial"
            culprit = True
            if killed_for_memory(dead[pid], self._oom_before.get(job.run_name)):
                return oom_killed(job, pid, reason)
        elif "Terminated" in type(exc).__name__ or "Broken" in type(exc).__name__:
            reason = "collateral"
            culprit = not dead  # nothing to attribute it to: fail it rather than loop
            if culprit:
                reason = f"worker process died: {worker_error(exc)}"
        else:
            reason, culprit = worker_error(exc), True
        return TrialOutcome(
            number=job.number,
            state=TrialState.FAIL,
            value=None,
            error=reason if culprit else None,
            ended_at=time.time(),
            worker_pid=int(pid or 0),
            metrics={} if culprit else {"collateral": 1.0},
        )


def oom_killed(job: TrialJob, pid: int, reason: str) -> TrialOutcome:
    """A worker the kernel killed for memory: its trial is infeasible, not failed."""
    return TrialOutcome(
        number=job.number,
        state=TrialState.INFEASIBLE,
        value=None,
        error=f"out of memory: {reason}, and the kernel counted an OOM kill meanwhile",
        ended_at=time.time(),
        worker_pid=pid,
        constraints={"oom": 1.0},
    )


def exit_text(code: int) -> str:
    """How a process ended, from its exit code (negative: the signal that killed it)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def worker_error(exc: BaseException) -> str:
    """A trial's error line from the exception its future raised."""
    name = type(exc).__name__
    text = " ".join(str(exc).split())
    if "TerminatedWorkerError" in name or "BrokenProcessPool" in name:
        return f"worker process died: {text[:300]}"
    return f"{name}: {text[:300]}"


def connection_lost(exc: BaseException | None) -> bool:
    """Whether `exc` (or what it wraps) says the database connection was lost."""
    try:
        from sqlalchemy import exc as sa
    except ImportError:  # pragma: no cover - optuna depends on sqlalchemy
        return False
    lost = (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError)
    # Optuna wraps driver errors (StorageInternalError); look at what it wraps.
    while exc is not None:
        if isinstance(exc, lost):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class StorageRetry:
    """Runs storage calls, retrying while the database connection is lost.

    About a minute in all (1 + 2 + 4 + 8 + 16 + 30 s), then a FatalError: finished trials
    are in the storage, so the same command resumes the sweep.
    """

    DELAYS: tuple[float, ...] = (1, 2, 4, 8, 16, 30)

    def __init__(
        self,
        on_event: Event,
        delays: Sequence[float] = DELAYS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.on_event = on_event
        self.delays = tuple(delays)
        self._sleep = sleep

    def __call__(self, what: str, fn: Callable[[], T]) -> T:
        """`fn()`; `what` names the call in the retry events and the final error."""
        for attempt, delay in enumerate((*self.delays, None), start=1):
            try:
                return fn()
            except Exception as exc:
                if not connection_lost(exc):
                    raise
                text = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
                if delay is None:
                    raise FatalError(
                        f"lost the connection to the study's storage while trying to {what} "
                        f"({text}); finished trials are saved: run the same command to resume"
                    ) from None
                self.on_event(
                    "storage_retry",
                    {"what": what, "attempt": attempt, "delay": delay, "error": text},
                )
                self._sleep(delay)
        raise AssertionError("unreachable")


class FailureStreak:
    """Counts failed trials in a row: `limit` of them (`max_consecutive_failures`) stop
    the sweep, as something is wrong with the set-up rather than with their parameters."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.last_error: str | None = None

    def note(self, out: TrialOutcome) -> bool:
        """Count a told trial's outcome; True once the streak reaches the limit."""
        if out.state is TrialState.FAIL:
            self.count += 1
            self.last_error = out.error
        elif out.state is not TrialState.INFEASIBLE:
            # An infeasible trial is an answer about its parameters, not a failure of the
            # sweep: it neither counts towards the streak nor ends it.
            self.count = 0
        return self.count >= self.limit

    def fatal(self) -> FatalError:
        return FatalError(
            f"stopped after {self.limit} consecutive failed trials; last error: {self.last_error}"
        )
