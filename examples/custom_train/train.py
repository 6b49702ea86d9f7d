"""The training function: what tbxsweep calls once per trial, in a worker process."""

from __future__ import annotations

from typing import Any

import numpy as np

from custom_train.data import load_digits_split

DEFAULTS: dict[str, Any] = {"learning_rate": 1e-3, "units": 64, "dropout": 0.2, "batch_size": 32}


def build_model(units: int, dropout: float, n_classes: int = 10) -> Any:
    """A two-layer MLP; Keras is imported here, in the worker, not at module import."""
    import keras

    return keras.Sequential(
        [
            keras.Input((64,), name="pixels"),
            keras.layers.Dense(units, activation="relu", name="hidden"),
            keras.layers.Dropout(dropout, name="dropout"),
            keras.layers.Dense(n_classes, activation="softmax", name="classes"),
        ],
        name="digits_mlp",
    )


def train(params: dict[str, Any], ctx: Any) -> float:
    """Train one configuration and report every epoch.

    Args:
        params: this trial's values of the spec's `search_space` (plain Python values);
            keys the search space does not have fall back to DEFAULTS.
        ctx: the trial's `tbxsweep.trial.TrialContext`: `ctx.report(epoch, metrics)`
            logs the metrics to TensorBoard, tracks the best value of `study.metric` and
            raises `TrialPruned` when the pruner stops the trial (let it propagate);
            `ctx.logger` writes more to this trial's run; `ctx.seed`, `ctx.epochs`,
            `ctx.run_dir`, `ctx.device` describe the run.

    Returns:
        The final value of the study metric (optional: without a return value the best
        value passed to ctx.report counts).
    """
    import keras
    from sklearn.metrics import f1_score

    p = {**DEFAULTS, **params}
    keras.utils.set_random_seed(ctx.seed)  # a different seed per trial (and per repeat)
    x_tr, y_tr, x_val, y_val = load_digits_split()
    model = build_model(int(p["units"]), float(p["dropout"]))
    model.compile(
        optimizer=keras.optimizers.Adam(float(p["learning_rate"])),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    # Shown in the leaderboard's trainable_params column and the HParams tab.
    ctx.trainable_params = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    ctx.logger.text("model/config", f"    {p}")

    f1 = 0.0
    for epoch in range(1, ctx.epochs + 1):
        history = model.fit(
            x_tr,
            y_tr,
            batch_size=int(p["batch_size"]),
            epochs=1,
            validation_data=(x_val, y_val),
            verbose=0,
        )
        metrics = {k: float(v[-1]) for k, v in history.history.items()}
        pred = model.predict(x_val, batch_size=512, verbose=0).argmax(axis=1)
        f1 = float(f1_score(y_val, pred, average="macro"))
        metrics["val_macro_f1"] = f1
        ctx.report(epoch, metrics)  # may raise TrialPruned: let it go
    return f1
