"""What users look at beyond the table: confusion matrix, per-class precision/recall, PR curves,
weight histograms, and the sweep-level run (best so far, parameter importances)."""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (y_true.astype(int), y_pred.astype(int)), 1)
    return cm


def confusion_image(cm: np.ndarray, class_names: list[str], cell: int = 40) -> np.ndarray:
    """Render a confusion matrix (rows: true class, columns: predicted) as an RGB image."""
    from PIL import Image, ImageDraw

    n = cm.shape[0]
    margin = cell
    img = Image.new("RGB", (margin + n * cell + 2, margin + n * cell + 2), "white")
    draw = ImageDraw.Draw(img)
    peak = max(int(cm.max()), 1)
    for i in range(n):
        draw.text((4, margin + i * cell + cell // 3), str(class_names[i])[:5], fill="black")
        draw.text((margin + i * cell + cell // 3, 4), str(class_names[i])[:5], fill="black")
        for j in range(n):
            shade = int(255 - 200 * cm[i, j] / peak)
            color = (shade, shade, 255) if i == j else (255, shade, shade)
            box = (
                margin + j * cell,
                margin + i * cell,
                margin + (j + 1) * cell,
                margin + (i + 1) * cell,
            )
            draw.rectangle(box, fill=color, outline="grey")
            draw.text((box[0] + 6, box[1] + cell // 3), str(int(cm[i, j])), fill="black")
    return np.asarray(img, dtype=np.uint8)


def log_classification(
    logger: Any, y_true: np.ndarray, probs: np.ndarray, class_names: list[str], step: int
) -> dict[str, float]:
    """Confusion-matrix image, per-class precision/recall scalars and PR curves."""
    n = probs.shape[1]
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, n)
    writer = logger.writer
    writer.add_image(
        "eval/confusion_matrix", confusion_image(cm, class_names), step, dataformats="HWC"
    )
    out: dict[str, float] = {}
    for i, name in enumerate(class_names):
        tp = float(cm[i, i])
        precision = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        recall = tp / cm[i, :].sum() if cm[i, :].sum() else 0.0
        out[f"class/{name}/precision"] = precision
        out[f"class/{name}/recall"] = recall
        writer.add_pr_curve(f"pr_curve/{name}", (y_true == i).astype(np.int32), probs[:, i], step)
    logger.scalars(step, out)
    return out


def log_histograms(logger: Any, weights: list[Any], step: int) -> None:
    for w in weights:
        name = getattr(w, "path", None) or getattr(w, "name", "weight")
        logger.writer.add_histogram(f"weights/{name}", np.asarray(w.numpy()), step)
    logger.flush()


def importances_text(importances: dict[str, float]) -> str:
    buf = io.StringIO()
    buf.write("| parameter | importance |\n|---|---|\n")
    for k, v in importances.items():
        buf.write(f"| {k} | {v:.3f} |\n")
    return buf.getvalue()


# -- the data and the model, as the walkthrough shows them ------------------------------------
SAMPLES_PER_CLASS = 8
MISCLASSIFIED_PER_CLASS = 3
_CELL = 64  # pixels per image in a grid (small images are scaled up, nearest neighbour)
_LABEL_W = 110


def image_grid(rows: list[tuple[str, list[tuple[np.ndarray, str]]]], cols: int) -> np.ndarray:
    """An RGB grid: one row per (row label, [(image, caption), ...]); images HWC in [0, 1].

    TensorBoard scales a grid down to its card's width: a wide one (more than 4 columns,
    like the data samples' 10) gets labels twice as large, in a label column twice as wide.
    """
    from PIL import Image, ImageDraw

    wide = cols > 4
    label_w = 2 * _LABEL_W if wide else _LABEL_W
    caption_h = 16 if any(c for _, items in rows for _, c in items) else 0
    cell_h = _CELL + caption_h
    width = label_w + cols * (_CELL + 4) + 4
    grid = Image.new("RGB", (width, max(1, len(rows)) * (cell_h + 4) + 4), "white")
    draw = ImageDraw.Draw(grid)
    label_font, caption_font = _font(32 if wide else 16), _font(12)
    for r, (label, items) in enumerate(rows):
        top = 4 + r * (cell_h + 4)
        label = _fit(draw, label, label_font, label_w - 8)
        draw.text((4, top + _CELL // (4 if wide else 3)), label, fill="black", font=label_font)
        for c, (img, caption) in enumerate(items[:cols]):
            left = label_w + c * (_CELL + 4)
            grid.paste(_tile(img), (left, top))
            if caption:
                caption = _fit(draw, caption, caption_font, _CELL)
                draw.text((left, top + _CELL + 1), caption, fill="firebrick", font=caption_font)
    return np.asarray(grid, dtype=np.uint8)


def _fit(draw: Any, text: str, font: Any, width: int) -> str:
    """`text` cut to what fits in `width` pixels."""
    while text and draw.textlength(text, font=font) > width:
        text = text[:-1]
    return text


def _font(size: int) -> Any:
    """Pillow's own font at `size` pixels (its fixed 10-pixel bitmap font before Pillow
    10.1, which cannot scale)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # an older Pillow, or one built without FreeType
        return ImageFont.load_default()


def _tile(img: np.ndarray) -> Any:
    from PIL import Image

    a = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[2] > 3:
        a = a[..., :3]
    pil = Image.fromarray((a * 255).round().astype(np.uint8))
    return pil.convert("RGB").resize((_CELL, _CELL), Image.Resampling.NEAREST)


def log_samples(
    logger: Any,
    tag: str,
    x: np.ndarray,
    y: np.ndarray,
    class_names: list[str] | tuple[str, ...],
    per_class: int = SAMPLES_PER_CLASS,
) -> None:
    """A grid of the first `per_class` images of every class, one row per class name."""
    rows = [
        (str(name), [(x[i], "") for i in np.flatnonzero(y == k)[:per_class]])
        for k, name in enumerate(class_names)
    ]
    logger.writer.add_image(tag, image_grid(rows, per_class), 0, dataformats="HWC")
    logger.flush()


def log_misclassified(
    logger: Any,
    x: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: list[str],
    step: int,
    per_class: int = MISCLASSIFIED_PER_CLASS,
) -> int:
    """Up to `per_class` misclassified images of each true class, captioned with the
    predicted class; returns how many are shown (none: nothing is written)."""
    wrong = y_true != y_pred
    rows = []
    for k, name in enumerate(class_names):
        idx = np.flatnonzero(wrong & (y_true == k))[:per_class]
        n_wrong = int(np.sum(wrong & (y_true == k)))
        items = [(x[i], f"as {class_names[int(y_pred[i])]}") for i in idx]
        rows.append((f"{name} ({n_wrong} wrong)", items))
    shown = sum(len(items) for _, items in rows)
    if shown:
        logger.writer.add_image(
            "eval/misclassified", image_grid(rows, per_class), step, dataformats="HWC"
        )
        logger.flush()
    return shown


_graphs: dict[tuple[Any, ...], bytes] = {}


def log_graph(
    logger: Any,
    model: Any,
    input_shape: tuple[int, ...],
    trainable: list[str] | None = None,
    cache_key: tuple[Any, ...] | None = None,
) -> bool:
    """The Keras model's forward graph in the GRAPHS tab of the logger's run.

    tensorboardX's add_graph traces PyTorch models only: the graph is traced with
    tf.function and its GraphDef written as the run's graph event (what Keras's own
    TensorBoard callback writes). With `trainable` (the base layers a trial trains),
    layers sit in name scopes `frozen/...` and `trainable/...`, where the model is a chain
    of single-input layers; other models are traced whole. Serialized graphs are kept per
    `cache_key` (what the worker's model is built from) and, for a chain, per `trainable`:
    traced once, written per trial (a model traced whole is one graph at every depth).
    Returns whether a graph was written.
    """
    from tensorboardX.proto.event_pb2 import Event

    data = None
    if cache_key is not None:
        data = _graphs.get(cache_key) or _graphs.get((*cache_key, tuple(trainable or ())))
    if data is None:
        try:
            data, chained = _trace(model, input_shape, trainable)
        except Exception:  # a graph is a picture: a model that will not trace shows none
            return False
        if cache_key is not None:
            _graphs[(*cache_key, tuple(trainable or ())) if chained else cache_key] = data
    logger.writer.file_writer.add_event(Event(graph_def=data, wall_time=time.time()))
    logger.flush()
    return True


def _trace(
    model: Any, input_shape: tuple[int, ...], trainable: list[str] | None
) -> tuple[bytes, bool]:
    """(the serialized graph, whether it was traced as a chain in frozen/trainable scopes)."""
    import tensorflow as tf

    spec = tf.TensorSpec((None, *input_shape), tf.float32, name="image")
    chain = _chain(model)
    if trainable is not None and chain is not None:
        # Fine-tuning unfreezes from the top: the layers below the lowest trainable one are
        # frozen (the head always trains). One scope each, entered once (a scope entered
        # again in a graph gets a new name: frozen_1, ...).
        first = next((i for i, layer in enumerate(chain) if layer.name in trainable), None)
        split = len(chain) - 1 if first is None else first

        def forward(x: Any) -> Any:
            for scope, part in (("frozen", chain[:split]), ("trainable", chain[split:])):
                if part:
                    with tf.name_scope(scope):
                        for layer in part:
                            x = layer(x, training=False)
            return x

        try:
            graph = tf.function(forward).get_concrete_function(spec).graph
            return graph.as_graph_def().SerializeToString(), True
        except Exception:
            pass  # not a chain after all (a layer with two inputs): the whole model
    fn = tf.function(lambda x: model(x, training=False))
    return fn.get_concrete_function(spec).graph.as_graph_def().SerializeToString(), False


def _chain(model: Any) -> list[Any] | None:
    """The model's layers in order, nested models flattened, input layers dropped; None
    when a layer has several inbound layers (not a chain)."""
    out: list[Any] = []
    for layer in getattr(model, "layers", []):
        if type(layer).__name__ == "InputLayer":
            continue
        if hasattr(layer, "layers"):
            inner = _chain(layer)
            if inner is None:
                return None
            out += inner
        else:
            out.append(layer)
    return out
