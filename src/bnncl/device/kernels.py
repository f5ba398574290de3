"""Binary kernels: XNOR-popcount GEMM and convolution on packed signs, each a numba kernel with a plain NumPy
reference beside it (tests hold the two equal).

For K binary inputs packed in words, ``dot(a, w) = K - 2 * popcount(a xor w)``: XNOR counts agreements, the xor
counts disagreements. numba has no popcount function, so :func:`popcount64` is an intrinsic that emits LLVM's
``ctpop``; compiled for the host (``-mcpu=native``) it becomes the ``popcnt`` instruction, or AVX-512 VPOPCNTQ where
LLVM vectorizes the loop and the CPU has it.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from .bitpack import WORD_BITS


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


@numba.njit(parallel=True, cache=True, fastmath=True)
def _bgemm(a, w, k, out):
    m, nw = a.shape
    n = w.shape[0]
    for i in numba.prange(m):
        for j in range(n):
            pop = 0
            for t in range(nw):
                pop += popcount64(a[i, t] ^ w[j, t])
            out[i, j] = k - 2 * pop


def bgemm(a: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    if a.dtype != np.uint64 or w.dtype != np.uint64 or a.shape[1] != w.shape[1]:
        raise ValueError(f"bgemm needs uint64 operands with the same word count, got {a.dtype}{a.shape} and {w.dtype}{w.shape}")
    if not 0 < k <= a.shape[1] * WORD_BITS:
        raise ValueError(f"k = {k} does not fit {a.shape[1]} words")
    out = np.empty((a.shape[0], w.shape[0]), np.int32)
    _bgemm(np.ascontiguousarray(a), np.ascontiguousarray(w), np.int64(k), out)
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
    ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, ho, wo, cout), np.int64)
    for dy in range(kh):
        for dx in range(kw):
            patch = xp[:, dy:dy + stride * (ho - 1) + 1:stride, dx:dx + stride * (wo - 1) + 1:stride]  # (n, ho, wo, nw)
            out += np.bitwise_count(patch[..., None, :] ^ w[None, None, None, :, dy, dx, :]).sum(axis=-1, dtype=np.int64)
    return (kh * kw * cin - 2 * out).astype(np.int32)


@numba.njit(parallel=True, cache=True, fastmath=True)
def _bconv(x, w, k, stride, pad, out):
    n, h, wd, nw = x.shape
    cout, kh, kw, _ = w.shape
    _, ho, wo, _ = out.shape
    for b_oy in numba.prange(n * ho):
        b = b_oy // ho
        oy = b_oy % ho
        for ox in range(wo):
            for co in range(cout):
                pop = 0
                for dy in range(kh):
                    iy = oy * stride + dy - pad
                    for dx in range(kw):
                        ix = ox * stride + dx - pad
                        if iy < 0 or iy >= h or ix < 0 or ix >= wd:
                            for t in range(nw):  # a +1 pixel is a zero word: xor leaves the weight bits
                                pop += popcount64(w[co, dy, dx, t])
                        else:
                            for t in range(nw):
                                pop += popcount64(x[b, iy, ix, t] ^ w[co, dy, dx, t])
                out[b, oy, ox, co] = k - 2 * pop


def bconv(x: np.ndarray, w: np.ndarray, cin: int, stride: int = 1, pad: int = 1) -> np.ndarray:
    if x.dtype != np.uint64 or w.dtype != np.uint64 or x.shape[-1] != w.shape[-1]:
        raise ValueError(f"bconv needs uint64 operands with the same word count, got {x.dtype}{x.shape} and {w.dtype}{w.shape}")
    n, h, wd, _ = x.shape
    cout, kh, kw, _ = w.shape
    ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.empty((n, ho, wo, cout), np.int32)
    _bconv(np.ascontiguousarray(x), np.ascontiguousarray(w), np.int64(kh * kw * cin), np.int64(stride), np.int64(pad), out)
    return out
