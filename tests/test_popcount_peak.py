"""``benchmarks/popcount_peak.py``: the numba microkernels behind the popcount peak of ``benchmarks/inference.py``
(section 4), and the ``ctpop`` intrinsic they count with, against checksums computed with Python integers."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location("popcount_peak", Path(__file__).parents[1] / "benchmarks"
                                               / "popcount_peak.py")
# registered under its name, as the recipe of importlib's documentation does: numba's cached code imports the
# module of the kernel it runs
popcount_peak = sys.modules["popcount_peak"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(popcount_peak)
xor_popcount_sweeps = popcount_peak.xor_popcount_sweeps


@pytest.mark.parametrize("threads,nw,sweeps", [(1, 1, 1), (2, 5, 3), (4, 7, 10), (3, 33, 0), (8, 64, 5)])
def test_xor_popcount_sweeps_checksum(threads, nw, sweeps):
    rng = np.random.default_rng([threads, nw, sweeps])
    a = rng.integers(0, 2**64, (threads, nw), dtype=np.uint64, endpoint=False)
    b = rng.integers(0, 2**64, (threads, nw), dtype=np.uint64, endpoint=False)
    expected = 0
    for i in range(threads):
        row = sum((int(a[i, t]) ^ int(b[i, t])).bit_count() for t in range(nw))
        for s in range(sweeps):
            expected += row + s
    got = xor_popcount_sweeps(a, b, sweeps)
    assert isinstance(got, int)
    assert got == expected


@pytest.mark.parametrize("threads,nw,sweeps", [(1, 1, 1), (2, 5, 3), (4, 7, 10), (3, 33, 0), (8, 64, 5)])
def test_popcount_sweeps_against_key_checksum(threads, nw, sweeps):
    rng = np.random.default_rng([threads, nw, sweeps, 1])
    a = rng.integers(0, 2**64, (threads, nw), dtype=np.uint64, endpoint=False)
    expected = 0
    for s in range(sweeps):
        key = (s * 0x9E3779B97F4A7C15) % 2**64  # the kernel's uint64 product, wrapped
        expected += sum((int(v) ^ key).bit_count() for v in a.ravel())
    got = popcount_peak.popcount_sweeps_against_key(a, sweeps)
    assert isinstance(got, int)
    assert got == expected
