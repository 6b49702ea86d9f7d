"""The built-in training function: fine-tune the task's base model on the task's data."""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tbxsweep.paths import BEST_WEIGHTS
from tbxsweep.spec import TaskSpec
from tbxsweep.tblog import log_classification, log_graph, log_histograms, log_misclassified
from tbxsweep.trial import _cache, backbones
from tbxsweep.trial._base import Base, fresh_copy, load_base
from tbxsweep.trial._context import TrialContext
from tbxsweep.trial._data import TaskData, load_task_data
from tbxsweep.trial.datasets import make_pipeline

DEFAULTS = {"learning_rate": 1e-3, "batch_size": 32}
HEAD_LEARNING_RATE = 1e-3


def default_depth(base: Base, unit: str) -> int:
    """finetune_depth when the search space has none: all of a randomly initialised base,
    none of a pretrained one."""
    return backbones.max_depth(base.model, unit) if base.random_init else 0


def build_model(base: Base, data: TaskData) -> tuple[Any, Any]:
    """A fresh copy of the base with a new softmax head; returns (model, its base)."""
    import keras

    copy = fresh_copy(base)
    inp = keras.Input(base.input_shape, name="image")
    # training=False keeps BatchNorm in inference mode (and dropout off) inside the base,
    # whatever part of it is unfrozen.
    x = copy(inp, training=False)
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    elif len(x.shape) != 2:
        x = keras.layers.Flatten(name="flatten")(x)
    # float32 softmax: stable under mixed precision.
    out = keras.layers.Dense(data.n_classes, activation="softmax", dtype="float32", name="head")(x)
    return keras.Model(inp, out, name="finetune"), copy


def model_summary(model: Any, trainable: list[str], depth: int, unit: str, n_trained: int) -> str:
    """The model's summary for the trial's TensorBoard text tab, headed by what it trains.

    Keras's own trainable/non-trainable counts are replaced by the trial's: a reused model
    keeps every weight trainable and masks the frozen ones' updates (see `_Compiled`).
    """
    chunks: list[str] = []
    model.summary(print_fn=lambda s, *a, **k: chunks.append(s))
    lines = "\n".join(chunks).splitlines()
    counts = {
        " Trainable params:": n_trained,
        " Non-trainable params:": model.count_params() - n_trained,
    }
    for i, line in enumerate(lines):
        for label, n in counts.items():
            if line.startswith(label):
                lines[i] = f"{label} {n:,}"
    names = ", ".join(trainable) if trainable else "none"
    head = f"finetune_depth={depth} ({unit}s): trainable base layers: {names}; plus a new head"
    return head + "\n\n    " + "\n    ".join(lines)


def pipelines(data: TaskData, base: Base, batch_size: int, seed: int) -> tuple[Any, Any]:
    """(train, validation) tf.data pipelines: batched, resized, preprocessed."""
    if data.datasets is not None:
        return data.datasets  # the loader's own batches and preprocessing
    assert data.arrays is not None
    x_tr, y_tr, x_val, y_val = data.arrays
    size = base.input_shape[:2]
    train = make_pipeline(
        x_tr, y_tr, batch_size, preprocess=base.preprocess, image_size=size, shuffle_seed=seed
    )
    val = make_pipeline(
        x_val, y_val, max(batch_size, 256), preprocess=base.preprocess, image_size=size
    )
    return train, val


def train(
    params: dict[str, Any],
    ctx: TrialContext,
    *,
    task: TaskSpec,
    base_path: Path | None,
    keep_best: bool = False,
    weights_bar: float | None = None,
    cache_dir: Path | None = None,
    cache_depths: Sequence[int] = (),
) -> None:
    """Fine-tune; reports every epoch through `ctx.report` (pruning, logs, best value).

    With `keep_best`, a trial that trains to the end leaves its best epoch's weights in
    `best.weights.h5` (the sweep's test evaluation loads them), if its best value is beyond
    `weights_bar` (the trial the evaluation would read instead); with `ctx.keep_model`,
    that epoch's whole model in `best.keras` (`ctx.save_model`). With `task.head_epochs`,
    the head first trains alone (Adam, learning rate 1e-3, logged as head/...) before the
    base is unfrozen to `finetune_depth` for `task.epochs` epochs at the swept learning
    rate; only that second phase is reported to the study.

    With `cache_dir` (the sweep's `cache/`), that phase trains on the cached outputs of the
    frozen part of the base where the feature cache applies (`_cache`): `fitted`, the top
    of `model` that shares its layers, trains; `model` stays the full model throughout.
    A build also computes the cuts of `cache_depths` (the sweep's other depths).
    """
    import keras

    p = {**DEFAULTS, **params}
    data = load_task_data(task)
    base = load_base(task, data, base_path)
    keras.utils.set_random_seed(ctx.seed)
    unit = task.finetune_unit
    depth = int(p["finetune_depth"]) if "finetune_depth" in p else default_depth(base, unit)
    lr = float(p["learning_rate"])
    features = None
    if cache_dir is not None:
        features, ctx.cache_build_s = _cache.features_for(
            task, data, base, depth, cache_dir, cache_depths
        )
        ctx.feature_cache = features is not None
    cut = features is not None
    # The images' pipelines (building them copies the images into a tensor: 0.6 s for
    # 2,000 images of 96x96): not for a trial on the cache.
    train_ds = val_ds = None
    if not cut:
        train_ds, val_ds = pipelines(data, base, int(p["batch_size"]), ctx.seed)
    reused = (
        None
        if task.head_epochs
        else _reusable_model(base, data, task, depth, lr, ctx.seed, cut=cut)
    )
    if reused is not None:
        model, copy, trainable, weights, fitted = reused
    else:
        model, copy = build_model(base, data)
        _reset_head(model, ctx.seed)
        trainable = backbones.set_finetune_depth(copy, depth, unit)
        weights = model.trainable_weights
        fitted = _cache.top_model(model, copy, depth, unit) if cut else model
    ctx.trainable_params = backbones.param_count(weights)
    ctx.logger.text(
        "model/summary", model_summary(model, trainable, depth, unit, ctx.trainable_params)
    )
    log_graph(
        ctx.logger,
        model,
        base.input_shape,
        trainable,
        cache_key=(id(base.model), unit, data.n_classes),
    )
    resume = ctx.resume_state()
    fit_train, fit_val = train_ds, val_ds
    if features is not None:
        fit_train, fit_val = _cache.pipelines(features, data, int(p["batch_size"]), ctx.seed)
    if resume is not None:  # an interrupted trial's re-run: skip the epochs it finished
        model.load_weights(str(resume[1]))
        ctx.replay()
    if task.head_epochs and resume is None:
        # Pipelines of its own: the fine-tuning phase's shuffle then starts from its first
        # order, on images and on the cache alike (how many orders a fit draws from a
        # pipeline it is given is Keras's business).
        head_train, head_val = pipelines(data, base, int(p["batch_size"]), ctx.seed)
        backbones.set_finetune_depth(copy, 0, unit)
        _compile(model, HEAD_LEARNING_RATE, task)
        model.fit(
            head_train,
            epochs=task.head_epochs,
            validation_data=head_val,
            callbacks=[_head_callback(ctx)],
            shuffle=False,  # the pipeline shuffles
            verbose=0,
        )
        backbones.set_finetune_depth(copy, depth, unit)
    if reused is None:
        _compile(fitted, lr, task)
    report = _report_callback(
        ctx, lr, weights, keep_best or ctx.keep_model, save=model.save_weights
    )
    try:
        fitted.fit(
            fit_train,
            epochs=ctx.epochs,
            initial_epoch=resume[0] if resume is not None else 0,
            validation_data=fit_val,
            callbacks=[report],
            shuffle=False,
            verbose=0,
        )
    finally:
        if ctx.epochs_run:
            y_val, probs = _predict(fitted, data, fit_val)
            names = list(data.class_names)
            log_classification(ctx.logger, y_val, probs, names, ctx.epochs_run)
            if data.arrays is not None:
                predicted = probs.argmax(axis=1)
                x_val = data.arrays.x_val
                log_misclassified(ctx.logger, x_val, y_val, predicted, names, ctx.epochs_run)
    best = getattr(report, "best", None)
    if best is not None and best[0] == ctx.best_epoch:
        # The weights of the epoch the study ranks the trial by, not of the last epoch
        # (`fitted`'s: on the feature cache, the top of `model`, sharing its weights).
        fitted.set_weights(best[1])
        if keep_best and ctx.beats(weights_bar):
            tmp = ctx.run_dir / f".{BEST_WEIGHTS}"
            model.save_weights(str(tmp))
            os.replace(tmp, ctx.run_dir / BEST_WEIGHTS)
        if ctx.keep_model:  # best.keras: the same layers under a plain Adam (a reused
            # model's masked Adam cannot load without tbxsweep), built: loads without warnings
            kept = keras.Model(model.inputs, model.outputs, name=model.name)
            _compile(kept, lr, task, for_fit=False)
            kept.optimizer.build(kept.trainable_variables)
            ctx.save_model(kept, best[0])
    del model, copy, fitted
    _collect_garbage()


# -- reusing compiled models: what a warm worker saves per trial --------------------------
# A new Keras model per trial means tracing its train, test and predict functions again in
# the first epoch (about half a second for the digits CNN on a CPU core, far more than its
# steady epochs). A worker keeps its compiled models instead and, for each trial, restores
# the base's weights, draws the head's from the trial's seed and restores the optimizer's
# initial state: the same state a fresh model would start from, without the tracing.
#
# A worker keeps one model per fine-tune depth (up to six of a base under 5 million weights,
# else only the last one used: bigger models hold much memory), so each depth is
# traced once per worker. Where a trial's whole training is tiny (MASK_MAX_WORK, below),
# that tracing costs more than the training, and a worker meeting several depths pays it
# again for each: there one model serves every depth instead. All its weights but
# BatchNorm's stay trainable and the optimizer replaces each frozen weight's gradient by
# zero (`where`, not a multiplication: inf x 0 is NaN) from a 0/1 mask that the trial sets
# for its depth. Adam's moments start at zero, so a masked weight's update is exactly zero:
# it trains as a model frozen with `trainable=False` would, at the price of a backward pass
# through the whole base at every step. That price grows with the work, the tracing does
# not, so bigger tasks keep a model per depth.
#
# The masked model is exact only where the optimizer alone decides what trains, so it is
# not used (`_maskable`) for a base with weight regularizers (Keras adds the penalty of
# trainable weights only: a masked "frozen" weight's penalty would count in the loss) or
# under mixed precision (the loss-scale optimizer checks every gradient for inf before the
# mask applies, so a frozen weight's overflow would skip steps a frozen model takes).
#
# The work of a trial: base weights x training samples x epochs. The digits demo is
# 60,384 x 627 x 6 = 2.3e8; there (benchmarks/README.md) the masked model's epochs were
# about 0.035 s slower, 0.2 s a trial, where tracing a new depth costs about 0.65 s. At the
# limit, twice that work, the extra time per trial nears a trace's.
MASK_MAX_WORK = 5e8
GC_EVERY = 10


class _Compiled:
    """A compiled model kept by a worker, with what each fine-tune depth trains."""

    def __init__(
        self, base: Base, data: TaskData, task: TaskSpec, depths: list[int], cut: bool = False
    ) -> None:
        import keras

        # On the feature cache every depth's top model is a view of one full model.
        self.unit = task.finetune_unit if cut else None
        self.model, self.copy = _full_model(base, data) if cut else build_model(base, data)
        self.plans: dict[int, tuple[list[str], set[int]]] = {}
        for depth in depths:
            names = backbones.set_finetune_depth(self.copy, depth, task.finetune_unit)
            self.plans[depth] = (names, {id(w) for w in self.model.trainable_weights})
        masked = len(depths) > 1
        if masked:  # compile with everything trainable; the masks choose
            backbones.set_finetune_depth(self.copy, max(depths), task.finetune_unit)
        # What fit trains: the model, or on the feature cache its top above the cut
        # (one depth: the cut's tensors are its inputs).
        self.fitted = (
            _cache.top_model(self.model, self.copy, depths[0], task.finetune_unit)
            if cut
            else self.model
        )
        self.weights = list(self.fitted.trainable_weights)
        self.masks = (
            {id(w): keras.Variable(1.0, trainable=False, name="grad_mask") for w in self.weights}
            if masked
            else {}
        )
        _compile(self.fitted, HEAD_LEARNING_RATE, task, masks=self.masks)
        optimizer = self.fitted.optimizer
        optimizer.build(self.weights)
        self.initial = [(v, np.array(v)) for v in optimizer.variables if not _is_lr(v)]

    def prepare(self, depth: int, base_weights: list[Any], lr: float, seed: int) -> list[Any]:
        """Set up a trial at `depth`; returns the weights it trains."""
        _, ids = self.plans[depth]
        if self.unit is not None:  # the shared full model: this depth's layers are the
            # trainable ones (what Keras would read, should it trace this top model again)
            backbones.set_finetune_depth(self.copy, depth, self.unit)
        for key, mask in self.masks.items():
            mask.assign(1.0 if key in ids else 0.0)
        self.copy.set_weights(base_weights)
        _reset_head(self.model, seed)
        for v, value in self.initial:
            v.assign(value)
        self.fitted.optimizer.learning_rate = lr
        return [w for w in self.weights if id(w) in ids]


_compiled: OrderedDict[tuple[Any, ...], _Compiled] = OrderedDict()
_full: dict[tuple[int, int], tuple[Any, Any]] = {}
_base_weights: dict[int, list[Any]] = {}
_trials_run = 0


def _reusable_model(
    base: Base, data: TaskData, task: TaskSpec, depth: int, lr: float, seed: int, cut: bool
) -> tuple[Any, Any, list[str], list[Any], Any]:
    """(model, its base, the trainable layers' names, the trained weights, the model fit
    trains: `model` or, with `cut`, its top above the feature cache's cut) for a trial."""
    masked = not cut and small_enough_to_mask(base, data, task)
    key = (
        id(base.model),
        cut,
        None if masked else depth,
        task.finetune_unit,
        data.n_classes,
        task.jit_compile,
        task.mixed_precision,
    )
    entry = _compiled.get(key)
    if entry is None:
        top = backbones.max_depth(base.model, task.finetune_unit)
        entry = _Compiled(base, data, task, list(range(top + 1)) if masked else [depth], cut)
        _compiled[key] = entry
        while len(_compiled) > (1 if masked else _cache_size(base)):
            _compiled.popitem(last=False)
    _compiled.move_to_end(key)
    if id(base.model) not in _base_weights:
        _base_weights[id(base.model)] = base.model.get_weights()
    weights = _base_weights[id(base.model)]
    trained = entry.prepare(depth, weights, lr, seed)
    return entry.model, entry.copy, entry.plans[depth][0], trained, entry.fitted


def _full_model(base: Base, data: TaskData) -> tuple[Any, Any]:
    """The full model (and its base) that a worker's top models on the feature cache
    share: one per worker, not one per depth (building one clones the base, a second for
    MobileNetV2). Trials run one at a time, and each sets the weights and the trainable
    layers of its depth (`_Compiled.prepare`)."""
    key = (id(base.model), data.n_classes)
    if key not in _full:
        _full.clear()
        _full[key] = build_model(base, data)
    return _full[key]


def small_enough_to_mask(base: Base, data: TaskData, task: TaskSpec) -> bool:
    """Whether one masked model serves every depth of this task's trials (the note above
    `_Compiled`); the feature cache stays off for them too."""
    return _tiny(base, data, task) and _maskable(base, task)


def _cache_size(base: Base) -> int:
    """How many per-depth models a worker keeps: a few small ones, one big one."""
    return 6 if base.model.count_params() < 5_000_000 else 1


def _tiny(base: Base, data: TaskData, task: TaskSpec) -> bool:
    """Whether a trial's training is small enough for one masked model (MASK_MAX_WORK)."""
    if data.arrays is None:  # a loader's datasets: their size is unknown
        return False
    work = base.model.count_params() * len(data.arrays.y_train) * task.epochs
    return work <= MASK_MAX_WORK


def _maskable(base: Base, task: TaskSpec) -> bool:
    """Whether one masked model trains every depth exactly as a frozen model would: no
    weight regularizer in the base, no mixed precision (see the note above `_Compiled`)."""
    if task.mixed_precision:
        return False
    return all(getattr(w, "regularizer", None) is None for w in base.model.weights)


def _is_lr(variable: Any) -> bool:
    return "learning_rate" in (getattr(variable, "path", None) or variable.name)


def _reset_head(model: Any, seed: int) -> None:
    import keras

    head = model.get_layer("head")
    head.kernel.assign(keras.initializers.GlorotUniform(seed=seed)(tuple(head.kernel.shape)))
    head.bias.assign(keras.ops.zeros(tuple(head.bias.shape), dtype=head.bias.dtype))


def _collect_garbage() -> None:
    """A full collection is a third of a second: every GC_EVERY trials, not every trial."""
    import gc

    global _trials_run
    _trials_run += 1
    if _trials_run % GC_EVERY == 0:
        gc.collect()


def _compile(
    model: Any,
    lr: float,
    task: TaskSpec,
    masks: dict[int, Any] | None = None,
    for_fit: bool = True,
) -> None:
    """Compile `model`; `for_fit`: also build its metrics and loss now (see `_prebuild`)."""
    import keras

    model.compile(
        optimizer=_masked_adam(lr, masks) if masks else keras.optimizers.Adam(lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=task.jit_compile,
    )
    if for_fit:
        _prebuild(model)


def _prebuild(model: Any) -> None:
    """Build a compiled model's metrics and loss from its inputs' shapes, before its first
    fit. Without a distribution strategy Keras builds them inside the first trace of the
    train function, and a tf.function that creates variables in its first trace is traced
    a second time: 0.4 s for four MobileNetV2 blocks, once per model a worker compiles."""
    import keras

    x = [keras.KerasTensor(tuple(t.shape), dtype=t.dtype) for t in model.inputs]
    y = keras.KerasTensor((None,), dtype="int32")
    build = getattr(model, "_symbolic_build", None)  # Keras's own, private: where it is
    if build is not None:
        build(data_batch=(x[0] if len(x) == 1 else tuple(x), y, None))


def _masked_adam(lr: float, masks: dict[int, Any]) -> Any:
    """Adam that zeroes the gradient of each weight whose mask (`masks[id(weight)]`) is 0.

    `where`, not a product: an inf or NaN gradient times a zero mask is NaN, which Adam
    would carry into the frozen weight.
    """
    import keras

    class MaskedAdam(keras.optimizers.Adam):
        def apply(self, grads: Any, trainable_variables: Any = None) -> Any:
            if trainable_variables is not None:
                trainable_variables = list(trainable_variables)
                grads = [
                    g
                    if g is None
                    else keras.ops.where(masks[id(v)] > 0, g, keras.ops.zeros_like(g))
                    for g, v in zip(grads, trainable_variables, strict=True)
                ]
            return super().apply(grads, trainable_variables)

    return MaskedAdam(lr)


def _predict(model: Any, data: TaskData, val_ds: Any) -> tuple[np.ndarray, np.ndarray]:
    if data.arrays is not None:
        return data.arrays.y_val, np.asarray(model.predict(val_ds, verbose=0))
    ys, probs = [], []
    for x, y in val_ds:
        ys.append(np.asarray(y).reshape(-1))
        probs.append(np.asarray(model.predict_on_batch(x)))
    return np.concatenate(ys).astype(np.int32), np.concatenate(probs)


def _report_callback(
    ctx: TrialContext,
    lr: float,
    weights: list[Any],
    keep_best: bool = False,
    save: Any = None,
) -> Any:
    """A Keras callback that hands each epoch's logs to `ctx.report`; `weights` are the
    ones this trial trains (histograms). With `keep_best` it holds a copy of the best
    epoch's weights in memory as `.best` (epoch, weights): a copy per improvement is
    cheaper than a file per improvement. `save` writes the checkpoint's weights (the full
    model's, where the fitted model is its top on the feature cache)."""
    import keras

    class Report(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.t0 = time.time()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            values = {k: float(v) for k, v in (logs or {}).items()}
            values["learning_rate"] = lr
            values["epoch_time_s"] = time.time() - self.t0
            if ctx.trainable_params is not None:
                values["trainable_params"] = ctx.trainable_params
            if ctx.histograms:
                log_histograms(ctx.logger, weights, epoch + 1)
            before = ctx.best_epoch
            ctx.report(epoch + 1, values)
            if keep_best and ctx.best_epoch == epoch + 1 and before != epoch + 1:
                self.best = (epoch + 1, self.model.get_weights())
            if epoch + 1 < ctx.epochs:
                ctx.save_checkpoint(epoch + 1, save or self.model.save_weights)

    return Report()


def _head_callback(ctx: TrialContext) -> Any:
    """A Keras callback that logs the head-only phase as head/... (not reported to the study)."""
    import keras

    class HeadLog(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            ctx.logger.scalars(epoch + 1, {f"head/{k}": float(v) for k, v in (logs or {}).items()})

    return HeadLog()
