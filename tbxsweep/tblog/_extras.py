"""What users look at beyond the table: confusion matrix, per-class precision/recall, PR curves,
weight histograms, and the sweep-level run (best so far, parameter importances)."""

from __future__ import annotations

import io
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
