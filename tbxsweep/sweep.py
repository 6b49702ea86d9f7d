"""`tbxsweep start`: from a spec file to a finished study, leaderboard and TensorBoard runs."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tbxsweep.errors import SpecError
from tbxsweep.jobs import SlotPlan, TaskInfo
from tbxsweep.paths import SweepPaths
from tbxsweep.spec import CategoricalParam, IntParam, Spec

if TYPE_CHECKING:  # tbxsweep.schedule's loop imports Optuna and pandas: not at start-up
    from tbxsweep.schedule import DevicePlan, StopRequest


@dataclass(frozen=True)
class SweepInfo:
    """What sweep.json records so that `leaderboard`, `board` and `check` find the study."""

    study_name: str
    storage: str | None  # None: the SQLite file in the output directory
    direction: str
    metric: str
    params: tuple[str, ...]

    @classmethod
    def of(cls, spec: Spec) -> SweepInfo:
        from tbxsweep.study import redact_url

        storage = redact_url(spec.study.storage) if spec.study.storage else None
        return cls(
            spec.study.name,
            storage,
            spec.study.direction,
            spec.study.metric,
            tuple(spec.search_space),
        )

    def storage_url(self, paths: SweepPaths) -> str:
        return self.storage or paths.default_storage_url()


def read_sweep_info(output_dir: str | Path) -> tuple[SweepInfo, SweepPaths]:
    """Find a sweep's study from its output directory.

    Raises:
        SpecError: the directory holds no sweep.
    """
    paths = SweepPaths(Path(output_dir))
    if not paths.sweep_json.is_file():
        raise SpecError(
            f"{output_dir}: not a tbxsweep output directory (no {paths.sweep_json.name}); "
            "give the output.dir of a sweep started with `tbxsweep start`"
        )
    raw = json.loads(paths.sweep_json.read_text())
    info = SweepInfo(
        raw["study_name"], raw.get("storage"), raw["direction"], raw["metric"], tuple(raw["params"])
    )
    env = os.environ.get("TBXSWEEP_STORAGE")
    if env:
        info = SweepInfo(info.study_name, env, info.direction, info.metric, info.params)
    return info, paths


# As tbxsweep.trial._describe words them (the orchestrator does not import trial code).
_UNIT_WORDS = {"layer": "weighted layers", "block": "blocks"}


def resolve_space(spec: Spec, info: TaskInfo, where: str) -> Spec:
    """The spec with `high: max` replaced by the base model's depth, and every bound that
    needs that depth checked: the one place that does either, before anything is written.

    Raises:
        SpecError: a bound the base model cannot meet, one line per problem.
    """
    n = info.depth_max
    units = f"{n} {_UNIT_WORDS[spec.task.finetune_unit]}"
    problems: list[str] = []
    space = dict(spec.search_space)
    for key, p in spec.search_space.items():
        if isinstance(p, IntParam) and p.high == "max":
            if n is None:  # the spec refuses 'max' with task.train; a task without depth
                problems.append(f"search_space.{key}.high: 'max' needs a base model, got none")
                continue
            if p.low > n:
                problems.append(
                    f"search_space.{key}.low: `low <= {n}` must hold (high: max is the base "
                    f"model's {units}), got low={p.low}"
                )
            space[key] = p = p.model_copy(update={"high": n})
        if key != "finetune_depth" or n is None or spec.task.train is not None:
            continue
        if isinstance(p, IntParam) and int(p.high) > n:
            problems.append(
                f"search_space.{key}.high: `high <= {n}` must hold (the base model has "
                f"{units}), got high={p.high}"
            )
        if isinstance(p, CategoricalParam):
            problems += [
                f"search_space.{key}.choices: `choice <= {n}` must hold (the base model has "
                f"{units}), got choice={c!r}"
                for c in p.choices
                if isinstance(c, int) and c > n
            ]
    if problems:
        raise SpecError([f"{where}: {line}" for line in problems])
    return spec.model_copy(update={"search_space": space})


def check_output_dir(spec: Spec, where: str) -> None:
    """The output directory must be creatable and writable, and hold no other study.

    Nothing is left behind: the write test creates and removes a temporary directory.
    """
    out = spec.output_dir
    problem = unwritable_dir(out)
    if problem is not None:
        raise SpecError(f"{where}: output.dir: {problem}")
    _check_study_of_dir(spec, where)


def unwritable_dir(path: Path) -> str | None:
    """Why the directory `path` (there or not yet) cannot be created and written; None when
    it can. Tried for real: `os.access` answers yes to root on a read-only mount or /proc."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a directory"
    try:
        tmp = tempfile.mkdtemp(prefix=".tbxsweep-probe-", dir=probe)
    except OSError as exc:
        return f"cannot write to {path}: creating a directory in {probe} fails ({exc.strerror})"
    try:  # the missing part of the path, inside the probe: names the file system refuses
        Path(tmp, *path.relative_to(probe).parts).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create {path} ({exc.strerror})"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return None


def _check_study_of_dir(spec: Spec, where: str) -> None:
    """An output directory holds one study's runs and leaderboard: a spec naming another
    study (or the same name in another storage) would mix the two in one TensorBoard."""
    from tbxsweep.study import redact_url, resolve_storage_url

    paths = SweepPaths(spec.output_dir)
    try:
        raw = json.loads(paths.sweep_json.read_text())
        old_name, old_storage = str(raw["study_name"]), raw.get("storage")
    except (OSError, ValueError, KeyError, TypeError):
        return  # no sweep here yet (sweep.json is written atomically)
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
    from tbxsweep.trial import static_task_info

    info = static_task_info(spec)
    if info is not None:  # else the sweep resolves it once a worker described the task
        spec = resolve_space(spec, info, where)
    check_output_dir(spec, where)
    check_entry_points(spec, where)
    if spec.study.storage:
        _probe_storage(spec.study.storage, where)
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
    from tbxsweep.jobs import PrepareJob
    from tbxsweep.schedule import plan_devices, slot_plan

    devices = plan_devices(spec.resources, spec.study.n_trials)
    if spec.resources.backend == "dask":
        return Workers(devices, SlotPlan("", (), devices.threads_per_worker))
    from tbxsweep.schedule import LokyPool
    from tbxsweep.worker import SKIP_BASE, warm_up

    slots = slot_plan(devices)
    pool = LokyPool(slots)
    # One warm-up per worker: each takes seconds where it matters (TensorFlow), so every
    # worker gets one. Describing the task or preparing the base queues behind them.
    job = PrepareJob(spec, SKIP_BASE if fork else "", slots)
    for _ in slots.devices:
        pool.submit(warm_up, job)
    return Workers(devices, slots, pool)


def _probe_storage(url: str, where: str) -> None:
    """Open the storage named by `study.storage` without writing to it."""
    from tbxsweep.study import redact_text, redact_url

    shown = redact_url(url)
    if url.startswith(("sqlite:///", "journal:///")):
        # The file's directory must exist (nothing creates it) and be writable, for real.
        parent = Path(url.split(":///", 1)[1].partition("?")[0]).parent
        if not parent.is_dir() or unwritable_dir(parent) is not None:
            raise SpecError(
                f"{where}: study.storage: cannot open {shown}: {parent} is not a writable directory"
            )
        return
    if "://" not in url:
        raise SpecError(
            f"{where}: study.storage: must be an Optuna storage URL like "
            f"'sqlite:///path/study.db', 'postgresql://user@host/db' or "
            f"'journal:///path/study.log', got {shown!r}"
        )
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, connect_args=_connect_timeout(url))
        with engine.connect():
            pass
        engine.dispose()
    except ModuleNotFoundError as exc:
        raise SpecError(
            f"{where}: study.storage: cannot open {shown}: its database driver is not "
            f"installed (No module named {exc.name!r}); for PostgreSQL: "
            "pip install 'tbxsweep[postgres]'"
        ) from None
    except Exception as exc:  # any driver error means the same to the user
        text = redact_text(" ".join(str(getattr(exc, "orig", None) or exc).split()), url)
        raise SpecError(f"{where}: study.storage: cannot open {shown}: {text[:200]}") from None


def _connect_timeout(url: str) -> dict[str, Any]:
    return {"connect_timeout": 5} if url.startswith(("postgresql", "mysql")) else {}


def run_sweep(
    spec: Spec,
    *,
    on_event: Callable[[str, dict[str, Any]], None],
    where: str = "",
    stop: StopRequest | None = None,
    fork: bool = False,
    join: bool = False,
    workers: Workers | None = None,
) -> Any:
    """Open (or continue) the study and run trials until `n_trials` are finished.

    Order matters: the task is described (in a worker when that needs TensorFlow) and the
    spec checked against it before the output directory or the study is created.
    `workers`: the pool `start_workers` started for this spec (the caller closes it);
    without it the sweep starts its own.
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
            )
        finally:
            workers.close()
    from tbxsweep.jobs import PrepareJob
    from tbxsweep.schedule import Scheduler, recover_stale
    from tbxsweep.study import (
        distributions,
        fork_study,
        open_study,
        redact_url,
        resolve_storage_url,
        seed_from,
        study_exists,
    )
    from tbxsweep.tblog import IMPORTANCE_MIN_TRIALS, SweepLogger, write_experiment
    from tbxsweep.trial import static_task_info
    from tbxsweep.worker import describe, prepare_base

    where = where or spec.study.name
    forked_from = None
    if join and not study_exists(resolve_storage_url(spec), spec.study.name):
        raise SpecError(
            f"{where}: there is no study {spec.study.name!r} in "
            f"{redact_url(resolve_storage_url(spec))} to join: start it with `tbxsweep start` "
            "first"
        )
    if fork:
        spec, forked_from = fork_study(spec, resolve_storage_url(spec), where)
    paths = SweepPaths(spec.output_dir)
    devices = workers.devices
    if devices.warning:
        on_event("warning", {"message": devices.warning})
    pool: Any = workers.pool
    slots = workers.slots
    sched: Scheduler | None = None

    def event(kind: str, info: dict[str, Any]) -> None:
        on_event(kind, info)
        # Once the first trial is out, what only the end of the sweep needs is imported.
        log = sched.sweep_log if sched is not None else None
        if kind == "started" and log is not None and spec.study.n_trials >= IMPORTANCE_MIN_TRIALS:
            log.prefetch()

    try:
        if spec.resources.backend == "dask":
            from tbxsweep.schedule import DaskPool

            pool = DaskPool(spec.resources, len(devices.devices), bool(devices.gpus))
            slots = SlotPlan("", ("",) * pool.n_slots, devices.threads_per_worker)
        sched = Scheduler(
            spec=spec,
            study=None,
            dists={},
            paths=paths,
            slots=slots,
            storage_url="",
            base_model_path=None,
            on_event=event,
        )
        sched.pool = pool
        info = static_task_info(spec)
        if info is None:
            try:
                info = sched.submit(describe, PrepareJob(spec, "", slots)).result()
            except SpecError as exc:  # raised in the worker: name the spec file here
                raise SpecError([f"{where}: {p}" for p in exc.problems]) from None
        spec = resolve_space(spec, info, where)
        sched.spec = spec

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
        sweep_info = SweepInfo.of(spec)
        _write_json(
            paths.sweep_json,
            {**sweep_info.__dict__, "params": list(sweep_info.params), "created_at": time.time()},
        )
        write_experiment(paths.root, spec, info.depth_max)
        sched.study, sched.dists, sched.storage_url = study, dists, storage_url
        recover_stale(study, paths, on_event, spec.study.stale_after_s)
        sched.sweep_log = SweepLogger(paths.sweep_run_dir, spec.study.metric)
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
        if info.base_cache_key is not None:
            base_path = str(paths.base_model(info.base_cache_key))
            if not Path(base_path).exists():
                on_event("pretrain", {"path": base_path})
            sched.submit(prepare_base, PrepareJob(spec, base_path, slots)).result()
            sched.base_model_path = base_path
        counts = sched.run(stop)
        sched.sweep_log.importances(study, counts.complete)
        sched.raise_if_fatal()
        # The held-out test split, read once: the best trials' test results (export/).
        from tbxsweep.export import evaluate_best_trials
        from tbxsweep.schedule import aside_numbers

        evaluate_best_trials(spec, study, sched, aside_numbers(study.user_attrs))
        return counts
    finally:
        if sched is not None and sched.sweep_log is not None:
            sched.sweep_log.close()
        if pool is not None:
            pool.close()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
