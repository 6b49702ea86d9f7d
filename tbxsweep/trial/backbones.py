"""Base models to fine-tune, and how deep `finetune_depth` unfreezes them.

A backbone is a Keras Applications model without its classifier (`include_top=False,
pooling="avg"`: it outputs one feature vector per image), a saved `.keras` model, or a
model from the user's `package.module:function`. Nothing is downloaded: ImageNet weights
are read from the Keras cache, and a missing file is a one-line SpecError naming it.

`finetune_depth` counts *units* from the top of the backbone: single weighted layers
(`unit="layer"`) or whole residual blocks (`unit="block"`). BatchNormalization layers
always stay frozen, and the caller must call the backbone with `training=False`
(`features = backbone(inputs, training=False)`) so that BatchNormalization keeps using
its ImageNet statistics and dropout inside the backbone stays off, whatever is unfrozen.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from tbxsweep.errors import SpecError
from tbxsweep.spec import messages as msg
from tbxsweep.trial._resolve import import_function
from tbxsweep.trial._resolve import keras_home as _keras_home


class _App(NamedTuple):
    constructor: str  # the keras.applications attribute
    module: str  # the keras.applications sub-module holding preprocess_input
    weights_file: str  # the no-top ImageNet weights file; {rows} filled in for MobileNetV2
    url_base: str


_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"
_MOBILENET_V2_ROWS = (96, 128, 160, 192, 224)

# File names as keras/src/applications/*.py (Keras 3.15) pass them to get_file.
APPLICATIONS: dict[str, _App] = {
    "mobilenet_v2": _App(
        "MobileNetV2",
        "mobilenet_v2",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5",
        _KERAS_APPS + "mobilenet_v2/",
    ),
    **{
        f"efficientnet_b{i}": _App(
            f"EfficientNetB{i}",
            "efficientnet",
            f"efficientnetb{i}_notop.h5",
            "https://storage.googleapis.com/keras-applications/",
        )
        for i in range(8)
    },
    **{
        f"resnet{n}": _App(
            f"ResNet{n}",
            "resnet",
            f"resnet{n}_weights_tf_dim_ordering_tf_kernels_notop.h5",
            _KERAS_APPS + "resnet/",
        )
        for n in (50, 101, 152)
    },
    **{
        f"resnet{n}_v2": _App(
            f"ResNet{n}V2",
            "resnet_v2",
            f"resnet{n}v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
            _KERAS_APPS + "resnet/",
        )
        for n in (50, 101, 152)
    },
}
KINDS = (*APPLICATIONS, "file", "builder")

# The block a layer belongs to, from the names Keras Applications give their layers:
# MobileNetV2 `expanded_conv_*` (block 0) and `block_N_*`, ResNet v1/v2 `convN_blockM_*`,
# EfficientNet `blockNx_*`.
_BLOCK = re.compile(r"(block_\d+|expanded_conv|conv\d+_block\d+|block\d+[a-z])_")


# --- building -------------------------------------------------------------------------------


def load_backbone(
    kind: str,
    *,
    input_shape: tuple[int, int, int] | None,
    weights: str | None = None,
    builder: str | None = None,
    path: str | os.PathLike[str] | None = None,
    keras_home: str | os.PathLike[str] | None = None,
) -> Any:
    """Build or load a backbone: a `keras.Model` from images to features.

    Call it with `training=False` inside the fine-tuning model, so BatchNormalization stays
    in inference mode (see `set_finetune_depth`).

    Args:
        kind: a key of `APPLICATIONS` (built with `include_top=False, pooling="avg"`),
            "file" (load `path`) or "builder" (call `builder`).
        input_shape: (height, width, channels) of the images; for "file", None or the
            shape the saved model takes.
        weights: applications only: "imagenet" (read from the Keras cache, see
            `imagenet_weights_path`) or None (random initialisation).
        builder: "builder" only: `package.module:function`, called as
            `function(input_shape=input_shape)`, returning a `keras.Model`.
        path: "file" only: a saved `.keras` model.
        keras_home: the Keras cache root, overriding `$KERAS_HOME`.

    Raises:
        SpecError: unknown kind, a missing or unreadable file, missing ImageNet weights,
            an input shape the application cannot take, a builder that does not build.
    """
    if kind not in KINDS:
        raise SpecError(msg.at("task.base_model", msg.one_of(KINDS, kind)))
    if weights is not None and kind not in APPLICATIONS:
        raise SpecError(
            f"task.weights: must be null for a {kind!r} base model "
            f"(it brings its own weights), got {weights!r}"
        )
    if weights not in (None, "imagenet"):
        raise SpecError(msg.at("task.weights", msg.weights(weights)))
    if kind == "file":
        return _load_file(path, input_shape)
    shape = _check_shape(input_shape)
    if kind == "builder":
        return _build_from(builder, shape)
    return _build_application(kind, shape, weights, _keras_home(keras_home))


def imagenet_weights_path(
    kind: str,
    input_shape: tuple[int, int, int],
    *,
    keras_home: str | os.PathLike[str] | None = None,
) -> Path:
    """Where Keras keeps the no-top ImageNet weights of `kind`: `$KERAS_HOME/models/<file>`.

    MobileNetV2 has one file per input size in 96, 128, 160, 192, 224 and, like Keras,
    uses the 224 file for any other (or non-square) size.
    """
    if kind not in APPLICATIONS:
        raise ValueError(
            f"{kind!r} has no ImageNet weights file: it is not one of "
            f"{', '.join(map(repr, APPLICATIONS))}"
        )
    app = APPLICATIONS[kind]
    rows = input_shape[0]
    if rows != input_shape[1] or rows not in _MOBILENET_V2_ROWS:
        rows = 224
    return _keras_home(keras_home) / "models" / app.weights_file.format(rows=rows)


def preprocess_for(kind: str, *, scaled: bool = True) -> Callable[[Any], Any] | None:
    """The application's own `preprocess_input`, or None for "file" and "builder" models.

    Args:
        kind: as in `load_backbone`.
        scaled: True (the default) for images in [0, 1], as `tbxsweep.trial.datasets`
            gives them: they are multiplied by 255 first, since every application
            expects 0..255 pixels (EfficientNet's preprocess_input does nothing: its
            rescaling is inside the model). False returns preprocess_input itself.
    """
    if kind not in APPLICATIONS:
        return None
    import keras

    module = getattr(keras.applications, APPLICATIONS[kind].module)
    fn: Callable[[Any], Any] = module.preprocess_input
    if not scaled:
        return fn

    def preprocess(images: Any) -> Any:
        """[0, 1] images to what the application expects."""
        return fn(images * 255.0)

    preprocess.__qualname__ = preprocess.__name__ = f"preprocess_{kind}"
    return preprocess


def _build_application(
    kind: str, shape: tuple[int, int, int], weights: str | None, home: Path
) -> Any:
    app = APPLICATIONS[kind]
    if weights == "imagenet":
        expected = imagenet_weights_path(kind, shape, keras_home=home)
        if not expected.is_file():  # fail before spending seconds on building the graph
            raise SpecError(_missing_weights(kind, expected, app.url_base + expected.name))
    import keras

    constructor = getattr(keras.applications, app.constructor)
    with _cache_only_get_file(kind, home / "models") as asked:
        try:
            return constructor(include_top=False, weights=weights, input_shape=shape, pooling="avg")
        except SpecError:
            raise
        except Exception as exc:
            if asked:  # the graph was built; reading the weights file failed
                raise SpecError(
                    f"task.weights: cannot load {asked[-1][0]}: "
                    f"{type(exc).__name__}: {exc} (replace it with a fresh download of "
                    f"{asked[-1][1]})"
                ) from exc
            raise SpecError(
                f"task.base_model: {kind} cannot be built for input_shape {shape}: {exc}"
            ) from exc


@contextlib.contextmanager
def _cache_only_get_file(kind: str, models_dir: Path) -> Iterator[list[tuple[Path, str]]]:
    """Make Keras's get_file return the cached file or fail: never download.

    Keras applications fetch weights through `keras.src.utils.file_utils.get_file`, which
    downloads when the file is missing (or its hash differs) and reads `KERAS_HOME` only
    once, at import. Applications look get_file up on that module at call time, so it is
    swapped for the duration of one build (worker processes build one model at a time).

    This is Keras's private module (pyproject.toml bounds keras for it). The public routes do
    not do the same: `keras.utils.get_file` is the same function under another name, so
    rebinding it does not reach the applications' `file_utils.get_file` lookups; and passing
    the file's path as `weights=` builds another model (EfficientNet adds its ImageNet
    input-rescaling layer only for `weights="imagenet"`).
    """
    from keras.src.utils import file_utils

    asked: list[tuple[Path, str]] = []
    real = file_utils.get_file

    def get_file(
        fname: str | None = None, origin: str | None = None, *args: Any, **kwargs: Any
    ) -> str:
        path = models_dir / str(fname)
        if not path.is_file():
            raise SpecError(_missing_weights(kind, path, str(origin)))
        asked.append((path, str(origin)))
        return str(path)

    file_utils.get_file = get_file
    try:
        yield asked
    finally:
        file_utils.get_file = real


def _missing_weights(kind: str, path: Path, url: str) -> str:
    what, put = f"imagenet weights for {kind}", f"{path.name} at {path}"
    return msg.at("task.weights", msg.not_in_keras_cache(what, put, url, plural=True))


def _load_file(path: str | os.PathLike[str] | None, input_shape: Any) -> Any:
    if path is None:
        raise SpecError("task.base_model: a .keras path is required for a 'file' base model")
    file = Path(path).expanduser()
    if not file.is_file():
        raise SpecError(msg.at("task.base_model", msg.not_found("file", file)))
    import keras

    try:
        model = keras.models.load_model(file, compile=False)
    except Exception as exc:
        raise SpecError(
            f"task.base_model: cannot load {file} as a Keras model: {type(exc).__name__}: {exc}"
        ) from exc
    if input_shape is not None:
        takes = tuple(model.input_shape[1:])
        wanted = _check_shape(input_shape)
        if len(takes) != 3 or any(
            t is not None and t != w for t, w in zip(takes, wanted, strict=True)
        ):
            raise SpecError(f"task.base_model: {file} takes inputs of shape {takes}, not {wanted}")
    return model


def _build_from(ref: str | None, shape: tuple[int, int, int]) -> Any:
    where = "task.base_model.builder"
    if ref is None:
        raise SpecError(f"{where}: required when task.base_model is 'builder'")
    fn = import_function(ref, where)
    model = fn(input_shape=shape)
    import keras

    if not isinstance(model, keras.Model):
        raise SpecError(f"{where}: {ref} must return a keras.Model, got a {type(model).__name__}")
    return model


def _check_shape(shape: Any) -> tuple[int, int, int]:
    ok = (
        isinstance(shape, (tuple, list))
        and len(shape) == 3
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)
    )
    if not ok:
        raise SpecError(msg.at("task.input_shape", msg.positive_ints(msg.INPUT_SHAPE_RULE, shape)))
    return int(shape[0]), int(shape[1]), int(shape[2])


# --- fine-tune depth ------------------------------------------------------------------------


def finetune_units(model: Any, unit: str = "layer") -> list[list[str]]:
    """What `finetune_depth` counts, bottom to top: each unit is a list of layer names.

    - "layer": every layer with trainable weights except BatchNormalization, one per unit
      (layers of nested models included, in order).
    - "block": the residual / inverted-residual blocks of Keras Applications, recognised
      by layer-name prefix (MobileNetV2 `expanded_conv_`, `block_N_`; ResNet
      `convN_blockM_`; EfficientNet `blockNx_`). Layers before the first block form a
      "stem" unit, layers after the last one a "top" unit (MobileNetV2's and
      EfficientNet's last 1x1 conv); other layers go with the block before them. Units
      with no trainable weights outside BatchNormalization are left out.

    Raises:
        ValueError: unknown unit, or "block" on a model with no recognised blocks.
    """
    return [[layer.name for layer in u] for u in _units(model, unit)]


def max_depth(model: Any, unit: str = "layer") -> int:
    """The largest `finetune_depth` the model allows: its number of units."""
    return len(_units(model, unit))


def set_finetune_depth(model: Any, depth: int, unit: str = "layer") -> list[str]:
    """Freeze the backbone but for its top `depth` units; BatchNormalization stays frozen.

    BatchNormalization layers are frozen at every depth (their statistics come from the
    pretraining data, and a small fine-tuning batch would wreck them). The caller must
    also call the backbone with `training=False`, which keeps them in inference mode.
    Compile the model after this call.

    Returns:
        The names of the layers left with trainable weights, bottom to top.

    Raises:
        ValueError: depth < 0 or depth > `max_depth(model, unit)`, or a bad unit.
    """
    units = _units(model, unit)
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= len(units):
        raise ValueError(
            f"`0 <= finetune_depth <= {len(units)}` must hold for {model.name!r} "
            f"(unit={unit!r}), got finetune_depth={depth!r}"
        )
    chosen = {id(layer) for u in units[len(units) - depth :] for layer in u}
    model.trainable = True  # containers must stay trainable for their layers to train
    trainable = []
    for layer in _leaves(model):
        layer.trainable = id(layer) in chosen and not _is_batchnorm(layer)
        if layer.trainable and _can_train(layer):
            trainable.append(layer.name)
    return trainable


def top_unit_layers(model: Any, depth: int, unit: str = "layer") -> set[str]:
    """The names of the layers in the top `depth` units (what `set_finetune_depth`
    unfreezes, BatchNormalization among them); the feature cache cuts below the first."""
    units = _units(model, unit)
    return {layer.name for u in units[len(units) - depth :] for layer in u} if depth else set()


def can_train(layer: Any) -> bool:
    """Whether the layer has weights created trainable, frozen or not (see `_can_train`)."""
    return _can_train(layer)


def trainable_param_count(model: Any) -> int:
    """The number of weights the optimizer will update."""
    return param_count(model.trainable_weights)


def param_count(weights: Any) -> int:
    """The number of scalars in a list of weight variables."""
    return sum(_size(w.shape) for w in weights)


def _units(model: Any, unit: str) -> list[list[Any]]:
    if unit == "layer":
        return [
            [layer] for layer in _leaves(model) if _can_train(layer) and not _is_batchnorm(layer)
        ]
    if unit != "block":
        raise ValueError(f"unit must be 'layer' or 'block', got {unit!r}")
    leaves = _leaves(model)
    labels = [m.group(1) if (m := _BLOCK.match(layer.name)) else None for layer in leaves]
    in_block = [i for i, label in enumerate(labels) if label is not None]
    if not in_block:
        raise ValueError(
            f"unit='block': no blocks recognised in {model.name!r} (layer names starting "
            "block_N_, expanded_conv_, convN_blockM_ or blockNx_); use unit='layer'"
        )
    first, last = in_block[0], in_block[-1]
    groups: list[tuple[str, list[Any]]] = []
    for i, (layer, label) in enumerate(zip(leaves, labels, strict=True)):
        if i < first:
            label = "stem"
        elif i > last:
            label = "top"
        elif label is None:  # e.g. a pad or add between blocks: part of the one before
            label = groups[-1][0]
        if not groups or groups[-1][0] != label:
            groups.append((label, []))
        groups[-1][1].append(layer)
    return [
        layers
        for _, layers in groups
        if any(_can_train(x) and not _is_batchnorm(x) for x in layers)
    ]


def _leaves(model: Any) -> list[Any]:
    """The model's layers bottom to top, nested models opened up."""
    import keras

    out: list[Any] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(_leaves(layer))
        else:
            out.append(layer)
    return out


def _is_batchnorm(layer: Any) -> bool:
    import keras

    return isinstance(layer, keras.layers.BatchNormalization)


def _can_train(layer: Any) -> bool:
    """Whether the layer has weights created trainable, frozen or not.

    Keras 3 keeps them in `_trainable_variables` (there is no public way to ask of a
    frozen layer); a Normalization layer's mean and variance are weights but never train.
    """
    own = getattr(layer, "_trainable_variables", None)
    if own is None:
        return bool(layer.weights)
    return bool(own) or any(_can_train(sub) for sub in getattr(layer, "_layers", ()))


def _size(shape: Any) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
