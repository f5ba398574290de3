"""Binary kernels on packed signs: XNOR-popcount GEMM (:func:`bgemm`) and convolution (:func:`bconv`), and the fused
threshold/sign packing (:func:`pack_below`), each beside its NumPy reference; :func:`popcount64`, the ``ctpop``
intrinsic they count with."""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from bnncl.device.bitpack import WORD_BITS, pack_signs, words_for
from bnncl.device.kernels._common import _nine, _out_size


@intrinsic
def popcount64(typingctx, x):
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return x(x), codegen


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
    """Packed weights (Cout, kh, kw, words) -> the kernel's layout (kh, kw, words, Cout), the model file's. Do it
    once (at export, or when the learner rebuilds a block)."""
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
