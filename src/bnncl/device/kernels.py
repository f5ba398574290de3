"""Device kernels: XNOR-popcount GEMM and convolution on packed signs, the float stem convolution, pooling, the
fused threshold/sign packing and the block epilogue. Each numba kernel has a plain NumPy reference beside it
(``*_reference``); tests hold the two equal.

Layout: activations are NHWC, float32 when real-valued and packed along channels (``bitpack``) when binary.

For K binary inputs packed in words, ``dot(a, w) = K - 2 * popcount(a xor w)``: the xor counts disagreements.
numba has no popcount function, so :func:`popcount64` is an intrinsic that emits LLVM's ``ctpop``. numba compiles
for the host CPU: the inner loops run over output channels (weights stored ``(kh, kw, words, Cout)``), so LLVM
vectorizes ``acc[co] += ctpop(x ^ w[co])``; with AVX-512 VPOPCNTDQ that is one ``vpopcntq`` per 8 words, without it
LLVM emits scalar ``popcnt`` (or a shuffle-based bit count on AVX2), which is several times slower per word.

Kernels are compiled once and cached on disk (``cache=True``, in ``__pycache__`` beside this file), so a second
process starts without compiling.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from .bitpack import WORD_BITS, pack_signs, words_for


@intrinsic
def popcount64(typingctx, x):
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return x(x), codegen


def _out_size(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


# -- binary GEMM ---------------------------------------------------------------------------------------------------

def bgemm_reference(a: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """a: (M, words) packed, w: (N, words) packed, k real inputs per row -> (M, N) int32 dot products."""
    pop = np.bitwise_count(a[:, None, :] ^ w[None, :, :]).sum(axis=-1, dtype=np.int64)
    return (k - 2 * pop).astype(np.int32)


@numba.njit(parallel=True, cache=True)
def _bgemm(a, wt, k, out):
    # wt: (words, N), so the innermost loop runs over N contiguous words and vectorizes.
    m, nw = a.shape
    n = wt.shape[1]
    for i in numba.prange(m):
        acc = np.zeros(n, np.int64)
        for t in range(nw):
            av = a[i, t]
            row = wt[t]
            for j in range(n):
                acc[j] += popcount64(av ^ row[j])
        for j in range(n):
            out[i, j] = k - 2 * acc[j]


def bgemm(a: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """Binary GEMM: ``a`` (M, words) and ``w`` (N, words) packed signs, ``k`` real inputs -> (M, N) int32."""
    if a.dtype != np.uint64 or w.dtype != np.uint64 or a.shape[1] != w.shape[1]:
        raise ValueError("bgemm needs uint64 operands with the same word count, "
                         f"got {a.dtype}{a.shape} and {w.dtype}{w.shape}")
    if not 0 < k <= a.shape[1] * WORD_BITS:
        raise ValueError(f"k = {k} does not fit {a.shape[1]} words")
    out = np.empty((a.shape[0], w.shape[0]), np.int32)
    _bgemm(np.ascontiguousarray(a), np.ascontiguousarray(w.T), np.int64(k), out)
    return out


# -- binary convolution (NHWC, +1 padding) -------------------------------------------------------------------------

def bconv_reference(x: np.ndarray, w: np.ndarray, cin: int, stride: int, pad: int) -> np.ndarray:
    """x: (N, H, W, words) packed input; w: (Cout, kh, kw, words) packed weights; ``cin`` real input channels.

    Padding pixels are +1 (a zero word). Returns (N, Ho, Wo, Cout) int32 dot products.
    """
    n, h, wd, nw = x.shape
    cout, kh, kw, _ = w.shape
    xp = np.zeros((n, h + 2 * pad, wd + 2 * pad, nw), np.uint64)
    xp[:, pad:pad + h, pad:pad + wd] = x
    ho, wo = _out_size(h, kh, stride, pad), _out_size(wd, kw, stride, pad)
    out = np.zeros((n, ho, wo, cout), np.int64)
    for dy in range(kh):
        for dx in range(kw):
            patch = xp[:, dy:dy + stride * (ho - 1) + 1:stride, dx:dx + stride * (wo - 1) + 1:stride]  # (n, ho, wo, nw)
            xor = patch[..., None, :] ^ w[None, None, None, :, dy, dx, :]
            out += np.bitwise_count(xor).sum(axis=-1, dtype=np.int64)
    return (kh * kw * cin - 2 * out).astype(np.int32)


@numba.njit(parallel=True, cache=True)
def _bconv(x, wt, k, stride, pad, out):
    # wt: (kh, kw, words, Cout): for one input word, the xor-popcount runs over all output channels at once.
    n, h, wd, nw = x.shape
    kh, kw, _, cout = wt.shape
    _, ho, wo, _ = out.shape
    zero = np.uint64(0)
    for r in numba.prange(n * ho):
        b = r // ho
        oy = r % ho
        acc = np.empty(cout, np.int64)
        for ox in range(wo):
            for co in range(cout):
                acc[co] = 0
            for dy in range(kh):
                iy = oy * stride + dy - pad
                for dx in range(kw):
                    ix = ox * stride + dx - pad
                    inside = iy >= 0 and iy < h and ix >= 0 and ix < wd
                    for t in range(nw):
                        xv = x[b, iy, ix, t] if inside else zero  # a +1 padding pixel is a zero word
                        for co in range(cout):
                            acc[co] += popcount64(xv ^ wt[dy, dx, t, co])
            for co in range(cout):
                out[b, oy, ox, co] = k - 2 * acc[co]


@numba.njit(cache=True, inline="always")
def _tap(x, b, iy, ix, c, h, wd, pad_value):
    if iy < 0 or iy >= h or ix < 0 or ix >= wd:
        return pad_value
    return x[b, iy, ix, c]


@numba.njit(cache=True, inline="always")
def _nine(x, b, y0, x0, c, h, wd, pad_value):
    """The 3x3 window at (y0, x0) of channel (or word) c, padded with ``pad_value``."""
    return (_tap(x, b, y0, x0, c, h, wd, pad_value), _tap(x, b, y0, x0 + 1, c, h, wd, pad_value),
            _tap(x, b, y0, x0 + 2, c, h, wd, pad_value), _tap(x, b, y0 + 1, x0, c, h, wd, pad_value),
            _tap(x, b, y0 + 1, x0 + 1, c, h, wd, pad_value), _tap(x, b, y0 + 1, x0 + 2, c, h, wd, pad_value),
            _tap(x, b, y0 + 2, x0, c, h, wd, pad_value), _tap(x, b, y0 + 2, x0 + 1, c, h, wd, pad_value),
            _tap(x, b, y0 + 2, x0 + 2, c, h, wd, pad_value))


@numba.njit(parallel=True, cache=True)
def _bconv3x3(x, wt, k, stride, pad, out):
    # Every binary conv of the backbones is 3x3: the nine input words of a pixel are loaded once into registers,
    # then one loop over Cout does all nine xor-popcounts per channel: one weight load per popcount and a single
    # store per output, about twice the throughput of the generic _bconv.
    n, h, wd, nw = x.shape
    cout = wt.shape[3]
    _, ho, wo, _ = out.shape
    zero = np.uint64(0)
    for r in numba.prange(n * ho):
        b = r // ho
        oy = r % ho
        y0 = oy * stride - pad
        acc = np.empty(cout, np.int64)
        for ox in range(wo):
            x0 = ox * stride - pad
            for t in range(nw):
                a0, a1, a2, a3, a4, a5, a6, a7, a8 = _nine(x, b, y0, x0, t, h, wd, zero)  # +1 padding: a zero word
                for co in range(cout):
                    p = (popcount64(a0 ^ wt[0, 0, t, co]) + popcount64(a1 ^ wt[0, 1, t, co])
                         + popcount64(a2 ^ wt[0, 2, t, co]) + popcount64(a3 ^ wt[1, 0, t, co])
                         + popcount64(a4 ^ wt[1, 1, t, co]) + popcount64(a5 ^ wt[1, 2, t, co])
                         + popcount64(a6 ^ wt[2, 0, t, co]) + popcount64(a7 ^ wt[2, 1, t, co])
                         + popcount64(a8 ^ wt[2, 2, t, co]))
                    acc[co] = p if t == 0 else acc[co] + p
            for co in range(cout):
                out[b, oy, ox, co] = k - 2 * acc[co]


def conv_weights_for_kernel(w: np.ndarray) -> np.ndarray:
    """Packed weights (Cout, kh, kw, words) -> the kernel's layout (kh, kw, words, Cout). Do it once, at load."""
    return np.ascontiguousarray(np.transpose(w, (1, 2, 3, 0)))


def bconv(x: np.ndarray, w: np.ndarray, cin: int, stride: int = 1, pad: int = 1, *,
          w_is_kernel_layout: bool = False) -> np.ndarray:
    """Binary conv of packed ``x`` (N, H, W, words) with packed ``w`` (Cout, kh, kw, words): int32 dot products.

    ``w_is_kernel_layout``: ``w`` is already :func:`conv_weights_for_kernel`'s (kh, kw, words, Cout).
    """
    wt = w if w_is_kernel_layout else conv_weights_for_kernel(w)
    if x.dtype != np.uint64 or wt.dtype != np.uint64 or x.shape[-1] != wt.shape[2]:
        raise ValueError("bconv needs uint64 operands with the same word count, "
                         f"got {x.dtype}{x.shape} and {w.dtype}{w.shape}")
    n, h, wd, _ = x.shape
    kh, kw, _, cout = wt.shape
    out = np.empty((n, _out_size(h, kh, stride, pad), _out_size(wd, kw, stride, pad), cout), np.int32)
    kernel = _bconv3x3 if (kh, kw) == (3, 3) else _bconv
    kernel(np.ascontiguousarray(x), wt, np.int64(kh * kw * cin), np.int64(stride), np.int64(pad), out)
    return out


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

def avgpool_reference(x: np.ndarray, stride: int) -> np.ndarray:
    """x (N, H, W, C) -> (N, ceil(H/s), ceil(W/s), C): the mean of each s x s window's pixels inside the image, in
    :func:`avgpool`'s order (the pixels summed row by row in float32, then one division by their count)."""
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


# -- fused threshold + sign + pack ----------------------------------------------------------------------------------

def pack_below_reference(x: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Bits of ``x < threshold`` (per channel, last axis) packed like :func:`bitpack.pack_signs`.

    ``x < -b`` is exactly ``x + b < 0`` in IEEE arithmetic, so this is the sign of a shifted activation.
    """
    return pack_signs(np.where(x < threshold, -1.0, 1.0))


@numba.njit(cache=True, inline="always")
def _pack_row(v, threshold, out_row):
    c = v.shape[0]
    for t in range(out_row.shape[0]):
        word = np.uint64(0)
        for j in range(min(WORD_BITS, c - t * WORD_BITS)):
            ch = t * WORD_BITS + j
            if v[ch] < threshold[ch]:
                word |= np.uint64(1) << np.uint64(j)
        out_row[t] = word


@numba.njit(parallel=True, cache=True)
def _pack_below(x, threshold, out):
    n, h, w, c = x.shape
    for r in numba.prange(n * h):
        b = r // h
        y = r % h
        for xx in range(w):
            _pack_row(x[b, y, xx], threshold, out[b, y, xx])


def pack_below(x: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """x (N, H, W, C) float32, threshold (C,) -> (N, H, W, words) uint64: bit set where ``x < threshold``."""
    n, h, w, c = x.shape
    out = np.empty((n, h, w, words_for(c)), np.uint64)
    _pack_below(np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(threshold, dtype=np.float32), out)
    return out


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


# -- the popcount peak of this CPU ----------------------------------------------------------------------------------

@numba.njit(parallel=True, cache=True)
def _xor_popcount_sweeps(a, b, sweeps):
    # Each thread sweeps its own cache-resident pair of rows: loads, xor, popcount, add; nothing else.
    threads, nw = a.shape
    total = np.zeros(threads, np.int64)
    for i in numba.prange(threads):
        acc = 0
        for s in range(sweeps):
            for t in range(nw):
                acc += popcount64(a[i, t] ^ b[i, t])
            acc += s  # keeps the sweeps from being folded into one
        total[i] = acc
    return total.sum()


def xor_popcount_sweeps(a: np.ndarray, b: np.ndarray, sweeps: int) -> int:
    """The microbenchmark behind the popcount peak: each of the rows of ``a`` and ``b`` (uint64, one row per thread,
    sized to stay in L1/L2) xor-popcounted ``sweeps`` times. Returns a checksum so the work cannot be optimized away;
    the caller times the call."""
    return int(_xor_popcount_sweeps(np.ascontiguousarray(a, dtype=np.uint64), np.ascontiguousarray(b, dtype=np.uint64),
                                    np.int64(sweeps)))


@numba.njit(parallel=True, cache=True)
def _popcount_sweeps_against_key(a, sweeps):
    # The instruction mix of the conv's inner loop: one load, xor with a value held in a register, popcount, add.
    threads, nw = a.shape
    total = np.zeros(threads, np.int64)
    for i in numba.prange(threads):
        acc = 0
        for s in range(sweeps):
            key = np.uint64(s) * np.uint64(0x9E3779B97F4A7C15)
            for t in range(nw):
                acc += popcount64(a[i, t] ^ key)
        total[i] = acc
    return total.sum()


def popcount_sweeps_against_key(a: np.ndarray, sweeps: int) -> int:
    """The second form of the peak microbenchmark: each row of ``a`` xor-popcounted against a key that changes every
    sweep (one load per word, like the conv kernels). Returns a checksum; the caller times the call."""
    return int(_popcount_sweeps_against_key(np.ascontiguousarray(a, dtype=np.uint64), np.int64(sweeps)))


# -- integer GEMM (the hybrid-quantized learning step) ---------------------------------------------------------------

PARALLEL_MIN_WORK = 1 << 22  # multiply-adds below which one thread is faster than two (the head's products)

def imatmul_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(M, K) @ (K, N) on integers, accumulated in int64."""
    return np.asarray(a, np.int64) @ np.asarray(b, np.int64)


@numba.njit(parallel=True, cache=True)
def _imatmul(a, b, out):
    # Row i of the output accumulates a[i, k] * b[k, :] in a row of accumulators of out's type (int32 when the caller
    # has shown the sums fit, else int64): the innermost loop runs over N contiguous values and vectorizes.
    m, k = a.shape
    n = b.shape[1]
    for i in numba.prange(m):
        acc = np.zeros(n, out.dtype)
        for t in range(k):
            av = a[i, t]
            if av == 0:
                continue
            row = b[t]
            for j in range(n):
                acc[j] += av * row[j]
        for j in range(n):
            out[i, j] = acc[j]


# the same loops on one thread (prange runs as range): for small products, where waking the thread pool costs more
# than the work
_imatmul_serial = numba.njit(cache=True)(_imatmul.py_func)


def imatmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for integer matrices of any integer types, exact: int32 sums when ``K * max|a| * max|b|`` stays
    below 2^31 (then the result is int32), int64 otherwise."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"imatmul: shapes {a.shape} and {b.shape} do not chain")
    if not (np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer)):
        raise TypeError(f"imatmul: integer operands only, got {a.dtype} and {b.dtype}")
    # magnitudes from min and max: np.abs of a type's most negative value overflows back to itself
    amax = max(-int(a.min()), int(a.max())) if a.size else 0
    bmax = max(-int(b.min()), int(b.max())) if b.size else 0
    small = a.shape[1] * amax * bmax < 2 ** 31
    out = np.empty((a.shape[0], b.shape[1]), np.int32 if small else np.int64)
    kernel = _imatmul if a.shape[0] * a.shape[1] * b.shape[1] >= PARALLEL_MIN_WORK else _imatmul_serial
    kernel(np.ascontiguousarray(a), np.ascontiguousarray(b), out)  # numba widens every product to int64
    return out


# -- col2im (the adjoint of im2col: the input gradient of a conv) -----------------------------------------------------

@numba.njit(parallel=True, cache=True)
def _col2im(g, k, stride, pad, out):
    # Taps outermost, as the reference adds them: float sums come out in the same order, bit for bit.
    n, c, h, w = out.shape
    ho = (h + 2 * pad - k) // stride + 1
    wo = (w + 2 * pad - k) // stride + 1
    for b in numba.prange(n):
        for dy in range(k):
            for dx in range(k):
                for i in range(ho):
                    y = i * stride + dy - pad
                    if y < 0 or y >= h:
                        continue
                    for j in range(wo):
                        x = j * stride + dx - pad
                        if x < 0 or x >= w:
                            continue
                        row = (b * ho + i) * wo + j
                        for ch in range(c):
                            out[b, ch, y, x] += g[row, (ch * k + dy) * k + dx]


def col2im(gcols: np.ndarray, shape: tuple, k: int, stride: int, pad: int) -> np.ndarray:
    """Scatter-add column gradients (N*Ho*Wo, C*k*k), torch's (C, kh, kw) order, back to the input (N, C, H, W);
    same dtype. The reference is :func:`bnncl.learning.qbackprop.col2im`."""
    n, c, h, w = shape[:4]
    out = np.zeros((n, c, h, w), gcols.dtype)
    _col2im(np.ascontiguousarray(gcols), k, stride, pad, out)
    return out
