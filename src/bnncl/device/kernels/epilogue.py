"""The block epilogue (:func:`block_epilogue`): folded BatchNorm, the shortcut, RPReLU and the next layer's threshold
bits in one pass over a binary conv's output, beside its NumPy reference in the same order of float32 operations."""

from __future__ import annotations

import numba
import numpy as np

from bnncl.device.bitpack import words_for
from bnncl.device.kernels.binary import _pack_row, pack_below_reference

# -- block epilogue: folded BN + shortcut + RPReLU, then the next layer's threshold ---------------------------------

def block_epilogue_reference(dot, mult, bias, shortcut, shift_in, slope, shift_out, threshold=None, want_real=True):
    """``z = mult * dot + bias + shortcut`` (shortcut channels tiled to Cout), then RPReLU
    ``prelu(z + shift_in, slope) + shift_out``. Returns ``(real or None, bits of real < threshold or None)``."""
    reps = dot.shape[-1] // shortcut.shape[-1]
    z = (mult * dot.astype(np.float32) + bias + np.tile(shortcut, (1, 1, 1, reps))).astype(np.float32) + shift_in
    z = (np.where(z >= 0, z, z * slope) + shift_out).astype(np.float32)
    return (z if want_real else None), (pack_below_reference(z, threshold) if threshold is not None else None)


@numba.njit(parallel=True, cache=True)
def _block_epilogue(dot, mult, bias, sc, shift_in, slope, shift_out, threshold, real, bits, want_real, want_bits):
    n, h, w, c = dot.shape
    cs = sc.shape[3]
    reps = c // cs
    for r in numba.prange(n * h):
        b = r // h
        y = r % h
        z = np.empty(c, np.float32)
        for xx in range(w):
            for k in range(reps):  # output channel k * cs + j reads shortcut channel j (channel repetition)
                for j in range(cs):
                    co = k * cs + j
                    v = mult[co] * np.float32(dot[b, y, xx, co]) + bias[co] + sc[b, y, xx, j] + shift_in[co]
                    if v < 0:
                        v = v * slope[co]
                    z[co] = v + shift_out[co]
            if want_real:
                real[b, y, xx] = z
            if want_bits:
                _pack_row(z, threshold, bits[b, y, xx])


def block_epilogue(dot, mult, bias, shortcut, shift_in, slope, shift_out, threshold=None, want_real=True):
    """The numba form of :func:`block_epilogue_reference` (one pass over the conv output)."""
    n, h, w, c = dot.shape
    if shortcut.shape[:3] != dot.shape[:3] or shortcut.shape[-1] == 0 or c % shortcut.shape[-1]:
        raise ValueError(f"shortcut {shortcut.shape} does not fit conv output {dot.shape}")
    for what, v in (("mult", mult), ("bias", bias), ("shift_in", shift_in), ("slope", slope), ("shift_out", shift_out),
                    ("threshold", threshold)):
        if v is not None and np.shape(v) != (c,):
            raise ValueError(f"block_epilogue: {what} has shape {np.shape(v)}, expected ({c},)")
    real = np.empty((n, h, w, c) if want_real else (0, 1, 1, 1), np.float32)
    want_bits = threshold is not None
    bits = np.empty((n, h, w, words_for(c)) if want_bits else (0, 1, 1, 1), np.uint64)
    thr = np.ascontiguousarray(threshold if want_bits else np.zeros(c), dtype=np.float32)
    f32 = lambda v: np.ascontiguousarray(v, dtype=np.float32)  # noqa: E731
    _block_epilogue(np.ascontiguousarray(dot), f32(mult), f32(bias), f32(shortcut), f32(shift_in), f32(slope),
                    f32(shift_out), thr, real, bits, want_real, want_bits)
    return (real if want_real else None), (bits if want_bits else None)


def shortcut_affine(dot: np.ndarray, mult: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The binary shortcut's folded BN (:class:`bnncl.device.ops.Block`): ``mult * dot + bias`` in float32 in the
    epilogue's order (the int32 dot converted to float32, exact below 2^24; the product rounded, then the sum), the
    same on both backends and in C (no float64, which a Cortex-M4F does in software)."""
    z = np.asarray(dot).astype(np.float32) * np.asarray(mult, np.float32)
    z += np.asarray(bias, np.float32)
    return z
