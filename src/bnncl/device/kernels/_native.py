"""What the inference kernels share: the C runtime's kernels (``runtime/include/bnn_kernels.h``, in the shared library
:func:`bnncl.device.cruntime.library` loads) through ctypes, their signatures declared once, and the split of a call
over threads.

The C kernels trust their arguments: the family modules check shapes and dtypes, make their inputs C-contiguous and
allocate their outputs before calling them. A C kernel is single-threaded; :func:`split` cuts a call along its
leading axis (images, or pixels, or rows) into contiguous chunks run at once on :mod:`bnncl.device.cruntime`'s
threads and pool (``cruntime.set_num_threads``; ctypes releases the GIL during each call), when each chunk gets
enough work to pay for its thread. Every row along that axis is computed on its own, so the result does not depend on
the split.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from bnncl.device import cruntime

# A chunk handed to a pool thread must run long enough to pay for the hand-over (tens of microseconds on a shared
# 2-core machine, more when the other core is busy): the wrappers estimate a call's time in nanoseconds from its size
# (NS_PER, measured on one Zen 4 core; an estimate that only decides the split) and split it into chunks of at least
# this much.
MIN_NS_PER_THREAD = 150_000
NS_PER = {  # nanoseconds per unit of a kernel's innermost loop, on one core
    "bconv3x3": 0.1,  # per uint64 word xor-popcounted: out.size * 9 * words(cin)
    "bconv1x1": 0.25,  # per word: out.size * words(cin)
    "bgemm": 0.1,  # per word: m * n * words
    "conv2d": 0.03,  # per float32 multiply-add: out.size * kh * kw * cin
    "pack_below": 0.05,  # per input value
    "avgpool": 0.1,  # per input value
    "block_epilogue": 0.25,  # per output value
}
BNN_COLUMNS = 8  # bnn_kernels.h: bnn_bconv3x3 needs a scratch of BNN_COLUMNS * 9 * words(cin) uint64 words


class Dims(ctypes.Structure):
    """bnn_dims: an NHWC shape (c counts real channels, also of a packed tensor)."""

    _fields_ = [(name, ctypes.c_size_t) for name in "nhwc"]


class EpilogueParams(ctypes.Structure):
    """bnn_epilogue_params: the epilogue's per-channel float32 vectors (threshold NULL: no bits)."""

    _fields_ = [(name, ctypes.c_void_p) for name in ("mult", "bias", "shift_in", "slope", "shift_out", "threshold")]


_P, _SIZE, _I32 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int32
SIGNATURES = {  # each kernel's argument types, bnn_kernels.h's parameters in order; every kernel returns void
    # a, m, words, wt, n, k, out
    "bnn_bgemm": [_P, _SIZE, _SIZE, _P, _SIZE, _I32, _P],
    # x, in, w, cout, stride, scratch, out
    "bnn_bconv3x3": [_P, Dims, _P, _SIZE, _SIZE, _P, _P],
    # x, in, w, cout, stride, out
    "bnn_bconv1x1": [_P, Dims, _P, _SIZE, _SIZE, _P],
    # x, pixels, channels, threshold, out
    "bnn_pack_below": [_P, _SIZE, _SIZE, _P, _P],
    # x, in, w, kh, kw, cout, bias, stride, pad, out
    "bnn_conv2d_f32": [_P, Dims, _P, _SIZE, _SIZE, _SIZE, _P, _SIZE, _SIZE, _P],
    # x, in, s, out
    "bnn_avgpool_f32": [_P, Dims, _SIZE, _P],
    # dot, pixels, channels, params, shortcut, shortcut_channels, real, bits
    "bnn_block_epilogue": [_P, _SIZE, _SIZE, ctypes.POINTER(EpilogueParams), _P, _SIZE, _P, _P],
}


@lru_cache(maxsize=1)
def lib() -> ctypes.CDLL:
    """The C runtime's library with the kernels' signatures declared (a ConfigError if it is not built)."""
    library = cruntime.library()
    for name, argtypes in SIGNATURES.items():
        f = getattr(library, name)
        f.argtypes, f.restype = argtypes, None
    return library


def out_size(size: int, k: int, stride: int, pad: int) -> int:
    """A convolution's output size along one axis (bnn_conv_out_size); zero or less where the kernel does not fit."""
    return (size + 2 * pad - k) // stride + 1


def at(a: np.ndarray | None, i: int = 0, rows: int | None = None) -> int | None:
    """The address of row ``i`` of a C-contiguous array seen as ``rows`` equal rows (default: along its first axis);
    None (NULL) for None."""
    if a is None:
        return None
    return cruntime.address(a) + (i * (a.nbytes // (rows or a.shape[0])) if i else 0)


_local = threading.local()


def scratch(words: int) -> int:
    """The address of this thread's scratch buffer of at least ``words`` uint64 words (kept for the next call)."""
    buf = getattr(_local, "scratch", None)
    if buf is None or buf[0].size < words:
        array = np.empty(max(words, 1024), np.uint64)
        buf = _local.scratch = (array, cruntime.address(array))
    return buf[1]


def split(kernel: str, rows: int, units: int, call: Callable[[int, int], None]) -> None:
    """``call(a, b)`` for contiguous chunks [a, b) covering ``range(rows)``: one chunk per thread
    (``cruntime.get_num_threads()``), as many as give each at least MIN_NS_PER_THREAD of the call's estimated time
    (``units`` of ``kernel``'s inner loop, NS_PER); the calling thread runs the first chunk, the pool the others."""
    threads = cruntime.get_num_threads()
    chunks = 1 if threads == 1 else min(threads, rows, int(units * NS_PER[kernel] / max(1, MIN_NS_PER_THREAD)))
    if chunks <= 1:
        call(0, rows)
        return
    bounds = [rows * j // chunks for j in range(chunks + 1)]
    pool = cruntime.executor()
    futures = [pool.submit(call, bounds[j], bounds[j + 1]) for j in range(1, chunks)]
    try:
        call(bounds[0], bounds[1])
    finally:
        for future in futures:
            future.result()
