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
from tbxsweep.paths import SweepPaths
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


def base_depth_max(spec: Spec) -> int | None:
    """How many weighted layers the base model has (the largest finetune_depth)."""
    if spec.task.train is not None:
        return None
    from tbxsweep.trial._digits import BASE_WEIGHTED_LAYERS

    return len(BASE_WEIGHTED_LAYERS)


def check_spec_against_task(spec: Spec, depth_max: int | None, where: str) -> None:
    """Checks that need to know the base model, run before anything is written."""
    p = spec.search_space.get("finetune_depth")
    if depth_max is None or not isinstance(p, IntParam) or p.high == "max":
        return
    if int(p.high) > depth_max:
        raise SpecError(
            f"{where}: search_space.finetune_depth.high: `high <= {depth_max}` must hold "
            f"(the base model has {depth_max} weighted layers), got high={p.high}"
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
    """Everything that can reject the input, done before anything is written."""
    spec = load_spec(spec_path, overrides)
    check_spec_against_task(spec, base_depth_max(spec), spec_path)
    check_output_dir(spec, spec_path)
    check_entry_points(spec, spec_path)
    if spec.study.storage:
        _probe_storage(spec.study.storage, spec_path)
    return spec


def _probe_storage(url: str, where: str) -> None:
    from tbxsweep.study import redact_url

    if url.startswith("sqlite:///"):
        db = Path(url[len("sqlite:///") :])
        parent = db.parent if str(db.parent) else Path(".")
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise SpecError(
                f"{where}: study.storage: cannot open {redact_url(url)}: "
                f"{parent} is not a writable directory"
            )
        return
    if "://" not in url:
        raise SpecError(
            f"{where}: study.storage: must be an Optuna storage URL like "
            f"'sqlite:///path/study.db' or 'postgresql://user@host/db', got {redact_url(url)!r}"
        )


def run_sweep(
    spec: Spec,
    *,
    on_event: Callable[[str, dict[str, Any]], None],
) -> Any:
    """Open (or continue) the study and run trials until `n_trials` are finished."""
    from tbxsweep.schedule import Scheduler, plan_devices, slot_plan
    from tbxsweep.study import distributions, open_study, resolve_storage_url
    from tbxsweep.tblog import SweepLogger, write_experiment
    from tbxsweep.worker import prepare_base

    paths = SweepPaths(spec.output_dir)
    depth_max = base_depth_max(spec)
    spec = resolve_depth_max(spec, depth_max)
    devices = plan_devices(spec.resources, spec.study.n_trials)
    if devices.warning:
        on_event("warning", {"message": devices.warning})
    paths.root.mkdir(parents=True, exist_ok=True)
    storage_url = resolve_storage_url(spec)
    dists = distributions(spec, depth_max)
    study = open_study(spec, storage_url, dists=dists)
    info = SweepInfo.of(spec)
    _write_json(
        paths.sweep_json, {**info.__dict__, "params": list(info.params), "created_at": time.time()}
    )
    write_experiment(paths.root, spec, depth_max)
    slots = slot_plan(devices)
    base_path: str | None = None
    sched = None
    try:
        from tbxsweep.jobs import PrepareJob
        from tbxsweep.trial._digits import base_key

        sched = Scheduler(
            spec=spec,
            study=study,
            dists=dists,
            paths=paths,
            slots=slots,
            storage_url=storage_url,
            base_model_path=None,
            on_event=on_event,
        )
        sched.sweep_log = SweepLogger(paths.sweep_run_dir, spec.study.metric)
        on_event("plan", {"devices": devices, "storage": storage_url, "paths": paths})
        if spec.task.train is None:
            base_path = str(paths.base_model(base_key(spec.task.pretrain_epochs, spec.task.seed)))
            if not Path(base_path).exists():
                on_event("pretrain", {"path": base_path})
            sched.submit(prepare_base, PrepareJob(spec, base_path, slots)).result()
            sched.base_model_path = base_path
        counts = sched.run()
        sched.write_leaderboard()
        sched.raise_if_fatal()
        return counts
    finally:
        if sched is not None and sched.sweep_log is not None:
            sched.sweep_log.close()
        shutil.rmtree(slots.slots_dir, ignore_errors=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
