"""`tbxsweep start`: from a spec file to a finished study, leaderboard and TensorBoard runs."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tbxsweep.errors import SpecError
from tbxsweep.jobs import SlotPlan, TaskInfo
from tbxsweep.paths import SweepPaths
from tbxsweep.schedule._stop import StopRequest
from tbxsweep.spec import IntParam, Spec, load_spec


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


def check_spec_against_task(spec: Spec, info: TaskInfo, where: str) -> None:
    """Checks that need to know the base model, run before anything is written."""
    p = spec.search_space.get("finetune_depth")
    depth_max = info.depth_max
    if depth_max is None or not isinstance(p, IntParam) or p.high == "max":
        return
    if int(p.high) > depth_max:
        unit = "weighted layers" if spec.task.finetune_unit == "layer" else "blocks"
        raise SpecError(
            f"{where}: search_space.finetune_depth.high: `high <= {depth_max}` must hold "
            f"(the base model has {depth_max} {unit}), got high={p.high}"
        )


def resolve_depth_max(spec: Spec, depth_max: int | None) -> Spec:
    """Replace `high: max` of int parameters by the base model's number of weighted layers."""
    if depth_max is None:
        return spec
    space = {
        k: p.model_copy(update={"high": depth_max})
        if isinstance(p, IntParam) and p.high == "max"
        else p
        for k, p in spec.search_space.items()
    }
    return spec.model_copy(update={"search_space": space})


def check_output_dir(spec: Spec, where: str) -> None:
    """The output directory must be creatable and writable; nothing is created here."""
    out = spec.output_dir
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise SpecError(f"{where}: output.dir: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SpecError(f"{where}: output.dir: cannot write to {out} ({probe} is not writable)")


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


def prepare(spec_path: str, overrides: tuple[str, ...]) -> Spec:
    """Every check that needs no worker, done before anything is written."""
    from tbxsweep.trial import static_task_info

    spec = load_spec(spec_path, overrides)
    info = static_task_info(spec)
    if info is not None:
        check_spec_against_task(spec, info, spec_path)
    check_output_dir(spec, spec_path)
    check_entry_points(spec, spec_path)
    if spec.study.storage:
        _probe_storage(spec.study.storage, spec_path)
    return spec


def _probe_storage(url: str, where: str) -> None:
    """Open the storage named by `study.storage` without writing to it."""
    from tbxsweep.study import redact_url

    shown = redact_url(url)
    if url.startswith("sqlite:///"):
        db = Path(url[len("sqlite:///") :])
        parent = db.parent if str(db.parent) else Path(".")
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise SpecError(
                f"{where}: study.storage: cannot open {shown}: {parent} is not a writable directory"
            )
        return
    if url.startswith("journal:///"):
        log = Path(url[len("journal:///") :])
        if not log.parent.is_dir() or not os.access(log.parent, os.W_OK):
            raise SpecError(
                f"{where}: study.storage: cannot open {shown}: {log.parent} is not a writable "
                "directory"
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
        text = " ".join(str(getattr(exc, "orig", None) or exc).split())
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
) -> Any:
    """Open (or continue) the study and run trials until `n_trials` are finished.

    Order matters: the task is described (in a worker when that needs TensorFlow) and the
    spec checked against it before the output directory or the study is created.
    """
    from tbxsweep.jobs import PrepareJob
    from tbxsweep.schedule import Scheduler, plan_devices, recover_stale, slot_plan
    from tbxsweep.study import (
        distributions,
        fork_study,
        open_study,
        redact_url,
        resolve_storage_url,
        seed_from,
        study_exists,
    )
    from tbxsweep.tblog import SweepLogger, write_experiment
    from tbxsweep.trial import static_task_info
    from tbxsweep.worker import describe, prepare_base, warm_up

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
    devices = plan_devices(spec.resources, spec.study.n_trials)
    if devices.warning:
        on_event("warning", {"message": devices.warning})
    pool: Any = None
    if spec.resources.backend == "dask":
        from tbxsweep.schedule import DaskPool

        pool = DaskPool(spec.resources, len(devices.devices), bool(devices.gpus))
        slots = SlotPlan("", ("",) * pool.n_slots, devices.threads_per_worker)
    else:
        slots = slot_plan(devices)
    sched: Scheduler | None = None
    try:
        sched = Scheduler(
            spec=spec,
            study=None,
            dists={},
            paths=paths,
            slots=slots,
            storage_url="",
            base_model_path=None,
            on_event=on_event,
        )
        sched.pool = pool
        if pool is None:
            # Every worker but the one that describes the task and prepares the base warms
            # up meanwhile (for the built-in task: imports TensorFlow and loads the data), so
            # that none pays for it in its first trial (TensorFlow's import alone is seconds).
            for _ in range(len(slots.devices) - 1):
                sched.submit(warm_up, PrepareJob(spec, "", slots))
        info = static_task_info(spec)
        if info is None:
            try:
                info = sched.submit(describe, PrepareJob(spec, "", slots)).result()
            except SpecError as exc:  # raised in the worker: name the spec file here
                raise SpecError([f"{where}: {p}" for p in exc.problems]) from None
        check_spec_against_task(spec, info, where)
        spec = resolve_depth_max(spec, info.depth_max)
        sched.spec = spec

        # From here on the sweep writes: output directory, storage, logs.
        paths.root.mkdir(parents=True, exist_ok=True)
        storage_url = resolve_storage_url(spec)
        dists = distributions(spec, info.depth_max)
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
        return counts
    finally:
        if sched is not None and sched.sweep_log is not None:
            sched.sweep_log.close()
        if pool is not None:
            pool.close()
        if slots.slots_dir:
            shutil.rmtree(slots.slots_dir, ignore_errors=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
