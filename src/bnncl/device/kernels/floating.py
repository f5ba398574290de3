"""Float kernels: the stem convolution (:func:`conv2d`) and average pooling (:func:`avgpool`), each beside its NumPy
reference in one fixed order of float32 operations; the NumPy-only :func:`sign_conv_float` (the float path of a
binary conv, exact) and :func:`global_avgpool` (one fixed order, written out)."""

from __future__ import annotations

import numba
import numpy as np

from bnncl.device.kernels._common import _nine, _out_size, _tap

# -- float convolution (the stem; zero padding) ---------------------------------------------------------------------

def conv2d_reference(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, stride: int, pad: int) -> np.ndarray:
    """Float conv with zero padding in NumPy: x (N, H, W, Cin), w (Cout, kh, kw, Cin) -> (N, Ho, Wo, Cout) float32.

    The summation order is part of the contract, shared with :func:`conv2d`: per output value, for each input
    channel in turn the kh*kw taps are summed row by row (a padding tap adds ``0 * w``), and that partial sum is added
    to the running total, which starts at the bias. Every step is one float32 multiply or add, correctly rounded, so
    the result does not depend on the CPU, its vector width or how many images are in the call.
    """
    cout, kh, kw, cin = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else x
    # (N, Ho, Wo, Cin, kh, kw)
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    w = np.asarray(w, np.float32)
    out = np.empty(win.shape[:3] + (cout,), np.float32)
    out[...] = 0 if bias is None else np.asarray(bias, np.float32)
    partial, term = np.empty_like(out), np.empty_like(out)  # every step in place: no temporary per tap
    for ci in range(cin):
        for dy in range(kh):
            for dx in range(kw):
                tap = win[:, :, :, ci, dy, dx, None]
                if dy == 0 and dx == 0:
                    np.multiply(tap, w[:, dy, dx, ci], out=partial, dtype=np.float32)
                else:
                    np.multiply(tap, w[:, dy, dx, ci], out=term, dtype=np.float32)
                    partial += term
        out += partial
    return out


def sign_conv_float(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """The float path of a binary conv: ±1 x (N, H, W, Cin) and w (Cout, kh, kw, Cin), +1 padding, as im2col and one
    float32 matrix product (BLAS). Every partial sum is an integer of magnitude at most kh*kw*Cin < 2^24, which
    float32 holds exactly, so the result is exact whatever order BLAS sums in: it equals :func:`bconv`'s integers."""
    cout, kh, kw, cin = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=1.0) if pad else x
    # (N, Ho, Wo, Cin, kh, kw)
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    n, ho, wo = win.shape[:3]
    cols = np.ascontiguousarray(np.transpose(win, (0, 1, 2, 4, 5, 3))).reshape(n * ho * wo, kh * kw * cin)
    return (cols @ w.reshape(cout, -1).T).reshape(n, ho, wo, cout).astype(np.float32, copy=False)


@numba.njit(parallel=True, cache=True)
def _conv2d(x, wt, bias, stride, pad, out):
    # wt: (kh, kw, Cin, Cout); the innermost loop runs over Cout. conv2d_reference's order: per input channel the
    # taps summed row by row (padding taps add 0 * w), then added to the total. Plain indexing throughout: an array
    # view made inside a hot loop costs numba more than the arithmetic.
    n, h, wd, cin = x.shape
    kh, kw, _, cout = wt.shape
    _, ho, wo, _ = out.shape
    for r in numba.prange(n * ho):
        b = r // ho
        oy = r % ho
        acc = np.empty(cout, np.float32)
        partial = np.empty(cout, np.float32)
        for ox in range(wo):
            for co in range(cout):
                acc[co] = bias[co]
            for ci in range(cin):
                for dy in range(kh):
                    iy = oy * stride + dy - pad
                    for dx in range(kw):
                        ix = ox * stride + dx - pad
                        xv = _tap(x, b, iy, ix, ci, h, wd, np.float32(0))
                        for co in range(cout):
                            term = xv * wt[dy, dx, ci, co]
                            partial[co] = term if dy == 0 and dx == 0 else partial[co] + term
                for co in range(cout):
                    acc[co] += partial[co]
            for co in range(cout):
                out[b, oy, ox, co] = acc[co]


@numba.njit(parallel=True, cache=True)
def _conv3x3(x, wt, bias, stride, pad, out):
    # The stem's shape: the nine input values of a pixel are loaded once, then a single loop over Cout does all
    # nine multiply-adds per channel (one loop per pixel instead of nine: about twice as fast as _conv2d here).
    # The same order of float32 operations as conv2d_reference (LLVM keeps it: no fast-math, no fused multiply-add).
    n, h, wd, cin = x.shape
    cout = wt.shape[3]
    _, ho, wo, _ = out.shape
    for r in numba.prange(n * ho):
        b = r // ho
        oy = r % ho
        y0 = oy * stride - pad
        for ox in range(wo):
            x0 = ox * stride - pad
            for ci in range(cin):
                a0, a1, a2, a3, a4, a5, a6, a7, a8 = _nine(x, b, y0, x0, ci, h, wd, np.float32(0))  # zero padding
                for co in range(cout):
                    prev = bias[co] if ci == 0 else out[b, oy, ox, co]
                    out[b, oy, ox, co] = prev + (a0 * wt[0, 0, ci, co] + a1 * wt[0, 1, ci, co]
                                                 + a2 * wt[0, 2, ci, co] + a3 * wt[1, 0, ci, co]
                                                 + a4 * wt[1, 1, ci, co] + a5 * wt[1, 2, ci, co]
                                                 + a6 * wt[2, 0, ci, co] + a7 * wt[2, 1, ci, co]
                                                 + a8 * wt[2, 2, ci, co])


def conv2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, stride: int = 1, pad: int = 1) -> np.ndarray:
    """Float conv with zero padding: x (N, H, W, Cin) float32, w (Cout, kh, kw, Cin), bias (Cout,)."""
    cout, kh, kw, cin = w.shape
    if x.ndim != 4 or x.shape[-1] != cin:
        raise ValueError(f"conv2d: input {x.shape} does not have {cin} channels last")
    bias = np.zeros(cout, np.float32) if bias is None else bias
    if np.shape(bias) != (cout,):
        raise ValueError(f"conv2d: bias has shape {np.shape(bias)}, expected ({cout},)")
    n, h, wd, _ = x.shape
    out = np.empty((n, _out_size(h, kh, stride, pad), _out_size(wd, kw, stride, pad), cout), np.float32)
    wt = np.ascontiguousarray(np.transpose(w, (1, 2, 3, 0)), dtype=np.float32)
    kernel = _conv3x3 if (kh, kw) == (3, 3) else _conv2d
    kernel(np.ascontiguousarray(x, dtype=np.float32), wt, np.ascontiguousarray(bias, dtype=np.float32),
           np.int64(stride), np.int64(pad), out)
    return out


# -- 2x2 average pooling (ceil mode, average over the pixels inside the image) --------------------------------------

def global_avgpool(x: np.ndarray) -> np.ndarray:
    """x (N, H, W, C) -> (N, C) float32: each channel's mean, the pixels summed row by row, then divided by H*W.

    A fixed order (NumPy's own reductions pick theirs by array layout and CPU), so an image's features do not
    depend on the CPU or on the other images in the call."""
    n, h, w, c = x.shape
    flat = np.asarray(x, np.float32).reshape(n, h * w, c)
    acc = flat[:, 0].copy()
    for p in range(1, h * w):
        acc += flat[:, p]
    return acc / np.float32(h * w)


@numba.njit(parallel=True, cache=True)
def _avgpool(x, stride, out):
    n, h, w, c = x.shape
    _, ho, wo, _ = out.shape
    for r in numba.prange(n * ho):
        b = r // ho
        oy = r % ho
        y1 = min(h, (oy + 1) * stride)
        for ox in range(wo):
            x1 = min(w, (ox + 1) * stride)
            acc = np.zeros(c, np.float32)
            for iy in range(oy * stride, y1):
                for ix in range(ox * stride, x1):
                    for ch in range(c):
                        acc[ch] += x[b, iy, ix, ch]
            inv = np.float32((y1 - oy * stride) * (x1 - ox * stride))
            for ch in range(c):
                out[b, oy, ox, ch] = acc[ch] / inv


def avgpool(x: np.ndarray, stride: int) -> np.ndarray:
    n, h, w, c = x.shape
    out = np.empty((n, -(-h // stride), -(-w // stride), c), np.float32)
    _avgpool(np.ascontiguousarray(x, dtype=np.float32), np.int64(stride), out)
    return out
