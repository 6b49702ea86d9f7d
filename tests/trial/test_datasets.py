"""tbxsweep.trial.datasets on tiny files written in the real formats; no network."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import sys
import tarfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tbxsweep.errors import SpecError
from tbxsweep.trial import datasets
from tbxsweep.trial.datasets import (
    DatasetArrays,
    clear_cache,
    load_custom,
    load_image_folder,
    load_keras_dataset,
    load_npz,
    make_pipeline,
)

TFDS = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Keras cache, as KERAS_HOME."""
    h = tmp_path / "keras_home"
    (h / "datasets").mkdir(parents=True)
    monkeypatch.setenv("KERAS_HOME", str(h))
    return h


def _images(n: int, start: int) -> np.ndarray:
    """n distinct HWC uint8 images: every pixel knows its image, row, column and channel."""
    i, r, c, ch = np.meshgrid(
        np.arange(n), np.arange(32), np.arange(32), np.arange(3), indexing="ij"
    )
    return ((start + i) * 7 + r * 3 + c * 5 + ch * 11).astype(np.uint8) % 251


def _cifar_batch(images: np.ndarray, labels: dict[bytes, list[int]]) -> bytes:
    """A batch as the CIFAR site ships it: rows of R, G, B planes, labels as lists."""
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    batch = {
        b"batch_label": b"testing batch",
        b"data": rows,
        b"filenames": [b"x.png"] * len(images),
        **labels,
    }
    return pickle.dumps(batch, protocol=2)


def _cifar10_files() -> tuple[dict[str, bytes], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    files, xs, ys = {}, [], []
    for b in range(1, 6):
        x, y = _images(2, 2 * b), [(2 * b) % 10, (2 * b + 1) % 10]
        files[f"data_batch_{b}"] = _cifar_batch(x, {b"labels": y})
        xs.append(x)
        ys += y
    x_test, y_test = _images(3, 100), [9, 0, 4]
    files["test_batch"] = _cifar_batch(x_test, {b"labels": y_test})
    return files, np.concatenate(xs), np.array(ys), x_test, np.array(y_test)


def _rows(x: np.ndarray, y: Any) -> set[tuple[bytes, int]]:
    """Each sample as (its float32 pixels in [0, 1], its label): splits compare as sets."""
    x = np.asarray(x, np.float32)
    return {(x[i].round(4).tobytes(), int(y[i])) for i in range(len(x))}


def _write_tar(path: Path, inner: str, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{inner}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("layout", ["keras3_folder", "archive", "unpacked"])
def test_cifar10_reads_the_pickled_batches(home: Path, layout: str) -> None:
    files, x_tr, y_tr, x_te, y_te = _cifar10_files()
    ds = home / "datasets"
    if layout == "archive":
        _write_tar(ds / "cifar-10-batches-py-target_archive", "cifar-10-batches-py", files)
    else:
        folder = ds / ("cifar-10-batches-py-target" if layout == "keras3_folder" else "")
        folder = folder / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)

    x_train, y_train, x_val, y_val = load_keras_dataset("cifar10")

    # 10% of the 10 training images validate; the 3 test images are never served.
    assert x_train.shape == (9, 32, 32, 3) and x_val.shape == (1, 32, 32, 3)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    served = _rows(np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val]))
    assert served == _rows(x_tr / 255, y_tr)
    assert not served & _rows(x_te / 255, y_te)
    assert x_train.min() >= 0.0 and x_train.max() <= 1.0


def test_cifar100_fine_and_coarse_labels(home: Path) -> None:
    folder = home / "datasets" / "cifar-100-python-target" / "cifar-100-python"
    folder.mkdir(parents=True)
    (folder / "train").write_bytes(
        _cifar_batch(
            _images(4, 0), {b"fine_labels": [99, 1, 2, 3], b"coarse_labels": [19, 0, 0, 1]}
        )
    )
    (folder / "test").write_bytes(
        _cifar_batch(_images(2, 9), {b"fine_labels": [5, 6], b"coarse_labels": [2, 3]})
    )
    fine = load_keras_dataset("cifar100")
    coarse = load_keras_dataset("cifar100", label_mode="coarse")
    x_tr = _images(4, 0) / 255
    assert _rows(np.concatenate([fine.x_train, fine.x_val]), [*fine.y_train, *fine.y_val]) == (
        _rows(x_tr, [99, 1, 2, 3])
    )
    assert _rows(
        np.concatenate([coarse.x_train, coarse.x_val]), [*coarse.y_train, *coarse.y_val]
    ) == _rows(x_tr, [19, 0, 0, 1])
    assert fine.x_train.shape == (3, 32, 32, 3) and fine.x_val.shape == (1, 32, 32, 3)


def test_mnist_npz_gets_a_channel_axis(home: Path) -> None:
    x = np.arange(5 * 28 * 28, dtype=np.uint32).reshape(5, 28, 28) % 256
    np.savez(
        home / "datasets" / "mnist.npz",
        x_train=x.astype(np.uint8),
        y_train=np.arange(5, dtype=np.uint8),
        x_test=x[:2].astype(np.uint8),
        y_test=np.array([7, 8], dtype=np.uint8),
    )
    x_train, y_train, x_val, y_val = load_keras_dataset("mnist")
    assert x_train.shape == (4, 28, 28, 1) and x_val.shape == (1, 28, 28, 1)
    served = np.concatenate([x_train, x_val])[..., 0] * 255
    np.testing.assert_allclose(served[np.argsort([*y_train, *y_val])], x, atol=1e-4)
    assert sorted([*y_train, *y_val]) == [0, 1, 2, 3, 4]  # never the test labels 7, 8


def test_fashion_mnist_idx_gz_files(home: Path) -> None:
    folder = home / "datasets" / "fashion-mnist"
    folder.mkdir()
    x = (np.arange(3 * 28 * 28) % 256).astype(np.uint8).reshape(3, 28, 28)
    for prefix, n in (("train", 3), ("t10k", 2)):
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as fh:
            fh.write(b"\0" * 8 + bytes(range(n)))
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as fh:
            fh.write(b"\0" * 16 + x[:n].tobytes())
    for name in ("t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        (folder / name).write_bytes(b"not gzip: the test files are never read")
    x_train, y_train, x_val, y_val = load_keras_dataset("fashion_mnist", val_split=0.3)
    assert x_train.shape == (2, 28, 28, 1) and x_val.shape == (1, 28, 28, 1)
    assert sorted([*y_train, *y_val]) == [0, 1, 2]
    np.testing.assert_allclose(x_val[0, ..., 0] * 255, x[y_val[0]], atol=1e-4)


def test_subset_is_deterministic_and_proportional(home: Path) -> None:
    folder = home / "datasets" / "cifar-10-batches-py"
    folder.mkdir()
    for name, data in _cifar10_files()[0].items():
        (folder / name).write_bytes(data)
    full = load_keras_dataset("cifar10")
    part = load_keras_dataset("cifar10", subset=4)
    clear_cache()
    again = load_keras_dataset("cifar10", subset=4)

    assert len(part.x_train) == 4 and len(part.x_val) == 1  # max(1, round(1 * 4 / 9))
    for a, b in zip(part, again, strict=True):
        np.testing.assert_array_equal(a, b)
    rows = {full.x_train[i].tobytes(): full.y_train[i] for i in range(9)}
    assert [rows[x.tobytes()] for x in part.x_train] == part.y_train.tolist()
    assert len({x.tobytes() for x in part.x_train}) == 4
    assert len(load_keras_dataset("cifar10", subset=50).x_train) == 9
    with pytest.raises(SpecError) as err:
        load_keras_dataset("cifar10", subset=0)
    assert str(err.value) == "task.subset: `subset >= 1` must hold, got subset=0"


def test_cached_once_per_process_and_read_only(home: Path) -> None:
    np.savez(
        home / "datasets" / "mnist.npz",
        x_train=np.zeros((2, 28, 28), np.uint8),
        y_train=np.zeros(2, np.uint8),
        x_test=np.zeros((1, 28, 28), np.uint8),
        y_test=np.zeros(1, np.uint8),
    )
    first = load_keras_dataset("mnist")
    (home / "datasets" / "mnist.npz").unlink()
    assert load_keras_dataset("mnist") is first
    with pytest.raises(ValueError, match="read-only"):
        first.x_train[0, 0, 0, 0] = 1.0


def test_missing_keras_cache_names_the_file(home: Path) -> None:
    ds = home / "datasets"
    expected = {
        "cifar10": f"task.dataset: cifar10 is not in the Keras cache: put cifar-10-python.tar.gz "
        f"at {ds}/cifar-10-batches-py-target_archive (download "
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz on a machine with "
        "internet)",
        "cifar100": f"task.dataset: cifar100 is not in the Keras cache: put "
        f"cifar-100-python.tar.gz at {ds}/cifar-100-python-target_archive (download "
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz on a machine with "
        "internet)",
        "mnist": f"task.dataset: mnist is not in the Keras cache: put mnist.npz at "
        f"{ds}/mnist.npz (download {TFDS}mnist.npz on a machine with internet)",
    }
    for name, message in expected.items():
        with pytest.raises(SpecError) as err:
            load_keras_dataset(name)
        assert str(err.value) == message

    (ds / "fashion-mnist").mkdir()
    (ds / "fashion-mnist" / "train-labels-idx1-ubyte.gz").write_bytes(b"")
    with pytest.raises(SpecError) as err:
        load_keras_dataset("fashion_mnist")
    assert str(err.value) == (
        "task.dataset: fashion_mnist is not in the Keras cache: put train-images-idx3-ubyte.gz "
        f"in {ds}/fashion-mnist/ (download each from {TFDS}<name> on a machine with internet)"
    )


def test_keras_home_argument_beats_the_environment(home: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    with pytest.raises(SpecError) as err:
        load_keras_dataset("mnist", keras_home=other)
    assert f"put mnist.npz at {other}/datasets/mnist.npz " in str(err.value)


def test_unknown_dataset_suggests_the_nearest(home: Path) -> None:
    with pytest.raises(SpecError) as err:
        load_keras_dataset("cifar-10")
    assert str(err.value) == (
        "task.dataset: must be one of 'cifar10', 'cifar100', 'fashion_mnist', 'mnist', "
        "got 'cifar-10' (did you mean 'cifar10'?)"
    )


def test_corrupt_or_malicious_batches_are_refused(home: Path) -> None:
    folder = home / "datasets" / "cifar-10-batches-py"
    folder.mkdir()
    for name, data in _cifar10_files()[0].items():
        (folder / name).write_bytes(data)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(SpecError) as err:
        load_keras_dataset("cifar10")
    assert str(err.value) == (
        f"task.dataset: cannot read cifar10 from {folder}: UnpicklingError: invalid load key, 'n'."
    )

    (folder / "data_batch_3").write_bytes(pickle.dumps(os.system, protocol=2))
    with pytest.raises(SpecError) as err:
        load_keras_dataset("cifar10")
    assert str(err.value) == (
        f"task.dataset: cannot read cifar10 from {folder}: UnpicklingError: refusing to "
        f"unpickle {os.system.__module__}.system"
    )


def test_keras_datasets_validate_on_a_stratified_seeded_part_of_the_training_split(
    home: Path,
) -> None:
    """The test split is never read (here it is not even a pickle); validation is
    `val_split` of the training images, each class in its share, drawn with the seed."""
    folder = home / "datasets" / "cifar-10-batches-py"
    folder.mkdir()
    xs, ys = [], []
    for b in range(1, 6):  # 100 images: 10 per class, 20 per batch
        x, y = _images(20, 20 * b), [(20 * b + i) % 10 for i in range(20)]
        (folder / f"data_batch_{b}").write_bytes(_cifar_batch(x, {b"labels": y}))
        xs.append(x)
        ys += y
    (folder / "test_batch").write_bytes(b"not a pickle: reading it fails the test")
    train = _rows(np.concatenate(xs) / 255, np.array(ys))

    a = load_keras_dataset("cifar10", val_split=0.2, seed=3)
    assert len(a.x_train) == 80 and len(a.x_val) == 20
    assert np.bincount(a.y_val, minlength=10).tolist() == [2] * 10
    fit, val = _rows(a.x_train, a.y_train), _rows(a.x_val, a.y_val)
    assert not fit & val and fit | val == train
    clear_cache()
    again = load_keras_dataset("cifar10", val_split=0.2, seed=3)
    assert _rows(again.x_val, again.y_val) == val  # the seed decides, not the process
    other = load_keras_dataset("cifar10", val_split=0.2, seed=4)
    assert _rows(other.x_val, other.y_val) != val
    assert len(load_keras_dataset("cifar10").x_val) == 10  # val_split defaults to 0.1

    with pytest.raises(SpecError) as err:
        load_keras_dataset("cifar10", val_split=1.0)
    assert str(err.value) == "task.val_split: `0 < val_split < 1` must hold, got val_split=1.0"


def test_npz_with_only_test_arrays_never_validates_on_them(tmp_path: Path) -> None:
    path = tmp_path / "keras_like.npz"
    np.savez(
        path,
        x_train=np.arange(8 * 4, dtype=np.uint8).reshape(8, 2, 2),
        y_train=np.arange(8) % 2,
        x_test=np.full((3, 2, 2), 255, np.uint8),
        y_test=np.array([1, 1, 1]),
    )
    with pytest.raises(SpecError) as err:
        load_npz(path)
    assert str(err.value) == (
        f"task.dataset.npz: {path}: missing arrays x_val, y_val (it has x_test, x_train, "
        "y_test, y_train); give x_train, y_train, x_val, y_val, or x_train, y_train and "
        "task.dataset.val_split"
    )
    x_train, _, x_val, _ = load_npz(path, val_split=0.25)
    assert len(x_train) + len(x_val) == 8 and float(x_val.max()) < 1.0


# --- npz --------------------------------------------------------------------------------------


def test_npz_with_validation_arrays(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(
        path,
        x_train=np.full((4, 5, 6, 3), 255, np.uint8),
        y_train=np.array([[0], [1], [2], [1]]),
        x_val=np.full((2, 5, 6, 3), 0.5, np.float64),
        y_val=np.array([2.0, 0.0]),
    )
    x_train, y_train, x_val, y_val = load_npz(path)
    assert x_train.shape == (4, 5, 6, 3) and x_train.dtype == np.float32
    assert float(x_train.max()) == 1.0 and float(x_val.max()) == 0.5
    assert y_train.tolist() == [0, 1, 2, 1] and y_val.dtype == np.int32


def test_npz_with_val_split(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, x_train=np.arange(8 * 4, dtype=np.uint8).reshape(8, 2, 2), y_train=np.arange(8))
    x_train, y_train, x_val, y_val = load_npz(path, val_split=0.25)
    assert len(x_train) == 6 and len(x_val) == 2 and x_train.shape[1:] == (2, 2, 1)
    assert sorted(y_train.tolist() + y_val.tolist()) == list(range(8))
    assert load_npz(path, val_split=0.25) is load_npz(path, val_split=0.25)
    clear_cache()
    assert load_npz(path, val_split=0.25).y_val.tolist() == y_val.tolist()
    assert len(load_npz(path, val_split=0.25, subset=3).x_train) == 3


def test_npz_errors(tmp_path: Path) -> None:
    def message(path: Path, **kwargs: object) -> str:
        with pytest.raises(SpecError) as err:
            load_npz(path, **kwargs)  # type: ignore[arg-type]
        return str(err.value)

    missing = tmp_path / "nope.npz"
    assert message(missing) == f"task.dataset.npz: file not found: {missing}"

    two = tmp_path / "two.npz"
    np.savez(two, x_train=np.zeros((3, 2, 2)), y_train=np.zeros(3))
    assert message(two) == (
        f"task.dataset.npz: {two}: missing arrays x_val, y_val (it has x_train, y_train); "
        "give x_train, y_train, x_val, y_val, or x_train, y_train and task.dataset.val_split"
    )
    assert message(two, val_split=1.5) == (
        "task.dataset.val_split: `0 < val_split < 1` must hold, got val_split=1.5"
    )

    other = tmp_path / "other.npz"
    np.savez(other, images=np.zeros((3, 2, 2)), labels=np.zeros(3))
    assert message(other, val_split=0.5) == (
        f"task.dataset.npz: {other}: missing arrays x_train, y_train (it has images, labels); "
        "give x_train, y_train, x_val, y_val, or x_train, y_train and task.dataset.val_split"
    )

    four = tmp_path / "four.npz"
    np.savez(
        four,
        x_train=np.zeros((5, 2, 2)),
        y_train=np.zeros(4),
        x_val=np.zeros((1, 2, 2)),
        y_val=np.zeros(1),
    )
    assert message(four) == f"task.dataset.npz: {four}: x_train has 5 samples but y_train has 4"
    assert message(four, val_split=0.2) == (
        f"task.dataset.val_split: {four} already holds x_val, y_val: drop val_split or those arrays"
    )

    shapes = tmp_path / "shapes.npz"
    np.savez(
        shapes,
        x_train=np.zeros((2, 4, 4, 3)),
        y_train=np.zeros(2),
        x_val=np.zeros((1, 4, 4, 1)),
        y_val=np.zeros(1),
    )
    assert message(shapes) == (
        f"task.dataset.npz: {shapes}: x_val images have shape (4, 4, 1) but x_train images "
        "have (4, 4, 3)"
    )

    onehot = tmp_path / "onehot.npz"
    np.savez(
        onehot,
        x_train=np.zeros((2, 4, 4)),
        y_train=np.eye(2),
        x_val=np.zeros((1, 4, 4)),
        y_val=np.zeros(1),
    )
    assert message(onehot) == (
        f"task.dataset.npz: {onehot}: y_train must hold class ids of shape (N,) or (N, 1), "
        "got (2, 2)"
    )

    text = tmp_path / "text.npz"
    text.write_text("hello")
    assert message(text).startswith(f"task.dataset.npz: {text}: cannot read it as .npz: ")


# --- image folders ----------------------------------------------------------------------------

COLOURS = {"a_red": (255, 0, 0), "b_green": (0, 255, 0), "c_blue": (0, 0, 255)}


def _image_folder(root: Path) -> Path:
    from PIL import Image

    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (6, 5), colour).save(root / name / f"img{i}.png")
    (root / ".hidden").mkdir()
    return root


def test_image_folder(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "images")
    (x_train, y_train, x_val, y_val), names = load_image_folder(
        root, image_size=(4, 4), val_split=0.25
    )
    assert names == ("a_red", "b_green", "c_blue")
    assert x_train.shape == (9, 4, 4, 3) and x_val.shape == (3, 4, 4, 3)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    for x, y in zip(
        np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val]), strict=True
    ):
        assert int(np.argmax(x.mean(axis=(0, 1)))) == int(y)  # the class's own colour
    assert float(x_train.max()) == pytest.approx(1.0) and float(x_train.min()) == 0.0
    assert sorted(np.concatenate([y_train, y_val]).tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    clear_cache()
    (_, y_train2, _, y_val2), _ = load_image_folder(root, image_size=(4, 4), val_split=0.25)
    assert y_val2.tolist() == y_val.tolist() and y_train2.tolist() == y_train.tolist()


def test_image_folder_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SpecError) as err:
        load_image_folder(missing, image_size=(4, 4))
    assert str(err.value) == f"task.dataset.images: directory not found: {missing}"

    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    (one / ".git").mkdir()
    with pytest.raises(SpecError) as err:
        load_image_folder(one, image_size=(4, 4))
    assert str(err.value) == (
        f"task.dataset.images: {one} must hold one sub-folder per class, at least 2, found 1: only"
    )

    with pytest.raises(SpecError) as err:
        load_image_folder(one, image_size=(4, 0))
    assert str(err.value) == (
        "task.dataset.image_size: must be [height, width] in pixels, each an integer >= 1, "
        "got (4, 0)"
    )


# --- custom loaders ---------------------------------------------------------------------------

LOADER = """
import numpy as np

def arrays(n=4):
    x = np.zeros((n, 3, 3, 1), np.uint8) + 255
    return x, np.arange(n) % 2, x[:2], np.array([0, 1])

def as_dict():
    x = np.ones((2, 3, 3, 3), np.float32)
    return {"x_train": x, "y_train": [0, 1], "x_val": x[:1], "y_val": [1], "extra": 0}

def tfdata():
    import tensorflow as tf
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((2, 3, 3, 1), np.float32), [0, 1]))
    return ds.batch(1), ds.batch(2)

def three():
    return 1, 2, 3

def no_val():
    return {"x_train": np.zeros((2, 3, 3)), "y_train": [0, 1]}

def mismatch():
    return np.zeros((3, 2, 2)), np.zeros(2), np.zeros((1, 2, 2)), np.zeros(1)

NOT_A_FUNCTION = 3
"""


@pytest.fixture
def loader_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"tbx_test_loader_{os.getpid()}_{tmp_path.name}".replace("-", "_")
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(LOADER))
    (tmp_path / "tbx_test_broken_loader.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)
    sys.modules.pop("tbx_test_broken_loader", None)


def test_custom_loader_arrays_and_dict(loader_module: str) -> None:
    data = load_custom(f"{loader_module}:arrays", n=6)
    assert isinstance(data, DatasetArrays)
    x_train, y_train, x_val, y_val = data
    assert x_train.shape == (6, 3, 3, 1) and float(x_train.max()) == 1.0
    assert y_train.tolist() == [0, 1, 0, 1, 0, 1] and y_val.dtype == np.int32
    assert x_val.shape == (2, 3, 3, 1)
    assert load_custom(f"{loader_module}:arrays", n=6) is data
    assert len(load_custom(f"{loader_module}:arrays", n=2)[0]) == 2
    d = load_custom(f"{loader_module}:as_dict")
    assert isinstance(d, DatasetArrays)
    assert d.x_train.shape == (2, 3, 3, 3) and d.y_val.tolist() == [1]


def test_custom_loader_tf_data_is_returned_unchanged(loader_module: str) -> None:
    import tensorflow as tf

    data = load_custom(f"{loader_module}:tfdata")
    assert not isinstance(data, DatasetArrays) and len(data) == 2
    train_ds, val_ds = data
    assert isinstance(train_ds, tf.data.Dataset) and isinstance(val_ds, tf.data.Dataset)
    assert [int(y[0]) for _, y in train_ds] == [0, 1]


def test_custom_loader_errors(loader_module: str) -> None:
    def message(ref: str) -> str:
        with pytest.raises(SpecError) as err:
            load_custom(ref)
        return str(err.value)

    m = loader_module
    assert message("no_such_module_xyz:load") == (
        "task.dataset.loader: cannot import module 'no_such_module_xyz' (is it on PYTHONPATH?)"
    )
    assert message("tbx_test_broken_loader:load") == (
        "task.dataset.loader: cannot import module 'tbx_test_broken_loader': "
        "ModuleNotFoundError: No module named 'no_such_dependency_xyz'"
    )
    assert message("just_a_module") == (
        "task.dataset.loader: must look like 'package.module:function', got 'just_a_module'"
    )
    assert message(f"{m}:nothing") == (
        f"task.dataset.loader: module '{m}' has no function 'nothing'"
    )
    assert message(f"{m}:NOT_A_FUNCTION") == (
        f"task.dataset.loader: '{m}:NOT_A_FUNCTION' is a int, not a function"
    )
    assert message(f"{m}:three") == (
        f"task.dataset.loader: {m}:three must return (x_train, y_train, x_val, y_val), a dict "
        "with those keys, or (train_ds, val_ds) tf.data datasets, got a tuple of 3 (int, int, int)"
    )
    assert message(f"{m}:no_val") == (
        f"task.dataset.loader: {m}:no_val returned a dict without x_val, y_val "
        "(it has x_train, y_train)"
    )
    assert message(f"{m}:mismatch") == (
        f"task.dataset.loader: {m}:mismatch: x_train has 3 samples but y_train has 2"
    )


# --- tf.data ----------------------------------------------------------------------------------


def test_make_pipeline_resizes_preprocesses_and_batches() -> None:
    x = np.stack([np.full((4, 4, 3), i / 10, np.float32) for i in range(5)])
    y = np.arange(5, dtype=np.int32)
    ds = make_pipeline(x, y, 2, preprocess=lambda a: a * 2 - 1, image_size=(8, 6))
    batches = [(xb.numpy(), yb.numpy()) for xb, yb in ds]
    assert [b[0].shape for b in batches] == [(2, 8, 6, 3), (2, 8, 6, 3), (1, 8, 6, 3)]
    assert np.concatenate([b[1] for b in batches]).tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(batches[2][0], 4 / 10 * 2 - 1, atol=1e-6)

    def order(seed: int) -> list[int]:
        return [int(v) for _, yb in make_pipeline(x, y, 5, shuffle_seed=seed) for v in yb]

    assert sorted(order(3)) == [0, 1, 2, 3, 4] and order(3) == order(3)
    with pytest.raises(ValueError, match=r"^x has 5 samples but y has 4$"):
        make_pipeline(x, y[:4], 2)


def test_module_keeps_tensorflow_out_of_import() -> None:
    import subprocess

    code = (
        "import sys, tbxsweep.trial.datasets, tbxsweep.trial.backbones; "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
    assert datasets.KERAS_DATASETS == ("cifar10", "cifar100", "fashion_mnist", "mnist")
