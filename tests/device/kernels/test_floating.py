"""The float kernels (:mod:`bnncl.device.kernels.floating`): the stem conv and pooling against their NumPy
references and against float64 oracles; sign_conv_float against bconv; global_avgpool against its order.

The kernels and their references compute in one fixed order of float32 operations, so they are held equal bit for
bit, on every CPU; against the float64 oracle they are held within the float32 rounding bound of their sums
(``fixtures.float32_sum_bound``)."""

import numpy as np
import pytest

from bnncl.device.bitpack import pack_signs
from bnncl.device.kernels import (
    avgpool,
    avgpool_reference,
    bconv,
    bconv_reference,
    conv2d,
    conv2d_reference,
    global_avgpool,
    sign_conv_float,
)
from fixtures import F32_UNIT, ODD_CHANNELS, assert_within_float32, float32_sum_bound, float_conv_oracle, signs

# -- float convolution ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,h,w,cin,cout,kh,kw,stride,pad", [
    (1, 5, 5, 1, 2, 3, 3, 1, 1), (2, 7, 7, 3, 5, 3, 3, 2, 1), (1, 7, 6, 3, 4, 3, 3, 1, 0), (2, 9, 7, 33, 3, 3, 3, 2, 0),
    (1, 6, 6, 63, 7, 3, 3, 1, 1), (1, 5, 7, 65, 3, 3, 3, 2, 1), (2, 4, 5, 70, 5, 1, 1, 1, 0),
    (1, 8, 7, 1, 9, 3, 2, 2, 1),
])
def test_conv2d_equals_reference_and_float64_oracle(n, h, w, cin, cout, kh, kw, stride, pad):
    rng = np.random.default_rng([n, h, w, cin, cout, kh, kw, stride, pad])
    x = rng.standard_normal((n, h, w, cin)).astype(np.float32)
    wt = rng.standard_normal((cout, kh, kw, cin)).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    ref = conv2d_reference(x, wt, bias, stride, pad)
    got = conv2d(x, wt, bias, stride, pad)
    assert ref.dtype == np.float32 and got.dtype == np.float32
    np.testing.assert_array_equal(got, ref)  # one order of operations: the same bits on every CPU
    assert_conv_within_float32(got, x, wt, bias, stride, pad)


def assert_conv_within_float32(got, x, wt, bias, stride, pad):
    """``got`` within the float32 rounding of a sum of kh*kw*Cin products and the bias of the float64 oracle."""
    oracle = float_conv_oracle(x, wt, bias, stride, pad)
    abs_terms = float_conv_oracle(np.abs(x), np.abs(wt), np.abs(bias), stride, pad)
    cout, kh, kw, cin = wt.shape
    assert_within_float32(got, oracle, float32_sum_bound(abs_terms, kh * kw * cin + 1), "conv vs float64 oracle")


def test_conv2d_random_shapes():
    rng = np.random.default_rng(2024)
    for _ in range(12):
        cin = int(rng.choice(ODD_CHANNELS))
        cout, k = int(rng.integers(1, 9)), int(rng.choice([1, 3]))
        stride, pad = int(rng.integers(1, 3)), int(rng.integers(0, 2))
        h, w = int(rng.integers(k, 10)), int(rng.integers(k, 10))
        x = rng.standard_normal((int(rng.integers(1, 3)), h, w, cin)).astype(np.float32)
        wt = rng.standard_normal((cout, k, k, cin)).astype(np.float32)
        bias = rng.standard_normal(cout).astype(np.float32)
        got = conv2d(x, wt, bias, stride, pad)
        np.testing.assert_array_equal(got, conv2d_reference(x, wt, bias, stride, pad))
        assert_conv_within_float32(got, x, wt, bias, stride, pad)


def test_conv2d_gives_an_image_the_same_bits_alone_or_in_a_batch():
    """The order of the sums does not depend on the other images in the call (both kernels)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((9, 11, 10, 3)).astype(np.float32)
    wt = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(16).astype(np.float32)
    for conv in (conv2d, conv2d_reference):
        whole = conv(x, wt, bias, 2, 1)
        np.testing.assert_array_equal(np.concatenate([conv(x[i:i + 1], wt, bias, 2, 1) for i in range(9)]), whole)


def test_conv2d_zero_padding_and_bias_placement():
    # Constant input of ones, kernel of ones: every output is (number of taps inside the image) + bias, so the
    # border pixels see the zero padding. Derived by counting, not from the implementation.
    x = np.ones((1, 5, 5, 2), np.float32)
    wt = np.ones((3, 3, 3, 2), np.float32)
    bias = np.array([0.0, 1.0, -2.0], np.float32)
    got = conv2d(x, wt, bias, stride=1, pad=1)
    inside = np.array([2, 3, 3, 3, 2])
    taps = (inside[:, None] * inside[None, :]) * 2  # rows inside x cols inside x channels
    for co in range(3):
        np.testing.assert_array_equal(got[0, :, :, co], taps + bias[co])
        np.testing.assert_array_equal(conv2d_reference(x, wt, bias, 1, 1)[0, :, :, co], taps + bias[co])


def test_conv2d_refuses_wrong_channel_count():
    with pytest.raises(ValueError, match="channels"):
        conv2d(np.zeros((1, 4, 4, 3), np.float32), np.zeros((2, 3, 3, 4), np.float32), np.zeros(2, np.float32))


@pytest.mark.parametrize("n,h,w,cin,cout,k,stride,pad", [
    (1, 5, 5, 1, 2, 3, 1, 1), (2, 7, 7, 3, 4, 3, 2, 1), (1, 7, 6, 33, 3, 3, 2, 0), (1, 6, 7, 63, 5, 3, 1, 1),
    (1, 5, 5, 64, 3, 3, 2, 1), (2, 4, 5, 65, 3, 1, 1, 0), (1, 7, 7, 70, 6, 3, 2, 1), (1, 5, 4, 130, 2, 3, 1, 1),
])
def test_sign_conv_float_is_the_binary_conv(n, h, w, cin, cout, k, stride, pad):
    """The float path of binary convs: ±1 inputs and weights, +1 padding, gives bconv's integers exactly (its
    reference's where the optimized kernel does not run the shape: a 3x3 conv without padding)."""
    rng = np.random.default_rng([n, h, w, cin, cout, k, stride, pad, 1])
    x = signs(rng.standard_normal((n, h, w, cin))).astype(np.float32)
    wt = signs(rng.standard_normal((cout, k, k, cin))).astype(np.float32)
    ref = sign_conv_float(x, wt, stride, pad)
    binary_conv = bconv if (k, pad) in ((3, 1), (1, 0)) else bconv_reference
    dots = binary_conv(pack_signs(x), pack_signs(wt), cin, stride, pad)
    assert ref.shape == dots.shape and ref.dtype == np.float32
    np.testing.assert_array_equal(ref, dots.astype(np.float32))
    np.testing.assert_array_equal(ref, float_conv_oracle(x, wt, None, stride, pad, pad_value=1.0))


# -- average pooling ------------------------------------------------------------------------------------------------

def avgpool_oracle(x, s):
    n, h, w, c = x.shape
    ho, wo = (h + s - 1) // s, (w + s - 1) // s
    out = np.zeros((n, ho, wo, c))
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                pixels = [x[b, y, xx].astype(np.float64) for y in range(i * s, min(h, i * s + s))
                          for xx in range(j * s, min(w, j * s + s))]
                out[b, i, j] = sum(pixels) / len(pixels)
    return out


@pytest.mark.parametrize("h,w", [(7, 7), (8, 8), (7, 8), (8, 5), (1, 1), (2, 3)])
@pytest.mark.parametrize("s", [1, 2, 3])
def test_avgpool_equals_reference_and_oracle(h, w, s):
    rng = np.random.default_rng([h, w, s])
    c = int(rng.choice(ODD_CHANNELS))
    x = rng.standard_normal((2, h, w, c)).astype(np.float32)
    oracle = avgpool_oracle(x, s)
    assert oracle.shape == (2, -(-h // s), -(-w // s), c)
    ref, got = avgpool_reference(x, s), avgpool(x, s)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, ref)  # one order of operations: the same bits on every CPU
    # s*s float32 additions, then a division (one more rounding of the mean)
    bound = float32_sum_bound(avgpool_oracle(np.abs(x), s), s * s) + F32_UNIT * np.abs(oracle)
    assert_within_float32(got, oracle, bound, "avgpool vs float64 oracle")
    if s == 1:
        np.testing.assert_array_equal(got, x)


@pytest.mark.parametrize("h,w", [(1, 1), (4, 4), (7, 7), (3, 5)])
def test_global_avgpool_is_the_channel_mean_in_a_fixed_order(h, w):
    rng = np.random.default_rng([h, w])
    x = rng.standard_normal((5, h, w, 33)).astype(np.float32)
    got = global_avgpool(x)
    assert got.dtype == np.float32 and got.shape == (5, 33)
    expected = np.zeros((5, 33), np.float32)  # the order itself, written out
    for y in range(h):
        for xx in range(w):
            expected += x[:, y, xx]
    np.testing.assert_array_equal(got, expected / np.float32(h * w))
    np.testing.assert_array_equal(np.concatenate([global_avgpool(x[i:i + 1]) for i in range(5)]), got)
    oracle = x.astype(np.float64).mean(axis=(1, 2))
    bound = float32_sum_bound(np.abs(x).astype(np.float64).mean(axis=(1, 2)), h * w) + F32_UNIT * np.abs(oracle)
    assert_within_float32(got, oracle, bound, "global pool vs float64 oracle")


def test_avgpool_ceil_mode_averages_only_inside_pixels():
    # 3x3 image of distinct values, stride 2: the bottom-right output sees only the corner pixel, not padding.
    x = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1) + 1.0
    got = avgpool(x, 2)[0, :, :, 0]
    expected = np.array([[(1 + 2 + 4 + 5) / 4, (3 + 6) / 2], [(7 + 8) / 2, 9.0]])
    np.testing.assert_array_equal(got, expected)  # small integers and halves: exact in float32
    np.testing.assert_array_equal(avgpool_reference(x, 2)[0, :, :, 0], expected)
