"""The built-in task: scikit-learn's handwritten digits, pretrain on 0-4, fine-tune on 5-9."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

# The base CNN's weighted layers, bottom to top; finetune_depth counts from the top.
BASE_WEIGHTED_LAYERS = ("conv1", "conv2", "conv3", "dense")
ARCH_VERSION = 1
N_CLASSES = 5
SPLIT_SEED = 0
VAL_FRACTION = 0.3

_data_cache: dict[str, Any] = {}
_base_cache: dict[str, Any] = {}


def base_key(pretrain_epochs: int, seed: int) -> str:
    """A hash of everything the pretrained base depends on: its cache file name."""
    cfg = {
        "arch": ARCH_VERSION,
        "dataset": "digits",
        "classes": [0, 1, 2, 3, 4],
        "epochs": pretrain_epochs,
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]


def load_split(digits: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A fixed, stratified train/validation split of the given digit classes (labels 0..n-1)."""
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
    """Pretrain the base on digits 0-4 unless `path` exists; safe across processes."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return
        import keras

        keras.utils.set_random_seed(seed)
        x_tr, y_tr, x_val, y_val = load_split((0, 1, 2, 3, 4))
        base = build_base()
        out = keras.layers.Dense(N_CLASSES, activation="softmax", name="pretrain_head")(base.output)
        model = keras.Model(base.input, out)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        model.fit(
            x_tr,
            y_tr,
            batch_size=32,
            epochs=pretrain_epochs,
            validation_data=(x_val, y_val),
            verbose=0,
        )
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.keras")
        base.save(tmp)
        os.replace(tmp, path)


def load_base(path: Path) -> Any:
    """The pretrained base, loaded once per worker process."""
    key = str(path)
    if key not in _base_cache:
        import keras

        _base_cache[key] = keras.models.load_model(path, compile=False)
    return _base_cache[key]
