"""The built-in training function: fine-tune the pretrained base on digits 5-9."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tbxsweep.tblog import log_classification, log_histograms
from tbxsweep.trial._context import TrialContext
from tbxsweep.trial._digits import N_CLASSES, load_base, load_split

DEFAULTS = {"learning_rate": 1e-3, "batch_size": 32, "finetune_depth": 0}


def set_finetune_depth(base: Any, depth: int) -> list[str]:
    """Unfreeze the top `depth` weighted layers of `base`; BatchNorm always stays frozen.

    Returns the names of the layers left trainable.
    """
    weighted = [
        layer
        for layer in base.layers
        if layer.weights and layer.__class__.__name__ != "BatchNormalization"
    ]
    if depth > len(weighted):
        raise ValueError(f"finetune_depth={depth} but the base has {len(weighted)} weighted layers")
    unfrozen = {layer.name for layer in weighted[len(weighted) - depth :]} if depth else set()
    base.trainable = True
    for layer in base.layers:
        layer.trainable = layer.name in unfrozen
    return [layer.name for layer in weighted if layer.name in unfrozen]


def build_model(base_path: Path, depth: int) -> tuple[Any, list[str]]:
    import keras

    cached = load_base(base_path)
    base = keras.models.clone_model(cached)
    base.set_weights(cached.get_weights())
    trainable = set_finetune_depth(base, depth)
    inp = keras.Input(cached.input_shape[1:], name="image")
    # training=False keeps BatchNorm in inference mode even when its neighbours train.
    x = base(inp, training=False)
    out = keras.layers.Dense(N_CLASSES, activation="softmax", name="head")(x)
    return keras.Model(inp, out, name="finetune"), trainable


def model_summary(model: Any, trainable: list[str], depth: int) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda s, *a, **k: lines.append(s))
    head = f"finetune_depth={depth}: trainable base layers {trainable or 'none'} + new head"
    return head + "\n\n    " + "\n    ".join(lines)


def train(params: dict[str, Any], ctx: TrialContext, *, base_path: Path) -> None:
    """Fine-tune; reports every epoch through `ctx.report` (pruning, logs, best value)."""
    import keras

    p = {**DEFAULTS, **params}
    keras.utils.set_random_seed(ctx.seed)
    x_tr, y_tr, x_val, y_val = load_split((5, 6, 7, 8, 9))
    model, trainable = build_model(base_path, int(p["finetune_depth"]))
    ctx.trainable_params = int(sum(int(w.numpy().size) for w in model.trainable_weights))
    ctx.logger.text("model/summary", model_summary(model, trainable, int(p["finetune_depth"])))
    model.compile(
        optimizer=keras.optimizers.Adam(float(p["learning_rate"])),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    lr = float(p["learning_rate"])
    histograms = ctx.histograms

    class _Report(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.t0 = time.time()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = dict(logs or {})
            logs["learning_rate"] = lr
            logs["epoch_time_s"] = time.time() - self.t0
            logs["trainable_params"] = ctx.trainable_params
            if histograms:
                log_histograms(ctx.logger, self.model.trainable_weights, epoch + 1)
            ctx.report(epoch + 1, logs)

    try:
        model.fit(
            x_tr,
            y_tr,
            batch_size=int(p["batch_size"]),
            epochs=ctx.epochs,
            validation_data=(x_val, y_val),
            callbacks=[_Report()],
            verbose=0,
        )
    finally:
        if ctx.epochs_run:
            probs = model.predict(x_val, batch_size=256, verbose=0)
            log_classification(
                ctx.logger, y_val, probs, [str(d) for d in (5, 6, 7, 8, 9)], ctx.epochs_run
            )
    del model
    keras.backend.clear_session(free_memory=True) if _clear_accepts_free() else None


def _clear_accepts_free() -> bool:
    import inspect

    import keras

    return "free_memory" in inspect.signature(keras.backend.clear_session).parameters
