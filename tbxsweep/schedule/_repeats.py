"""`study.repeats`: the runs of one Optuna trial, and the one outcome it is told with.

An asked trial becomes `repeats` jobs (runs `trial-0003/r0`, `r1`, ...). The trial is told
once, when no repeat is queued or running any more, with the mean of its repeats' values.
The first repeat that is pruned or fails decides it: queued repeats are dropped, running
ones stopped, and only the runs of repeats that ended in the trial's state stay in
TensorBoard's group. Everything here is bookkeeping on plain data; the scheduler does what
it decides (kill a worker, move a run aside, tell the study).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from tbxsweep.jobs import SlotPlan, TrialJob, TrialOutcome, TrialState
from tbxsweep.paths import SweepPaths
from tbxsweep.schedule._crashes import worker_pid
from tbxsweep.schedule._recover import close_runs, move_aside
from tbxsweep.spec import Spec


class Taken(Enum):
    """What became of a repeat's outcome (`Pending.take`)."""

    UNNEEDED = "unneeded"  # its trial no longer needs it (decided or taken over)
    COLLATERAL = "collateral"  # another trial's worker crash stopped it
    KEPT = "kept"  # a completed repeat: its value counts towards the mean
    DECIDES = "decides"  # the first pruned or failed repeat: the trial ends with it


@dataclass
class Pending:
    """An asked Optuna trial whose repeats are queued, running or done."""

    trial: Any
    jobs: list[TrialJob]
    queued: list[TrialJob]
    outcomes: dict[int, TrialOutcome] = field(default_factory=dict)
    running: set[int] = field(default_factory=set)  # repeats submitted, not yet collected
    stopping: set[int] = field(default_factory=set)  # running repeats the trial no longer needs
    stopped: set[int] = field(default_factory=set)  # ... whose worker was killed on purpose
    decided: bool = False
    taken_over: str | None = None  # another orchestrator failed it: never told by us

    @property
    def number(self) -> int:
        return int(self.trial.number)

    @property
    def done(self) -> bool:
        """No repeat is queued or running: the trial can be told (or dropped)."""
        return not self.running and not self.queued

    def take(self, job: TrialJob, out: TrialOutcome) -> Taken:
        """Note that a repeat's job came back with `out`; say what it means for the trial."""
        self.running.discard(job.repeat)
        if self.taken_over is not None or job.repeat in self.stopping:
            return Taken.UNNEEDED  # however it ended
        if out.metrics.get("collateral"):
            return Taken.COLLATERAL
        self.outcomes[job.repeat] = out
        if out.state is TrialState.COMPLETE or self.decided:
            return Taken.KEPT
        # a failed or pruned repeat decides the trial: the others are not needed
        self.decided = True
        self.queued.clear()
        self.stopping |= self.running
        return Taken.DECIDES

    def give_up(self, reason: str) -> None:
        """Another orchestrator failed this trial: run none of it any more."""
        self.taken_over = reason
        self.queued.clear()
        self.stopping |= self.running

    def reruns_collateral(self) -> bool:
        """Whether a repeat stopped by another trial's crash runs again on its own. A lone
        run cannot: its whole trial is failed and queued again instead."""
        return len(self.jobs) > 1 and not self.decided

    def run_again(self, job: TrialJob, resume_dir: str | None, at: float) -> None:
        """Queue a repeat once more (from the checkpoint in `resume_dir`, if any)."""
        self.queued.append(replace(job, resume_dir=resume_dir or job.resume_dir, dispatched_at=at))

    def to_stop(self) -> list[int]:
        """The running repeats whose workers should be killed and are not yet."""
        return sorted((self.stopping - self.stopped) & self.running)

    def stop_unneeded(self, kill: Callable[[int], bool]) -> None:
        """Kill (`kill(pid)`) the workers of repeats the trial no longer needs, once their
        trial.json names the worker. loky replaces the whole pool then: the other trials
        it ran come back as collateral and run again."""
        for r in self.to_stop():
            pid = worker_pid(self.jobs[r])
            if pid is not None and kill(pid):
                self.stopped.add(r)

    def kept(self, state: TrialState) -> list[int]:
        """The repeats that ended in the trial's `state`: the runs of its TensorBoard row."""
        return [r for r in sorted(self.outcomes) if self.outcomes[r].state is state]

    def ended_before_interrupt(self) -> list[TrialJob]:
        """Repeats of an interrupted trial that ended on their own, not failed: they wrote a
        session end of their own (TensorBoard keeps the first), so their runs must leave
        the group for it to show the trial as failed, as the study does."""
        if len(self.jobs) < 2:
            return []
        return [
            self.jobs[r] for r, out in self.outcomes.items() if out.state is not TrialState.FAIL
        ]

    def combined(self) -> TrialOutcome:
        """The trial's outcome from its repeats' (`combine`)."""
        return combine([self.outcomes[r] for r in sorted(self.outcomes)])


def combine(outs: list[TrialOutcome]) -> TrialOutcome:
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
        values=mean_values(outs),
        # the worst repeat's margin (all within bounds, or combine returned above)
        constraints={
            k: max(o.constraints.get(k, v) for o in outs) for k, v in first.constraints.items()
        },
        duration_s=sum(o.duration_s for o in outs),
        ended_at=max(o.ended_at for o in outs),
        epochs_run=max(o.epochs_run for o in outs),
    )


def mean_values(outs: list[TrialOutcome]) -> tuple[float, ...]:
    """Every objective's mean over the repeats (a cost like `seconds` per run, too)."""
    rows = [o.values for o in outs if o.values]
    return tuple(sum(col) / len(col) for col in zip(*rows, strict=True)) if rows else ()


def resume_dir(old_trial_dir: str | None, run_name: str, group: str) -> str | None:
    """Where the re-run of a repeat finds the checkpoint of the run it replaces."""
    if old_trial_dir is None:
        return None
    if run_name == group:
        return old_trial_dir
    return str(Path(old_trial_dir) / Path(run_name).relative_to(group))


def repeat_jobs(
    trial: Any,
    spec: Spec,
    paths: SweepPaths,
    *,
    resume_from: str | None,
    storage_url: str,
    slots: SlotPlan,
    base_model_path: str | None,
    model_bar: float | None,
    weights_bar: float | None = None,
) -> list[TrialJob]:
    """The jobs of an asked trial's repeats (one job without `study.repeats`).

    Args:
        resume_from: the directory of the trial this one re-runs, whose checkpoints its
            repeats continue from (`_recover.prepare_retry`).
        model_bar: the value a trial must beat to be worth saving its model.
        weights_bar: the value a trial must beat to be worth its best-epoch weights (the
            test split's evaluation reads them).
    """
    params = {k: _plain(v) for k, v in trial.params.items()}
    repeats = spec.study.repeats
    group = paths.run_name(trial.number)
    jobs = []
    for r in range(repeats):
        run_name = paths.repeat_run_name(trial.number, r, repeats)
        jobs.append(
            TrialJob(
                number=trial.number,
                trial_id=trial._trial_id,
                params=params,
                seed=spec.task.seed + trial.number * repeats + r,
                run_dir=str(paths.root / run_name),
                run_name=run_name,
                group=group,
                spec=spec,
                # Only the first repeat reports to the pruner: one curve per Optuna trial.
                storage_url=storage_url if r == 0 else None,
                slots=slots,
                base_model_path=base_model_path,
                dispatched_at=time.time(),
                repeat=r,
                resume_dir=resume_dir(resume_from, run_name, group),
                model_bar=model_bar,
                weights_bar=weights_bar,
            )
        )
    return jobs


def _plain(v: Any) -> Any:
    """A plain Python value for a numpy scalar (Optuna may hand some back)."""
    return v.item() if hasattr(v, "item") else v


def aside_run(paths: SweepPaths, job: TrialJob, tag: str) -> Path | None:
    """Move a repeat's run out of TensorBoard's view (`_aside/trial-0003.r1.<tag>`)."""
    name = job.run_name.replace("/", ".")
    return move_aside(paths, Path(job.run_dir), tag, name=name)


def settle_runs(paths: SweepPaths, pending: Pending, state: TrialState, kept: list[int]) -> None:
    """Leave in TensorBoard's group of a told trial only its `kept` runs, each with a
    session end: a repeat stopped because a sibling was pruned or failed moves aside, and
    a worker that died wrote no session end (and maybe not even its start)."""
    jobs = pending.jobs
    for job in jobs:
        if job.repeat not in kept:
            aside_run(paths, job, "stopped")
    if state in (TrialState.FAIL, TrialState.INFEASIBLE):
        close_runs(
            [Path(jobs[r].run_dir) for r in kept if Path(jobs[r].run_dir).is_dir()],
            (jobs[0].spec, jobs[0].params, jobs[0].group),
            state=state.value,
        )
