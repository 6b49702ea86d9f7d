"""tbxsweep.trial.backbones: real Keras Applications at small input sizes, no downloads."""

from __future__ import annotations

import itertools
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tbxsweep.errors import SpecError
from tbxsweep.trial.backbones import (
    finetune_units,
    imagenet_weights_path,
    load_backbone,
    max_depth,
    preprocess_for,
    set_finetune_depth,
    trainable_param_count,
)

APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"


def _batchnorms(model: Any) -> list[Any]:
    import keras

    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out += _batchnorms(layer)
        elif isinstance(layer, keras.layers.BatchNormalization):
            out.append(layer)
    return out


@pytest.fixture(scope="module")
def mobilenet() -> Any:
    return load_backbone("mobilenet_v2", input_shape=(32, 32, 3))


def _check_every_depth(model: Any, unit: str) -> list[list[str]]:
    """Walk depth 0..max: one more unit each time, BN never trainable, params always grow."""
    units = finetune_units(model, unit)
    assert max_depth(model, unit) == len(units)
    counts = []
    for depth in range(len(units) + 1):
        trainable = set_finetune_depth(model, depth, unit)
        expected = [
            n
            for u in units[len(units) - depth :]
            for n in u
            if model.get_layer(n).weights
            and model.get_layer(n).__class__.__name__ not in ("BatchNormalization", "Normalization")
        ]
        assert trainable == expected
        assert {w.path.split("/")[0] for w in model.trainable_weights} == set(trainable)
        assert all(not bn.trainable and not bn.trainable_weights for bn in _batchnorms(model))
        counts.append(trainable_param_count(model))
    assert counts[0] == 0
    assert all(a < b for a, b in itertools.pairwise(counts))
    return units


@pytest.mark.slow
def test_mobilenet_v2_layer_units(mobilenet: Any) -> None:
    units = _check_every_depth(mobilenet, "layer")
    assert len(units) == 52 and all(len(u) == 1 for u in units)  # 1 + 2 + 16 * 3 + 1
    assert units[0] == ["Conv1"] and units[-1] == ["Conv_1"]
    assert set_finetune_depth(mobilenet, 3) == ["block_16_depthwise", "block_16_project", "Conv_1"]
    everything = sum(
        int(np.prod(w.shape))
        for layer in mobilenet.layers
        if layer.weights and layer.__class__.__name__ != "BatchNormalization"
        for w in layer.weights
    )
    set_finetune_depth(mobilenet, len(units))
    assert trainable_param_count(mobilenet) == everything
    assert mobilenet.output_shape == (None, 1280)  # include_top=False, pooling="avg"


@pytest.mark.slow
def test_mobilenet_v2_block_units(mobilenet: Any) -> None:
    units = _check_every_depth(mobilenet, "block")
    assert len(units) == 19  # stem, expanded_conv, block_1..block_16, top
    assert units[0][:4] == ["input_layer", "Conv1", "bn_Conv1", "Conv1_relu"]
    assert units[1][0] == "expanded_conv_depthwise"
    assert units[2][0] == "block_1_expand" and units[-2][0] == "block_16_expand"
    assert units[-1] == ["Conv_1", "Conv_1_bn", "out_relu", "global_average_pooling2d"]
    assert set_finetune_depth(mobilenet, 2, "block") == [
        "block_16_expand",
        "block_16_depthwise",
        "block_16_project",
        "Conv_1",
    ]


@pytest.mark.slow
def test_depth_errors(mobilenet: Any) -> None:
    name = mobilenet.name
    with pytest.raises(ValueError) as err:
        set_finetune_depth(mobilenet, 20, "block")
    assert str(err.value) == (
        f"`0 <= finetune_depth <= 19` must hold for '{name}' (unit='block'), got finetune_depth=20"
    )
    with pytest.raises(ValueError) as err:
        set_finetune_depth(mobilenet, -1)
    assert str(err.value) == (
        f"`0 <= finetune_depth <= 52` must hold for '{name}' (unit='layer'), got finetune_depth=-1"
    )
    with pytest.raises(ValueError) as err:
        finetune_units(mobilenet, "blocks")
    assert str(err.value) == "unit must be 'layer' or 'block', got 'blocks'"


@pytest.mark.slow
@pytest.mark.parametrize(("depth", "moves"), [(1, {"dense"}), (2, {"conv2", "dense"})])
def test_fine_tuning_moves_only_the_unfrozen_weights(depth: int, moves: set[str]) -> None:
    """A real fit: the top units train; the rest and every BatchNorm weight stay put.

    (Not on a random-weight MobileNetV2: its features vanish with BN in inference mode.)
    """
    import keras
    from keras import layers

    inp = keras.Input((8, 8, 1))
    x = inp
    for i in (1, 2):
        x = layers.Conv2D(4, 3, padding="same", name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    base = keras.Model(inp, layers.Dense(6, name="dense")(x))
    assert set(set_finetune_depth(base, depth)) == moves
    head_in = keras.Input((8, 8, 1))
    out = layers.Dense(2, activation="softmax")(base(head_in, training=False))
    model = keras.Model(head_in, out)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    before = {w.path: w.numpy().copy() for w in base.weights}
    rng = np.random.default_rng(0)
    model.fit(
        rng.random((8, 8, 8, 1), np.float32), np.arange(8) % 2, batch_size=8, epochs=1, verbose=0
    )
    moved = {
        w.path.split("/")[0] for w in base.weights if not np.array_equal(w.numpy(), before[w.path])
    }
    assert moved == moves


@pytest.mark.slow
def test_block_units_of_resnet50_and_efficientnet_b0() -> None:
    resnet = load_backbone("resnet50", input_shape=(32, 32, 3))
    units = finetune_units(resnet, "block")
    assert len(units) == 17  # stem + 3 + 4 + 6 + 3 blocks
    assert units[0][-1] == "pool1_pool" and units[1][0] == "conv2_block1_1_conv"
    assert units[-1][-1] == "conv5_block3_out"  # avg_pool has no weights: in no unit
    effnet = load_backbone("efficientnet_b0", input_shape=(32, 32, 3))
    units = _check_every_depth(effnet, "block")
    assert len(units) == 18  # stem, 16 blocks, top
    assert "normalization" in units[0] and units[1][0] == "block1a_dwconv"
    assert units[-1][:2] == ["top_conv", "top_bn"]
    assert "normalization" not in [n for u in finetune_units(effnet, "layer") for n in u]


def test_missing_imagenet_weights_name_the_file(tmp_path: Path) -> None:
    cases = {
        ("mobilenet_v2", (32, 32, 3)): "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_"
        "tf_kernels_1.0_224_no_top.h5",
        ("mobilenet_v2", (96, 96, 3)): "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_"
        "tf_kernels_1.0_96_no_top.h5",
        ("resnet50", (64, 64, 3)): "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ("efficientnet_b0", (64, 64, 3)): "efficientnetb0_notop.h5",
    }
    for (kind, shape), where in cases.items():
        file = where.rpartition("/")[2]
        url = (
            "https://storage.googleapis.com/keras-applications/" + file
            if kind.startswith("efficientnet")
            else APPS + where
        )
        with pytest.raises(SpecError) as err:
            load_backbone(kind, input_shape=shape, weights="imagenet", keras_home=tmp_path)
        assert str(err.value) == (
            f"task.weights: imagenet weights for {kind} are not in the Keras cache: "
            f"put {file} at {tmp_path}/models/{file} (download {url} on a machine with internet)"
        )
        assert imagenet_weights_path(kind, shape, keras_home=tmp_path) == tmp_path / "models" / file


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`input_shape` is undefined or non-square:UserWarning")
@pytest.mark.parametrize("kind", ["mobilenet_v2", "efficientnet_b0", "resnet50"])
def test_keras_asks_for_the_file_we_name(kind: str, tmp_path: Path) -> None:
    """A file at our path is the one Keras reads: a broken one fails in load_weights."""
    path = imagenet_weights_path(kind, (32, 32, 3), keras_home=tmp_path)
    path.parent.mkdir()
    path.write_bytes(b"not hdf5")
    with pytest.raises(SpecError) as err:
        load_backbone(kind, input_shape=(32, 32, 3), weights="imagenet", keras_home=tmp_path)
    message = str(err.value)
    assert message.startswith(f"task.weights: cannot load {path}: ")
    assert message.endswith(f"{path.name})") and "(replace it with a fresh download of " in message


def test_argument_errors(tmp_path: Path) -> None:
    def message(kind: str, **kwargs: Any) -> str:
        kwargs.setdefault("input_shape", (32, 32, 3))
        with pytest.raises(SpecError) as err:
            load_backbone(kind, **kwargs)
        return str(err.value)

    assert message("mobilenetv2").startswith(
        "task.base_model: must be one of 'mobilenet_v2', 'efficientnet_b0', "
    )
    assert message("mobilenetv2").endswith(
        ", 'file', 'builder', got 'mobilenetv2' (did you mean 'mobilenet_v2'?)"
    )
    assert message("resnet50", weights="imagenet21k") == (
        "task.weights: must be 'imagenet' or null, got 'imagenet21k' (did you mean 'imagenet'?)"
    )
    assert message("file", path="x.keras", weights="imagenet") == (
        "task.weights: must be null for a 'file' base model (it brings its own "
        "weights), got 'imagenet'"
    )
    assert message("resnet50", input_shape=(32, 32)) == (
        "task.input_shape: must be [height, width, channels], each an integer >= 1, got (32, 32)"
    )
    assert message("file") == "task.base_model: a .keras path is required for a 'file' base model"
    missing = tmp_path / "missing.keras"
    assert message("file", path=missing) == f"task.base_model: file not found: {missing}"
    assert message("builder") == (
        "task.base_model.builder: required when task.base_model is 'builder'"
    )
    assert message("builder", builder="no_such_module_xyz:build") == (
        "task.base_model.builder: cannot import module 'no_such_module_xyz' (is it on PYTHONPATH?)"
    )


@pytest.mark.slow
def test_application_that_cannot_take_the_shape() -> None:
    with pytest.raises(SpecError) as err:
        load_backbone("mobilenet_v2", input_shape=(16, 16, 3))
    assert str(err.value).startswith(
        "task.base_model: mobilenet_v2 cannot be built for input_shape (16, 16, 3): "
    )


def _small_base() -> Any:
    import keras
    from keras import layers

    inp = keras.Input((8, 8, 1))
    x = layers.Conv2D(4, 3, name="conv1")(inp)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(6, name="dense")(x)
    return keras.Model(inp, x, name="small")


def test_keras_file_round_trip(tmp_path: Path) -> None:
    base = _small_base()
    path = tmp_path / "base.keras"
    base.save(path)
    loaded = load_backbone("file", path=path, input_shape=(8, 8, 1))
    for a, b in zip(base.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert finetune_units(loaded) == [["conv1"], ["dense"]]
    assert set_finetune_depth(loaded, 2) == ["conv1", "dense"]
    assert not loaded.get_layer("bn1").trainable
    assert trainable_param_count(loaded) == 4 * 9 + 4 + 4 * 6 + 6
    assert load_backbone("file", path=path, input_shape=None).name == "small"

    with pytest.raises(SpecError) as err:
        load_backbone("file", path=path, input_shape=(9, 9, 1))
    assert str(err.value) == (
        f"task.base_model: {path} takes inputs of shape (8, 8, 1), not (9, 9, 1)"
    )
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    with pytest.raises(SpecError) as err:
        load_backbone("file", path=broken, input_shape=None)
    assert str(err.value).startswith(f"task.base_model: cannot load {broken} as a Keras model: ")
    with pytest.raises(ValueError) as verr:
        finetune_units(loaded, "block")
    assert str(verr.value) == (
        "unit='block': no blocks recognised in 'small' (layer names starting block_N_, "
        "expanded_conv_, convN_blockM_ or blockNx_); use unit='layer'"
    )


BUILDERS = """
import keras
from keras import layers

def build(input_shape):
    inner = keras.Sequential([layers.Conv2D(3, 3, name="inner_conv"),
                              layers.BatchNormalization(name="inner_bn")], name="inner")
    inp = keras.Input(input_shape)
    x = inner(inp)
    x = layers.Conv2D(5, 1, name="outer_conv")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, x, name="built")

def not_a_model(input_shape):
    return [input_shape]
"""


@pytest.fixture
def builder_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"tbx_test_builders_{os.getpid()}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(BUILDERS))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_builder_and_nested_models(builder_module: str) -> None:
    model = load_backbone("builder", builder=f"{builder_module}:build", input_shape=(6, 6, 2))
    assert model.name == "built" and model.input_shape == (None, 6, 6, 2)
    assert finetune_units(model) == [["inner_conv"], ["outer_conv"]]
    assert set_finetune_depth(model, 2) == ["inner_conv", "outer_conv"]
    assert not model.get_layer("inner").get_layer("inner_bn").trainable
    assert trainable_param_count(model) == (3 * 3 * 2 * 3 + 3) + (3 * 5 + 5)
    assert set_finetune_depth(model, 1) == ["outer_conv"]
    assert trainable_param_count(model) == 3 * 5 + 5

    with pytest.raises(SpecError) as err:
        load_backbone("builder", builder=f"{builder_module}:not_a_model", input_shape=(6, 6, 2))
    assert str(err.value) == (
        f"task.base_model.builder: {builder_module}:not_a_model must return a keras.Model, "
        "got a list"
    )


def test_preprocess_for() -> None:
    import keras

    assert preprocess_for("file") is None and preprocess_for("builder") is None
    assert preprocess_for("mobilenet_v2", scaled=False) is (
        keras.applications.mobilenet_v2.preprocess_input
    )
    images = np.array([[[[0.0, 0.5, 1.0]]]], np.float32)  # [0, 1], as the datasets give them
    mobilenet = preprocess_for("mobilenet_v2")
    assert mobilenet is not None
    np.testing.assert_allclose(np.asarray(mobilenet(images)), [[[[-1.0, 0.0, 1.0]]]], atol=1e-6)
    effnet = preprocess_for("efficientnet_b0")
    assert effnet is not None
    np.testing.assert_allclose(np.asarray(effnet(images)), images * 255, atol=1e-4)
    resnet = preprocess_for("resnet50")
    assert resnet is not None  # caffe: RGB -> BGR, minus the ImageNet mean
    np.testing.assert_allclose(
        np.asarray(resnet(images)), [[[[255 - 103.939, 127.5 - 116.779, 0 - 123.68]]]], atol=1e-3
    )
