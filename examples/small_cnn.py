"""An example builder: Keras's old `cifar10_cnn` example, up to its 512-unit dense layer.

tbxsweep adds the softmax head. Use it with `examples/` on PYTHONPATH, either trained
from scratch (`task.base_model: {builder: small_cnn:build}`) or pretrained on a source
task (`base_model: pretrain` with `task.pretrain.builder: small_cnn:build`, e.g.
`--set task.pretrain.builder=small_cnn:build` on sweeps/cifar10.yaml, whose default is
the built-in classic CNN).
"""

from __future__ import annotations

from typing import Any


def build(input_shape: tuple[int, int, int]) -> Any:
    """Return a `keras.Model` from images (values in [0, 1]) to a feature vector.

    tbxsweep calls it once per worker process as `build(input_shape=(h, w, c))`, with the
    task's input shape, and clones the result for each trial. The model starts from random
    weights, so without `finetune_depth` in the search space every layer trains.

    There is no Dropout or BatchNormalization here on purpose: tbxsweep calls the base
    with `training=False` and keeps BatchNormalization frozen, so neither would do anything.
    """
    import keras
    from keras import layers

    inp = keras.Input(input_shape, name="image")
    x = inp
    for block, filters in ((1, 32), (2, 64)):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{block}a")(x)
        x = layers.Conv2D(filters, 3, activation="relu", name=f"conv{block}b")(x)
        x = layers.MaxPooling2D(name=f"pool{block}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, activation="relu", name="dense")(x)
    return keras.Model(inp, x, name="small_cnn")
