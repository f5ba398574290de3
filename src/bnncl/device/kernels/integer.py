"""Integer kernels of the learning step: the exact integer matrix product (:func:`imatmul`) and col2im
(:func:`col2im`, the input gradient of a conv), each beside its NumPy reference."""

from __future__ import annotations

import numba
import numpy as np

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
    same dtype. The reference is :func:`bnncl.core.backprop.col2im` (``col2im_reference`` here), the hand-written
    backward's own."""
    n, c, h, w = shape[:4]
    out = np.zeros((n, c, h, w), gcols.dtype)
    _col2im(np.ascontiguousarray(gcols), k, stride, pad, out)
    return out
