"""`tbxsweep start`: from a spec file to a finished study, leaderboard and TensorBoard runs.

The order is the point: the workers start first (their TensorFlow import overlaps with the
rest), every check that needs no worker runs before anything is written (`check_spec`), the
task is described and `high: max` resolved, then the output directory, the study and the
TensorBoard experiment are created, the base model prepared, and the `Scheduler` built with
all of it and run.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tbxsweep.errors import SpecError
from tbxsweep.jobs import PrepareJob, SlotPlan, TaskInfo
from tbxsweep.paths import SweepPaths, unwritable_dir
from tbxsweep.spec import Spec, resolve_space

if TYPE_CHECKING:  # tbxsweep.schedule's loop imports Optuna and pandas: not at start-up
    from tbxsweep.schedule._books import SweepCounts
    from tbxsweep.schedule._slots import DevicePlan
    from tbxsweep.schedule._stop import StopRequest


def check_output_dir(spec: Spec, where: str) -> None:
    """The output directory must be creatable and writable, and hold no other study.

    Nothing is left behind: the write test creates and removes a temporary directory.
    """
    out = spec.output_dir
    problem = unwritable_dir(out)
    if problem is not None:
        raise SpecError(f"{where}: output.dir: {problem}")
    _check_study_of_dir(spec, where)


def _check_study_of_dir(spec: Spec, where: str) -> None:
    """An output directory holds one study's runs and leaderboard: a spec naming another
    study (or the same name in another storage) would mix the two in one TensorBoard."""
    from tbxsweep.study import recorded_study, redact_url, resolve_storage_url

    paths = SweepPaths(spec.output_dir)
    recorded = recorded_study(paths)
    if recorded is None:
        return  # no sweep here yet
    old_name, old_storage = recorded
    old_url = redact_url(old_storage or paths.default_storage_url())
    new_url = redact_url(resolve_storage_url(spec))
    name = spec.study.name
    if (old_name, old_url) == (name, new_url):
        return
    out = spec.output_dir
    suggestion = out.parent / name if name != old_name else Path(f"{out}-2")
    where_new = f" ({new_url})" if new_url != old_url else ""
    raise SpecError(
        f"{where}: output.dir: {out} holds study {old_name!r} ({old_url}); this spec's study "
        f"is {name!r}{where_new}: give it its own output.dir (--set output.dir={suggestion})"
    )


def check_entry_points(spec: Spec, where: str) -> None:
    """A `task.train` module must import before the sweep starts."""
    if spec.task.train is None:
        return
    import importlib.util

    module = spec.task.train.partition(":")[0]
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise SpecError(
            f"{where}: task.train: cannot import module {module!r} (is it on PYTHONPATH?)"
        )


def check_spec(spec: Spec, where: str) -> Spec:
    """Every check that needs no worker, done before anything is written; returns the spec
    with what the task's static description resolves (`resolve_space`)."""
    from tbxsweep.study import probe_storage
    from tbxsweep.trial import static_task_info

    info = static_task_info(spec)
    if info is not None:  # else the sweep resolves it once a worker described the task
        spec = resolve_space(spec, info.depth_max, where)
    check_output_dir(spec, where)
    check_entry_points(spec, where)
    if spec.study.storage:
        probe_storage(spec.study.storage, where)
    return spec


@dataclass
class Workers:
    """A sweep's worker pool, started by `start_workers` before the rest of the set-up."""

    devices: DevicePlan
    slots: SlotPlan
    pool: Any = None  # a LokyPool; None for Dask, whose cluster run_sweep connects to

    def close(self) -> None:
        """Remove the slots' lock files (the processes stay for loky to reuse or release)."""
        if self.slots.slots_dir:
            shutil.rmtree(self.slots.slots_dir, ignore_errors=True)


def start_workers(spec: Spec, *, fork: bool = False) -> Workers:
    """Plan the worker slots and start the pool, every worker warming up at once.

    Called first, so that what takes seconds in a worker (TensorFlow's import, the task's
    data and cached base, a `task.train` module) overlaps with everything the orchestrator
    does before its first trial: its own imports (Optuna, SQLAlchemy, tensorboardX), the
    spec's checks, the study and the TensorBoard experiment. Nothing is written but the
    slots' lock files, in a temporary directory that `Workers.close` removes. `fork`: the
    sweep will run in another output directory (`--fork`), whose base is not cached yet.

    Raises:
        SpecError: resources.gpus names a GPU this process was not given.
    """
    from tbxsweep.schedule._slots import plan_devices, slot_plan

    devices = plan_devices(spec.resources, spec.study.n_trials)
    if spec.resources.backend == "dask":
        return Workers(devices, SlotPlan("", (), devices.threads_per_worker))
    from tbxsweep.schedule._pool import LokyPool
    from tbxsweep.worker import SKIP_BASE, warm_up

    slots = slot_plan(devices)
    pool = LokyPool(slots)
    # One warm-up per worker: each takes seconds where it matters (TensorFlow), so every
    # worker gets one. Describing the task or preparing the base queues behind them.
    job = PrepareJob(spec, SKIP_BASE if fork else "", slots)
    for _ in slots.devices:
        pool.submit(warm_up, job)
    return Workers(devices, slots, pool)


def run_sweep(
    spec: Spec,
    *,
    on_event: Callable[[str, dict[str, Any]], None],
    where: str = "",
    stop: StopRequest | None = None,
    fork: bool = False,
    join: bool = False,
    workers: Workers | None = None,
    release: bool = False,
) -> SweepCounts:
    """Open (or continue) the study and run trials until `n_trials` are finished.

    Order matters: the task is described (in a worker when that needs TensorFlow) and the
    spec checked against it before the output directory or the study is created.
    `workers`: the pool `start_workers` started for this spec (the caller closes it);
    without it the sweep starts its own. `release`: the process ends after this sweep, so
    its idle loky workers are stopped at the end, before the storage is closed (SQLite
    removes its -wal and -shm files only when the last connection, a worker's pruning
    reports among them, closes).
    """
    if workers is None:
        workers = start_workers(spec, fork=fork)
        try:
            return run_sweep(
                spec,
                on_event=on_event,
                where=where,
                stop=stop,
                fork=fork,
                join=join,
                workers=workers,
                release=release,
            )
        finally:
            workers.close()
    from tbxsweep.schedule._loop import Scheduler
    from tbxsweep.schedule._recover import recover_stale
    from tbxsweep.study import (
        close_storage,
        distributions,
        fork_study,
        no_study_to_join,
        open_study,
        queued_known,
        resolve_storage_url,
        seed_from,
        study_exists,
        write_sweep_info,
    )
    from tbxsweep.tblog import IMPORTANCE_MIN_TRIALS, SweepLogger, write_experiment
    from tbxsweep.worker import prepare_base

    where = where or spec.study.name
    forked_from = None
    if join and not study_exists(resolve_storage_url(spec), spec.study.name):
        raise SpecError(no_study_to_join(spec, resolve_storage_url(spec), where))
    if fork:
        spec, forked_from = fork_study(spec, resolve_storage_url(spec), where)
    paths = SweepPaths(spec.output_dir)
    devices = workers.devices
    if devices.warning:
        on_event("warning", {"message": devices.warning})
    pool: Any = workers.pool
    slots = workers.slots
    sweep_log: Any = None
    study: Any = None

    def event(kind: str, info: dict[str, Any]) -> None:
        on_event(kind, info)
        # Once the first trial is out, what only the end of the sweep needs is imported.
        many = spec.study.n_trials >= IMPORTANCE_MIN_TRIALS
        if kind == "started" and sweep_log is not None and many:
            sweep_log.prefetch()

    try:
        if spec.resources.backend == "dask":
            from tbxsweep.schedule._pool import DaskPool

            pool = DaskPool(spec.resources, len(devices.devices), bool(devices.gpus))
            slots = SlotPlan("", ("",) * pool.n_slots, devices.threads_per_worker)
        info = _task_info(spec, pool, slots, where)
        spec = resolve_space(spec, info.depth_max, where)

        # From here on the sweep writes: output directory, storage, logs.
        paths.root.mkdir(parents=True, exist_ok=True)
        storage_url = resolve_storage_url(spec)
        dists = distributions(spec)
        study = open_study(spec, storage_url, dists=dists, where=where, create=not join)
        if forked_from is not None:
            n = seed_from(study, forked_from, dists)
            on_event(
                "forked",
                {
                    "name": spec.study.name,
                    "dir": paths.root,
                    "seeded": n,
                    "from": forked_from.study_name,
                },
            )
        write_sweep_info(spec, paths, created_at=time.time())
        write_experiment(paths.root, spec)
        recover_stale(study, paths, on_event, spec.study.stale_after_s)
        sweep_log = SweepLogger(paths.sweep_run_dir, spec.study.metric)
        on_event(
            "plan",
            {
                "devices": devices,
                "storage": storage_url,
                "paths": paths,
                "task": info,
                "dask": spec.resources.scheduler,
                "slots": len(slots.devices),
            },
        )
        if spec.study.enqueue:  # else no read of every trial
            queued = queued_known(study.get_trials(deepcopy=False))
            on_event("enqueued", {"queued": queued, "given": len(spec.study.enqueue)})
        base_path = None
        if info.base_cache_key is not None:
            base_path = str(paths.base_model(info.base_cache_key))
            if not Path(base_path).exists():
                on_event("pretrain", {"path": base_path})
            pool.submit(prepare_base, PrepareJob(spec, base_path, slots)).result()
        sched = Scheduler(
            spec=spec,
            study=study,
            dists=dists,
            paths=paths,
            pool=pool,
            slots=slots,
            storage_url=storage_url,
            base_model_path=base_path,
            sweep_log=sweep_log,
            on_event=event,
        )
        counts = sched.run(stop)
        sweep_log.importances(study, counts.complete)
        sched.raise_if_fatal()
        # The held-out test split, read once: the best trials' test results.
        from tbxsweep.schedule._heldout import evaluate_best_trials

        evaluate_best_trials(sched)
        return counts
    finally:
        if sweep_log is not None:
            sweep_log.close()
        if release:
            from tbxsweep.schedule._pool import release_workers

            release_workers()
        if study is not None:
            close_storage(study)
        if pool is not None:
            pool.close()


def _task_info(spec: Spec, pool: Any, slots: SlotPlan, where: str) -> TaskInfo:
    """What the orchestrator must know about the task: from the spec where it can, else
    from a worker (a loaded base model or `task.train` module needs TensorFlow)."""
    from tbxsweep.trial import static_task_info
    from tbxsweep.worker import describe

    info = static_task_info(spec)
    if info is not None:
        return info
    try:
        described: TaskInfo = pool.submit(describe, PrepareJob(spec, "", slots)).result()
    except SpecError as exc:  # raised in the worker: name the spec file here
        raise SpecError([f"{where}: {p}" for p in exc.problems]) from None
    return described
