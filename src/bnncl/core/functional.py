"""Small NumPy functions both learning steps use (the simulation's hand-written one and the device's)."""

from __future__ import annotations

import numpy as np

F32 = np.float32


def sign(x):
    return np.where(x >= 0, F32(1), F32(-1))


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def onehot(y: np.ndarray, classes: int, dtype=F32) -> np.ndarray:
    out = np.zeros((len(y), classes), dtype)
    out[np.arange(len(y)), y] = 1
    return out


def nll(p: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy of probabilities ``p`` (N, classes) for labels ``y``."""
    return float(-np.log(np.maximum(p[np.arange(len(y)), y], 1e-30)).mean())
