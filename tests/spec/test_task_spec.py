"""The task section: datasets, base models and fine-tuning switches; exact error lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from tbxsweep.errors import SpecError
from tbxsweep.spec import (
    APPLICATION_NAMES,
    ImageFolderDataset,
    LoaderDataset,
    NpzDataset,
    load_spec,
)

REPO = Path(__file__).resolve().parents[2]
SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))


def _errors(path: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return info.value.problems


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_every_shipped_sweep_validates(path: Path) -> None:
    spec = load_spec(path)
    assert spec.study.name == path.stem


def test_shipped_sweeps_use_the_documented_tasks() -> None:
    cifar = load_spec(REPO / "sweeps" / "cifar10.yaml").task
    assert cifar.dataset == "cifar10" and cifar.subset is None
    assert cifar.base_kind == "pretrain"  # the classic CNN, pretrained on the other classes
    assert cifar.classes == (5, 6, 7, 8, 9)
    assert cifar.pretrain.classes == (0, 1, 2, 3, 4)
    mobile = load_spec(REPO / "sweeps" / "mobilenet.yaml").task
    assert mobile.dataset == ImageFolderDataset(
        images="data/flowers", image_size=(160, 160), val_split=0.2
    )
    assert (mobile.base_kind, mobile.weights, mobile.finetune_unit) == (
        "mobilenet_v2",
        "imagenet",
        "block",
    )
    assert mobile.head_epochs == 2 and mobile.input_shape is None
    custom = load_spec(REPO / "sweeps" / "custom.yaml")
    assert custom.task.train == "custom_train:train"
    assert custom.study.metric == "val_macro_f1"


def test_application_names_match_the_backbones_that_can_be_built() -> None:
    from tbxsweep.trial.backbones import APPLICATIONS

    assert list(APPLICATION_NAMES) == list(APPLICATIONS)


def test_defaults_keep_the_digits_task(make_spec) -> None:
    task = load_spec(make_spec(base="digits")).task
    assert task.dataset == "digits" and task.base_model == "pretrain"
    assert task.base_kind == "pretrain"
    assert (task.subset, task.weights, task.input_shape) == (None, None, None)
    assert (task.finetune_unit, task.head_epochs) == ("layer", 0)
    assert (task.mixed_precision, task.jit_compile) == (False, False)
    assert (task.epochs, task.seed, task.pretrain_epochs) == (6, 0, 8)


def test_every_new_key_is_accepted_and_typed(make_spec) -> None:
    path = make_spec(
        base="digits",
        task={
            "dataset": {"npz": "data/x.npz", "val_split": 0.1},
            "subset": 500,
            "base_model": "efficientnet_b0",
            "weights": "imagenet",
            "input_shape": [96, 96, 3],
            "finetune_unit": "block",
            "head_epochs": 2,
            "mixed_precision": True,
            "jit_compile": True,
        },
    )
    task = load_spec(path).task
    assert task.dataset == NpzDataset(npz="data/x.npz", val_split=0.1)
    assert task.subset == 500 and task.base_kind == "efficientnet_b0"
    assert task.weights == "imagenet" and task.input_shape == (96, 96, 3)
    assert task.finetune_unit == "block" and task.head_epochs == 2
    assert task.mixed_precision is True and task.jit_compile is True


@pytest.mark.parametrize(
    ("dataset", "base_model", "typed", "kind"),
    [
        ("mnist", "resnet50", "mnist", "resnet50"),
        ({"images": "photos", "image_size": [64, 48]}, "models/base.keras", None, "file"),
        ({"loader": "my_pkg.data:load"}, {"builder": "my_pkg.nets:cnn"}, None, "builder"),
    ],
)
def test_dataset_and_base_model_forms(make_spec, dataset, base_model, typed, kind) -> None:
    task = load_spec(make_spec(base="digits", task={"dataset": dataset, "base_model": base_model}))
    assert task.task.base_kind == kind
    if typed is not None:
        assert task.task.dataset == typed
    elif "images" in dataset:
        assert task.task.dataset == ImageFolderDataset(
            images="photos", image_size=(64, 48), val_split=0.2
        )
    else:
        assert task.task.dataset == LoaderDataset(loader="my_pkg.data:load")


_DATASET_RULE = (
    "must be one of 'digits', 'cifar10', 'cifar100', 'mnist', 'fashion_mnist' "
    "or a mapping with one of the keys 'npz', 'images', 'loader'"
)
_BASE_RULE = (
    "must be 'pretrain', a Keras Applications name (mobilenet_v2, efficientnet_b0..b7, "
    "resnet50/101/152, resnet50_v2/101_v2/152_v2), a path ending in .keras or a mapping "
    "{builder: 'package.module:function'}"
)
APP = {"base_model": "mobilenet_v2"}  # so that only the key under test is wrong

CASES = [
    ({"dataset": "cifar"}, f"task.dataset: {_DATASET_RULE}, got 'cifar' (did you mean 'cifar10'?)"),
    ({"dataset": 7}, f"task.dataset: {_DATASET_RULE}, got the integer 7"),
    (
        {"dataset": {"npzz": "x.npz"}},
        "task.dataset: must have one of the keys 'npz', 'images', 'loader', got a mapping "
        "with keys 'npzz' (did you mean 'npz'?)",
    ),
    (
        {"dataset": {"npz": "x.npz", "images": "dir"}},
        "task.dataset: must have only one of the keys 'npz', 'images', 'loader', "
        "got 'npz', 'images'",
    ),
    (
        {"dataset": {"npz": "x.npz", "val_splt": 0.2}, **APP},
        "task.dataset: unknown key 'val_splt' (did you mean 'val_split'?)",
    ),
    (
        {"dataset": {"images": "dir", "image_size": [8, 8], "colour": "rgb"}, **APP},
        "task.dataset: unknown key 'colour'; allowed: images, image_size, val_split",
    ),
    (
        {"dataset": {"npz": "x.npz", "val_split": 1.5}, **APP},
        "task.dataset.val_split: `0 < val_split < 1` must hold, got val_split=1.5",
    ),
    ({"dataset": {"images": "dir"}, **APP}, "task.dataset.image_size: is required"),
    (
        {"dataset": {"images": "dir", "image_size": [224]}, **APP},
        "task.dataset.image_size: must be [height, width] in pixels, each an integer >= 1, "
        "got [224]",
    ),
    (
        {"dataset": {"loader": "load_my_data"}, **APP},
        "task.dataset.loader: must look like 'package.module:function', got 'load_my_data'",
    ),
    ({"subset": 0}, "task.subset: `subset >= 1` must hold, got subset=0"),
    (
        {"base_model": "mobilenet"},
        f"task.base_model: {_BASE_RULE}, got 'mobilenet' (did you mean 'mobilenet_v2'?)",
    ),
    ({"base_model": "weights.h5"}, f"task.base_model: {_BASE_RULE}, got 'weights.h5'"),
    (
        {"base_model": {"biulder": "a.b:c"}},
        "task.base_model: must have the key 'builder' when it is a mapping, got a mapping "
        "with keys 'biulder' (did you mean 'builder'?)",
    ),
    (
        {"base_model": {"builder": "a.b:c", "weights": "x"}},
        "task.base_model: unknown key 'weights'; allowed: builder",
    ),
    (
        {"base_model": {"builder": "nets.cnn"}},
        "task.base_model.builder: must look like 'package.module:function', got 'nets.cnn'",
    ),
    (
        {"weights": "imagenet21k", **APP},
        "task.weights: must be 'imagenet' or null, got 'imagenet21k' (did you mean 'imagenet'?)",
    ),
    (
        {"input_shape": [224, 224], **APP},
        "task.input_shape: must be [height, width, channels], each an integer >= 1, got [224, 224]",
    ),
    (
        {"finetune_unit": "blocks", **APP},
        "task.finetune_unit: must be one of 'layer' or 'block', got 'blocks' "
        "(did you mean 'block'?)",
    ),
    ({"head_epochs": -1}, "task.head_epochs: `head_epochs >= 0` must hold, got head_epochs=-1"),
    ({"jit_compile": "fast"}, "task.jit_compile: must be true or false, got the string 'fast'"),
    ({"dataset_": "mnist"}, "task: unknown key 'dataset_' (did you mean 'dataset'?)"),
    # keys that only make sense together
    (
        {"dataset": "cifar10"},
        "task.classes: is required with base_model 'pretrain' on one dataset ('cifar10'): "
        "give the classes to fine-tune on (the others pretrain the base), e.g. classes: "
        "[5, 6, 7, 8, 9], or task.pretrain.dataset",
    ),
    (
        {"dataset": {"npz": "data/x.npz"}},
        "task.classes: is required with base_model 'pretrain' on one dataset "
        "({npz: data/x.npz}): give the classes to fine-tune on (the others pretrain the "
        "base), e.g. classes: [5, 6, 7, 8, 9], or task.pretrain.dataset",
    ),
    (
        {"weights": "imagenet"},
        "task.weights: 'imagenet' needs a Keras Applications base_model such as "
        "'mobilenet_v2', got base_model 'pretrain'",
    ),
    (
        {"base_model": "models/base.keras", "weights": "imagenet"},
        "task.weights: 'imagenet' needs a Keras Applications base_model such as "
        "'mobilenet_v2', got base_model 'models/base.keras'",
    ),
    (
        {"base_model": {"builder": "a.b:c"}, "weights": "imagenet"},
        "task.weights: 'imagenet' needs a Keras Applications base_model such as "
        "'mobilenet_v2', got base_model {builder: a.b:c}",
    ),
    (
        {"input_shape": [32, 32, 3]},
        "task.input_shape: must be [8, 8, 1] or left out with base_model 'pretrain', "
        "got [32, 32, 3]",
    ),
    (
        {"finetune_unit": "block"},
        "task.finetune_unit: 'block' needs a base model made of residual blocks (a Keras "
        "Applications name), got base_model 'pretrain': use 'layer'",
    ),
]


@pytest.mark.parametrize(("task", "message"), CASES, ids=[c[1].split(":")[0] for c in CASES])
def test_bad_task_gets_one_exact_line(make_spec, task, message) -> None:
    path = make_spec(base="digits", task=task)
    assert _errors(path) == [f"{path}: {message}"]


def test_every_task_problem_is_reported_at_once(make_spec) -> None:
    path = make_spec(
        base="digits", task={"dataset": "mnist", "weights": "imagenet", "finetune_unit": "block"}
    )
    assert _errors(path) == [
        f"{path}: task.classes: is required with base_model 'pretrain' on one dataset "
        "('mnist'): give the classes to fine-tune on (the others pretrain the base), e.g. "
        "classes: [5, 6, 7, 8, 9], or task.pretrain.dataset",
        f"{path}: task.finetune_unit: 'block' needs a base model made of residual blocks "
        "(a Keras Applications name), got base_model 'pretrain': use 'layer'",
        f"{path}: task.weights: 'imagenet' needs a Keras Applications base_model such as "
        "'mobilenet_v2', got base_model 'pretrain'",
    ]


def test_a_custom_train_function_ignores_the_built_in_task_keys(make_spec) -> None:
    path = make_spec(task={"dataset": "cifar10", "finetune_unit": "block"})
    task = load_spec(path).task
    assert task.train == "fake_trials:train" and task.dataset == "cifar10"


def test_nested_keys_can_be_set_from_the_command_line(make_spec) -> None:
    path = make_spec(base="digits", task={"base_model": "resnet50"})
    spec = load_spec(
        path,
        [
            "task.dataset={images: photos, image_size: [32, 32]}",
            "task.input_shape=[64, 64, 3]",
        ],
    )
    assert spec.task.dataset == ImageFolderDataset(images="photos", image_size=(32, 32))
    assert spec.task.input_shape == (64, 64, 3)
