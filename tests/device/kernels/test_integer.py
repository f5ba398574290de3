"""The integer kernels (:mod:`bnncl.device.kernels.integer`): ``col2im`` against its reference, the learning step's
own NumPy col2im (:func:`bnncl.core.backprop.col2im`), bit for bit, with the shape the learning step passes and with
(N, C, H, W) alone; and ``imatmul`` on both of its paths (one thread below ``PARALLEL_MIN_WORK`` multiply-adds, the
parallel kernel from there on).

Each kernel against its reference on random inputs: test_registry.py. imatmul's exactness for every integer type up
to its extremes, and its refusals: tests/device/test_learner.py; col2im in the learning step:
tests/device/test_trainable.py."""

import numpy as np
import pytest

from bnncl.core import backprop
from bnncl.device.kernels import PARALLEL_MIN_WORK, col2im, col2im_reference, imatmul, imatmul_reference

# -- col2im ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
@pytest.mark.parametrize("h,w,k,stride,pad", [(7, 7, 3, 1, 1), (7, 6, 3, 2, 1), (4, 4, 3, 2, 1), (6, 5, 1, 1, 0),
                                              (5, 5, 3, 2, 0), (8, 7, 2, 2, 0), (3, 3, 3, 1, 1)])
def test_col2im_kernel_and_reference_are_the_learning_steps_col2im(dtype, h, w, k, stride, pad):
    rng = np.random.default_rng([h, w, k, stride, pad])
    n, c = 3, 5
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    shape = (n, c, h, w, ho, wo)  # im2col's shape, as the learning step passes it
    gcols = (100 * rng.standard_normal((n * ho * wo, c * k * k))).astype(dtype)
    assert col2im_reference is backprop.col2im
    expected = col2im_reference(gcols, shape, k, stride, pad)
    for got in (col2im(gcols, shape, k, stride, pad), col2im(gcols, shape[:4], k, stride, pad),
                col2im_reference(gcols, shape[:4], k, stride, pad)):
        assert got.dtype == expected.dtype == dtype and got.shape == expected.shape == (n, c, h, w)
        np.testing.assert_array_equal(got, expected)
        assert got.tobytes() == expected.tobytes()  # the same bits: every value summed in the same order


# -- imatmul --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("m,k,n,parallel", [(17, 33, 5, False), (63, 255, 259, False), (64, 256, 256, True),
                                            (65, 257, 253, True)])
@pytest.mark.parametrize("magnitude", [2 ** 7, 2 ** 16])  # int32 sums, and int64 ones
def test_imatmul_one_thread_and_parallel_paths_equal_the_reference(m, k, n, parallel, magnitude):
    assert (m * k * n >= PARALLEL_MIN_WORK) == parallel
    rng = np.random.default_rng([m, k, n, magnitude])
    a = rng.integers(-magnitude, magnitude + 1, (m, k)).astype(np.int32)
    b = rng.integers(-magnitude, magnitude + 1, (k, n)).astype(np.int32)
    a[rng.random((m, k)) < 0.2] = 0  # the kernel skips zero multipliers
    out = imatmul(a, b)
    bound = k * int(np.abs(a.astype(np.int64)).max()) * int(np.abs(b.astype(np.int64)).max())
    assert out.dtype == (np.int32 if bound < 2 ** 31 else np.int64)
    np.testing.assert_array_equal(out, imatmul_reference(a, b))
