"""`base_model: pretrain`: the source task, trained once per sweep and cached by its key.

The architecture is the digits CNN for digits, the classic CNN (Conv2D 32 -> MaxPool ->
Conv2D 64 -> MaxPool -> Flatten -> Dense 64, then a softmax head) for any other images, or
the spec's `task.pretrain.builder`. One worker pretrains it (under a file lock, so a second
orchestrator on the same output directory waits instead of training it twice) and logs
the run `pretrain` next to the trials: its loss and accuracy curves under the same tags as
the trials', its summary and its graph.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tbxsweep.jobs import TaskInfo
from tbxsweep.spec import TaskSpec

# The classic CNN's weighted layers, bottom to top; finetune_depth counts from the top.
CLASSIC_WEIGHTED_LAYERS = ("conv1", "conv2", "dense")
DIGITS_WEIGHTED_LAYERS = ("conv1", "conv2", "conv3", "dense")
# Bumped whenever a built-in architecture or the pretraining recipe changes: old cached
# bases are then not reused.
ARCH_VERSION = 2
PRETRAIN_RUN = "pretrain"


def architecture(task: TaskSpec) -> str:
    """'digits' (the digits CNN), 'classic' (the classic CNN) or the builder's reference."""
    if task.pretrain.builder is not None:
        return task.pretrain.builder
    return "digits" if task.pretrain_dataset == "digits" else "classic"


def pretrain_key(task: TaskSpec) -> str | None:
    """A hash of everything that shapes the pretrained base (its cache file name); None
    when the task does not pretrain."""
    if task.train is not None or task.base_kind != "pretrain":
        return None
    ds = task.pretrain_dataset
    cfg = {
        "arch": ARCH_VERSION,
        "architecture": architecture(task),
        "dataset": ds if isinstance(ds, str) else ds.model_dump(mode="json"),
        "dataset_file": _file_stamp(ds),
        "classes": task.pretrain_classes(None),
        "target_classes": task.classes,  # the complement of these pretrains by default
        "epochs": task.pretrain_epochs,
        "batch_size": task.pretrain.batch_size,
        "learning_rate": task.pretrain.learning_rate,
        "seed": task.seed,
        "val_split": task.val_split,
        "test_split": task.test_split,
        "subset": task.subset,
        "input_shape": task.input_shape,
        "keras_home": os.environ.get("KERAS_HOME") if isinstance(ds, str) else None,
    }
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]


def pretrain_info(task: TaskSpec) -> TaskInfo | None:
    """The task's info without TensorFlow for a built-in architecture; None for a builder
    (a worker builds it to count its layers)."""
    from tbxsweep.trial.datasets import KERAS_DATASETS, check_keras_cache

    names = {d for d in (task.dataset, task.pretrain_dataset) if isinstance(d, str)}
    for ds in names & set(KERAS_DATASETS):
        check_keras_cache(ds)  # missing files: said before the sweep writes anything
    arch = architecture(task)
    if arch not in ("digits", "classic"):
        return None
    n = len(DIGITS_WEIGHTED_LAYERS if arch == "digits" else CLASSIC_WEIGHTED_LAYERS)
    key = pretrain_key(task)
    default = task.classes is None and task.pretrain.classes is None
    if arch == "digits" and task.dataset == "digits" and default:  # the demo's words
        return TaskInfo(
            depth_max=n,
            base_cache_key=key,
            description=f"digits 5-9, base CNN pretrained on digits 0-4 ({n} weighted layers)",
        )
    target = _classes_label(task.dataset, task.finetune_classes(None))
    source = _classes_label(task.pretrain_dataset, task.pretrain_classes(None))
    name = "base CNN" if arch == "digits" else "classic CNN"
    return TaskInfo(
        depth_max=n,
        base_cache_key=key,
        description=f"{target}, {name} pretrained on {source} ({n} weighted layers)",
    )


def _classes_label(ds: Any, classes: tuple[int, ...] | None) -> str:
    name = ds if isinstance(ds, str) else next(iter(ds.model_dump().values()))
    if classes is None:
        return f"{name}" if isinstance(ds, str) else f"{name} (all classes)"
    return f"{name} classes {ranges(classes)}"


def ranges(classes: tuple[int, ...]) -> str:
    """(0, 1, 2, 4) -> '0-2, 4'."""
    parts: list[str] = []
    start = prev = classes[0]
    for c in (*classes[1:], None):
        if c is not None and c == prev + 1:
            prev = c
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if c is not None:
            start = prev = c
    return ", ".join(parts)


def build_classic(input_shape: tuple[int, int, int]) -> Any:
    """The classic CNN without its last layer (the head): images -> 64 features."""
    import keras
    from keras import layers

    inp = keras.Input(input_shape, name="image")
    x = layers.Conv2D(32, 3, activation="relu", name="conv1")(inp)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, activation="relu", name="dense")(x)
    return keras.Model(inp, x, name="classic_cnn")


def build_architecture(task: TaskSpec, input_shape: tuple[int, int, int]) -> Any:
    """The untrained base (images -> features) that pretraining starts from."""
    arch = architecture(task)
    if arch == "digits":
        from tbxsweep.trial._digits import build_base

        return build_base()
    if arch == "classic":
        return build_classic(input_shape)
    from tbxsweep.trial import backbones

    return backbones.load_backbone("builder", input_shape=input_shape, builder=arch)


def ensure_pretrained(path: Path, task: TaskSpec, run_dir: Path | None = None) -> None:
    """Pretrain the base into `path` unless it is there; safe across processes.

    Args:
        path: the cached base (`cache/base-<key>.keras`).
        task: the spec's task section (`configure(task)` must have run).
        run_dir: the TensorBoard run `pretrain`; None logs nothing.
    """
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return
        base = _train(task, run_dir)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.keras")
        base.save(tmp)
        os.replace(tmp, path)


def _train(task: TaskSpec, run_dir: Path | None) -> Any:
    import keras

    from tbxsweep.trial._data import load_source_data
    from tbxsweep.trial.datasets import make_pipeline

    keras.utils.set_random_seed(task.seed)
    data = load_source_data(task)
    assert data.arrays is not None
    shape = task.input_shape or data.image_shape
    base = build_architecture(task, shape)
    x = base.output
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D(name="pretrain_pool")(x)
    out = keras.layers.Dense(data.n_classes, activation="softmax", name="pretrain_head")(x)
    model = keras.Model(base.input, out, name="pretrain")
    model.compile(
        optimizer=keras.optimizers.Adam(task.pretrain.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    x_tr, y_tr, x_val, y_val = data.arrays
    size = (int(shape[0]), int(shape[1]))
    train = make_pipeline(
        x_tr, y_tr, task.pretrain.batch_size, image_size=size, shuffle_seed=task.seed
    )
    val = make_pipeline(x_val, y_val, 256, image_size=size)
    logger = None
    callbacks: list[Any] = []
    if run_dir is not None:
        from tbxsweep.tblog import TrialLogger, log_graph, log_samples

        logger = TrialLogger(run_dir)
        logger.text("pretrain/data", data.label)
        logger.text("model/summary", _summary(model))
        log_graph(logger, model, tuple(shape))
        log_samples(logger, "data/pretrain_samples", x_tr, y_tr, list(data.class_names))
        callbacks.append(_EpochLog(logger))
    try:
        model.fit(
            train,
            epochs=task.pretrain_epochs,
            validation_data=val,
            callbacks=callbacks,
            shuffle=False,  # the pipeline shuffles
            verbose=0,
        )
    finally:
        if logger is not None:
            logger.close()
    return base


def _summary(model: Any) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda s, *a, **k: lines.append(s))
    return "    " + "\n    ".join("\n".join(lines).splitlines())


def _EpochLog(logger: Any) -> Any:
    import keras

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logger.scalars(epoch + 1, {k: float(v) for k, v in (logs or {}).items()})

    return EpochLog()


def _file_stamp(ds: Any) -> Any:
    """A local dataset file's size and mtime: a changed file is pretrained on again."""
    path = getattr(ds, "npz", None) or getattr(ds, "images", None)
    if path is None:
        return None
    try:
        st = Path(path).expanduser().stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]
