"""An example `task.train` function for tbxsweep: a small Keras MLP on scikit-learn's digits.

Use it as `task.train: custom_train:train` with `examples/` on PYTHONPATH
(see sweeps/custom.yaml).
"""

from __future__ import annotations

from custom_train.train import train

__all__ = ["train"]
