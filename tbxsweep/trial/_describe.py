"""What the orchestrator needs to know about a task before any trial runs."""

from __future__ import annotations

from dataclasses import replace

from tbxsweep.errors import SpecError
from tbxsweep.jobs import TaskInfo
from tbxsweep.spec import Spec

UNIT_WORDS = {"layer": "weighted layers", "block": "blocks"}


def static_task_info(spec: Spec) -> TaskInfo | None:
    """The task's info when it is known without TensorFlow (pure Python, no disk writes);
    None when a worker must build the base model to find out (`describe_task`)."""
    from tbxsweep.trial._cache import notice

    task = spec.task
    if task.train is not None:
        # No line about the feature cache: a training function trains its own model.
        return TaskInfo(depth_max=None, description=f"custom training function {task.train}")
    if task.base_kind != "pretrain":
        return None
    from tbxsweep.trial._pretrain import pretrain_info

    info = pretrain_info(task)  # None for a pretrain builder: a worker builds it
    return None if info is None else replace(info, feature_cache=notice(task))


def describe_task(spec: Spec) -> TaskInfo:
    """Runs in a worker: read the data, build (not train) the base model, count its units.

    Writes nothing to disk. The data and the base stay cached in this process for the
    trials that follow.

    Raises:
        SpecError: the data or the base model cannot be loaded as the spec says (a missing
            file or ImageNet weights, a bad builder, no blocks for finetune_unit 'block').
    """
    info = static_task_info(spec)
    if info is not None:
        return info
    from tbxsweep.trial import backbones
    from tbxsweep.trial._base import fresh_copy, load_base
    from tbxsweep.trial._cache import notice
    from tbxsweep.trial._data import load_task_data
    from tbxsweep.trial._tf import configure

    task = spec.task
    configure(task)
    data = load_task_data(task)
    base = load_base(task, data)
    unit = task.finetune_unit
    try:
        depth_max = backbones.max_depth(base.model, unit)
    except ValueError:
        raise SpecError(
            f"task.finetune_unit: 'block' needs a base model made of residual blocks, and "
            f"{base.model.name!r} has none that tbxsweep recognises (layer names starting "
            "block_N_, expanded_conv_, convN_blockM_ or blockNx_): use 'layer'"
        ) from None
    if task.base_kind in ("file", "builder"):
        # Every trial clones the base: a model of the user's fails now, not in every trial.
        # (Keras's applications always clone; a second for MobileNetV2, while every worker
        # waits for this description.)
        fresh_copy(base)
    from tbxsweep.trial._pretrain import pretrain_key

    return TaskInfo(
        depth_max=depth_max,
        base_cache_key=pretrain_key(task),
        description=f"{data.label}; base {base.label} ({depth_max} {UNIT_WORDS[unit]})",
        feature_cache=notice(task, data, base),
    )
