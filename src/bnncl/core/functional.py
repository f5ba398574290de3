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


def normalize_images(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 NHWC in [-1, 1]: the device's input map, the same arithmetic as the torch side's
    ``bnncl.models.normalize_tensor``."""
    return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def avgpool_reference(x: np.ndarray, stride: int) -> np.ndarray:
    """x (N, H, W, C) -> (N, ceil(H/s), ceil(W/s), C): the mean of each s x s window's pixels inside the image, in
    the device kernel's order (the pixels summed row by row in float32, then one division by their count). The
    device's pooling and the hand-written backward's (``bnncl.core.backprop.avgpool2``) both are this."""
    n, h, w, c = x.shape
    ho, wo = -(-h // stride), -(-w // stride)
    out = np.empty((n, ho, wo, c), np.float32)
    for i in range(ho):
        for j in range(wo):
            rows, cols = range(i * stride, min(h, (i + 1) * stride)), range(j * stride, min(w, (j + 1) * stride))
            acc = np.zeros((n, c), np.float32)
            for y in rows:
                for xx in cols:
                    acc += x[:, y, xx]
            out[:, i, j] = acc / np.float32(len(rows) * len(cols))
    return out
