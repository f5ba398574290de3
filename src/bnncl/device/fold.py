"""Folding of trained parameters into the device's inference form (NumPy only).

* BatchNorm in eval mode is ``x * a + b`` with ``a = gamma / sqrt(var + eps)``, ``b = beta - mean * a`` (computed in
  float32 in the same order as torch's CPU kernel, so the folded values match what torch multiplies by).
* A binary conv's output is ``alpha * dot`` (``alpha = mean|W|`` per output channel), so conv + BN is
  ``mult * dot + bias`` with ``mult = alpha * a``, ``bias = b``.
* ``sign(x + shift)`` is the threshold test ``x < -shift`` (exact in IEEE arithmetic): a binarizing shift folds into a
  per-channel threshold.
"""

from __future__ import annotations

import numpy as np

from bnncl.device.bitpack import pack_signs


def fold_batchnorm(gamma, beta, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    f32 = lambda v: np.asarray(v, np.float32)  # noqa: E731
    invstd = np.float32(1.0) / np.sqrt(f32(var) + np.float32(eps))
    a = invstd * f32(gamma)
    return a, f32(beta) - f32(mean) * a


def pack_conv_weights(latent: np.ndarray) -> np.ndarray:
    """Latent weights (Cout, Cin, kh, kw), as torch stores them -> their signs packed (Cout, kh, kw, words)."""
    return pack_signs(np.transpose(np.asarray(latent, np.float32), (0, 2, 3, 1)))


def fold_binary_conv_bn(alpha, gamma, beta, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """``mult, bias`` with ``BN(alpha * dot) = mult * dot + bias``."""
    a, b = fold_batchnorm(gamma, beta, mean, var, eps)
    return (np.asarray(alpha, np.float32) * a).astype(np.float32), b


def fold_conv_bn(weight, gamma, beta, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Float conv (Cout, Cin, kh, kw) followed by BN -> NHWC-ordered weights (Cout, kh, kw, Cin) scaled by ``a``,
    and the bias ``b``."""
    a, b = fold_batchnorm(gamma, beta, mean, var, eps)
    w = np.transpose(np.asarray(weight, np.float32), (0, 2, 3, 1)) * a[:, None, None, None]
    return np.ascontiguousarray(w, dtype=np.float32), b
