"""The best model in hand: which trials keep their best epoch's model, and `tbxsweep best`.

A trial that completes leaves its best epoch's whole model in its run as `best.keras`
(the built-in task always, a `task.train` function when it calls `ctx.save_model`); with
`study.repeats`, every repeat leaves one and the trial's model is its best repeat's. The
orchestrator keeps the models of the best `output.keep_models` completed trials (ranked
as the leaderboard ranks them) and deletes the others' as trials finish (`ModelKeeper`).
It also tells a trial it dispatches the values it must beat for its model, and for its
best-epoch weights (`best.weights.h5`, read by the test split's evaluation of the best
`study.test_top_k`), to be worth writing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tbxsweep.errors import SpecError
from tbxsweep.export._leaderboard import first_value, infeasible, ranked_complete
from tbxsweep.paths import BEST_MODEL, SweepPaths
from tbxsweep.study import RECORD_ATTR, SEEDED_ATTR

if TYPE_CHECKING:
    from tbxsweep.study import SweepInfo, TrialView

# States whose trials never run again: their files are the orchestrator's to tidy.
_FINISHED = frozenset({"COMPLETE", "PRUNED", "FAIL"})


def model_run(trial: TrialView, direction: str) -> str:
    """The run whose `best.keras` is the trial's model: its own, or with repeats the run of
    its best repeat (the record's `values` are in the order of its `runs`)."""
    rec = trial.user_attrs.get(RECORD_ATTR, {})
    runs: list[str] = list(rec.get("runs") or [rec.get("run") or SweepPaths.run_name(trial.number)])
    values: list[float] = rec.get("values") or []
    if len(runs) > 1 and len(values) == len(runs):
        sign = -1.0 if direction == "maximize" else 1.0
        return runs[min(range(len(runs)), key=lambda i: (sign * float(values[i]), i))]
    return runs[0]


def kept_models(paths: SweepPaths, trials: Sequence[TrialView], direction: str) -> dict[int, str]:
    """{trial number: its model's path relative to the output directory} of the completed
    trials whose model is on disk (the leaderboard's `model` column)."""
    out: dict[int, str] = {}
    for t in trials:
        if t.state.name == "COMPLETE" and SEEDED_ATTR not in t.user_attrs:
            run = model_run(t, direction)
            if paths.best_model(run).is_file():
                out[t.number] = f"{run}/{BEST_MODEL}"
    return out


@dataclass
class ModelKeeper:
    """Deletes the models no longer kept: those of trials that did not complete, of
    repeats that were not their trial's best, and of completed trials outside the best
    `keep`. Only finished trials are touched (a running trial's model is its worker's).

    A trial that falls out of the best `keep` never comes back (a finished trial's value
    is final), so each is tidied once per orchestrator; `prune` then costs little more
    than the ranking, however long the study. (With several objectives a trial's front
    rank can improve when a trial that dominated it is dominated in turn; its deleted
    model stays deleted.)
    """

    paths: SweepPaths
    direction: str
    keep: int
    multi_objective: bool = False
    # The worst value among the kept models once `keep` are kept: a trial dispatched now
    # saves a model only beyond it (TrialJob.model_bar). None while fewer are kept, and
    # for several objectives (a Pareto front rank is no single value to beat).
    bar: float | None = None
    # How many trials the test split's evaluation reads at the end (study.test_top_k), and
    # the worst value among the best that many (all trials: the evaluation ranks seeded
    # ones too) once there are that many: a trial dispatched now writes its best-epoch
    # weights only beyond it (TrialJob.weights_bar). None likewise.
    test_k: int = 0
    test_bar: float | None = None
    _done: set[int] = field(default_factory=set)
    _aside_done: set[str] = field(default_factory=set)

    def prune(self, trials: Sequence[TrialView]) -> list[Path]:
        """Delete what is no longer kept after a trial finished; returns what it deleted."""
        own = [t for t in trials if SEEDED_ATTR not in t.user_attrs]
        kept = self._best(own)
        if len(kept) == self.keep > 0 and not self.multi_objective:
            self.bar = first_value(kept[-1])
        if self.test_k and not self.multi_objective:
            tested = ranked_complete(trials, self.direction)[: self.test_k]
            if len(tested) == self.test_k:
                self.test_bar = first_value(tested[-1])
        best = {t.number: model_run(t, self.direction) for t in kept}
        deleted: list[Path] = []
        for t in own:
            if t.number in self._done or t.state.name not in _FINISHED:
                continue
            for run in self._runs(t):
                if best.get(t.number) != run:
                    deleted += _unlink(self.paths.best_model(run))
            if t.number not in best:
                self._done.add(t.number)
        return deleted + self._prune_aside()

    def _best(self, trials: Sequence[TrialView]) -> list[TrialView]:
        return ranked_complete(trials, self.direction)[: self.keep] if self.keep else []

    def _runs(self, trial: TrialView) -> list[str]:
        """Every run of the trial that may hold a model: the trial's directory and its
        recorded repeats."""
        rec = trial.user_attrs.get(RECORD_ATTR, {})
        return [SweepPaths.run_name(trial.number), *(rec.get("runs") or [])]

    def _prune_aside(self) -> list[Path]:
        """Runs moved out of TensorBoard's view (interrupted, stopped, re-run) keep no model."""
        deleted: list[Path] = []
        try:
            entries = [
                e for e in os.scandir(self.paths.aside_dir) if e.name not in self._aside_done
            ]
        except OSError:
            return deleted
        for entry in entries:
            self._aside_done.add(entry.name)
            if entry.is_dir():
                for model in (
                    Path(entry.path) / BEST_MODEL,
                    *Path(entry.path).glob(f"*/{BEST_MODEL}"),
                ):
                    deleted += _unlink(model)
        return deleted


def _unlink(path: Path) -> list[Path]:
    try:
        path.unlink()
    except FileNotFoundError:
        return []
    return [path]


# -- `tbxsweep best` ------------------------------------------------------------------------
@dataclass(frozen=True)
class KeptModel:
    """A trial and its kept model, as `tbxsweep best` shows it."""

    number: int
    value: float
    metric: str
    params: dict[str, Any]
    rank: int  # among the completed trials, as the leaderboard ranks them (1 = best)
    n_complete: int
    path: Path  # below the output directory as the user gave it


def find_model(output_dir: str | Path, trial: int | None = None) -> KeptModel:
    """The best completed trial of the sweep in `output_dir` (or trial `trial`) and its model.

    Raises:
        SpecError: no sweep or study there, no completed trial, no such trial, or the trial
            has no kept model (the message says why).
    """
    from tbxsweep.study import read_study_trials, read_sweep_info

    info, paths = read_sweep_info(output_dir)
    trials, _ = read_study_trials(info.storage_url(paths), info.study_name)
    ranked = ranked_complete(trials, info.direction)
    by_number = {t.number: t for t in trials}
    if trial is None:
        if not ranked:
            raise SpecError(
                f"{output_dir}: no completed trial in study {info.study_name!r} yet "
                f"({_tally(trials)})"
            )
        chosen, where = ranked[0], f"{output_dir}: trial {ranked[0].number} (the best)"
    elif trial not in by_number:
        raise SpecError(
            f"{output_dir}: --trial {trial}: study {info.study_name!r} has no trial {trial} "
            f"({_numbers(trials)})"
        )
    else:
        chosen, where = by_number[trial], f"{output_dir}: --trial {trial}"
    rank = next((i for i, t in enumerate(ranked, start=1) if t.number == chosen.number), None)
    run = model_run(chosen, info.direction)
    path = paths.best_model(run)
    value = first_value(chosen)
    if rank is None or value is None or chosen.state.name != "COMPLETE" or not path.is_file():
        raise SpecError(f"{where}: no kept model: {_why_none(chosen, rank, ranked, paths, info)}")
    return KeptModel(
        number=chosen.number,
        value=value,
        metric=info.metric,
        params={k: chosen.params[k] for k in info.params if k in chosen.params},
        rank=rank,
        n_complete=len(ranked),
        path=path,
    )


def _why_none(
    t: TrialView, rank: int | None, ranked: list[TrialView], paths: SweepPaths, info: SweepInfo
) -> str:
    """Why a trial has no model, from what the study and the disk say."""
    name = t.state.name
    if SEEDED_ATTR in t.user_attrs:
        return (
            f"trial {t.number} was copied from {t.user_attrs[SEEDED_ATTR]} (--fork); its "
            "model, if kept, is in that sweep's output directory"
        )
    if name not in _FINISHED:
        return f"trial {t.number} is still running (only completed trials keep one)"
    if infeasible(t) or (name == "COMPLETE" and rank is None):
        return f"trial {t.number} was infeasible (only feasible completed trials keep one)"
    if name == "PRUNED":
        epochs = t.user_attrs.get(RECORD_ATTR, {}).get("epochs_run")
        at = f" at epoch {epochs}" if epochs else ""
        return f"trial {t.number} was pruned{at} (only completed trials keep one)"
    if name == "FAIL" or rank is None:
        return f"trial {t.number} failed (only completed trials keep one)"
    kept = [
        i
        for i, r in enumerate(ranked, start=1)
        if paths.best_model(model_run(r, info.direction)).is_file()
    ]
    if not kept:
        return (
            f"trial {t.number} ranks {rank} of {len(ranked)} completed trials and none "
            "keeps a model (output.keep_models: 0, or a task.train function that does not "
            "call ctx.save_model)"
        )
    if rank > max(kept):
        return (
            f"trial {t.number} ranks {rank} of {len(ranked)} completed trials, and only the "
            f"best {len(kept)} keep theirs (output.keep_models)"
        )
    return (
        f"its run {model_run(t, info.direction)} holds no {BEST_MODEL}: the trial saved none "
        "(a task.train function saves one with ctx.save_model; a trial resumed from a "
        "checkpoint taken after its best epoch, or run by another host, has none here)"
    )


def _tally(trials: Sequence[TrialView]) -> str:
    """`2 pruned, 1 failed, 1 running`: what a study without a completed trial holds."""
    counts: dict[str, int] = {}
    for t in trials:
        word = "infeasible" if infeasible(t) else _WORDS.get(t.state.name, "running")
        counts[word] = counts.get(word, 0) + 1
    parts = [
        f"{counts[w]} {w}" for w in ("pruned", "infeasible", "failed", "running") if w in counts
    ]
    return ", ".join(parts) if parts else "no trials"


_WORDS = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}


def _numbers(trials: Sequence[TrialView]) -> str:
    if not trials:
        return "it has no trials"
    numbers = sorted(t.number for t in trials)
    return f"its trials are {numbers[0]}-{numbers[-1]}"


def save_copy(model: Path, dest: str | Path, *, force: bool = False) -> Path:
    """Copy a kept model to `dest` atomically (a temporary file there, then a rename):
    a reader never sees half a model. Refuses to replace a file unless `force`.

    Raises:
        SpecError: `dest` does not end in .keras, exists (without `force`), or its
            directory does not exist.
    """
    dest = Path(dest)
    if dest.suffix != ".keras":
        raise SpecError(
            f"--save: {dest}: must end in .keras (keras.models.load_model reads the format "
            "from the name)"
        )
    if dest.is_dir():
        raise SpecError(f"--save: {dest} is a directory; give a file name ending in .keras")
    if dest.exists() and not force:
        raise SpecError(f"--save: {dest} exists; add --force to replace it")
    if not dest.parent.is_dir():
        raise SpecError(f"--save: {dest.parent} is not a directory")
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(model, tmp)
        if force:
            os.replace(tmp, dest)
        else:
            _link_new(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return dest


def _link_new(tmp: Path, dest: Path) -> None:
    """Put `tmp` at `dest` only if nothing is there, atomically where links work."""
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise SpecError(f"--save: {dest} exists; add --force to replace it") from None
    except OSError:  # a file system without hard links: the check above has to do
        os.replace(tmp, dest)
