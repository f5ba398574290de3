"""The block epilogue (:func:`block_epilogue`): folded BatchNorm, the shortcut, RPReLU and the next layer's threshold
bits in one pass over a binary conv's output, the C runtime's kernel (:mod:`._native`) beside its NumPy reference in
the same order of float32 operations; :func:`shortcut_affine`, the binary shortcut's folded BN (NumPy)."""

from __future__ import annotations

import ctypes

import numpy as np

from bnncl.device.bitpack import words_for
from bnncl.device.kernels import _native
from bnncl.device.kernels.binary import pack_below_reference

# -- block epilogue: folded BN + shortcut + RPReLU, then the next layer's threshold ---------------------------------

EPILOGUE_VECTORS = tuple(name for name, _ in _native.EpilogueParams._fields_)  # mult, bias, ..., threshold

def block_epilogue_reference(dot, mult, bias, shortcut, shift_in, slope, shift_out, threshold=None, want_real=True):
    """``z = mult * dot + bias + shortcut`` (shortcut channels tiled to Cout), then RPReLU
    ``prelu(z + shift_in, slope) + shift_out``. Returns ``(real or None, bits of real < threshold or None)``."""
    reps = dot.shape[-1] // shortcut.shape[-1]
    z = (mult * dot.astype(np.float32) + bias + np.tile(shortcut, (1, 1, 1, reps))).astype(np.float32) + shift_in
    z = (np.where(z >= 0, z, z * slope) + shift_out).astype(np.float32)
    return (z if want_real else None), (pack_below_reference(z, threshold) if threshold is not None else None)


def block_epilogue(dot, mult, bias, shortcut, shift_in, slope, shift_out, threshold=None, want_real=True):
    """:func:`block_epilogue_reference` in one pass over the conv output (C: bnn_block_epilogue, the pixels split
    over the threads): ``dot`` (N, H, W, C), ``shortcut`` (N, H, W, Cs) with Cs dividing C."""
    if dot.ndim != 4:
        raise ValueError(f"block_epilogue: conv output {dot.shape} is not (N, H, W, C)")
    n, h, w, c = dot.shape
    if shortcut.ndim != 4 or shortcut.shape[:3] != dot.shape[:3] or shortcut.shape[-1] == 0 or c % shortcut.shape[-1]:
        raise ValueError(f"shortcut {shortcut.shape} does not fit conv output {dot.shape}")
    vectors = []  # in bnn_epilogue_params' order
    for what, v in zip(EPILOGUE_VECTORS, (mult, bias, shift_in, slope, shift_out, threshold)):
        if v is not None and np.shape(v) != (c,):
            raise ValueError(f"block_epilogue: {what} has shape {np.shape(v)}, expected ({c},)")
        vectors.append(None if v is None else np.ascontiguousarray(v, dtype=np.float32))
    real = np.empty((n, h, w, c), np.float32) if want_real else None
    bits = np.empty((n, h, w, words_for(c)), np.uint64) if threshold is not None else None
    pixels, cs = n * h * w, shortcut.shape[-1]
    if pixels * c == 0 or (real is None and bits is None):
        return real, bits
    params = ctypes.byref(_native.EpilogueParams(*map(_native.at, vectors)))  # threshold None: NULL, no bits
    dot = np.ascontiguousarray(dot, dtype=np.int32)
    sc = np.ascontiguousarray(shortcut, dtype=np.float32)
    kernel = _native.lib().bnn_block_epilogue
    _native.split("block_epilogue", pixels, pixels * c,
                  lambda a, b: kernel(_native.at(dot, a, pixels), b - a, c, params, _native.at(sc, a, pixels), cs,
                                      _native.at(real, a, pixels), _native.at(bits, a, pixels)))
    return real, bits


def shortcut_affine(dot: np.ndarray, mult: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The binary shortcut's folded BN (:class:`bnncl.device.ops.Block`): ``mult * dot + bias`` in float32 in the
    epilogue's order (the int32 dot converted to float32, exact below 2^24; the product rounded, then the sum), the
    same on both backends and in C (no float64, which a Cortex-M4F does in software)."""
    z = np.asarray(dot).astype(np.float32) * np.asarray(mult, np.float32)
    z += np.asarray(bias, np.float32)
    return z
