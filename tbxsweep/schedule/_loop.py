"""The orchestrator loop: ask as soon as a worker is free, tell as soon as a trial ends.

Only this module talks to the study with ask/tell. Workers get a TrialJob and return a
TrialOutcome; a worker that dies fails the trial it was running, nothing else.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from tbxsweep.errors import FatalError, Interrupted
from tbxsweep.export import (
    ATTR,
    ModelKeeper,
    front_ranks,
    infeasible,
    kept_models,
    leaderboard_frame,
    test_results,
    write_csv_atomic,
)
from tbxsweep.jobs import SlotPlan, TrialJob, TrialOutcome, TrialState
from tbxsweep.paths import TRIAL_JSON, SweepPaths
from tbxsweep.schedule._oom import killed_for_memory, oom_kills
from tbxsweep.schedule._recover import (
    ASIDE_ATTR,
    HEARTBEAT_ATTR,
    OWNER_ATTR,
    HeartbeatWatch,
    aside_numbers,
    close_runs,
    fail_and_requeue,
    heartbeat_interval,
    move_aside,
    owner,
    prepare_retry,
    recover_stale,
)
from tbxsweep.schedule._stop import StopRequest
from tbxsweep.spec import Spec
from tbxsweep.study import SEEDED_ATTR, study_lock

Event = Callable[[str, dict[str, Any]], None]


@dataclass
class SweepCounts:
    """What the progress display shows."""

    n_trials: int
    output_dir: Path = Path(".")
    finished: int = 0
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    infeasible: int = 0  # out of memory or outside study.constraints; counts as finished
    # The best by the first objective (with several objectives too: "best so far" of it).
    best_value: float | None = None
    best_trial: int | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    # A multi-objective study's Pareto front: (trial, objective values, params), by trial.
    front: list[tuple[int, list[float], dict[str, Any]]] = field(default_factory=list)


@dataclass
class _Pending:
    """An asked Optuna trial whose repeats are queued, running or done.

    The trial is told once, when no repeat is queued or running any more. The first
    repeat that is pruned or fails decides it: queued repeats are dropped and running
    ones stopped (`stopping`, until their worker is killed: `stopped`), and only the runs
    of repeats that ended in the trial's state stay in TensorBoard's group.
    """

    trial: Any
    jobs: list[TrialJob]
    queued: list[TrialJob]
    outcomes: dict[int, TrialOutcome] = field(default_factory=dict)
    running: set[int] = field(default_factory=set)  # repeats submitted, not yet collected
    stopping: set[int] = field(default_factory=set)  # running repeats the trial no longer needs
    stopped: set[int] = field(default_factory=set)  # ... whose worker was killed on purpose
    decided: bool = False
    taken_over: str | None = None  # another orchestrator failed it: never told by us


def _combine(outs: list[TrialOutcome]) -> TrialOutcome:
    """One outcome for a trial from its repeats: the mean value, the worst state."""
    first = outs[0]
    if len(outs) == 1:
        return first
    for state in (TrialState.FAIL, TrialState.INFEASIBLE, TrialState.PRUNED):
        bad = [o for o in outs if o.state is state]
        if bad:
            return replace(bad[0], number=first.number)
    values = [o.value for o in outs if o.value is not None]
    mean = sum(values) / len(values) if values else None
    return replace(
        first,
        value=mean,
        values=_mean_values(outs),
        # the worst repeat's margin (all within bounds, or _combine returned above)
        constraints={
            k: max(o.constraints.get(k, v) for o in outs) for k, v in first.constraints.items()
        },
        duration_s=sum(o.duration_s for o in outs),
        ended_at=max(o.ended_at for o in outs),
        epochs_run=max(o.epochs_run for o in outs),
    )


def _mean_values(outs: list[TrialOutcome]) -> tuple[float, ...]:
    """Every objective's mean over the repeats (a cost like `seconds` per run, too)."""
    rows = [o.values for o in outs if o.values]
    return tuple(sum(col) / len(col) for col in zip(*rows, strict=True)) if rows else ()


# leaderboard.csv is rewritten when a trial finishes, at most this often (it is a few ms
# for a short study, ~60 ms for 2,000 trials), and always when the sweep stops.
LEADERBOARD_EVERY_S = 2.0


class Scheduler:
    """Runs the trials of one study until `n_trials` are finished (completed + pruned)."""

    def __init__(
        self,
        *,
        spec: Spec,
        study: Any,
        dists: dict[str, Any],
        paths: SweepPaths,
        pool: Any,
        slots: SlotPlan,
        storage_url: str,
        base_model_path: str | None,
        sweep_log: Any,
        on_event: Event,
    ) -> None:
        self.spec = spec
        self.study = study
        self.dists = dists
        self.paths = paths
        self.slots = slots
        self.storage_url = storage_url
        self.base_model_path = base_model_path
        self.on_event = on_event
        self.pool = pool  # a LokyPool or a DaskPool
        self.running: dict[Future[Any], TrialJob] = {}
        self.pending: dict[int, _Pending] = {}
        self.sweep_log = sweep_log  # a tblog.SweepLogger
        self.counts = SweepCounts(n_trials=spec.study.n_trials, output_dir=paths.root)
        self.consecutive_failures = 0
        self._board_written = float("-inf")
        self.last_error: str | None = None
        self.stopping = False
        self._owner = owner()
        self._beats = 0
        self._last_beat = float("-inf")
        self._watch = HeartbeatWatch()
        # The first look at other orchestrators' heartbeats starts this observer's clock.
        self._last_recovery = float("-inf")
        self._seen_running: dict[str, float] = {}  # run name -> when its trial.json showed up
        self._timed_out: set[str] = set()  # run names whose worker was killed for the timeout
        self._timeout_noted: set[str] = set()  # ... past the timeout but out of reach
        self._interrupted = 0
        self._oom_before: dict[str, tuple[int | None, ...]] = {}  # run name -> at dispatch
        self._models = ModelKeeper(
            paths, spec.study.direction, spec.output.keep_models, spec.study.multi_objective
        )

    # -- the pool -------------------------------------------------------------------
    def submit(self, fn: Any, job: Any) -> Future[Any]:
        future: Future[Any] = self.pool.submit(fn, job)
        return future

    def kill_workers(self) -> None:
        self.pool.kill_workers()

    # -- the loop -------------------------------------------------------------------
    def run(self, stop: StopRequest | None = None) -> SweepCounts:
        """Run until `n_trials` are finished, the timeout passes or `stop` is requested.

        Raises:
            Interrupted: after a stop request, once running trials are recorded.
        """
        from tbxsweep.worker import run_job

        stop = stop or StopRequest()
        started = time.monotonic()
        timeout = self.spec.study.timeout
        self._refresh_counts()
        while True:
            if timeout is not None and time.monotonic() - started > timeout and not self.stopping:
                self.stopping = True
                self.on_event("timeout", {"seconds": timeout})
            if stop.count and not self.stopping:
                self.stopping = True
                self.on_event(
                    "stopping",
                    {"running": len(self.running), "grace_s": self.spec.resources.grace_s},
                )
            if stop.count and self.running and self._stop_now(stop):
                self._interrupt()
                raise Interrupted(
                    f"interrupted: {self._interrupted} running trial(s) recorded as failed "
                    "(reason: interrupted) and queued to run again; run the same command to "
                    "resume"
                )
            self._dispatch(run_job)
            self._recover_others()
            if not self.running:
                if self.stopping or not self._others_in_flight():
                    break
                time.sleep(0.5)  # the budget is held by other orchestrators' running trials
                continue
            done, _ = wait(list(self.running), timeout=0.25, return_when=FIRST_COMPLETED)
            self.pool.snapshot()
            finished = [(self.running.pop(fut), fut) for fut in done]
            # Free workers get their next trial before the finished ones are told and the
            # leaderboard rewritten: a worker waits only for one ask, not for the books.
            self._dispatch(run_job)
            for job, fut in finished:
                self._collect(job, self._outcome(fut, job))
                self._forget_timer(job.run_name)
            self._heartbeat()
            self._stop_unneeded()
            self._enforce_trial_timeout()
        self.write_leaderboard()
        self.write_fronts()
        if stop.count:
            c = self.counts
            raise Interrupted(
                f"interrupted: no trial left running, {c.finished}/{c.n_trials} finished; "
                "run the same command to resume"
            )
        return self.counts

    def _dispatch(self, run_job: Any) -> None:
        """Give every free worker slot a trial, as long as the budget wants more."""
        while len(self.running) < len(self.slots.devices):
            job = self._next_job()
            if job is None:
                break
            self._oom_before[job.run_name] = oom_kills()
            self.running[self.submit(run_job, job)] = job
            self.pending[job.number].running.add(job.repeat)
            self.counts.running = len(self.running)
            if job.repeat == 0:
                self.on_event(
                    "started",
                    {"number": job.number, "params": job.params, "counts": self.counts},
                )
        self.counts.running = len(self.running)

    def _stop_now(self, stop: StopRequest) -> bool:
        if stop.count >= 2:
            return True
        return time.monotonic() - stop.first_at > self.spec.resources.grace_s

    def _interrupt(self) -> None:
        """Stop running trials now and record each of them honestly."""
        self.kill_workers()
        self.running.clear()
        self._interrupted = 0
        for number in sorted(self.pending):
            pending = self.pending[number]
            if pending.taken_over is None:
                self._aside_ended_repeats(pending)
            if pending.taken_over is None and fail_and_requeue(
                self.study, self.paths, pending.trial, "interrupted", spec=self.spec
            ):
                self._interrupted += 1
        self.pending.clear()
        self._refresh_counts()
        self.write_leaderboard()

    def _aside_ended_repeats(self, pending: _Pending) -> None:
        """Repeats that ended before their interrupted trial did keep their own session
        end (TensorBoard keeps the first): move their runs aside so that the group shows
        the trial as failed, as the study does."""
        if len(pending.jobs) < 2:
            return
        for r, out in pending.outcomes.items():
            if out.state is not TrialState.FAIL:
                job = pending.jobs[r]
                move_aside(
                    self.paths, Path(job.run_dir), "stopped", name=job.run_name.replace("/", ".")
                )

    def _retrying(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run a storage call, retrying while the database connection is lost."""
        delays = (1, 2, 4, 8, 16, 30)
        for attempt, delay in enumerate((*delays, None), start=1):
            try:
                return fn()
            except Exception as exc:
                if not _connection_lost(exc):
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
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _others_in_flight(self) -> bool:
        """Trials other orchestrators run that the budget still waits for."""
        states = self._states()
        finished = states.get("COMPLETE", 0) + states.get("PRUNED", 0)
        return finished < self.spec.study.n_trials and states.get("RUNNING", 0) > 0

    def _recover_others(self) -> None:
        """Now and then, re-run the trials of orchestrators that died (on any host)."""
        now = time.monotonic()
        if now - self._last_recovery < max(1.0, self.spec.study.stale_after_s / 4):
            return
        self._last_recovery = now
        self._retrying(
            "look for trials of dead orchestrators",
            lambda: recover_stale(
                self.study,
                self.paths,
                self.on_event,
                self.spec.study.stale_after_s,
                exclude=set(self.pending),
                watch=self._watch,
            ),
        )

    def _heartbeat(self) -> None:
        """Bump the heartbeat of every trial this orchestrator runs. Observers time its
        changes by their own clock, so the value only has to change."""
        now = time.monotonic()
        if now - self._last_beat < heartbeat_interval(self.spec.study.stale_after_s):
            return
        self._last_beat = now
        self._beats += 1
        for pending in list(self.pending.values()):
            if pending.taken_over is not None:
                continue
            try:
                pending.trial.set_user_attr(HEARTBEAT_ATTR, self._beats)
            except Exception as exc:
                if _connection_lost(exc):
                    continue  # the next beat tries again; silence is what observers judge
                if self._finished_elsewhere(pending.trial.number):
                    self._take_over(pending)
                else:
                    raise

    def _finished_elsewhere(self, number: int) -> bool:
        """Whether another orchestrator finished (recovered) this trial of ours."""
        trials = self._retrying("read the trials", lambda: self.study.get_trials(deepcopy=False))
        return any(t.number == number and t.state.name != "RUNNING" for t in trials)

    def _take_over(self, pending: _Pending) -> None:
        """Another orchestrator judged this trial stale and failed it: stop its workers,
        never tell it (its re-run belongs to the other one) and go on."""
        number = pending.trial.number
        pending.taken_over = "another orchestrator recorded it as failed and queued it again"
        pending.queued.clear()
        pending.stopping |= pending.running
        self.on_event("taken_over", {"number": number, "reason": pending.taken_over})
        self._stop_unneeded()
        if not pending.running:
            self.pending.pop(number, None)
            self._tidy_taken_over(number)

    def _tidy_taken_over(self, number: int) -> None:
        """A run this orchestrator wrote after the other one moved the trial's runs aside
        (a repeat it started meanwhile) leaves TensorBoard too."""
        aside = self._retrying("read the study", lambda: self.study.user_attrs.get(ASIDE_ATTR, {}))
        if str(number) in aside:
            move_aside(self.paths, self.paths.trial_dir(number), "taken-over")

    def _stop_unneeded(self) -> None:
        """Kill the workers of repeats whose trial is decided (or taken over), once their
        trial.json names the worker. loky replaces the whole pool then: the other trials
        it ran come back as collateral and run again."""
        for pending in self.pending.values():
            for r in sorted(pending.stopping - pending.stopped):
                job = pending.jobs[r]
                rec = _trial_record(job)
                if r not in pending.running or rec is None:
                    continue
                if self.pool.kill_worker(int(rec.get("pid", 0) or 0)):
                    pending.stopped.add(r)

    def _forget_timer(self, run_name: str) -> None:
        """A run that ended: a re-run of it (a repeat queued again after another trial's
        crash) gets a timeout clock of its own, not the one this attempt left behind."""
        self._seen_running.pop(run_name, None)
        self._timed_out.discard(run_name)
        self._timeout_noted.discard(run_name)

    def _enforce_trial_timeout(self) -> None:
        """Kill the worker of a trial running past `task.trial_timeout_s`.

        The time is this orchestrator's own (monotonic, from when the trial's record
        appeared), never the worker's clock, which may be another host's.
        """
        limit = self.spec.task.trial_timeout_s
        if limit is None:
            return
        now = time.monotonic()
        for job in list(self.running.values()):
            name = job.run_name
            if name in self._timed_out or name in self._timeout_noted:
                continue
            rec = _trial_record(job)
            if rec is None:
                continue
            seen = self._seen_running.setdefault(name, now)
            if now - seen <= limit:
                continue
            if self.pool.kill_worker(int(rec.get("pid", 0) or 0)):
                self._timed_out.add(name)
                self.on_event("timed_out", {"number": job.number, "limit": limit})
            else:
                # A Dask worker is out of reach: say so rather than blame the next trial
                # that happens to fail on the same worker.
                self._timeout_noted.add(name)
                self.on_event(
                    "warning",
                    {
                        "message": f"trial {job.number} ran past task.trial_timeout_s="
                        f"{limit:g} s, but its worker cannot be stopped from here; it runs on"
                    },
                )

    def _next_job(self) -> TrialJob | None:
        """A queued repeat of a trial in flight, else a newly asked trial, else None."""
        for pending in self.pending.values():
            if pending.queued:
                return pending.queued.pop(0)
        if self.stopping:
            return None

        def locked_ask() -> _Pending | None:
            with self._ask_lock():
                return self._ask() if self._need_more() else None

        # A retried ask whose first attempt reached the database leaves a trial without
        # an owner record: recover_stale fails and re-runs it, so the budget is kept.
        pending = self._retrying("ask for a trial", locked_ask)
        if pending is None:
            return None
        self.pending[pending.trial.number] = pending
        return pending.queued.pop(0)

    def _ask_lock(self) -> contextlib.AbstractContextManager[None]:
        """Orchestrators of one study take turns to count and ask, so together they never
        start more than `n_trials`."""
        return study_lock(self.storage_url, self.spec.study.name, self.paths.root)

    def _need_more(self) -> bool:
        states = self._states()
        finished = states.get("COMPLETE", 0) + states.get("PRUNED", 0)
        in_flight = states.get("RUNNING", 0)
        return finished + in_flight < self.spec.study.n_trials

    def _trials(self) -> list[Any]:
        """This study's own trials (not those seeded from a forked study)."""
        trials = self._retrying("read the trials", lambda: self.study.get_trials(deepcopy=False))
        return [t for t in trials if SEEDED_ATTR not in t.user_attrs]

    def _states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self._trials():
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        return counts

    def _ask(self) -> _Pending:
        trial = self.study.ask(self.dists)
        # One write: the owner record carries the first heartbeat.
        trial.set_user_attr(OWNER_ATTR, self._owner)
        resume_dir = prepare_retry(self.study, self.paths, trial)
        params = {k: _plain(v) for k, v in trial.params.items()}
        repeats = self.spec.study.repeats
        group = self.paths.run_name(trial.number)
        jobs = []
        for r in range(repeats):
            run_name = self.paths.repeat_run_name(trial.number, r, repeats)
            jobs.append(
                TrialJob(
                    number=trial.number,
                    trial_id=trial._trial_id,
                    params=params,
                    seed=self.spec.task.seed + trial.number * repeats + r,
                    run_dir=str(self.paths.root / run_name),
                    run_name=run_name,
                    group=group,
                    spec=self.spec,
                    # Only the first repeat reports to the pruner: one curve per Optuna trial.
                    storage_url=self.storage_url if r == 0 else None,
                    slots=self.slots,
                    base_model_path=self.base_model_path,
                    dispatched_at=time.time(),
                    repeat=r,
                    resume_dir=_resume_dir(resume_dir, run_name, group),
                    model_bar=self._models.bar,
                )
            )
        return _Pending(trial=trial, jobs=jobs, queued=list(jobs))

    def _outcome(self, fut: Future[Any], job: TrialJob) -> TrialOutcome:
        try:
            out = fut.result()
            assert isinstance(out, TrialOutcome)
            return out
        except Exception as exc:  # a dead worker fails only its trial
            return self._crash_outcome(job, exc)

    def _crash_outcome(self, job: TrialJob, exc: BaseException) -> TrialOutcome:
        """Attribute a broken pool: loky kills every worker when one dies, so only the
        trial whose worker died first failed; the others are collateral and run again."""
        rec = _trial_record(job) or {}
        pid = rec.get("pid")
        dead = self.pool.dead_workers()
        if job.run_name in self._timed_out:
            reason = f"timed out after {self.spec.task.trial_timeout_s:g} s (task.trial_timeout_s)"
            culprit = True
        elif pid is not None and pid in dead:
            reason = f"worker process died ({_exit_text(dead[pid])}) while running this trial"
            culprit = True
            if killed_for_memory(dead[pid], self._oom_before.get(job.run_name)):
                return self._oom_killed(job, int(pid), reason)
        elif "Terminated" in type(exc).__name__ or "Broken" in type(exc).__name__:
            reason = "collateral"
            culprit = not dead  # nothing to attribute it to: fail it rather than loop
            if culprit:
                reason = f"worker process died: {_worker_error(exc)}"
        else:
            reason, culprit = _worker_error(exc), True
        return TrialOutcome(
            number=job.number,
            state=TrialState.FAIL,
            value=None,
            error=reason if culprit else None,
            ended_at=time.time(),
            worker_pid=int(pid or 0),
            metrics={} if culprit else {"collateral": 1.0},
        )

    def _oom_killed(self, job: TrialJob, pid: int, reason: str) -> TrialOutcome:
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

    def _collect(self, job: TrialJob, out: TrialOutcome) -> None:
        """Keep a repeat's outcome; tell the study once no repeat of the trial is left
        queued or running."""
        pending = self.pending.get(job.number)
        if pending is None:  # pragma: no cover - every submitted job has its pending entry
            return
        pending.running.discard(job.repeat)
        if pending.taken_over is not None or job.repeat in pending.stopping:
            pass  # the trial no longer needs this repeat, however it ended
        elif out.metrics.get("collateral"):
            self._collateral(pending, job)
        else:
            pending.outcomes[job.repeat] = out
            if out.state is not TrialState.COMPLETE and not pending.decided:
                # a failed or pruned repeat decides the trial: the others are not needed
                pending.decided = True
                pending.queued.clear()
                pending.stopping |= pending.running
                self._stop_unneeded()
        if pending.running or pending.queued:
            return
        del self.pending[job.number]
        if pending.taken_over is not None:
            self._tidy_taken_over(job.number)
        elif pending.outcomes:
            self._finish(pending)
        else:
            # every repeat was collateral: the trial ran into no fault of its own
            self._requeue(pending)

    def _collateral(self, pending: _Pending, job: TrialJob) -> None:
        """A repeat stopped by another trial's worker crash. With repeats its partial run
        moves aside and the repeat runs again (from its checkpoint): the trial is still
        told once, and the crash counts against no one."""
        if self.spec.study.repeats == 1 or pending.decided:
            return  # a lone run: the whole trial is failed and queued again (_requeue)
        dest = move_aside(
            self.paths, Path(job.run_dir), "interrupted", name=job.run_name.replace("/", ".")
        )
        pending.queued.append(
            replace(
                job,
                resume_dir=str(dest) if dest else job.resume_dir,
                dispatched_at=time.time(),
            )
        )
        self.on_event("requeued", {"number": job.number})

    def _requeue(self, pending: _Pending, why: str = "another trial's worker crashed") -> None:
        """A trial stopped through no fault of its own: close its run and retry it."""
        fail_and_requeue(
            self.study, self.paths, pending.trial, f"interrupted: {why}", spec=self.spec
        )
        self.on_event("requeued", {"number": pending.trial.number})

    def _finish(self, pending: _Pending) -> None:
        import optuna

        jobs = {j.repeat: j for j in pending.jobs}
        out = _combine([pending.outcomes[r] for r in sorted(pending.outcomes)])
        # The trial's row in TensorBoard shows only the runs that ended the way it did: a
        # repeat stopped because a sibling was pruned or failed is not part of it.
        kept = [r for r in sorted(pending.outcomes) if pending.outcomes[r].state is out.state]
        outs = [pending.outcomes[r] for r in kept]
        values = [o.value for o in outs if o.value is not None]
        record = {
            "run": self.paths.run_name(out.number),
            "runs": [jobs[r].run_name for r in kept],
            "device": out.device,
            "cuda_visible_devices": out.cuda_visible_devices,
            "worker_pid": out.worker_pid,
            "host": out.host,
            "best_value": out.value,
            "values": values,
            "best_epoch": out.best_epoch,
            "epochs_run": out.epochs_run,
            "duration_s": out.duration_s,
            "trainable_params": out.trainable_params,
            "feature_cache": out.feature_cache,
            "cache_build_s": sum(o.cache_build_s for o in outs),
            "error": out.error,
            "dispatched_at": jobs[0].dispatched_at,
            "started_at": out.started_at,
            "ended_at": out.ended_at,
            "first_epoch_end": out.first_epoch_end,
            "epoch_seconds": list(out.epoch_seconds),
            "seeds": [jobs[r].seed for r in kept],
            **self._objective_record(out),
        }
        trial = pending.trial
        try:
            self._retrying("record a trial", lambda: trial.set_user_attr(ATTR, record))
        except (RuntimeError, ValueError):  # optuna's UpdateFinishedTrialError among them
            if not self._finished_elsewhere(trial.number):
                raise
            self._take_over(pending)
            return
        for r, job in jobs.items():
            if r not in kept:
                move_aside(
                    self.paths, Path(job.run_dir), "stopped", name=job.run_name.replace("/", ".")
                )
        if out.state in (TrialState.FAIL, TrialState.INFEASIBLE):
            # A worker that died wrote no session end (and maybe not even its start).
            close_runs(
                [Path(jobs[r].run_dir) for r in kept if Path(jobs[r].run_dir).is_dir()],
                (self.spec, jobs[0].params, jobs[0].group),
                state=out.state.value,
            )
        name, told = _told(out, self.spec.study.multi_objective)
        for key, c in out.constraints.items():  # before the tell: a finished trial is frozen
            self._retrying("record a trial", partial(trial.set_constraint, key, c))
        state = getattr(optuna.trial.TrialState, name)
        # skip_if_finished: a retried tell whose first attempt did reach the database
        tell = partial(self.study.tell, trial, told, state=state, skip_if_finished=True)
        self._retrying("record a trial", tell)
        if out.state is TrialState.FAIL:
            self.consecutive_failures += 1
            self.last_error = out.error
        elif out.state is not TrialState.INFEASIBLE:
            # An infeasible trial is an answer about its parameters, not a failure of the
            # sweep: it neither counts towards max_consecutive_failures nor resets it.
            self.consecutive_failures = 0
        everything = self._retrying(
            "read the trials", lambda: self.study.get_trials(deepcopy=False)
        )
        self._refresh_counts([t for t in everything if SEEDED_ATTR not in t.user_attrs])
        self._models.prune(everything)  # the best output.keep_models trials keep theirs
        if time.monotonic() - self._board_written >= LEADERBOARD_EVERY_S:
            self.write_leaderboard(everything)
        self.sweep_log.trial_finished(
            self.study,
            out.number,
            out.value,
            self.counts.best_value,
            self.counts.complete,
            cache_build_s=record["cache_build_s"],
        )
        self.on_event("finished", {"outcome": out, "counts": self.counts})
        limit = self.spec.study.max_consecutive_failures
        if self.consecutive_failures >= limit and not self.stopping:
            self.stopping = True
            self.on_event("too_many_failures", {"limit": limit, "error": self.last_error})
            self._fatal = FatalError(
                f"stopped after {limit} consecutive failed trials; last error: {self.last_error}"
            )

    def _objective_record(self, out: TrialOutcome) -> dict[str, Any]:
        """The record's `objectives` (a multi-objective study's told values, which the
        leaderboard ranks into Pareto fronts) and `constraints` (> 0: infeasible)."""
        rec: dict[str, Any] = {"constraints": dict(out.constraints)}
        if self.spec.study.multi_objective and out.values:
            rec["objectives"] = [
                {"name": g.name, "direction": g.direction, "value": v}
                for g, v in zip(self.spec.study.goals, out.values, strict=True)
            ]
        return rec

    def _refresh_counts(self, trials: list[Any] | None = None) -> None:
        c = self.counts
        c.complete = c.pruned = c.failed = c.infeasible = 0
        best, best_value = None, None
        trials = self._trials() if trials is None else trials
        for t in trials:
            name = t.state.name
            if name in ("COMPLETE", "PRUNED") and infeasible(t):
                c.infeasible += 1
            elif name == "COMPLETE":
                c.complete += 1
                value = t.values[0] if t.values else None
                if value is not None and _better(value, best_value, self.spec.study.direction):
                    best, best_value = t, value
            elif name == "PRUNED":
                c.pruned += 1
            elif name == "FAIL":
                c.failed += 1
        c.finished = c.complete + c.pruned + c.infeasible
        if best is not None:
            c.best_value, c.best_trial, c.best_params = best_value, best.number, dict(best.params)
        if self.spec.study.multi_objective:
            on_front = {n for n, r in front_ranks(trials).items() if r == 0}
            c.front = [
                (t.number, list(t.values), dict(t.params))
                for t in sorted(trials, key=lambda t: t.number)
                if t.number in on_front
            ]

    def write_fronts(self) -> None:
        """Write every completed trial's Pareto front rank into its TensorBoard runs (the
        tab's `pareto` column): once, when the sweep stops, as ranks change with every
        trial that finishes."""
        if not self.spec.study.multi_objective:
            return
        from tbxsweep.tblog import write_front_ranks

        trials = self._trials()
        aside = aside_numbers(self._retrying("read the study", lambda: self.study.user_attrs))
        ranks = front_ranks(trials)
        runs = {
            run: ranks[t.number]
            for t in trials
            if t.number in ranks and t.number not in aside
            for run in t.user_attrs.get(ATTR, {}).get("runs", [])
        }
        write_front_ranks(self.paths.root, runs, step=self.counts.finished)

    def write_leaderboard(self, trials: list[Any] | None = None) -> None:
        attrs = self._retrying("read the study", lambda: self.study.user_attrs)
        trials = self.study.get_trials(deepcopy=False) if trials is None else trials
        self._models.prune(trials)  # also when no trial finished (a resume, an interrupt)
        df = leaderboard_frame(
            trials,
            list(self.spec.search_space),
            self.spec.study.direction,
            aside_numbers(attrs),
            # a resumed sweep keeps the held-out columns its earlier run wrote
            tests=test_results(attrs),
            models=kept_models(self.paths, trials, self.spec.study.direction),
        )
        write_csv_atomic(df, self.paths.leaderboard_csv)
        self._board_written = time.monotonic()

    def raise_if_fatal(self) -> None:
        fatal = getattr(self, "_fatal", None)
        if fatal is not None:
            raise fatal


def _connection_lost(exc: BaseException) -> bool:
    try:
        from sqlalchemy import exc as sa
    except ImportError:  # pragma: no cover - optuna depends on sqlalchemy
        return False
    lost = (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError)
    # Optuna wraps driver errors (StorageInternalError); look at what it wraps.
    while exc is not None:
        if isinstance(exc, lost):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def _resume_dir(old_trial_dir: str | None, run_name: str, group: str) -> str | None:
    """Where the re-run of a repeat finds the checkpoint of the run it replaces."""
    if old_trial_dir is None:
        return None
    return (
        str(Path(old_trial_dir) / Path(run_name).relative_to(group))
        if run_name != group
        else old_trial_dir
    )


def _trial_record(job: TrialJob) -> dict[str, Any] | None:
    """The worker's trial.json for this job (pid, start, heartbeat), once it has started."""
    try:
        rec = json.loads((Path(job.run_dir) / TRIAL_JSON).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _told(out: TrialOutcome, multi: bool) -> tuple[str, float | list[float] | None]:
    """(Optuna state name, value or values) to tell for an outcome. An infeasible trial is
    told as completed when it has values (outside study.constraints), else as pruned (out
    of memory): both are states the samplers learn from, which they do not from a failure;
    its constraint value > 0 tells them it is infeasible."""
    values: list[float] = list(out.values) or ([] if out.value is None else [out.value])
    if out.state is TrialState.COMPLETE or (out.state is TrialState.INFEASIBLE and values):
        return "COMPLETE", values if multi else values[0]
    if out.state is TrialState.INFEASIBLE:
        return "PRUNED", None
    return out.state.value, None


def _better(a: float, b: float | None, direction: str) -> bool:
    if b is None:
        return True
    return a > b if direction == "maximize" else a < b


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _worker_error(exc: BaseException) -> str:
    name = type(exc).__name__
    text = " ".join(str(exc).split())
    if "TerminatedWorkerError" in name or "BrokenProcessPool" in name:
        return f"worker process died: {text[:300]}"
    return f"{name}: {text[:300]}"
