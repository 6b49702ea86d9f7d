"""The orchestrator loop: ask as soon as a worker is free, tell as soon as a trial ends.

Only this module talks to the study with ask/tell. Workers get a TrialJob and return a
TrialOutcome; a worker that dies fails the trial it was running, nothing else.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any

from tbxsweep.errors import FatalError
from tbxsweep.export import leaderboard_frame, write_csv_atomic
from tbxsweep.export._leaderboard import ATTR
from tbxsweep.jobs import SlotPlan, TrialJob, TrialOutcome, TrialState
from tbxsweep.paths import SweepPaths
from tbxsweep.spec import Spec

Event = Callable[[str, dict[str, Any]], None]


@dataclass
class SweepCounts:
    """What the progress display shows."""

    n_trials: int
    finished: int = 0
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    best_value: float | None = None
    best_trial: int | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    outcomes: list[TrialOutcome] = field(default_factory=list)


@dataclass
class _Pending:
    """An asked Optuna trial whose repeats are queued, running or done."""

    trial: Any
    jobs: list[TrialJob]
    queued: list[TrialJob]
    outcomes: dict[int, TrialOutcome] = field(default_factory=dict)


def _combine(outs: list[TrialOutcome]) -> TrialOutcome:
    """One outcome for a trial from its repeats: the mean value, the worst state."""
    from dataclasses import replace

    first = outs[0]
    if len(outs) == 1:
        return first
    for state in (TrialState.FAIL, TrialState.PRUNED):
        bad = [o for o in outs if o.state is state]
        if bad:
            return replace(bad[0], number=first.number)
    values = [o.value for o in outs if o.value is not None]
    mean = sum(values) / len(values) if values else None
    return replace(
        first,
        value=mean,
        duration_s=sum(o.duration_s for o in outs),
        ended_at=max(o.ended_at for o in outs),
        epochs_run=max(o.epochs_run for o in outs),
    )


def get_executor(n_workers: int) -> Any:
    """joblib's loky pool: reused worker processes, so TF loads once per worker."""
    from joblib.externals.loky import get_reusable_executor

    env = {
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
        "GRPC_VERBOSITY": os.environ.get("GRPC_VERBOSITY", "ERROR"),
    }
    return get_reusable_executor(max_workers=n_workers, timeout=300, reuse="auto", env=env)


class Scheduler:
    """Runs the trials of one study until `n_trials` are finished (completed + pruned)."""

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
        on_event: Event,
        submit: Callable[[Any, Any], Future[Any]] | None = None,
    ) -> None:
        self.spec = spec
        self.study = study
        self.dists = dists
        self.paths = paths
        self.slots = slots
        self.storage_url = storage_url
        self.base_model_path = base_model_path
        self.on_event = on_event
        self._executor: Any = None
        self._submit = submit
        self.running: dict[Future[Any], TrialJob] = {}
        self.pending: dict[int, _Pending] = {}
        self.sweep_log: Any = None
        self.counts = SweepCounts(n_trials=spec.study.n_trials)
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.stopping = False

    # -- the pool -------------------------------------------------------------------
    def submit(self, fn: Any, job: Any) -> Future[Any]:
        if self._submit is not None:
            return self._submit(fn, job)
        if self._executor is None:
            self._executor = get_executor(len(self.slots.devices))
        return self._executor.submit(fn, job)

    # -- the loop -------------------------------------------------------------------
    def run(self) -> SweepCounts:
        from tbxsweep.worker import run_job

        started = time.monotonic()
        timeout = self.spec.study.timeout
        self._refresh_counts()
        while True:
            if timeout is not None and time.monotonic() - started > timeout and not self.stopping:
                self.stopping = True
                self.on_event("timeout", {"seconds": timeout})
            while len(self.running) < len(self.slots.devices):
                job = self._next_job()
                if job is None:
                    break
                self.running[self.submit(run_job, job)] = job
                self.counts.running = len(self.running)
                if job.repeat == 0:
                    self.on_event(
                        "started",
                        {"number": job.number, "params": job.params, "counts": self.counts},
                    )
            if not self.running:
                break
            done, _ = wait(list(self.running), timeout=0.5, return_when=FIRST_COMPLETED)
            for fut in done:
                job = self.running.pop(fut)
                self.counts.running = len(self.running)
                self._collect(job, self._outcome(fut, job))
        return self.counts

    def _next_job(self) -> TrialJob | None:
        """A queued repeat of a trial in flight, else a newly asked trial, else None."""
        for pending in self.pending.values():
            if pending.queued:
                return pending.queued.pop(0)
        if self.stopping or not self._need_more():
            return None
        pending = self._ask()
        self.pending[pending.trial.number] = pending
        return pending.queued.pop(0)

    def _need_more(self) -> bool:
        states = self._states()
        finished = states.get("COMPLETE", 0) + states.get("PRUNED", 0)
        in_flight = states.get("RUNNING", 0)
        return finished + in_flight < self.spec.study.n_trials

    def _states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.study.get_trials(deepcopy=False):
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        return counts

    def _ask(self) -> _Pending:
        trial = self.study.ask(self.dists)
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
                )
            )
        return _Pending(trial=trial, jobs=jobs, queued=list(jobs))

    def _outcome(self, fut: Future[Any], job: TrialJob) -> TrialOutcome:
        try:
            out = fut.result()
            assert isinstance(out, TrialOutcome)
            return out
        except Exception as exc:
            reason = _worker_error(exc)
            return TrialOutcome(
                number=job.number,
                state=TrialState.FAIL,
                value=None,
                error=reason,
                ended_at=time.time(),
            )

    def _collect(self, job: TrialJob, out: TrialOutcome) -> None:
        """Keep a repeat's outcome; tell the study once every repeat of the trial is in."""
        pending = self.pending[job.number]
        pending.outcomes[job.repeat] = out
        if out.state is not TrialState.COMPLETE:
            pending.queued.clear()  # a failed or pruned repeat decides the trial
        in_flight = any(j.number == job.number for j in self.running.values())
        if in_flight or pending.queued:
            return
        del self.pending[job.number]
        self._finish(pending)

    def _finish(self, pending: _Pending) -> None:
        import optuna

        outs = [pending.outcomes[r] for r in sorted(pending.outcomes)]
        jobs = {j.repeat: j for j in pending.jobs}
        out = _combine(outs)
        values = [o.value for o in outs if o.value is not None]
        record = {
            "run": self.paths.run_name(out.number),
            "runs": [jobs[r].run_name for r in sorted(pending.outcomes)],
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
            "error": out.error,
            "dispatched_at": jobs[0].dispatched_at,
            "started_at": out.started_at,
            "ended_at": out.ended_at,
            "first_epoch_end": out.first_epoch_end,
            "epoch_seconds": list(out.epoch_seconds),
            "seeds": [jobs[r].seed for r in sorted(pending.outcomes)],
        }
        trial = pending.trial
        trial.set_user_attr(ATTR, record)
        if out.state is TrialState.COMPLETE:
            self.study.tell(trial, out.value)
        elif out.state is TrialState.PRUNED:
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        self.counts.outcomes.append(out)
        if out.state is TrialState.FAIL:
            self.consecutive_failures += 1
            self.last_error = out.error
        else:
            self.consecutive_failures = 0
        self._refresh_counts()
        self.write_leaderboard()
        if self.sweep_log is not None:
            self.sweep_log.trial_finished(
                self.study, out.number, out.value, self.counts.best_value, self.counts.complete
            )
        self.on_event("finished", {"outcome": out, "counts": self.counts})
        limit = self.spec.study.max_consecutive_failures
        if self.consecutive_failures >= limit and not self.stopping:
            self.stopping = True
            self.on_event("too_many_failures", {"limit": limit, "error": self.last_error})
            self._fatal = FatalError(
                f"stopped after {limit} consecutive failed trials; last error: {self.last_error}"
            )

    def _refresh_counts(self) -> None:
        c = self.counts
        c.complete = c.pruned = c.failed = 0
        best = None
        for t in self.study.get_trials(deepcopy=False):
            name = t.state.name
            if name == "COMPLETE":
                c.complete += 1
                if best is None or (
                    t.value is not None and _better(t.value, best.value, self.spec.study.direction)
                ):
                    best = t
            elif name == "PRUNED":
                c.pruned += 1
            elif name == "FAIL":
                c.failed += 1
        c.finished = c.complete + c.pruned
        if best is not None:
            c.best_value, c.best_trial, c.best_params = best.value, best.number, dict(best.params)

    def write_leaderboard(self) -> None:
        df = leaderboard_frame(
            self.study.get_trials(deepcopy=False),
            list(self.spec.search_space),
            self.spec.study.direction,
        )
        write_csv_atomic(df, self.paths.leaderboard_csv)

    def raise_if_fatal(self) -> None:
        fatal = getattr(self, "_fatal", None)
        if fatal is not None:
            raise fatal

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)


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
