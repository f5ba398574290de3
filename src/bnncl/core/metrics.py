"""Continual-learning metrics from the accuracy matrix (NumPy only).

``matrix[i, j]`` is the accuracy on test patterns of class ``j`` after experience ``i`` (NaN where class ``j`` has no
test pattern). ``first_seen[j]`` is the experience where class ``j`` was first trained (-1 if never).
"""

from __future__ import annotations

import numpy as np


def accuracy_matrix(per_class_after_each: list[np.ndarray]) -> np.ndarray:
    return np.vstack([np.asarray(r, dtype=np.float64) for r in per_class_after_each])


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    n = np.bincount(y_true, minlength=num_classes).astype(np.float64)
    hit = np.bincount(y_true[y_true == y_pred], minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, hit / n, np.nan)


def forgetting(matrix: np.ndarray, first_seen: np.ndarray) -> float:
    """Average forgetting: for each class learned before the last experience, the drop from its best accuracy after
    it was learned (before the end) to its final accuracy; averaged over those classes. 0 if there are none."""
    last = len(matrix) - 1
    drops = []
    for j, t in enumerate(first_seen):
        if 0 <= t < last and not np.isnan(matrix[-1, j]):
            drops.append(np.nanmax(matrix[t:last, j]) - matrix[-1, j])
    return float(np.mean(drops)) if drops else 0.0


def backward_transfer(matrix: np.ndarray, first_seen: np.ndarray) -> float:
    """BWT: mean over classes learned before the last experience of (final accuracy - accuracy right after learning)."""
    last = len(matrix) - 1
    diffs = [matrix[-1, j] - matrix[t, j] for j, t in enumerate(first_seen)
             if 0 <= t < last and not np.isnan(matrix[-1, j])]
    return float(np.mean(diffs)) if diffs else 0.0


def first_seen(classes_per_experience: list[list[int]], num_classes: int) -> np.ndarray:
    out = np.full(num_classes, -1, np.int64)
    for i, classes in enumerate(classes_per_experience):
        for c in classes:
            if out[c] < 0:
                out[c] = i
    return out
