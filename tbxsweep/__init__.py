"""tbxsweep: hyperparameter sweeps for fine-tuning Keras models, compared in TensorBoard."""

from __future__ import annotations

__version__ = "0.1.0"
