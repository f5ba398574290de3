"""Accuracy of a model on labelled arrays: overall, per class, and the confusion matrix."""

from __future__ import annotations

import numpy as np
import torch

from bnncl.data import LabelledArrays
from bnncl.models import normalize_tensor


@torch.no_grad()
def predict(model: torch.nn.Module, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Predicted class of every image in ``x`` (uint8 NHWC); the model is put in eval mode."""
    model.eval()
    out = [model(normalize_tensor(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])))).argmax(1)
           for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


def accuracy_report(y_true: np.ndarray, y_pred: np.ndarray, class_names) -> dict:
    """Overall accuracy, per-class accuracy (classes present in ``y_true``), confusion matrix [true][pred]."""
    k = len(class_names)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    per_class = {}
    for j, name in enumerate(class_names):
        n = int(confusion[j].sum())
        if n:
            per_class[name] = {"accuracy": confusion[j, j] / n, "n": n}
    return {
        "n": int(len(y_true)),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


def evaluate(model: torch.nn.Module, data: LabelledArrays, batch_size: int = 500) -> dict:
    return {"dataset": data.name, **accuracy_report(data.y, predict(model, data.x, batch_size), data.class_names)}
