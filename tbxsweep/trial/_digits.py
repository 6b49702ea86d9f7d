"""The built-in task: scikit-learn's handwritten digits, pretrain on 0-4, fine-tune on 5-9."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# The base CNN's weighted layers, bottom to top; finetune_depth counts from the top.
BASE_WEIGHTED_LAYERS = ("conv1", "conv2", "conv3", "dense")
SPLIT_SEED = 0
VAL_FRACTION = 0.3

_data_cache: dict[Any, Any] = {}
_base_cache: dict[str, Any] = {}


def base_key(pretrain_epochs: int, seed: int) -> str:
    """The cache key of the default digits base (`tbxsweep.trial._pretrain.pretrain_key`)."""
    from tbxsweep.trial._pretrain import pretrain_key

    key = pretrain_key(_default_task(pretrain_epochs, seed))
    assert key is not None
    return key


def _default_task(pretrain_epochs: int, seed: int) -> Any:
    from tbxsweep.spec import TaskSpec

    return TaskSpec(pretrain_epochs=pretrain_epochs, seed=seed)


def load_digits(
    val_split: float, test_split: float, seed: int
) -> tuple[Any, tuple[np.ndarray, np.ndarray]]:
    """All ten digits in three splits: `(DatasetArrays(train, val), (x_test, y_test))`.

    The test split (`test_split` of each digit, drawn with a fixed seed: the same in every
    sweep) is held out first; validation is `val_split` of the rest, drawn with `seed`.
    Both are stratified by digit, so every subset of classes is split the same way.
    """
    key = ("three", val_split, test_split, seed)
    if key not in _data_cache:
        from sklearn.datasets import load_digits as sklearn_digits

        from tbxsweep.trial.datasets import stratified_split

        x, y = sklearn_digits(return_X_y=True)
        x = (x / 16.0).astype("float32").reshape(-1, 8, 8, 1)
        y = y.astype("int32")
        held = stratified_split(x, y, test_split, SPLIT_SEED, "task.test_split")
        arrays = stratified_split(held.x_train, held.y_train, val_split, seed, "task.val_split")
        _data_cache[key] = (arrays, (held.x_val, held.y_val))
    return _data_cache[key]


def load_split(digits: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The benchmarks' fixed two-way split of the given digits (labels 0..n-1); sweeps use
    `load_digits`' three splits."""
    key = ",".join(map(str, digits))
    if key not in _data_cache:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        x, y = load_digits(return_X_y=True)
        keep = np.isin(y, digits)
        x = (x[keep] / 16.0).astype("float32").reshape(-1, 8, 8, 1)
        y = np.searchsorted(np.array(sorted(digits)), y[keep]).astype("int32")
        _data_cache[key] = tuple(
            train_test_split(x, y, test_size=VAL_FRACTION, random_state=SPLIT_SEED, stratify=y)
        )
    x_tr, x_val, y_tr, y_val = _data_cache[key]
    return x_tr, y_tr, x_val, y_val


def build_base() -> Any:
    """The base CNN (without a head): conv-BN-ReLU x3 and a dense layer."""
    import keras
    from keras import layers

    inp = keras.Input((8, 8, 1), name="image")
    x = inp
    for name, filters in (("conv1", 32), ("conv2", 64)):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
        x = layers.BatchNormalization(name=f"bn{name[-1]}")(x)
        x = layers.ReLU(name=f"relu{name[-1]}")(x)
    x = layers.MaxPooling2D(name="pool")(x)
    x = layers.Conv2D(64, 3, padding="same", use_bias=False, name="conv3")(x)
    x = layers.BatchNormalization(name="bn3")(x)
    x = layers.ReLU(name="relu3")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(64, activation="relu", name="dense")(x)
    return keras.Model(inp, x, name="digits_base")


def ensure_pretrained(path: Path, pretrain_epochs: int, seed: int) -> None:
    """Pretrain the default digits base (0-4) into `path` unless it exists (benchmarks)."""
    from tbxsweep.trial._pretrain import ensure_pretrained as ensure

    ensure(path, _default_task(pretrain_epochs, seed))


def load_pretrained_cnn(path: Path) -> Any:
    """The pretrained base, loaded once per worker process."""
    key = str(path)
    if key not in _base_cache:
        import keras

        _base_cache[key] = keras.models.load_model(path, compile=False)
    return _base_cache[key]
