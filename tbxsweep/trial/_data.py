"""The built-in task's data: `task.dataset` read once per worker process."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from tbxsweep.errors import SpecError
from tbxsweep.spec import ImageFolderDataset, LoaderDataset, NpzDataset, TaskSpec
from tbxsweep.trial import datasets
from tbxsweep.trial.datasets import DatasetArrays

DIGITS_FINETUNE = (5, 6, 7, 8, 9)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_cache: dict[tuple[Any, ...], TaskData] = {}


@dataclass(frozen=True)
class TaskData:
    """The fine-tuning data of a task.

    Attributes:
        arrays: train/validation arrays (float32 NHWC in [0, 1], int32 labels), or None when
            a custom loader returned tf.data datasets.
        datasets: `(train_ds, val_ds)` from a custom loader, batched by it; else None.
        image_shape: (height, width, channels) of the images as stored.
        class_names: label i is class_names[i].
        label: one line for the task description.
    """

    arrays: DatasetArrays | None
    datasets: tuple[Any, Any] | None
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    label: str

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def load_task_data(task: TaskSpec) -> TaskData:
    """Read `task.dataset` (cached per process, keyed by everything it depends on).

    Raises:
        SpecError: the files are missing or unreadable, or the data does not fit the spec.
    """
    key = (task.dataset, task.subset, task.val_split, task.seed, os.environ.get("KERAS_HOME"))
    if key not in _cache:
        _cache[key] = _load(task)
    return _cache[key]


def _load(task: TaskSpec) -> TaskData:
    ds = task.dataset
    if ds == "digits":
        from tbxsweep.trial._digits import load_split

        x_tr, y_tr, x_val, y_val = load_split(DIGITS_FINETUNE)
        arrays = datasets.take_subset(DatasetArrays(x_tr, y_tr, x_val, y_val), task.subset)
        names = tuple(str(d) for d in DIGITS_FINETUNE)
        return _from_arrays(arrays, names, "digits 5-9")
    if isinstance(ds, str):
        # Validation comes out of the training split: the test split is never read.
        arrays = datasets.load_keras_dataset(
            ds, subset=task.subset, val_split=task.val_split, seed=task.seed
        )
        named = {"cifar10": CIFAR10_CLASSES, "fashion_mnist": FASHION_MNIST_CLASSES}
        return _from_arrays(arrays, named.get(ds), ds)
    if isinstance(ds, NpzDataset):
        arrays = datasets.load_npz(ds.npz, val_split=ds.val_split, subset=task.subset)
        return _from_arrays(arrays, None, ds.npz)
    if isinstance(ds, ImageFolderDataset):
        arrays, names = datasets.load_image_folder(
            ds.images, image_size=ds.image_size, val_split=ds.val_split, subset=task.subset
        )
        return _from_arrays(arrays, names, ds.images)
    assert isinstance(ds, LoaderDataset)
    out = datasets.load_custom(ds.loader)
    if isinstance(out, DatasetArrays):
        return _from_arrays(datasets.take_subset(out, task.subset), None, ds.loader)
    return _from_tf_data(out, task, ds.loader)


def _from_arrays(arrays: DatasetArrays, names: tuple[str, ...] | None, label: str) -> TaskData:
    n = int(max(arrays.y_train.max(), arrays.y_val.max())) + 1
    if int(min(arrays.y_train.min(), arrays.y_val.min())) < 0:
        raise SpecError(f"task.dataset: {label}: labels must be class ids >= 0")
    if names is None or len(names) < n:
        names = tuple(str(i) for i in range(n))
    h, w, c = arrays.x_train.shape[1:]
    summary = (
        f"{label} ({len(names)} classes, {len(arrays.x_train)} train / "
        f"{len(arrays.x_val)} val images of {h}x{w}x{c})"
    )
    return TaskData(arrays, None, (int(h), int(w), int(c)), tuple(names), summary)


def _from_tf_data(pair: tuple[Any, Any], task: TaskSpec, ref: str) -> TaskData:
    where = f"task.dataset.loader: {ref}"
    if task.subset is not None:
        raise SpecError(
            f"task.subset: cannot be applied to the tf.data datasets {ref} returns "
            "(take the subset in the loader, or return arrays)"
        )
    train_ds, val_ds = pair
    spec = train_ds.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2 or len(spec[0].shape) != 4:
        raise SpecError(
            f"{where}: the datasets must yield batches (images (B, H, W, C), labels (B,)), "
            f"got elements {spec}"
        )
    shape = tuple(spec[0].shape[1:])
    if any(d is None for d in shape):
        raise SpecError(f"{where}: the images must have a fixed shape, got (B, *{shape})")
    # The number of classes is the largest label seen, read once per process.
    top = max(int(np.max(np.asarray(y))) for d in (train_ds, val_ds) for _, y in d)
    names = tuple(str(i) for i in range(top + 1))
    h, w, c = (int(d) for d in shape)
    return TaskData(
        None,
        (train_ds, val_ds),
        (h, w, c),
        names,
        f"{ref} ({len(names)} classes, tf.data batches of {h}x{w}x{c} images)",
    )
