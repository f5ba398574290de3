"""Small NumPy functions both learning steps use (the simulation's hand-written one and the device's)."""

from __future__ import annotations

import math

import numpy as np

F32 = np.float32

# exp in a fixed order of float64 operations (docs/method.md §5, "The float steps"): the C learner
# (runtime/src/bnn_learner.c) computes the same operations, so its softmax is bit for bit this one's on every CPU
# (NumPy's own exp picks a SIMD routine per CPU).
EXP_TERMS = tuple(1.0 / math.factorial(k) for k in range(12))  # Taylor coefficients 1/k!, k = 0..11
LOG2E = float.fromhex("0x1.71547652b82fep+0")
LN2_HI = float.fromhex("0x1.62e42fee00000p-1")  # ln 2 in two parts (fdlibm's): k * LN2_HI is exact for |k| < 2^11
LN2_LO = float.fromhex("0x1.a39ef35793c76p-33")
EXP_LOWEST = -160.0  # below it exp is 0 in float32 anyway: the argument is clamped there


def sign(x):
    return np.where(x >= 0, F32(1), F32(-1))


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def exp_fixed(x: np.ndarray) -> np.ndarray:
    """exp of float32 ``x`` (at most 88), float32: in float64, ``k = rint(x log2 e)``, ``r = (x - k LN2_HI) - k
    LN2_LO``, ``p`` = the Taylor polynomial of degree 11 by Horner's rule from the highest term, ``ldexp(p, k)``
    (exact), rounded once to float32. Relative error below 1e-13 before that rounding: the float32 result is exp's
    correctly rounded value but where exp lies within 1e-13 of a rounding boundary."""
    v = np.maximum(np.asarray(x, np.float64), EXP_LOWEST)
    k = np.rint(v * LOG2E)
    r = (v - k * LN2_HI) - k * LN2_LO
    p = np.full_like(r, EXP_TERMS[-1])
    for c in EXP_TERMS[-2::-1]:
        p *= r
        p += c
    return np.ldexp(p, k.astype(np.int32)).astype(np.float32)


def softmax_fixed(z: np.ndarray) -> np.ndarray:
    """The softmax of float32 logits (N, classes) in a fixed order of float32 operations, the device learner's (C's
    too): ``t = z - max(z)`` per row, ``e = exp_fixed(t)``, the row sum from the first class to the last,
    ``e / sum``."""
    z = np.asarray(z, np.float32)
    e = exp_fixed(z - z.max(axis=1, keepdims=True))
    total = e[:, 0].copy()
    for j in range(1, e.shape[1]):
        total += e[:, j]
    return e / total[:, None]


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
