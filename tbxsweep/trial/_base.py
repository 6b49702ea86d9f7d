"""The built-in task's base model: built once per worker process, cloned fresh per trial."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tbxsweep.errors import SpecError
from tbxsweep.spec import BuilderModel, TaskSpec
from tbxsweep.trial import backbones
from tbxsweep.trial._data import TaskData

_cache: dict[tuple[Any, ...], Base] = {}


@dataclass(frozen=True)
class Base:
    """A built base model and how to feed it.

    Attributes:
        model: the cached model (images -> features); never trained, clone it per trial.
        input_shape: (height, width, channels) the model takes; the pipeline resizes to it.
        preprocess: applied to each batch of [0, 1] images after resizing (the application's
            own preprocess_input, and a channel conversion where the dataset needs one).
        random_init: the base starts from random weights (an application with weights
            null, or a builder), so an unset finetune_depth trains all of it.
        label: one line for the task description.
    """

    model: Any
    input_shape: tuple[int, int, int]
    preprocess: Callable[[Any], Any] | None
    random_init: bool
    label: str


def load_base(task: TaskSpec, data: TaskData, pretrained_path: Path | None = None) -> Base:
    """The task's base model, built (or loaded) once per process; writes nothing.

    Args:
        task: the spec's task section (`configure(task)` must have run).
        data: the task's data: its image shape is the default input shape.
        pretrained_path: the pretrained digits base, for `base_model: pretrain`.

    Raises:
        SpecError: the base cannot be built (missing weights or file, a bad builder, an
            input shape the model cannot take, channels that cannot be converted).
    """
    import keras

    kind = task.base_kind
    key: tuple[Any, ...] = (
        task.base_model,
        task.weights,
        task.input_shape,
        data.image_shape,
        task.seed,
        keras.mixed_precision.global_policy().name,
        os.environ.get("KERAS_HOME"),
        str(pretrained_path),
        _mtime(task.base_model if kind == "file" else pretrained_path),
    )
    if key not in _cache:
        _cache[key] = _build(task, data, pretrained_path)
    return _cache[key]


def fresh_copy(base: Base) -> Any:
    """A clone of the cached base with the same weights, for one trial to change."""
    import keras

    try:
        model = keras.models.clone_model(base.model)
    except Exception as exc:
        why = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        raise SpecError(
            f"task.base_model: {base.label} cannot be cloned for each trial "
            f"({type(exc).__name__}: {why}); build it as a functional or Sequential model"
        ) from exc
    model.set_weights(base.model.get_weights())
    return model


def _build(task: TaskSpec, data: TaskData, pretrained_path: Path | None) -> Base:
    import keras

    kind = task.base_kind
    if kind == "pretrain":
        from tbxsweep.trial._digits import load_pretrained_cnn as load_pretrained
        from tbxsweep.trial._pretrain import architecture, build_architecture

        if pretrained_path is None:  # describing the task: the architecture, untrained
            model = build_architecture(task, task.input_shape or data.image_shape)
        else:
            model = load_pretrained(pretrained_path)
        takes = tuple(model.input_shape[1:])
        shape = (int(takes[0]), int(takes[1]), int(takes[2]))
        convert = _channels(data.image_shape[2], shape[2])
        arch = architecture(task)
        label = {"digits": "base CNN", "classic": "classic CNN"}.get(arch, arch)
        return Base(model, shape, convert, False, f"{label}, pretrained")
    # The same base weights in every worker, whatever ran there before.
    keras.utils.set_random_seed(task.seed)
    if kind == "file":
        assert isinstance(task.base_model, str)
        model = backbones.load_backbone("file", input_shape=task.input_shape, path=task.base_model)
        takes = tuple(model.input_shape[1:])
        if task.input_shape is not None:
            shape = task.input_shape
        elif len(takes) == 3 and all(isinstance(d, int) for d in takes):
            shape = (int(takes[0]), int(takes[1]), int(takes[2]))
        else:
            shape = _with_channels(data.image_shape, takes)
        label = f"{task.base_model}"
        random_init = False
    elif kind == "builder":
        assert isinstance(task.base_model, BuilderModel)
        shape = task.input_shape or data.image_shape
        model = backbones.load_backbone(
            "builder", input_shape=shape, builder=task.base_model.builder
        )
        label = task.base_model.builder
        random_init = True
    else:
        shape = task.input_shape or data.image_shape
        model = backbones.load_backbone(kind, input_shape=shape, weights=task.weights)
        label = f"{kind} (weights {task.weights or 'random'})"
        random_init = task.weights is None
    if data.datasets is not None and tuple(shape) != data.image_shape:
        h, w, c = data.image_shape
        raise SpecError(
            f"task.input_shape: the loader's tf.data batches hold {h}x{w}x{c} images and the "
            f"base model takes {'x'.join(map(str, shape))}: resize in the loader, or leave "
            "task.input_shape out"
        )
    convert = _channels(data.image_shape[2], shape[2])
    app = backbones.preprocess_for(kind)
    if convert is None:
        preprocess = app
    elif app is None:
        preprocess = convert
    else:
        preprocess = _compose(convert, app)
    h, w, c = shape
    return Base(model, shape, preprocess, random_init, f"{label}, input {h}x{w}x{c}")


def _with_channels(image_shape: tuple[int, int, int], takes: tuple[Any, ...]) -> Any:
    channels = takes[2] if len(takes) == 3 and isinstance(takes[2], int) else image_shape[2]
    return (image_shape[0], image_shape[1], int(channels))


def _channels(have: int, want: int) -> Callable[[Any], Any] | None:
    """Converts a batch of images from `have` to `want` channels, or None when they match."""
    if have == want:
        return None
    import tensorflow as tf

    if have == 1:
        return lambda x: tf.repeat(x, want, axis=-1)
    if want == 1 and have in (3, 4):
        return lambda x: tf.image.rgb_to_grayscale(x[..., :3])
    if want == 3 and have == 4:
        return lambda x: x[..., :3]
    raise SpecError(
        f"task.input_shape: the dataset's images have {have} channels and the base model "
        f"takes {want}; give task.input_shape with {have} channels"
    )


def _compose(first: Callable[[Any], Any], then: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda x: then(first(x))


def _mtime(path: Any) -> int | None:
    try:
        return Path(str(path)).expanduser().stat().st_mtime_ns if path is not None else None
    except OSError:
        return None
