"""The orchestrator loop: ask as soon as a worker is free, tell as soon as a trial ends.

Only this module talks to the study with ask/tell. Workers get a TrialJob and return a
TrialOutcome; a worker that dies fails the trial it was running, nothing else. The loop
holds its collaborators, each with its own state: the repeats of the trials in flight
(`_repeats.Pending`), who is to blame for a crash and storage retries (`_crashes`),
heartbeats, stale trials and timeouts (`_liveness`), and the books (`_books`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from functools import partial
from typing import Any

from tbxsweep.errors import FatalError, Interrupted
from tbxsweep.jobs import SlotPlan, TrialJob, TrialOutcome
from tbxsweep.paths import SweepPaths
from tbxsweep.schedule._books import Books, SweepCounts, told, trial_record
from tbxsweep.schedule._crashes import CrashJudge, FailureStreak, StorageRetry
from tbxsweep.schedule._liveness import Heartbeats, TrialTimer, others_in_flight
from tbxsweep.schedule._recover import (
    fail_and_requeue,
    prepare_retry,
)
from tbxsweep.schedule._repeats import Pending, Taken, aside_run, repeat_jobs, settle_runs
from tbxsweep.schedule._stop import StopRequest
from tbxsweep.spec import Spec
from tbxsweep.study import OWNER_ATTR, RECORD_ATTR, study_lock

Event = Callable[[str, dict[str, Any]], None]


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
        self.paths = paths
        self.slots = slots
        self.base_model_path = base_model_path
        self.on_event = on_event
        self.pool = pool  # a LokyPool or a DaskPool
        self.sweep_log = sweep_log  # a tblog.SweepLogger
        self.running: dict[Future[Any], TrialJob] = {}
        self.pending: dict[int, Pending] = {}
        self.stopping = False
        self._fatal: FatalError | None = None
        self._interrupted = 0
        self.retry = StorageRetry(on_event)
        self.books = Books(spec, study, paths, self.retry)
        self.crashes = CrashJudge(spec.task.trial_timeout_s)
        self.failures = FailureStreak(spec.study.max_consecutive_failures)
        self.heartbeats = Heartbeats(study, paths, spec.study.stale_after_s, self.retry, on_event)
        self.timer = TrialTimer(spec.task.trial_timeout_s, on_event)
        self.asker = Asker(
            spec=spec,
            study=study,
            dists=dists,
            paths=paths,
            slots=slots,
            storage_url=storage_url,
            base_model_path=base_model_path,
            books=self.books,
            owner=self.heartbeats.owner,
        )

    @property
    def counts(self) -> SweepCounts:
        return self.books.counts

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
        self.books.refresh_counts()
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
            if self.running and stop.now(self.spec.resources.grace_s):
                self._interrupt()
                raise Interrupted(
                    f"interrupted: {self._interrupted} running trial(s) recorded as failed "
                    "(reason: interrupted) and queued to run again; run the same command to "
                    "resume"
                )
            # Recovery first: a trial it fails and queues again is dispatched at once, not
            # mistaken for the end of the budget once no trial of ours is left running.
            self.heartbeats.recover_others(exclude=set(self.pending))
            self._dispatch(run_job)
            if not self.running:
                n_trials = self.spec.study.n_trials
                if self.stopping or not others_in_flight(self.books.states(), n_trials):
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
                timed_out = self.timer.timed_out(job.run_name)
                out = self.crashes.outcome(fut, job, self.pool.dead_workers, timed_out)
                self._collect(job, out)
                self.timer.forget(job.run_name)
            self._heartbeat()
            self._stop_unneeded()
            self.timer.enforce(self.running.values(), self.pool.kill_worker)
        self.write_leaderboard()
        self.books.write_fronts()
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
            self.crashes.dispatched(job)
            self.running[self.submit(run_job, job)] = job
            self.pending[job.number].running.add(job.repeat)
            self.counts.running = len(self.running)
            if job.repeat == 0:
                self.on_event(
                    "started",
                    {"number": job.number, "params": job.params, "counts": self.counts},
                )
        self.counts.running = len(self.running)

    def _interrupt(self) -> None:
        """Stop running trials now and record each of them honestly."""
        self.kill_workers()
        self.running.clear()
        self._interrupted = 0
        for number in sorted(self.pending):
            pending = self.pending[number]
            if pending.taken_over is not None:
                continue
            for job in pending.ended_before_interrupt():
                aside_run(self.paths, job, "stopped")
            if fail_and_requeue(
                self.study, self.paths, pending.trial, "interrupted", spec=self.spec
            ):
                self._interrupted += 1
        self.pending.clear()
        self.books.refresh_counts()
        self.write_leaderboard()

    def _next_job(self) -> TrialJob | None:
        """A queued repeat of a trial in flight, else a newly asked trial, else None."""
        for pending in self.pending.values():
            if pending.queued:
                return pending.queued.pop(0)
        if self.stopping:
            return None
        asked = self.asker.ask()
        if asked is None:
            return None
        self.pending[asked.number] = asked
        return asked.queued.pop(0)

    # -- collect and tell ---------------------------------------------------------------
    def _collect(self, job: TrialJob, out: TrialOutcome) -> None:
        """Keep a repeat's outcome; tell the study once no repeat of the trial is left
        queued or running."""
        pending = self.pending.get(job.number)
        if pending is None:  # pragma: no cover - every submitted job has its pending entry
            return
        taken = pending.take(job, out)
        if taken is Taken.COLLATERAL and pending.reruns_collateral():
            # Its partial run moves aside and the repeat runs again (from its checkpoint):
            # the trial is still told once, and the crash counts against no one.
            dest = aside_run(self.paths, job, "interrupted")
            pending.run_again(job, str(dest) if dest else None, at=time.time())
            self.on_event("requeued", {"number": job.number})
        elif taken is Taken.DECIDES:
            self._stop_unneeded()
        if not pending.done:
            return
        del self.pending[job.number]
        if pending.taken_over is not None:
            self.heartbeats.tidy_taken_over(job.number)
        elif pending.outcomes:
            self._finish(pending)
        else:
            # every repeat was collateral: the trial ran into no fault of its own
            why = "interrupted: another trial's worker crashed"
            fail_and_requeue(self.study, self.paths, pending.trial, why, spec=self.spec)
            self.on_event("requeued", {"number": pending.number})

    def _finish(self, pending: Pending) -> None:
        """Record and tell a trial whose repeats all ended, then update the books."""
        out = pending.combined()
        # The trial's row in TensorBoard shows only the runs that ended the way it did: a
        # repeat stopped because a sibling was pruned or failed is not part of it.
        kept = pending.kept(out.state)
        jobs = pending.jobs
        ran = [(jobs[r], pending.outcomes[r]) for r in kept]
        record = trial_record(out, ran, jobs[0], self.spec)
        trial = pending.trial
        try:
            self.retry("record a trial", lambda: trial.set_user_attr(RECORD_ATTR, record))
        except (RuntimeError, ValueError):  # optuna's UpdateFinishedTrialError among them
            if not self.heartbeats.finished_elsewhere(trial.number):
                raise
            self._take_over(pending)
            return
        settle_runs(self.paths, pending, out.state, kept)
        self._tell(trial, out)
        self.books.trial_told()
        self.sweep_log.trial_finished(
            self.study,
            out.number,
            out.value,
            self.counts.best_value,
            self.counts.complete,
            cache_build_s=record["cache_build_s"],
        )
        self.on_event("finished", {"outcome": out, "counts": self.counts})
        if self.failures.note(out) and not self.stopping:
            self.stopping = True
            f = self.failures
            self.on_event("too_many_failures", {"limit": f.limit, "error": f.last_error})
            self._fatal = f.fatal()

    def _tell(self, trial: Any, out: TrialOutcome) -> None:
        import optuna

        name, values = told(out, self.spec.study.multi_objective)
        for key, c in out.constraints.items():  # before the tell: a finished trial is frozen
            self.retry("record a trial", partial(trial.set_constraint, key, c))
        state = getattr(optuna.trial.TrialState, name)
        # skip_if_finished: a retried tell whose first attempt did reach the database
        tell = partial(self.study.tell, trial, values, state=state, skip_if_finished=True)
        self.retry("record a trial", tell)

    # -- trials no longer needed ----------------------------------------------------------
    def _heartbeat(self) -> None:
        """Beat for every trial in flight; drop those another orchestrator took over."""
        for pending in self.heartbeats.beat(self.pending.values()):
            self._take_over(pending)

    def _take_over(self, pending: Pending) -> None:
        """Another orchestrator failed this trial: stop its workers and go on."""
        self.heartbeats.take_over(pending)
        self._stop_unneeded()
        if not pending.running:
            self.pending.pop(pending.number, None)
            self.heartbeats.tidy_taken_over(pending.number)

    def _stop_unneeded(self) -> None:
        """Kill the workers of repeats whose trial is decided or taken over."""
        for pending in self.pending.values():
            pending.stop_unneeded(self.pool.kill_worker)

    # -- the books ----------------------------------------------------------------------
    def write_leaderboard(self) -> None:
        self.books.write_leaderboard()

    def raise_if_fatal(self) -> None:
        if self._fatal is not None:
            raise self._fatal


class Asker:
    """Asks the study for the next trial while the budget wants more, and turns it into
    the jobs of its repeats."""

    def __init__(
        self,
        *,
        spec: Spec,
        study: Any,
        dists: dict[str, Any],
        paths: SweepPaths,
        slots: SlotPlan,
        storage_url: str,
        base_model_path: str | None,
        books: Books,
        owner: dict[str, Any],
    ) -> None:
        self.spec = spec
        self.study = study
        self.dists = dists
        self.paths = paths
        self.slots = slots
        self.storage_url = storage_url
        self.base_model_path = base_model_path
        self.books = books
        self.owner = owner

    def ask(self) -> Pending | None:
        """A newly asked trial, or None when `n_trials` are finished or in flight."""

        def locked_ask() -> Pending | None:
            with self._lock():
                return self._ask() if self._need_more() else None

        # A retried ask whose first attempt reached the database leaves a trial without
        # an owner record: recover_stale fails and re-runs it, so the budget is kept.
        pending: Pending | None = self.books.retry("ask for a trial", locked_ask)
        return pending

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        """Orchestrators of one study take turns to count and ask, so together they never
        start more than `n_trials`."""
        return study_lock(self.storage_url, self.spec.study.name, self.paths.root)

    def _need_more(self) -> bool:
        states = self.books.states()
        finished = states.get("COMPLETE", 0) + states.get("PRUNED", 0)
        in_flight = states.get("RUNNING", 0)
        return finished + in_flight < self.spec.study.n_trials

    def _ask(self) -> Pending:
        trial = self.study.ask(self.dists)
        # One write: the owner record carries the first heartbeat.
        trial.set_user_attr(OWNER_ATTR, self.owner)
        jobs = repeat_jobs(
            trial,
            self.spec,
            self.paths,
            resume_from=prepare_retry(self.study, self.paths, trial),
            storage_url=self.storage_url,
            slots=self.slots,
            base_model_path=self.base_model_path,
            model_bar=self.books.models.bar,
            weights_bar=self.books.models.test_bar,
        )
        return Pending(trial=trial, jobs=jobs, queued=list(jobs))
