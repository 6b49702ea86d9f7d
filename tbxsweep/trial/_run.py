"""Run one trial end to end inside a worker and turn whatever happens into an outcome."""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from tbxsweep.errors import TrialFailed
from tbxsweep.jobs import TrialJob, TrialOutcome, TrialState
from tbxsweep.paths import SweepPaths
from tbxsweep.spec import Spec, swept_depths
from tbxsweep.tblog import STATE_CODES, HParamsStatus, TrialLogger
from tbxsweep.trial._context import TrialContext, TrialPruned
from tbxsweep.trial._resolve import import_function
from tbxsweep.trial._tf import configure, setup_tf

_studies: dict[tuple[str, str], Any] = {}
_watched_parent: list[int] = []  # the parent pid this worker watches, once it does


def exit_with_parent(spec: Spec, poll_s: float = 1.0) -> None:
    """End this loky worker process as soon as the orchestrator that started it is gone.

    loky's workers hold both ends of their call queue's pipe, so they do not see their parent
    die (kill -9, OOM killer): an orphan would train on for nobody until the pool's idle
    timeout (minutes) after its trial, holding its GPU and slot lock and writing into a run
    directory that the next `start` moves aside. A daemon thread notices the re-parenting and
    exits at once; the orphaned trial stays RUNNING in the storage and is recovered and re-run
    by the next `start`. Dask workers belong to their cluster and are left alone, as are
    calls in the orchestrator's own process.
    """
    if (
        _watched_parent
        or spec.resources.backend != "loky"
        or multiprocessing.current_process().name == "MainProcess"
    ):
        return
    parent = os.getppid()
    _watched_parent.append(parent)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)  # nobody is left to read an outcome; skip cleanup that could block

    threading.Thread(target=watch, name="tbxsweep-exit-with-parent", daemon=True).start()


def prepare_base_model(spec: Spec, base_model_path: str) -> None:
    """Pretrain the base model into `base_model_path` unless it is already there, logging
    the run `pretrain`; and show the fine-tuning data in the `sweep` run.

    The cache is `<output.dir>/cache/base-<key>.keras`, so both runs sit two levels up.
    """
    exit_with_parent(spec)
    import keras

    from tbxsweep.trial._heldout import log_sweep_samples
    from tbxsweep.trial._pretrain import PRETRAIN_RUN, ensure_pretrained

    setup_tf()
    keras.mixed_precision.set_global_policy("float32")  # the cached base is always float32
    path = Path(base_model_path)
    # A sweep's cache (else a caller's own file: no runs are written next to it).
    root = path.parent.parent if path.parent.name == "cache" else None
    ensure_pretrained(path, spec.task, root / PRETRAIN_RUN if root else None)
    if root is not None:
        configure(spec.task)
        log_sweep_samples(spec, root / "sweep")


def warm_up_worker(spec: Spec) -> None:
    """For the built-in task: import and set up TensorFlow and load the task's data, both
    kept by this process for its trials. A problem is left for the first trial (or the
    base's preparation) to report, where it says which trial it hit."""
    exit_with_parent(spec)
    if spec.task.train is not None:
        return  # a training function may not use TensorFlow at all
    from tbxsweep.trial._data import load_task_data

    configure(spec.task)
    with contextlib.suppress(Exception):
        load_task_data(spec.task)


def preload_base(spec: Spec) -> None:
    """Load the base model the trials will load, into this process's cache (trial/_base.py),
    when it is a file already there: the pretrained base cached in the output directory, or
    the spec's own .keras file. A base that is built (an application, a builder) or still
    to be pretrained is left to the trials: loading it here could download or read a file
    another worker is writing."""
    from tbxsweep.paths import SweepPaths
    from tbxsweep.trial._base import load_base
    from tbxsweep.trial._data import load_task_data
    from tbxsweep.trial._describe import static_task_info

    task = spec.task
    path: Path | None = None
    if task.base_kind == "pretrain":
        info = static_task_info(spec)
        if info is None or info.base_cache_key is None:
            return
        path = SweepPaths(spec.output_dir).base_model(info.base_cache_key)
        if not path.exists():
            return
    elif task.base_kind != "file":
        return
    load_base(task, load_task_data(task), path)


def run_trial(job: TrialJob, device: str) -> TrialOutcome:
    """Run `job` and return its outcome; exceptions become a FAIL outcome, never escape."""
    exit_with_parent(job.spec)
    started = time.time()
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = TrialLogger(run_dir)
    logger.start_session(job.spec, job.params, job.group, started)
    spec = job.spec
    ctx = TrialContext(
        number=job.number,
        params=dict(job.params),
        seed=job.seed,
        device=device,
        run_dir=run_dir,
        logger=logger,
        metric=spec.study.metric,
        direction=spec.study.direction,
        epochs=spec.task.epochs,
        pruning=_pruning_hook(job),
        # The built-in task's last epoch is not pruned: its training is done.
        last_step=spec.task.epochs if spec.task.train is None else None,
        histograms=spec.logging.histograms,
        resume_dir=Path(job.resume_dir) if job.resume_dir else None,
        checkpoint_every_s=spec.task.checkpoint_every_s,
        task=spec.task,
        keep_model=spec.output.keep_models > 0,
        model_bar=job.model_bar,
    )
    state, error, value = TrialState.COMPLETE, None, None
    values: tuple[float, ...] = ()
    constraints: dict[str, float] = {}
    try:
        if spec.task.train is None:
            from tbxsweep.trial._data import has_test_data
            from tbxsweep.trial._finetune import train as builtin_train

            configure(spec.task)
            base_path = Path(job.base_model_path) if job.base_model_path else None
            fn: Callable[..., Any] = partial(
                builtin_train,
                task=spec.task,
                base_path=base_path,
                keep_best=spec.test_top_k > 0 and has_test_data(spec.task),
                weights_bar=job.weights_bar,
                cache_dir=SweepPaths(spec.output_dir).cache_dir,
                cache_depths=swept_depths(spec),
            )
        else:
            # Only ever a module the spec names explicitly.
            fn = import_function(spec.task.train, "task.train")
        returned = fn(dict(job.params), ctx)
        value = _final_value(returned, ctx)
        if value is None:
            raise TrialFailed(
                f"the trial reported no {spec.study.metric!r} (call ctx.report or return it)"
            )
        if not math.isfinite(value):
            raise TrialFailed(f"{spec.study.metric} is {value}")
        measured = _measured(returned, ctx, time.time() - started)
        values = _objective_values(spec, value, measured)
        constraints = _constraint_values(spec, measured)
        if any(c > 0 for c in constraints.values()):
            state, error = TrialState.INFEASIBLE, _violated(spec, constraints, measured)
    except TrialPruned:
        state, value = TrialState.PRUNED, ctx.best_value
    except Exception as exc:
        state, value, values = TrialState.FAIL, None, ()
        error = _error_text(exc)
        if out_of_memory(exc):
            # Not a failure but an answer about these parameters: infeasible, so that the
            # sampler learns to avoid them (Optuna's constraint API).
            state, constraints = TrialState.INFEASIBLE, {"oom": 1.0}
            error = f"out of memory: {error}"
    ended = time.time()
    final = {
        "epochs_run": ctx.epochs_run,
        "duration_s": ended - started,
        "state": STATE_CODES[state.value],
    }
    if value is not None:
        final[f"best/{spec.study.metric}"] = value
    if spec.study.multi_objective:
        final.update(
            {f"objective/{g.name}": v for g, v in zip(spec.study.goals, values, strict=False)}
        )
    logger.scalars(max(ctx.epochs_run, 1), final)
    if error:
        logger.text("trial/error", f"    {error}")
    logger.end_session(
        HParamsStatus.SUCCESS
        if state is TrialState.COMPLETE
        else HParamsStatus.UNKNOWN
        if state is TrialState.PRUNED
        else HParamsStatus.FAILURE,
        ended,
    )
    logger.close()
    return TrialOutcome(
        number=job.number,
        state=state,
        value=value,
        best_epoch=ctx.best_epoch,
        epochs_run=ctx.epochs_run,
        duration_s=ended - started,
        device=device,
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        worker_pid=os.getpid(),
        host=socket.gethostname(),
        error=error,
        started_at=started,
        ended_at=ended,
        first_epoch_end=ctx.first_epoch_end,
        epoch_seconds=tuple(ctx.epoch_seconds),
        trainable_params=ctx.trainable_params,
        metrics={k: float(v) for k, v in ctx.last.items()},
        values=values,
        constraints=constraints,
        feature_cache=ctx.feature_cache,
        cache_build_s=ctx.cache_build_s,
    )


# Exceptions that mean the trial ran out of memory: TensorFlow's (GPU or host memory) and
# Python's own. Matched by name through the class hierarchy and the exception chain, so
# that a trial function need not import TensorFlow for the check.
OOM_ERRORS = frozenset({"ResourceExhaustedError", "MemoryError"})


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from, is an out-of-memory error."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if any(c.__name__ in OOM_ERRORS for c in type(cur).__mro__):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _measured(returned: Any, ctx: TrialContext, seconds: float) -> dict[str, float]:
    """What objectives and constraints may name: the metrics at the best epoch (or the last
    reported), those the function returned, and the costs (`seconds`, `trainable_params`)."""
    at_best = next((v for step, v in ctx.history if step == ctx.best_epoch), ctx.last)
    out = {k: float(v) for k, v in at_best.items()}
    if isinstance(returned, dict):
        out.update(
            {
                str(k): float(v)
                for k, v in returned.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
        )
    out["seconds"] = seconds
    if ctx.trainable_params is not None:
        out["trainable_params"] = float(ctx.trainable_params)
    else:
        out.pop("trainable_params", None)
    return out


def _lookup(measured: dict[str, float], name: str, what: str) -> float:
    v = measured.get(name)
    if v is None:
        hint = " (set ctx.trainable_params)" if name == "trainable_params" else ""
        raise TrialFailed(f"the trial reported no {name!r} for {what}{hint}")
    if not math.isfinite(v):
        raise TrialFailed(f"{name} is {v} ({what})")
    return v


def _objective_values(spec: Spec, value: float, measured: dict[str, float]) -> tuple[float, ...]:
    """Every objective's value: the first is the trial's value (its best epoch's)."""
    goals = spec.study.goals
    rest = [
        _lookup(measured, g.name, f"objective {i} of study.metric")
        for i, g in enumerate(goals[1:], start=2)
    ]
    return (value, *rest)


def _constraint_values(spec: Spec, measured: dict[str, float]) -> dict[str, float]:
    """Optuna's constraint value of every study.constraints key (> 0: outside)."""
    return {
        k: b.excess(_lookup(measured, k, f"study.constraints.{k}"))
        for k, b in spec.study.constraints.items()
    }


def _violated(spec: Spec, constraints: dict[str, float], measured: dict[str, float]) -> str:
    parts = []
    for k, c in constraints.items():
        if c > 0:
            b = spec.study.constraints[k]
            low = [] if b.min is None else [f"{b.min:g}"]
            high = [] if b.max is None else [f"{b.max:g}"]
            rule = " <= ".join([*low, k, *high])
            parts.append(f"`{rule}` must hold, got {k}={measured[k]:g}")
    return "outside study.constraints: " + "; ".join(parts)


def _final_value(returned: Any, ctx: TrialContext) -> float | None:
    if isinstance(returned, dict):
        if ctx.metric in returned:
            returned = returned[ctx.metric]
        else:
            return ctx.best_value
    if returned is None:
        return ctx.best_value
    value = float(returned)
    if ctx.best_value is None or ctx.best_value != value:
        ctx.best_value = value
        ctx.best_epoch = ctx.best_epoch or ctx.epochs_run or None
    return value


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, TrialFailed):
        return str(exc)
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}{where}"


def _pruning_hook(job: TrialJob) -> Callable[[int, float, bool], bool] | None:
    """Report intermediate values to the study's storage and, with `ask`, ask the pruner.

    Only public Optuna API: the storage's `get_trial` / `set_trial_intermediate_value` and
    the pruner's `prune(study, trial)`, which is what `Trial.report` and
    `Trial.should_prune` do. No `Trial` is built from a trial id: that constructor is not
    meant for users (and it would run the sampler's `before_trial` at every report).

    With `pruner: none` too (Optuna's NopPruner then never prunes): the study keeps every
    trial's curve, for optuna-dashboard and `tbxsweep report` (one small write per epoch).
    """
    if job.storage_url is None:
        return None
    # `pruner: none` never prunes: the value is written, nothing read back to ask it.
    never_prunes = job.spec.study.pruner.name == "none"

    def should_prune(step: int, value: float, ask: bool) -> bool:
        study, storage, pruner = _study_of(job)
        trial = storage.get_trial(job.trial_id)
        if step not in trial.intermediate_values:  # a replayed step keeps its first value
            storage.set_trial_intermediate_value(job.trial_id, int(step), float(value))
            if never_prunes or not ask:
                return False
            trial = storage.get_trial(job.trial_id)
        if never_prunes or not ask:
            return False
        return bool(pruner.prune(study, trial))

    return should_prune


def _study_of(job: TrialJob) -> tuple[Any, Any, Any]:
    """(study, storage, pruner) of the job's study, opened once per worker process."""
    key = (job.storage_url or "", job.spec.study.name)
    if key not in _studies:
        import optuna

        from tbxsweep.study import build_pruner, get_storage

        storage = get_storage(key[0])
        pruner = build_pruner(job.spec)
        study = optuna.load_study(study_name=key[1], storage=storage, pruner=pruner)
        _studies[key] = (study, storage, pruner)
    return _studies[key]
