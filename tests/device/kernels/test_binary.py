"""The binary kernels (:mod:`bnncl.device.kernels.binary`): bgemm, bconv and pack_below against their NumPy
references and against oracles (±1 arithmetic in float64, bits packed with Python integers), and their refusals."""

import numpy as np
import pytest

from bnncl.device.bitpack import pack_signs
from bnncl.device.kernels import (
    bconv,
    bconv_reference,
    bgemm,
    bgemm_reference,
    conv_weights_for_kernel,
    pack_below,
    pack_below_reference,
)
from fixtures import ODD_CHANNELS, float_conv_oracle, packed_bits_oracle, signs

# -- oracles ---------------------------------------------------------------------------------------------------------

def float_conv_plus_one_padding(x, w, stride, pad):
    """Direct float convolution of sign(x) with sign(w), NHWC / (Cout, kh, kw, Cin), padding with +1."""
    return float_conv_oracle(signs(x), signs(w), None, stride, pad, pad_value=1.0)



# -- binary GEMM -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (5, 7, 63), (4, 3, 64), (6, 9, 65), (3, 4, 200), (2, 5, 576)])
def test_bgemm_equals_reference_and_float_oracle(m, n, k):
    rng = np.random.default_rng(m * 100 + k)
    a, w = rng.standard_normal((m, k)), rng.standard_normal((n, k))
    oracle = signs(a) @ signs(w).T
    pa, pw = pack_signs(a), pack_signs(w)
    np.testing.assert_array_equal(bgemm_reference(pa, pw, k), oracle)
    np.testing.assert_array_equal(bgemm(pa, pw, k), oracle)


def test_bgemm_random_shapes_odd_k():
    rng = np.random.default_rng(99)
    for _ in range(15):
        m, n = int(rng.integers(1, 20)), int(rng.integers(1, 20))
        k = int(rng.integers(0, 200)) * 2 + 1
        a, w = rng.standard_normal((m, k)), rng.standard_normal((n, k))
        a[rng.random((m, k)) < 0.05] = 0.0  # zero is +1
        oracle = np.einsum("mk,nk->mn", signs(a), signs(w))
        pa, pw = pack_signs(a), pack_signs(w)
        got = bgemm(pa, pw, k)
        assert got.dtype == np.int32 and got.shape == (m, n)
        np.testing.assert_array_equal(bgemm_reference(pa, pw, k), oracle)
        np.testing.assert_array_equal(got, oracle)


def test_bad_operands_are_refused():
    a = pack_signs(np.ones((2, 70)))
    with pytest.raises(ValueError, match="same word count"):
        bgemm(a, pack_signs(np.ones((2, 200))), 70)
    with pytest.raises(ValueError, match="does not fit"):
        bgemm(a, a, 200)


# -- binary convolution (NHWC, +1 padding) ---------------------------------------------------------------------------

@pytest.mark.parametrize("n,h,w,cin,cout,k,stride,pad", [
    (1, 5, 5, 1, 2, 3, 1, 1), (2, 7, 7, 70, 5, 3, 1, 1), (2, 7, 7, 70, 5, 3, 2, 1), (1, 6, 5, 64, 3, 3, 2, 1),
    (3, 9, 8, 33, 6, 3, 3, 1), (1, 1, 1, 65, 3, 3, 2, 1), (1, 4, 4, 130, 4, 1, 1, 0), (2, 7, 6, 33, 6, 1, 2, 0),
])
def test_bconv_equals_reference_and_float_oracle(n, h, w, cin, cout, k, stride, pad):
    rng = np.random.default_rng(h * 1000 + cin)
    x, wt = rng.standard_normal((n, h, w, cin)), rng.standard_normal((cout, k, k, cin))
    oracle = float_conv_plus_one_padding(x, wt, stride, pad)
    px, pw = pack_signs(x), pack_signs(wt)
    np.testing.assert_array_equal(bconv_reference(px, pw, cin, stride, pad), oracle)
    np.testing.assert_array_equal(bconv(px, pw, cin, stride, pad), oracle)


@pytest.mark.parametrize("k,pad", [(2, 0), (3, 0), (1, 1), (2, 1)])
def test_bconv_reference_takes_the_shapes_the_optimized_kernel_refuses(k, pad):
    """The optimized kernel runs the backbones' convs only (3x3 with padding 1, 1x1 without): other kernel sizes and
    paddings are refused, and the reference computes them."""
    rng = np.random.default_rng([k, pad])
    x, wt = rng.standard_normal((2, 6, 5, 33)), rng.standard_normal((4, k, k, 33))
    px, pw = pack_signs(x), pack_signs(wt)
    np.testing.assert_array_equal(bconv_reference(px, pw, 33, 2, pad), float_conv_plus_one_padding(x, wt, 2, pad))
    with pytest.raises(ValueError, match="3x3 convs with padding 1 and 1x1 convs without padding"):
        bconv(px, pw, 33, 2, pad)


@pytest.mark.parametrize("cin,stride", [(1, 1), (33, 2), (64, 1), (65, 2), (130, 1)])
def test_bconv_kernel_layout_equals_default(cin, stride):
    rng = np.random.default_rng([cin, stride])
    for k, pad in ((3, 1), (1, 0)):
        x, wt = rng.standard_normal((2, 7, 6, cin)), rng.standard_normal((5, k, k, cin))
        px, pw = pack_signs(x), pack_signs(wt)
        kw = conv_weights_for_kernel(pw)
        assert kw.shape == (k, k, pw.shape[-1], 5) and kw.flags.c_contiguous
        default = bconv(px, pw, cin, stride, pad)
        np.testing.assert_array_equal(bconv(px, kw, cin, stride, pad, w_is_kernel_layout=True), default)
        np.testing.assert_array_equal(default, float_conv_plus_one_padding(x, wt, stride, pad))


def test_bconv_refusals():
    px, pw = pack_signs(np.ones((1, 4, 4, 70))), pack_signs(np.ones((3, 3, 3, 70)))
    with pytest.raises(ValueError, match="same word count"):
        bconv(px, pack_signs(np.ones((3, 3, 3, 200))), 70)
    with pytest.raises(ValueError, match="same word count"):
        bconv(px.astype(np.int64), pw, 70)
    with pytest.raises(ValueError, match="same word count"):
        bconv(px[0], pw, 70)
    for cin in (0, 64, 129):  # the channels must fill the words they are packed in (the C kernel reads them all)
        with pytest.raises(ValueError, match="input channels"):
            bconv(px, pw, cin)
    with pytest.raises(ValueError, match="stride"):
        bconv(px, pw, 70, 0)


# -- fused threshold + pack ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("c", ODD_CHANNELS)
def test_pack_below_equals_reference_and_oracle(c):
    rng = np.random.default_rng(c)
    n, h, w = 2, 3, int(rng.integers(1, 5))
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    t = (0.5 * rng.standard_normal(c)).astype(np.float32)
    # Exact ties: x == t must give bit 0.
    ties = rng.random((n, h, w, c)) < 0.2
    x = np.where(ties, np.broadcast_to(t, x.shape), x).astype(np.float32)
    # Signed zeros: -0.0 < 0.0 is false, and 0.0 < -0.0 is false.
    t[0] = 0.0
    x[0, 0, 0, 0] = -0.0
    x[0, 0, min(1, w - 1), 0] = 0.0
    if c > 1:
        t[1] = -0.0
        x[0, 0, 0, 1] = 0.0
        x[1, 0, 0, 1] = -0.0
        x[1, 1, 0, 1] = np.float32(-1e-30)  # below -0.0: bit 1
    below = np.vectorize(lambda a, b: float(a) < float(b))(x, np.broadcast_to(t, x.shape))
    oracle = packed_bits_oracle(below)
    ref, got = pack_below_reference(x, t), pack_below(x, t)
    assert got.dtype == np.uint64 and got.shape == (n, h, w, (c + 63) // 64)
    np.testing.assert_array_equal(ref, oracle)
    np.testing.assert_array_equal(got, oracle)
    # Direct checks independent of the oracle's construction.
    assert int(got[0, 0, 0, 0]) & 1 == 0  # -0.0 < 0.0 is false
    if c > 1:
        assert (int(got[1, 1, 0, 0]) >> 1) & 1 == 1  # -1e-30 < -0.0
        assert (int(got[0, 0, 0, 0]) >> 1) & 1 == 0  # 0.0 < -0.0 is false
    tie_rows = np.argwhere(ties)
    assert len(tie_rows) > 0
    for b, y, xx, ch in tie_rows[:50].tolist():
        if ch > 1:  # channels 0 and 1 had their thresholds replaced after the ties were placed
            assert (int(got[b, y, xx, ch // 64]) >> (ch % 64)) & 1 == 0
    if c % 64:  # unused tail bits are zero
        assert not np.any(got[..., -1] >> np.uint64(c % 64))
