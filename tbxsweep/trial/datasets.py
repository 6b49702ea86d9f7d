"""Fine-tuning data as plain numpy arrays, read from local files only (nothing is downloaded).

Every loader returns `(x_train, y_train, x_val, y_val)` (a `DatasetArrays`): images
float32 NHWC scaled to [0, 1] (integer images are taken as 0..255), labels int32 class
ids of shape (N,). Results are cached per process, keyed by the loader's arguments, so a
worker reads its data once however many trials it runs; the cached arrays are read-only
(copy before changing them in place).

`make_pipeline` turns arrays into a batched, prefetched `tf.data.Dataset` that resizes and
preprocesses on the fly, so full-size copies never sit in memory.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import pickle
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from tbxsweep.errors import SpecError
from tbxsweep.spec import messages as msg
from tbxsweep.trial._resolve import import_function
from tbxsweep.trial._resolve import keras_home as _keras_home

KERAS_DATASETS = ("cifar10", "cifar100", "fashion_mnist", "mnist")
SUBSET_SEED = 0
SPLIT_SEED = 0
_TFDS = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
# The training files only: the t10k (test) files are never read.
_FASHION_FILES = ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz")
_FASHION_TEST_FILES = ("t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")

_cache: dict[tuple[Any, ...], Any] = {}


class DatasetArrays(NamedTuple):
    """Train and validation arrays; unpacks as `x_train, y_train, x_val, y_val`."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def clear_cache() -> None:
    """Forget every dataset this process has loaded."""
    _cache.clear()


# --- Keras datasets -------------------------------------------------------------------------


class _Cifar(NamedTuple):
    target: str  # the `fname` Keras passes to get_file; its archive is `<target>_archive`
    inner: str  # the folder inside the tar.gz
    tarball: str
    train: tuple[str, ...]  # the training batches
    test: str  # the test batch: read only by `load_keras_test`, never by a trial


_CIFAR = {
    "cifar10": _Cifar(
        "cifar-10-batches-py-target",
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
    ),
    "cifar100": _Cifar(
        "cifar-100-python-target",
        "cifar-100-python",
        "cifar-100-python.tar.gz",
        ("train",),
        "test",
    ),
}


def load_keras_dataset(
    name: str,
    *,
    subset: int | None = None,
    keras_home: str | os.PathLike[str] | None = None,
    label_mode: str = "fine",
    val_split: float = 0.1,
    seed: int = 0,
) -> DatasetArrays:
    """One of Keras's built-in datasets, read from the Keras cache.

    Validation is `val_split` of the training split, stratified by class and drawn with
    `seed`. The test split is never read: a sweep that pruned and ranked its trials on
    it would report a test score it had selected for.

    Where Keras 3 keeps them (`H` = `keras_home`, else `$KERAS_HOME`, else `~/.keras`):

    - cifar10: `H/datasets/cifar-10-batches-py-target_archive` (the tar.gz as downloaded),
      or its extracted folder `H/datasets/cifar-10-batches-py-target/cifar-10-batches-py`,
      or `H/datasets/cifar-10-batches-py` (the tar.gz unpacked into `datasets/`);
    - cifar100: the same with `cifar-100-python-target` / `cifar-100-python`;
    - mnist: `H/datasets/mnist.npz` (its x_train, y_train);
    - fashion_mnist: `H/datasets/fashion-mnist/train-{labels-idx1,images-idx3}-ubyte.gz`.

    The files are read here in their published formats; Keras's own loaders are not
    called because they download whenever a file is missing or its hash differs.

    Args:
        name: one of `KERAS_DATASETS`.
        subset: keep at most this many training samples (the first after a fixed-seed
            shuffle); validation shrinks in proportion, to at least 1 sample.
        keras_home: the Keras cache root, overriding `$KERAS_HOME`.
        label_mode: cifar100 only: "fine" (100 classes) or "coarse" (20).
        val_split: the fraction of the training split that validates, 0 < val_split < 1.
        seed: the seed of the train/validation split (the task's seed).

    Raises:
        SpecError: unknown name, bad subset or val_split, the files are not in the cache
            or unreadable.
    """
    if name not in KERAS_DATASETS:
        raise SpecError(msg.at("task.dataset", msg.one_of(KERAS_DATASETS, name)))
    if label_mode not in ("fine", "coarse"):
        raise SpecError(
            msg.at("task.dataset.label_mode", msg.one_of(("fine", "coarse"), label_mode))
        )
    _check_subset(subset)
    _check_fraction(val_split, "task.val_split")
    home = _keras_home(keras_home)
    mode = label_mode if name == "cifar100" else None
    key = ("keras", name, str(home), subset, mode, val_split, seed)
    if key not in _cache:
        if name in _CIFAR:
            x, y = _read_cifar(
                name, home / "datasets", f"{label_mode}_labels" if name == "cifar100" else "labels"
            )
        elif name == "mnist":
            x, y = _read_mnist(home / "datasets")
        else:
            x, y = _read_fashion(home / "datasets")
        arrays = stratified_split(_images(x), _labels(y), val_split, seed, "task.val_split")
        _cache[key] = _frozen(_take_subset(arrays, subset))
    return _cache[key]


def check_keras_cache(name: str, keras_home: str | os.PathLike[str] | None = None) -> None:
    """Raise the reader's own "not in the Keras cache" error now if the training files of
    `name` are missing (only looks at file names: cheap, before a sweep writes anything)."""
    datasets = _keras_home(keras_home) / "datasets"
    if name in _CIFAR:
        src = _CIFAR[name]
        folders = (datasets / src.target / src.inner, datasets / src.inner)
        if any(all((f / b).is_file() for b in src.train) for f in folders):
            return
        if (datasets / f"{src.target}_archive").is_file():
            return
        _read_cifar(name, datasets, "labels")  # nothing there: raises its message
    elif name == "mnist" and not (datasets / "mnist.npz").is_file():
        _read_mnist(datasets)
    elif name == "fashion_mnist" and not all(
        (datasets / "fashion-mnist" / f).is_file() for f in _FASHION_FILES
    ):
        _read_fashion(datasets)


def load_keras_test(
    name: str, *, keras_home: str | os.PathLike[str] | None = None, label_mode: str = "fine"
) -> tuple[np.ndarray, np.ndarray]:
    """The test split of one of Keras's datasets (images float32 NHWC in [0, 1], labels).

    Only the sweep's final evaluation of its best trials calls this; a trial never does.

    Raises:
        SpecError: as `load_keras_dataset`.
    """
    if name not in KERAS_DATASETS:
        raise SpecError(msg.at("task.dataset", msg.one_of(KERAS_DATASETS, name)))
    home = _keras_home(keras_home)
    key = ("keras-test", name, str(home), label_mode if name == "cifar100" else None)
    if key not in _cache:
        datasets = home / "datasets"
        if name in _CIFAR:
            label = f"{label_mode}_labels" if name == "cifar100" else "labels"
            x, y = _read_cifar(name, datasets, label, test=True)
        elif name == "mnist":
            x, y = _read_mnist(datasets, test=True)
        else:
            x, y = _read_fashion(datasets, test=True)
        xs, ys = _images(x), _labels(y)
        xs.flags.writeable = ys.flags.writeable = False
        _cache[key] = (xs, ys)
    return _cache[key]


def _read_cifar(
    name: str, datasets: Path, label_key: str, *, test: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The training batches, or with `test` the test batch (images HWC uint8, labels)."""
    src = _CIFAR[name]
    files = (src.test,) if test else src.train
    for folder in (datasets / src.target / src.inner, datasets / src.inner):
        if all((folder / f).is_file() for f in files):
            with _reading(name, folder):
                parts = [_cifar_batch((folder / f).open("rb"), label_key) for f in files]
            return _join_cifar(parts)
    archive = datasets / f"{src.target}_archive"
    if archive.is_file():
        with _reading(name, archive), tarfile.open(archive, "r:*") as tar:
            parts = []
            for f in files:
                member = tar.extractfile(f"{src.inner}/{f}")
                if member is None:
                    raise KeyError(f"{src.inner}/{f} is not a file")
                parts.append(_cifar_batch(member, label_key))
        return _join_cifar(parts)
    url = f"https://www.cs.toronto.edu/~kriz/{src.tarball}"
    raise SpecError(
        msg.at("task.dataset", msg.not_in_keras_cache(name, f"{src.tarball} at {archive}", url))
    )


def _cifar_batch(fh: IO[bytes], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR batch: rows of 3072 bytes (R, G, B planes of 32x32) and labels."""
    with fh:
        batch = _NumpyOnlyUnpickler(fh, encoding="bytes").load()
    data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return data.transpose(0, 2, 3, 1), np.asarray(batch[label_key.encode()])


def _join_cifar(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def _read_mnist(datasets: Path, *, test: bool = False) -> tuple[np.ndarray, np.ndarray]:
    path = datasets / "mnist.npz"
    if not path.is_file():
        put, url = f"mnist.npz at {path}", f"{_TFDS}mnist.npz"
        raise SpecError(msg.at("task.dataset", msg.not_in_keras_cache("mnist", put, url)))
    part = "test" if test else "train"
    with _reading("mnist", path), np.load(path, allow_pickle=False) as f:
        return f[f"x_{part}"], f[f"y_{part}"]


def _read_fashion(datasets: Path, *, test: bool = False) -> tuple[np.ndarray, np.ndarray]:
    folder = datasets / "fashion-mnist"
    names = _FASHION_TEST_FILES if test else _FASHION_FILES
    missing = [f for f in names if not (folder / f).is_file()]
    if missing:
        put, url = f"{', '.join(missing)} in {folder}/", f"each from {_TFDS}<name>"
        raise SpecError(msg.at("task.dataset", msg.not_in_keras_cache("fashion_mnist", put, url)))
    labels_file, images_file = names
    with _reading("fashion_mnist", folder):
        with gzip.open(folder / labels_file, "rb") as fh:
            y = np.frombuffer(fh.read(), np.uint8, offset=8)
        with gzip.open(folder / images_file, "rb") as fh:
            x = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(len(y), 28, 28)
    return x, y


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers, nothing that could run code."""

    # Keras's own list, plus `_codecs.encode`: Python 3 writes bytes that way at protocol 2.
    _ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


@contextlib.contextmanager
def _reading(name: str, path: Path) -> Iterator[None]:
    """Turn a corrupt or truncated file into one clear line."""
    try:
        yield
    except SpecError:
        raise
    except (
        OSError,
        EOFError,
        KeyError,
        ValueError,
        IndexError,
        pickle.UnpicklingError,
        tarfile.TarError,
        zipfile.BadZipFile,
    ) as exc:
        raise SpecError(
            msg.at("task.dataset", msg.cannot_read(f"{name} from {path}", exc))
        ) from exc


# --- .npz files -----------------------------------------------------------------------------


def load_npz_test(
    path: str | os.PathLike[str], *, test_split: float | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The test split of an `.npz`: its x_test, y_test, else `test_split` of x_train held
    out (as `load_npz` leaves it out), else None. Never called by a trial.

    Raises:
        SpecError: the file cannot be read, or holds both x_test and a test_split is given.
    """
    file = Path(path).expanduser()
    where = f"task.dataset.npz: {file}"
    try:
        with np.load(file, allow_pickle=False) as f:
            if "x_test" in f.files and "y_test" in f.files:
                if test_split is not None:
                    raise SpecError(
                        f"task.test_split: {file} already holds x_test, y_test: drop "
                        "task.test_split or those arrays"
                    )
                return _checked_pair(f["x_test"], f["y_test"], "x_test", "y_test", where)
            if test_split is None:
                return None
            x, y = _checked_pair(f["x_train"], f["y_train"], "x_train", "y_train", where)
    except SpecError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise SpecError(msg.at(where, msg.cannot_read("it", exc, ".npz"))) from exc
    held = stratified_split(x, y, test_split, SPLIT_SEED, "task.test_split")
    return held.x_val, held.y_val


def load_npz(
    path: str | os.PathLike[str],
    *,
    val_split: float | None = None,
    subset: int | None = None,
    test_split: float | None = None,
) -> DatasetArrays:
    """Arrays from an `.npz` file.

    The file holds `x_train, y_train, x_val, y_val`, or only `x_train, y_train` and then
    `val_split` of the samples (fixed seed, not stratified) become the validation set.
    Images are (N, H, W) or (N, H, W, C); labels (N,) or (N, 1) integer class ids.

    Args:
        path: the `.npz` file.
        val_split: the validation fraction, when the file has no `x_val`/`y_val`.
        subset: as in `load_keras_dataset`.

    Raises:
        SpecError: missing file, missing arrays, mismatched shapes, bad val_split/subset.
    """
    file = Path(path).expanduser()
    _check_subset(subset)
    if val_split is not None:
        _check_fraction(val_split)
    if not file.is_file():
        raise SpecError(msg.at("task.dataset.npz", msg.not_found("file", file)))
    stat = file.stat()
    key = (
        "npz",
        str(file.resolve()),
        stat.st_mtime_ns,
        stat.st_size,
        val_split,
        subset,
        test_split,
    )
    if key not in _cache:
        _cache[key] = _frozen(_take_subset(_read_npz(file, val_split, test_split), subset))
    return _cache[key]


def _read_npz(file: Path, val_split: float | None, test_split: float | None) -> DatasetArrays:
    where = f"task.dataset.npz: {file}"
    try:
        with np.load(file, allow_pickle=False) as f:
            present = sorted(f.files)
            has_val = [k for k in ("x_val", "y_val") if k in present]
            if val_split is not None and has_val:
                raise SpecError(
                    f"task.dataset.val_split: {file} already holds {', '.join(has_val)}: "
                    "drop val_split or those arrays"
                )
            needed = ["x_train", "y_train"] + (["x_val", "y_val"] if val_split is None else [])
            missing = [k for k in needed if k not in present]
            if missing:
                raise SpecError(
                    f"{where}: missing array{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(missing)} (it has {', '.join(present) or 'no arrays'}); "
                    "give x_train, y_train, x_val, y_val, or x_train, y_train and "
                    "task.dataset.val_split"
                )
            raw = {k: f[k] for k in needed}
    except SpecError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise SpecError(msg.at(where, msg.cannot_read("it", exc, ".npz"))) from exc
    if val_split is None:
        arrays = _checked_arrays(raw, where)
        if test_split is not None:  # the held-out test samples leave the training split
            kept = stratified_split(
                arrays.x_train, arrays.y_train, test_split, SPLIT_SEED, "task.test_split"
            )
            arrays = DatasetArrays(kept.x_train, kept.y_train, arrays.x_val, arrays.y_val)
        return arrays
    x, y = _checked_pair(raw["x_train"], raw["y_train"], "x_train", "y_train", where)
    if test_split is not None:
        kept = stratified_split(x, y, test_split, SPLIT_SEED, "task.test_split")
        x, y = kept.x_train, kept.y_train
    return _split(x, y, val_split, SPLIT_SEED, where="task.dataset.val_split")


# --- image folders --------------------------------------------------------------------------


def load_image_folder(
    directory: str | os.PathLike[str],
    *,
    image_size: tuple[int, int],
    val_split: float = 0.2,
    seed: int = 0,
    subset: int | None = None,
    color_mode: str = "rgb",
    test_split: float | None = None,
    test: bool = False,
) -> Any:
    """Images in one sub-folder per class, read with `keras.utils.image_dataset_from_directory`.

    Every image is resized to `image_size` and held in memory: meant for small datasets.
    `val_split` of the images (chosen with `seed`, not stratified) validate.

    Args:
        directory: the folder of class folders (hidden folders are ignored, as Keras does).
        image_size: (height, width) every image is resized to.
        val_split: the validation fraction, 0 < val_split < 1.
        seed: the seed of the train/validation split.
        subset: as in `load_keras_dataset`.
        color_mode: "rgb", "rgba" or "grayscale".

    Returns:
        The arrays and the class names (label i is class_names[i]).

    Raises:
        SpecError: missing folder, fewer than 2 classes, no images, a split that leaves
            one side empty.
    """
    folder = Path(directory).expanduser()
    _check_fraction(val_split)
    _check_subset(subset)
    size = _check_size(image_size, "task.dataset.image_size")
    if not folder.is_dir():
        raise SpecError(msg.at("task.dataset.images", msg.not_found("directory", folder)))
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name[0] != ".")
    if len(classes) < 2:
        found = f": {', '.join(classes)}" if classes else ""
        raise SpecError(
            f"task.dataset.images: {folder} must hold one sub-folder per class, at least 2, "
            f"found {len(classes)}{found}"
        )
    key = ("folder", str(folder.resolve()), size, val_split, seed, subset, color_mode, test_split)
    if key not in _cache:
        x, y, names = _read_folder(folder, size, color_mode)
        held = None
        if test_split is not None:  # held out first, with a fixed seed: the same every sweep
            kept = stratified_split(x, y, test_split, SPLIT_SEED, "task.test_split")
            x, y, held = kept.x_train, kept.y_train, (kept.x_val, kept.y_val)
        arrays = _split(x, y, val_split, seed, where="task.dataset.val_split")
        _cache[key] = (_frozen(_take_subset(arrays, subset)), tuple(names), held)
    arrays, names, held = _cache[key]
    if test:  # (x_test, y_test) or None: only the sweep's final evaluation asks
        return held
    return arrays, names


def _read_folder(
    folder: Path, size: tuple[int, int], color_mode: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    import keras

    try:
        # Keras's own split keeps files in class order when shuffle=False (validation would
        # be the last class), so load everything in order and split here with our seed.
        with contextlib.redirect_stdout(io.StringIO()):
            ds = keras.utils.image_dataset_from_directory(
                str(folder),
                labels="inferred",
                label_mode="int",
                color_mode=color_mode,
                batch_size=256,
                image_size=size,
                shuffle=False,
                verbose=False,
            )
    except ValueError as exc:
        raise SpecError(f"task.dataset.images: {folder}: {exc}") from exc
    xs, ys = [], []
    for xb, yb in ds:
        xs.append(np.asarray(xb))
        ys.append(np.asarray(yb))
    # Keras gives float32 pixels in 0..255.
    x = np.concatenate(xs).astype(np.float32) / np.float32(255.0)
    return x, np.concatenate(ys).astype(np.int32), list(ds.class_names)


# --- custom loaders -------------------------------------------------------------------------


def load_custom(ref: str, **kwargs: Any) -> DatasetArrays | tuple[Any, Any]:
    """Data from the user's `package.module:function`, called as `function(**kwargs)`.

    The function returns `(x_train, y_train, x_val, y_val)`, a dict with those keys (both
    checked and converted like `load_npz`), or `(train_ds, val_ds)` tf.data datasets,
    returned unchanged (batching and preprocessing are then the function's business).

    Raises:
        SpecError: the module does not import, the name is not a function, or it returns
            something else.
    """
    where = "task.dataset.loader"
    fn = import_function(ref, where)
    key = ("custom", ref, repr(sorted(kwargs.items())))
    if key not in _cache:
        out = fn(**kwargs)
        expected = (
            "must return (x_train, y_train, x_val, y_val), a dict with those keys, "
            "or (train_ds, val_ds) tf.data datasets"
        )
        names = ("x_train", "y_train", "x_val", "y_val")
        if isinstance(out, dict):
            missing = [k for k in names if k not in out]
            if missing:
                raise SpecError(
                    f"{where}: {ref} returned a dict without "
                    f"{', '.join(missing)} (it has {', '.join(map(str, out))})"
                )
            result: Any = _frozen(_checked_arrays(out, f"{where}: {ref}"))
        elif isinstance(out, (tuple, list)) and len(out) == 4:
            result = _frozen(_checked_arrays(dict(zip(names, out, strict=True)), f"{where}: {ref}"))
        elif isinstance(out, (tuple, list)) and len(out) == 2 and _all_tf_datasets(out):
            result = (out[0], out[1])
        else:
            raise SpecError(f"{where}: {ref} {expected}, got {_kind_of(out)}")
        _cache[key] = result
    return _cache[key]


def _all_tf_datasets(items: Any) -> bool:
    if not all(type(i).__module__.startswith("tensorflow") for i in items):
        return False
    import tensorflow as tf

    return all(isinstance(i, tf.data.Dataset) for i in items)


def _kind_of(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        kinds = ", ".join(type(v).__name__ for v in value[:6])
        return f"a {type(value).__name__} of {len(value)} ({kinds})"
    return f"a {type(value).__name__}"


# --- tf.data --------------------------------------------------------------------------------


def make_pipeline(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    preprocess: Callable[[Any], Any] | None = None,
    image_size: tuple[int, int] | None = None,
    shuffle_seed: int | None = None,
) -> Any:
    """A batched, prefetched `tf.data.Dataset` of `(images, labels)`.

    Resizing and `preprocess` run per batch inside the pipeline, so only the small
    arrays are held in memory.

    Args:
        x: images (N, H, W, C).
        y: labels (N,).
        batch_size: samples per batch; the last batch may be smaller.
        preprocess: applied to each batch of images after resizing, e.g.
            `backbones.preprocess_for(kind)`.
        image_size: (height, width) to resize to (bilinear), when it differs from x's.
        shuffle_seed: shuffle the whole set, anew each epoch, from this seed;
            None keeps the order (use None for validation).

    Raises:
        ValueError: x and y differ in length, or batch_size < 1.
    """
    import tensorflow as tf

    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    if batch_size < 1:
        raise ValueError(f"`batch_size >= 1` must hold, got batch_size={batch_size}")
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if image_size is not None:
        size = _check_size(image_size, "image_size")
        if tuple(x.shape[1:3]) != size:
            ds = ds.map(
                lambda a, b: (tf.image.resize(a, size), b), num_parallel_calls=tf.data.AUTOTUNE
            )
    if preprocess is not None:
        ds = ds.map(lambda a, b: (preprocess(a), b), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


# --- shared checks and conversions ----------------------------------------------------------


def _checked_arrays(raw: dict[str, Any], where: str) -> DatasetArrays:
    x_tr, y_tr = _checked_pair(raw["x_train"], raw["y_train"], "x_train", "y_train", where)
    x_val, y_val = _checked_pair(raw["x_val"], raw["y_val"], "x_val", "y_val", where)
    if x_val.shape[1:] != x_tr.shape[1:]:
        raise SpecError(
            f"{where}: x_val images have shape {x_val.shape[1:]} but x_train "
            f"images have {x_tr.shape[1:]}"
        )
    return DatasetArrays(x_tr, y_tr, x_val, y_val)


def _checked_pair(
    x: Any, y: Any, x_name: str, y_name: str, where: str
) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim not in (3, 4):
        raise SpecError(
            f"{where}: {x_name} must have shape (N, H, W) or (N, H, W, C), got {x.shape}"
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise SpecError(
            f"{where}: {y_name} must hold class ids of shape (N,) or (N, 1), got {y.shape}"
        )
    if len(x) != len(y):
        raise SpecError(f"{where}: {x_name} has {len(x)} samples but {y_name} has {len(y)}")
    if len(x) == 0:
        raise SpecError(f"{where}: {x_name} is empty")
    is_int = np.issubdtype(y.dtype, np.integer) or (
        np.issubdtype(y.dtype, np.floating) and bool(np.all(y == np.round(y)))
    )
    if not is_int:
        raise SpecError(f"{where}: {y_name} must hold integer class ids, got dtype {y.dtype}")
    return _images(x), _labels(y)


def _images(x: np.ndarray) -> np.ndarray:
    """float32 NHWC in [0, 1]: integer pixels are taken as 0..255, floats kept as they are."""
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        return x.astype(np.float32) / np.float32(255.0)
    return x.astype(np.float32, copy=False)


def _labels(y: np.ndarray) -> np.ndarray:
    return np.asarray(y).reshape(-1).astype(np.int32)


def _split(x: np.ndarray, y: np.ndarray, fraction: float, seed: int, where: str) -> DatasetArrays:
    n = len(x)
    n_val = max(1, round(n * fraction))
    if n_val >= n:
        raise SpecError(msg.at(where, msg.no_training_samples(fraction, n)))
    order = np.random.default_rng(seed).permutation(n)
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    return DatasetArrays(x[train], y[train], x[val], y[val])


def stratified_split(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int, where: str
) -> DatasetArrays:
    """`fraction` of the samples validate, each class in its share of the whole.

    round(n * fraction) validation samples (at least 1) are shared out in proportion to
    the class counts, the places left by rounding going to the largest remainders; which
    samples of a class validate is drawn with `seed`.
    """
    n = len(y)
    n_val = max(1, round(n * fraction))
    if n_val >= n:
        raise SpecError(msg.at(where, msg.no_training_samples(fraction, n)))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    share = counts * n_val / n
    take = np.floor(share).astype(int)
    ties = rng.random(len(classes))
    by_remainder = np.lexsort((ties, -(share - take)))
    take[by_remainder[: n_val - int(take.sum())]] += 1
    val = np.concatenate(
        [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take, strict=True)]
    )
    is_val = np.zeros(n, dtype=bool)
    is_val[val] = True
    return DatasetArrays(x[~is_val], y[~is_val], x[is_val], y[is_val])


def select_classes(
    x: np.ndarray, y: np.ndarray, classes: tuple[int, ...] | None
) -> tuple[np.ndarray, np.ndarray]:
    """The samples of `classes`, relabelled 0..len(classes)-1 in that order (None: all)."""
    if classes is None:
        return x, y
    lookup = np.full(max(int(y.max(initial=0)), *classes) + 1, -1, dtype=np.int32)
    lookup[list(classes)] = np.arange(len(classes), dtype=np.int32)
    keep = lookup[y] >= 0
    return x[keep], lookup[y[keep]]


def take_subset(arrays: DatasetArrays, subset: int | None) -> DatasetArrays:
    """At most `subset` training samples, as the loaders' `subset` argument takes them.

    Raises:
        SpecError: subset is not an integer >= 1.
    """
    _check_subset(subset)
    return arrays if subset is None else _frozen(_take_subset(arrays, subset))


def _take_subset(arrays: DatasetArrays, subset: int | None) -> DatasetArrays:
    n_train = len(arrays.x_train)
    if subset is None or subset >= n_train:
        return arrays
    n_val_all = len(arrays.x_val)
    n_val = min(n_val_all, max(1, round(n_val_all * subset / n_train)))
    rng = np.random.default_rng(SUBSET_SEED)
    train = rng.permutation(n_train)[:subset]
    val = rng.permutation(n_val_all)[:n_val]
    return DatasetArrays(
        arrays.x_train[train], arrays.y_train[train], arrays.x_val[val], arrays.y_val[val]
    )


def _frozen(arrays: DatasetArrays) -> DatasetArrays:
    """Read-only views for the cache, so no trial can change the arrays for the next one.

    Views, so the flag never changes on arrays a custom loader may still hold.
    """
    views = [a.view() for a in arrays]
    for v in views:
        v.flags.writeable = False
    return DatasetArrays(*views)


def _check_subset(subset: int | None) -> None:
    if subset is not None and (
        isinstance(subset, bool) or not isinstance(subset, int) or subset < 1
    ):
        raise SpecError(msg.at("task.subset", msg.at_least("subset", 1, subset)))


def _check_fraction(val_split: float, where: str = "task.dataset.val_split") -> None:
    if (
        isinstance(val_split, bool)
        or not isinstance(val_split, (int, float))
        or not (0 < val_split < 1)
    ):
        raise SpecError(msg.at(where, msg.fraction("val_split", val_split)))


def _check_size(size: Any, where: str) -> tuple[int, int]:
    ok = (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)
    )
    if not ok:
        raise SpecError(msg.at(where, msg.positive_ints(msg.IMAGE_SIZE_RULE, size)))
    return int(size[0]), int(size[1])
