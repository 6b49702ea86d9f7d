"""The built-in task's data: `task.dataset` read once per worker process."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from tbxsweep.errors import SpecError
from tbxsweep.spec import (
    DATASET_CLASSES,
    DIGITS_FINETUNE_CLASSES,
    DIGITS_TEST_SPLIT,
    ImageFolderDataset,
    LoaderDataset,
    NpzDataset,
    TaskSpec,
)
from tbxsweep.spec import messages as msg
from tbxsweep.trial import datasets
from tbxsweep.trial._pretrain import ranges
from tbxsweep.trial.datasets import DatasetArrays

DIGITS_FINETUNE = DIGITS_FINETUNE_CLASSES
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
    """Read `task.dataset`, its fine-tuning classes (cached per process, keyed by everything
    it depends on).

    Raises:
        SpecError: the files are missing or unreadable, or the data does not fit the spec.
    """
    key = ("target", *_key(task, task.dataset))
    if key not in _cache:
        _cache[key] = _load(task, task.dataset, task.finetune_classes, role="target")
    return _cache[key]


def load_source_data(task: TaskSpec) -> TaskData:
    """The pretraining data of `base_model: pretrain`: its dataset's pretraining classes."""
    ds = task.pretrain_dataset
    key = ("source", *_key(task, ds))
    if key not in _cache:
        _cache[key] = _load(task, ds, task.pretrain_classes, role="source")
    return _cache[key]


def has_test_data(task: TaskSpec) -> bool:
    """Whether `load_test_data` finds a test split, without loading it (an .npz's arrays
    are listed, not read): trials write best-epoch weights for the test evaluation only
    then. A file that cannot be read says no (the trials report it)."""
    ds = task.dataset
    if isinstance(ds, LoaderDataset):
        return False
    if not isinstance(ds, NpzDataset) or task.test_split is not None:
        return bool(task.has_test_split)
    try:
        with np.load(os.path.expanduser(ds.npz), allow_pickle=False) as f:
            return "x_test" in f.files and "y_test" in f.files
    except Exception:
        return False


def load_test_data(task: TaskSpec) -> tuple[np.ndarray, np.ndarray] | None:
    """The test split of the fine-tuning classes (labels as the trials saw them), or None
    where the data has none. Only the sweep's final evaluation calls this: never a trial.
    """
    ds = task.dataset
    test: tuple[np.ndarray, np.ndarray] | None
    if isinstance(ds, LoaderDataset):
        return None
    if ds == "digits":
        from tbxsweep.trial._digits import load_digits

        _, test = load_digits(task.val_split, _digits_test_split(task), task.seed)
    elif isinstance(ds, str):
        test = datasets.load_keras_test(ds)
    elif isinstance(ds, NpzDataset):
        test = datasets.load_npz_test(ds.npz, test_split=task.test_split)
    else:
        assert isinstance(ds, ImageFolderDataset)
        test = datasets.load_image_folder(
            ds.images,
            image_size=ds.image_size,
            val_split=ds.val_split,
            subset=task.subset,
            test_split=task.test_split,
            test=True,
        )
    if test is None:
        return None
    x, y = test
    n = _n_classes(ds, y)
    return datasets.select_classes(x, y, task.finetune_classes(n))


def _key(task: TaskSpec, ds: Any) -> tuple[Any, ...]:
    return (
        ds,
        task.classes,
        task.pretrain.classes,
        task.base_model == "pretrain",
        task.subset,
        task.val_split,
        task.test_split,
        task.seed,
        os.environ.get("KERAS_HOME"),
    )


def _digits_test_split(task: TaskSpec) -> float:
    return task.test_split if task.test_split is not None else DIGITS_TEST_SPLIT


def _n_classes(ds: Any, *labels: np.ndarray) -> int:
    if isinstance(ds, str) and ds in DATASET_CLASSES:
        return DATASET_CLASSES[ds]
    return int(max(int(y.max(initial=0)) for y in labels)) + 1


def _load(task: TaskSpec, ds: Any, classes_of: Any, role: str) -> TaskData:
    """All classes of `ds` read and split, then the role's classes kept and relabelled."""
    names: tuple[str, ...] | None = None
    if ds == "digits":
        from tbxsweep.trial._digits import load_digits

        arrays, _ = load_digits(task.val_split, _digits_test_split(task), task.seed)
        names = tuple(str(d) for d in range(10))
        label = "digits"
    elif isinstance(ds, str):
        # Validation comes out of the training split: the test split is never read.
        arrays = datasets.load_keras_dataset(ds, val_split=task.val_split, seed=task.seed)
        named = {"cifar10": CIFAR10_CLASSES, "fashion_mnist": FASHION_MNIST_CLASSES}
        names = named.get(ds)
        label = ds
    elif isinstance(ds, NpzDataset):
        arrays = datasets.load_npz(ds.npz, val_split=ds.val_split, test_split=task.test_split)
        label = ds.npz
    elif isinstance(ds, ImageFolderDataset):
        arrays, names = datasets.load_image_folder(
            ds.images, image_size=ds.image_size, val_split=ds.val_split, test_split=task.test_split
        )
        label = ds.images
    else:
        assert isinstance(ds, LoaderDataset)
        out = datasets.load_custom(ds.loader)
        if not isinstance(out, DatasetArrays):
            if classes_of(None) is not None:
                raise SpecError(
                    f"task.classes: cannot be applied to the tf.data datasets {ds.loader} "
                    "returns (keep the classes in the loader, or return arrays)"
                )
            return _from_tf_data(out, task, ds.loader)
        arrays, label = out, ds.loader
    n = _n_classes(ds, arrays.y_train, arrays.y_val)
    classes = classes_of(n)
    where = "task.pretrain.classes" if role == "source" else "task.classes"
    if classes is not None:
        beyond = [c for c in classes if c >= n]
        if beyond:
            raise SpecError(msg.at(where, msg.class_below(n, label, beyond[0])))
        x_tr, y_tr = datasets.select_classes(arrays.x_train, arrays.y_train, classes)
        x_val, y_val = datasets.select_classes(arrays.x_val, arrays.y_val, classes)
        arrays = DatasetArrays(x_tr, y_tr, x_val, y_val)
        if names is None or len(names) < n:
            names = tuple(str(i) for i in range(n))
        names = tuple(names[c] for c in classes)
        label = (
            f"{label} {ranges(classes)}" if ds == "digits" else f"{label} classes {ranges(classes)}"
        )
    arrays = datasets.take_subset(arrays, task.subset)
    return _from_arrays(arrays, names, label)


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
