"""The sweep's books: the per-trial record, the counts the progress display shows,
leaderboard.csv, the Pareto ranks in TensorBoard and the models kept.

The study's storage is the one source of truth: every figure here is read back from it
after a trial is told, never counted on the side.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tbxsweep.export import (
    ModelKeeper,
    front_ranks,
    infeasible,
    kept_models,
    leaderboard_frame,
    test_results,
    write_csv_atomic,
)
from tbxsweep.jobs import TrialJob, TrialOutcome, TrialState
from tbxsweep.paths import SweepPaths
from tbxsweep.schedule._crashes import StorageRetry
from tbxsweep.spec import Spec
from tbxsweep.study import RECORD_ATTR, SEEDED_ATTR, aside_numbers

# leaderboard.csv is rewritten when a trial finishes, at most this often (it is a few ms
# for a short study, ~60 ms for 2,000 trials), and always when the sweep stops.
LEADERBOARD_EVERY_S = 2.0


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


class Books:
    """Reads the study back after each tell: counts, models kept, leaderboard.csv."""

    def __init__(self, spec: Spec, study: Any, paths: SweepPaths, retry: StorageRetry) -> None:
        self.spec = spec
        self.study = study
        self.paths = paths
        self.retry = retry
        self.counts = SweepCounts(n_trials=spec.study.n_trials, output_dir=paths.root)
        self.models = ModelKeeper(
            paths,
            spec.study.direction,
            spec.output.keep_models,
            spec.study.multi_objective,
            test_k=spec.test_top_k,
        )
        self.leaderboard_written_at = float("-inf")  # time.monotonic() of the last write

    def all_trials(self) -> list[Any]:
        """Every trial of the study, seeded ones (`--fork`) included."""
        trials: list[Any] = self.retry(
            "read the trials", lambda: self.study.get_trials(deepcopy=False)
        )
        return trials

    def own_trials(self, trials: list[Any] | None = None) -> list[Any]:
        """This study's own trials (not those seeded from a forked study)."""
        trials = self.all_trials() if trials is None else trials
        return [t for t in trials if SEEDED_ATTR not in t.user_attrs]

    def states(self) -> dict[str, int]:
        """The study's own trials, counted by state name."""
        counts: dict[str, int] = {}
        for t in self.own_trials():
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        return counts

    def trial_told(self) -> None:
        """After a tell: the counts, the models kept and (now and then) leaderboard.csv."""
        everything = self.all_trials()
        self.refresh_counts(self.own_trials(everything))
        self.models.prune(everything)  # the best output.keep_models trials keep theirs
        if time.monotonic() - self.leaderboard_written_at >= LEADERBOARD_EVERY_S:
            self.write_leaderboard(everything)

    def refresh_counts(self, trials: list[Any] | None = None) -> None:
        """Count the study's own trials into `counts` (in place: the display holds it)."""
        count_trials(
            self.counts,
            self.own_trials() if trials is None else trials,
            self.spec.study.direction,
            self.spec.study.multi_objective,
        )

    def write_leaderboard(self, trials: list[Any] | None = None) -> None:
        attrs = self.retry("read the study", lambda: self.study.user_attrs)
        trials = self.study.get_trials(deepcopy=False) if trials is None else trials
        self.models.prune(trials)  # also when no trial finished (a resume, an interrupt)
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
        self.leaderboard_written_at = time.monotonic()

    def write_fronts(self) -> None:
        """Write every completed trial's Pareto front rank into its TensorBoard runs (the
        tab's `pareto` column): once, when the sweep stops, as ranks change with every
        trial that finishes."""
        if not self.spec.study.multi_objective:
            return
        from tbxsweep.tblog import write_front_ranks

        trials = self.own_trials()
        aside = aside_numbers(self.retry("read the study", lambda: self.study.user_attrs))
        ranks = front_ranks(trials)
        runs = {
            run: ranks[t.number]
            for t in trials
            if t.number in ranks and t.number not in aside
            for run in t.user_attrs.get(RECORD_ATTR, {}).get("runs", [])
        }
        write_front_ranks(self.paths.root, runs, step=self.counts.finished)


def count_trials(c: SweepCounts, trials: list[Any], direction: str, multi: bool) -> None:
    """Fill `c` from `trials` (infeasible ones count as finished, neither complete nor
    pruned; the best is by the first objective)."""
    c.complete = c.pruned = c.failed = c.infeasible = 0
    best, best_value = None, None
    for t in trials:
        name = t.state.name
        if name in ("COMPLETE", "PRUNED") and infeasible(t):
            c.infeasible += 1
        elif name == "COMPLETE":
            c.complete += 1
            value = t.values[0] if t.values else None
            if value is not None and better(value, best_value, direction):
                best, best_value = t, value
        elif name == "PRUNED":
            c.pruned += 1
        elif name == "FAIL":
            c.failed += 1
    c.finished = c.complete + c.pruned + c.infeasible
    if best is not None:
        c.best_value, c.best_trial, c.best_params = best_value, best.number, dict(best.params)
    if multi:
        on_front = {n for n, r in front_ranks(trials).items() if r == 0}
        c.front = [
            (t.number, list(t.values), dict(t.params))
            for t in sorted(trials, key=lambda t: t.number)
            if t.number in on_front
        ]


def trial_record(
    out: TrialOutcome, kept: list[tuple[TrialJob, TrialOutcome]], first: TrialJob, spec: Spec
) -> dict[str, Any]:
    """The record stored on a trial when it is told (`study.RECORD_ATTR`): `out` is its
    combined outcome, `kept` the repeats (job, outcome) that ended in its state (the runs
    of its TensorBoard row), `first` its first repeat's job."""
    return {
        "run": first.group,
        "runs": [job.run_name for job, _ in kept],
        "device": out.device,
        "cuda_visible_devices": out.cuda_visible_devices,
        "worker_pid": out.worker_pid,
        "host": out.host,
        "best_value": out.value,
        "values": [o.value for _, o in kept if o.value is not None],
        "best_epoch": out.best_epoch,
        "epochs_run": out.epochs_run,
        "duration_s": out.duration_s,
        "trainable_params": out.trainable_params,
        "feature_cache": out.feature_cache,
        "cache_build_s": sum(o.cache_build_s for _, o in kept),
        "error": out.error,
        "dispatched_at": first.dispatched_at,
        "started_at": out.started_at,
        "ended_at": out.ended_at,
        "first_epoch_end": out.first_epoch_end,
        "epoch_seconds": list(out.epoch_seconds),
        "seeds": [job.seed for job, _ in kept],
        **objective_record(out, spec),
    }


def objective_record(out: TrialOutcome, spec: Spec) -> dict[str, Any]:
    """The record's `objectives` (a multi-objective study's told values, which the
    leaderboard ranks into Pareto fronts) and `constraints` (> 0: infeasible)."""
    rec: dict[str, Any] = {"constraints": dict(out.constraints)}
    if spec.study.multi_objective and out.values:
        rec["objectives"] = [
            {"name": g.name, "direction": g.direction, "value": v}
            for g, v in zip(spec.study.goals, out.values, strict=True)
        ]
    return rec


def told(out: TrialOutcome, multi: bool) -> tuple[str, float | list[float] | None]:
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


def better(a: float, b: float | None, direction: str) -> bool:
    """Whether value `a` beats the best so far `b` (None: there is none yet)."""
    if b is None:
        return True
    return a > b if direction == "maximize" else a < b
