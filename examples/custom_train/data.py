"""The example's data: all ten classes of scikit-learn's digits, read once per process."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=1)
def load_digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_val, y_val): 8x8 images flattened to 64 floats in [0, 1].

    Cached, so a worker process that runs many trials reads the data once. The split is
    fixed (seed 0): every trial is scored on the same validation set.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_tr, x_val, y_tr, y_val = train_test_split(
        x, y.astype("int32"), test_size=0.25, random_state=0, stratify=y
    )
    return x_tr, y_tr, x_val, y_val
