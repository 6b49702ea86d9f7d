"""Run one trial end to end inside a worker and turn whatever happens into an outcome."""

from __future__ import annotations

import importlib
import math
import os
import socket
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from tbxsweep.errors import TrialFailed
from tbxsweep.jobs import TrialJob, TrialOutcome, TrialState
from tbxsweep.spec import Spec
from tbxsweep.tblog import STATE_CODES, HParamsStatus, TrialLogger
from tbxsweep.trial._context import TrialContext, TrialPruned

_studies: dict[tuple[str, str], Any] = {}
_tf_ready = False


def resolve_entry_point(ref: str) -> Callable[..., Any]:
    """Import `package.module:function` (only ever a name the spec gives explicitly)."""
    module_name, _, attr = ref.partition(":")
    module = importlib.import_module(module_name)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise AttributeError(f"{module_name} has no function {attr!r}")
    return fn


def prepare_base_model(spec: Spec, base_model_path: str) -> int:
    """Pretrain (or find) the base model; returns its number of weighted layers."""
    from tbxsweep.trial._digits import BASE_WEIGHTED_LAYERS, ensure_pretrained

    _setup_tf()
    ensure_pretrained(Path(base_model_path), spec.task.pretrain_epochs, spec.task.seed)
    return len(BASE_WEIGHTED_LAYERS)


def run_trial(job: TrialJob, device: str) -> TrialOutcome:
    """Run `job` and return its outcome; exceptions become a FAIL outcome, never escape."""
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
        histograms=spec.logging.histograms,
    )
    state, error, value = TrialState.COMPLETE, None, None
    try:
        if spec.task.train is None:
            from tbxsweep.trial._finetune import train as builtin_train

            _setup_tf()
            assert job.base_model_path is not None
            fn: Callable[..., Any] = partial(builtin_train, base_path=Path(job.base_model_path))
        else:
            fn = resolve_entry_point(spec.task.train)
        returned = fn(dict(job.params), ctx)
        value = _final_value(returned, ctx)
        if value is None:
            raise TrialFailed(
                f"the trial reported no {spec.study.metric!r} (call ctx.report or return it)"
            )
        if not math.isfinite(value):
            raise TrialFailed(f"{spec.study.metric} is {value}")
    except TrialPruned:
        state, value = TrialState.PRUNED, ctx.best_value
    except Exception as exc:
        state, value = TrialState.FAIL, None
        error = _describe(exc)
    ended = time.time()
    final = {
        "epochs_run": ctx.epochs_run,
        "duration_s": ended - started,
        "state": STATE_CODES[state.value],
    }
    if value is not None:
        final[f"best/{spec.study.metric}"] = value
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
    )


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


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TrialFailed):
        return str(exc)
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}{where}"


def _pruning_hook(job: TrialJob) -> Callable[[int, float], bool] | None:
    """Report intermediate values to the study's storage and ask the pruner."""
    if job.storage_url is None or job.spec.study.pruner.name == "none":
        return None

    def should_prune(step: int, value: float) -> bool:
        import optuna

        from tbxsweep.study import build_pruner

        key = (job.storage_url or "", job.spec.study.name)
        if key not in _studies:
            _studies[key] = optuna.load_study(
                study_name=job.spec.study.name,
                storage=key[0],
                pruner=build_pruner(job.spec),
            )
        trial = optuna.trial.Trial(_studies[key], job.trial_id)
        trial.report(value, step)
        return bool(trial.should_prune())

    return should_prune


def _setup_tf() -> None:
    """Size TensorFlow's thread pools once per process, before its first op."""
    global _tf_ready
    if _tf_ready:
        return
    import tensorflow as tf

    intra = int(os.environ.get("TF_NUM_INTRAOP_THREADS", "0") or 0)
    inter = int(os.environ.get("TF_NUM_INTEROP_THREADS", "0") or 0)
    try:
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:
        pass  # already initialised by an earlier import in this process
    _tf_ready = True
