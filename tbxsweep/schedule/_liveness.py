"""Is everyone still at work? This orchestrator's heartbeat, other orchestrators' stale
trials, trials taken over, and trials running past `task.trial_timeout_s`.

Who owns a running trial, and how an observer decides that its owner is gone, is
`_recover`'s (its docstring holds the design); this module decides *when* to beat and
look, on the scheduler's clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from tbxsweep.jobs import TrialJob
from tbxsweep.paths import SweepPaths
from tbxsweep.schedule._crashes import StorageRetry, connection_lost, worker_pid
from tbxsweep.schedule._recover import (
    HeartbeatWatch,
    heartbeat_interval,
    move_aside,
    owner,
    recover_stale,
)
from tbxsweep.schedule._repeats import Pending
from tbxsweep.study import ASIDE_ATTR, HEARTBEAT_ATTR

Event = Callable[[str, dict[str, Any]], None]
TAKEN_OVER = "another orchestrator recorded it as failed and queued it again"


class Heartbeats:
    """The heartbeat of this orchestrator's trials, and its watch over everyone else's.

    Observers time changes of the heartbeat by their own clock, so the value only has to
    change; it is bumped every `heartbeat_interval(stale_after_s)` seconds.
    """

    def __init__(
        self,
        study: Any,
        paths: SweepPaths,
        stale_after_s: float,
        retry: StorageRetry,
        on_event: Event,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.study = study
        self.paths = paths
        self.stale_after_s = stale_after_s
        self.retry = retry
        self.on_event = on_event
        self.owner = owner()  # stored on every trial this orchestrator asks for
        self.beats = 0
        self._clock = clock
        self._last_beat = float("-inf")
        self._watch = HeartbeatWatch(clock)
        # The first look at other orchestrators' heartbeats starts this observer's clock.
        self._last_look = float("-inf")

    def beat(self, pending: Iterable[Pending]) -> list[Pending]:
        """Bump the heartbeat of every trial in `pending` (when it is time); returns those
        another orchestrator finished meanwhile (taken over: see `take_over`)."""
        now = self._clock()
        if now - self._last_beat < heartbeat_interval(self.stale_after_s):
            return []
        self._last_beat = now
        self.beats += 1
        taken: list[Pending] = []
        for p in list(pending):
            if p.taken_over is not None:
                continue
            try:
                p.trial.set_user_attr(HEARTBEAT_ATTR, self.beats)
            except Exception as exc:
                if connection_lost(exc):
                    continue  # the next beat tries again; silence is what observers judge
                if not self.finished_elsewhere(p.trial.number):
                    raise
                taken.append(p)
        return taken

    def recover_others(self, exclude: set[int]) -> list[int]:
        """Now and then (every quarter of `stale_after_s`, at most every second), fail and
        re-run the trials of orchestrators that died, on any host; returns their numbers."""
        now = self._clock()
        if now - self._last_look < max(1.0, self.stale_after_s / 4):
            return []
        self._last_look = now
        return self.retry(
            "look for trials of dead orchestrators",
            lambda: recover_stale(
                self.study,
                self.paths,
                self.on_event,
                self.stale_after_s,
                exclude=exclude,
                watch=self._watch,
            ),
        )

    def finished_elsewhere(self, number: int) -> bool:
        """Whether another orchestrator finished (recovered) this trial of ours."""
        trials = self.retry("read the trials", lambda: self.study.get_trials(deepcopy=False))
        return any(t.number == number and t.state.name != "RUNNING" for t in trials)

    def take_over(self, pending: Pending) -> None:
        """Another orchestrator judged this trial stale and failed it: run none of it any
        more and never tell it (its re-run belongs to the other one)."""
        pending.give_up(TAKEN_OVER)
        self.on_event("taken_over", {"number": pending.number, "reason": TAKEN_OVER})

    def tidy_taken_over(self, number: int) -> None:
        """A run this orchestrator wrote after the other one moved the trial's runs aside
        (a repeat it started meanwhile) leaves TensorBoard too."""
        aside = self.retry("read the study", lambda: self.study.user_attrs.get(ASIDE_ATTR, {}))
        if str(number) in aside:
            move_aside(self.paths, self.paths.trial_dir(number), "taken-over")


def others_in_flight(states: dict[str, int], n_trials: int) -> bool:
    """Whether trials other orchestrators run are what the budget still waits for
    (`states`: the study's own trials counted by state name)."""
    finished = states.get("COMPLETE", 0) + states.get("PRUNED", 0)
    return finished < n_trials and states.get("RUNNING", 0) > 0


class TrialTimer:
    """Kills the worker of a trial running past `task.trial_timeout_s`.

    The time is this orchestrator's own (monotonic, from when the run's trial.json was
    first seen), never the worker's clock, which may be another host's.
    """

    def __init__(
        self, limit_s: float | None, on_event: Event, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit_s = limit_s
        self.on_event = on_event
        self._clock = clock
        self._seen: dict[str, float] = {}  # run name -> when its trial.json showed up
        self._timed_out: set[str] = set()  # run names whose worker was killed for the timeout
        self._noted: set[str] = set()  # ... past the timeout but out of reach

    def timed_out(self, run_name: str) -> bool:
        """Whether this run's worker was killed for the timeout."""
        return run_name in self._timed_out

    def enforce(self, running: Iterable[TrialJob], kill: Callable[[int], bool]) -> None:
        """Kill (`kill(pid)`: False when out of reach) the workers of runs past the limit."""
        if self.limit_s is None:
            return
        limit = self.limit_s
        now = self._clock()
        for job in list(running):
            name = job.run_name
            if name in self._timed_out or name in self._noted:
                continue
            pid = worker_pid(job)
            if pid is None:
                continue  # not started yet: its clock has not started either
            if now - self._seen.setdefault(name, now) <= limit:
                continue
            if kill(pid):
                self._timed_out.add(name)
                self.on_event("timed_out", {"number": job.number, "limit": limit})
            else:
                # A Dask worker is out of reach: say so rather than blame the next trial
                # that happens to fail on the same worker.
                self._noted.add(name)
                self.on_event(
                    "warning",
                    {
                        "message": f"trial {job.number} ran past task.trial_timeout_s="
                        f"{limit:g} s, but its worker cannot be stopped from here; it runs on"
                    },
                )

    def forget(self, run_name: str) -> None:
        """A run that ended: a re-run of it (a repeat queued again after another trial's
        crash) gets a timeout clock of its own, not the one this attempt left behind."""
        self._seen.pop(run_name, None)
        self._timed_out.discard(run_name)
        self._noted.discard(run_name)
