"""The integer kernels (:mod:`bnncl.device.kernels.integer`): ``col2im`` and ``imatmul``.

Oracles:

* ``col2im``: its reference, the learning step's own NumPy col2im (:func:`bnncl.core.backprop.col2im`), bit for bit,
  with the shape the learning step passes and with (N, C, H, W) alone; on random floats and integers (up to 2^26 /
  2^58), and on float32 columns holding small integers (every partial sum exact in any order), also
  Fortran-ordered.
* ``imatmul``: ``imatmul_reference`` and a plain int64 NumPy matmul, on both of its paths (one thread below
  ``PARALLEL_MIN_WORK`` multiply-adds, the parallel kernel from there on) and on transposed operands; the exact
  product in Python integers for every integer type up to its extremes; and its refusal of shapes that do not chain.

And that numba, which compiles this family, compiles for the CPU target ``tools/cpu_target.py`` tells it.

Each kernel against its reference on random inputs: test_registry.py. The learning step's pieces that call them:
tests/device/test_integer_step.py."""

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


COL2IM_CASES = [(hw, stride) for hw in (7, 4) for stride in (1, 2)]


def _columns(rng, dtype, hw, stride, n=3, c=5, k=3, pad=1, values="random"):
    ho = (hw + 2 * pad - k) // stride + 1
    shape = (n, c, hw, hw, ho, ho)
    size = (n * ho * ho, c * k * k)
    if values == "small integers":
        g = rng.integers(-64, 65, size).astype(dtype)
    elif np.issubdtype(dtype, np.floating):
        g = rng.standard_normal(size).astype(dtype)
    else:
        big = 2 ** 26 if dtype == np.int32 else 2 ** 58  # nine terms stay within the type
        g = rng.integers(-big, big, size).astype(dtype)
    return g, shape


@pytest.mark.parametrize("hw,stride", COL2IM_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64])
def test_col2im_equals_the_numpy_reference(dtype, hw, stride):
    """Random columns (normal floats; integers up to 2^26 / 2^58): the kernel's result is the reference's exactly,
    same dtype and shape. (Floats: the nine contributions to a pixel must be summed in the reference's order.)"""
    rng = np.random.default_rng(hw * 10 + stride)
    g, shape = _columns(rng, dtype, hw, stride)
    ours, ref = col2im(g, shape, 3, stride, 1), backprop.col2im(g, shape, 3, stride, 1)
    assert ours.dtype == ref.dtype == dtype and ours.shape == ref.shape == shape[:4]
    assert np.abs(ref).max() > 0
    differ = int((ours != ref).sum())
    assert differ == 0, f"{differ} of {ours.size} values differ, by up to {np.abs(ours - ref).max():.3g}"


@pytest.mark.parametrize("hw,stride", COL2IM_CASES)
def test_col2im_float32_scatter_is_the_reference_where_sums_are_exact(hw, stride):
    """float32 columns holding small integers (every partial sum exact in any order): equal, also for
    Fortran-ordered columns. Where this passes and the random case fails, only the order of the float additions
    differs, not which column lands on which pixel."""
    rng = np.random.default_rng(100 + hw * 10 + stride)
    g, shape = _columns(rng, np.float32, hw, stride, values="small integers")
    ref = backprop.col2im(g, shape, 3, stride, 1)
    np.testing.assert_array_equal(col2im(g, shape, 3, stride, 1), ref)
    np.testing.assert_array_equal(col2im(np.asfortranarray(g), shape, 3, stride, 1), ref)


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


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (1, 37, 1), (1, 64, 9), (29, 1, 13), (13, 7, 1), (17, 33, 5),
                                   (40, 130, 11), (3, 0, 4)])
@pytest.mark.parametrize("magnitude", [2 ** 16, 2 ** 7])  # int64 sums, and small enough for the int32 fast path
def test_imatmul_equals_reference_and_int64_matmul(m, k, n, magnitude):
    rng = np.random.default_rng(m * 1000 + k * 10 + n + magnitude)
    a = rng.integers(-magnitude, magnitude + 1, (m, k)).astype(np.int32)
    b = rng.integers(-magnitude, magnitude + 1, (k, n)).astype(np.int32)
    if a.size:
        a.flat[0], b.flat[-1] = -magnitude, magnitude  # the extremes, both signs
    oracle = a.astype(np.int64) @ b.astype(np.int64)
    out = imatmul(a, b)
    assert np.issubdtype(out.dtype, np.integer) and out.shape == (m, n)
    np.testing.assert_array_equal(out, oracle)
    np.testing.assert_array_equal(imatmul_reference(a, b), oracle)
    # transposed (non-contiguous) operands, as the head step passes them
    np.testing.assert_array_equal(imatmul(np.ascontiguousarray(a.T).T, np.ascontiguousarray(b.T).T), oracle)


def _exact_product(a, b):
    """``a @ b`` in Python integers: no overflow anywhere."""
    return [[sum(int(a[i, t]) * int(b[t, j]) for t in range(a.shape[1])) for j in range(b.shape[1])]
            for i in range(a.shape[0])]


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64])
def test_imatmul_is_exact_for_every_integer_type_up_to_its_extremes(dtype):
    """Exact sums whatever the operands' integer type: random values, and every pair of the type's extremes
    (including its most negative value, whose absolute value does not fit the type) wherever the exact result fits
    int64."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(7)
    lo, hi = max(info.min, -2 ** 16), min(info.max, 2 ** 16)
    pairs = [(rng.integers(lo, hi + 1, (5, 9)).astype(dtype), rng.integers(lo, hi + 1, (9, 4)).astype(dtype))]
    if info.bits <= 32:
        k = 4 if info.bits <= 16 else 1  # |result| <= k * 2^62 for int32: one term
        for x in (info.min, info.max):
            for z in (info.min, info.max):
                pairs.append((np.full((2, k), x, dtype), np.full((k, 3), z, dtype)))
    for a, b in pairs:
        out = imatmul(a, b)
        assert out.tolist() == _exact_product(a, b), f"{dtype.__name__} {a.flat[0]} x {b.flat[0]} (K={a.shape[1]})"


def test_imatmul_mixed_types_past_the_int32_range():
    """int8 operands at their minimum times int32 values: the sum (-2^32) needs int64."""
    a = np.array([[-128, -128]], np.int8)
    b = np.full((2, 1), 2 ** 24, np.int32)
    assert imatmul(a, b).tolist() == _exact_product(a, b) == [[-2 ** 32]]


def test_imatmul_refuses_shapes_that_do_not_chain():
    with pytest.raises(ValueError, match="do not chain"):
        imatmul(np.zeros((2, 3), np.int32), np.zeros((4, 2), np.int32))


# -- the CPU numba compiles for --------------------------------------------------------------------------------------

def test_numba_compiles_for_the_target_it_is_told():
    """``tools/cpu_target.py`` runs the device tests again with numba (this family's compiler) told to compile for
    another CPU: check that it does (no 512-bit register in a vectorized loop's code when the target's features leave
    AVX-512 out, no 256-bit one without AVX), so that second run really covers another vector width."""
    import numba
    from numba.core.codegen import get_host_cpu_features

    @numba.njit
    def add(a, b, out):
        for i in range(a.shape[0]):
            out[i] = a[i] + b[i]

    a = np.arange(1024, dtype=np.float32)
    out = np.empty_like(a)
    add(a, a, out)
    np.testing.assert_array_equal(out, 2 * a)
    features = (numba.config.CPU_FEATURES or get_host_cpu_features()).split(",")
    asm = "\n".join(add.inspect_asm().values())
    if "+avx512f" not in features:
        assert "zmm" not in asm, "AVX-512 code although the target has no AVX-512"
    if "+avx" not in features:
        assert "ymm" not in asm, "AVX code although the target has no AVX"
