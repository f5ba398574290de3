"""The popcount-peak microkernels of ``inference.py`` (section 4: the binary convs' throughput against this CPU's
xor-popcount peak). Benchmark code, not part of the library: numba loops that count with :func:`popcount64`, an
intrinsic that emits LLVM's ``ctpop`` (numba has no popcount function): ``vpopcntq`` or ``popcnt`` on the host's
target, the instructions the C kernels' popcount paths use.

Two loops over cache-resident words, one row per numba thread: :func:`xor_popcount_sweeps` (xor of two arrays +
popcount: two loads per word) and :func:`popcount_sweeps_against_key` (xor against a per-sweep key + popcount: one
load per word, the conv kernels' mix). Each returns a checksum, so that the work cannot be optimized away; the caller
times the call. Compiled once and cached on disk (``cache=True``, in ``__pycache__`` beside this file).
"""

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic


@intrinsic
def popcount64(typingctx, x):
    """The number of set bits of an integer (numba code only): LLVM's ``ctpop``."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return x(x), codegen


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
