"""Float kernels: the stem convolution (:func:`conv2d`) and average pooling (:func:`avgpool`), each the C runtime's
kernel (:mod:`._native`) beside its NumPy reference, in one fixed order of float32 operations; the NumPy-only
:func:`sign_conv_float` (the float path of a binary conv, exact) and :func:`global_avgpool` (one fixed order,
written out)."""

from __future__ import annotations

import numpy as np

from bnncl.device.kernels import _native

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


def conv2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, stride: int = 1, pad: int = 1) -> np.ndarray:
    """Float conv with zero padding: x (N, H, W, Cin) float32, w (Cout, kh, kw, Cin), bias (Cout,) (C:
    bnn_conv2d_f32, :func:`conv2d_reference`'s order; the images split over the threads)."""
    cout, kh, kw, cin = w.shape
    if x.ndim != 4 or x.shape[-1] != cin:
        raise ValueError(f"conv2d: input {x.shape} does not have {cin} channels last")
    if bias is not None and np.shape(bias) != (cout,):
        raise ValueError(f"conv2d: bias has shape {np.shape(bias)}, expected ({cout},)")
    if kh < 1 or kw < 1 or stride < 1 or pad < 0:
        raise ValueError(f"conv2d: a {kh}x{kw} kernel, stride {stride} and padding {pad} do not make a convolution")
    stride, pad = int(stride), int(pad)
    n, h, wd, _ = x.shape
    out = np.empty((n, _native.out_size(h, kh, stride, pad), _native.out_size(wd, kw, stride, pad), cout), np.float32)
    if out.size == 0:
        return out
    x = np.ascontiguousarray(x, dtype=np.float32)
    wt = np.ascontiguousarray(np.transpose(w, (1, 2, 3, 0)), dtype=np.float32)  # (kh, kw, Cin, Cout): C's layout
    bias = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)  # None: NULL, zeros
    kernel, w_at, bias_at = _native.lib().bnn_conv2d_f32, _native.at(wt), _native.at(bias)
    _native.split("conv2d", n, out.size * kh * kw * cin,
                  lambda a, b: kernel(_native.at(x, a), _native.Dims(b - a, h, wd, cin), w_at, kh, kw, cout, bias_at,
                                      stride, pad, _native.at(out, a)))
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


def avgpool(x: np.ndarray, stride: int) -> np.ndarray:
    """s x s average pooling, ceil mode, over the pixels inside the image: x (N, H, W, C) -> (N, ceil(H / s),
    ceil(W / s), C) float32 (C: bnn_avgpool_f32, :func:`bnncl.core.functional.avgpool_reference`'s order; the images
    split over the threads)."""
    n, h, w, c = x.shape
    if stride < 1:
        raise ValueError(f"avgpool: stride {stride} is not a positive whole number")
    stride = int(stride)
    out = np.empty((n, -(-h // stride), -(-w // stride), c), np.float32)
    if out.size == 0:
        return out
    x = np.ascontiguousarray(x, dtype=np.float32)
    kernel = _native.lib().bnn_avgpool_f32
    _native.split("avgpool", n, x.size,
                  lambda a, b: kernel(_native.at(x, a), _native.Dims(b - a, h, w, c), stride, _native.at(out, a)))
    return out
