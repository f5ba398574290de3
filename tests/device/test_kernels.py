"""Each numba kernel against its NumPy reference and both against a float oracle (±1 arithmetic in float64).

The float kernels (stem conv, pooling, epilogue) and their references compute in one fixed order of float32
operations, so they are held equal bit for bit, on every CPU; against the float64 oracle they are held within the
float32 rounding bound of their sums (``fixtures.float32_sum_bound``)."""

import numpy as np
import pytest

from bnncl.device.bitpack import pack_signs
from bnncl.device.kernels import bconv, bconv_reference, bgemm, bgemm_reference


def signs(a):
    return np.where(a < 0, -1.0, 1.0)


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (5, 7, 63), (4, 3, 64), (6, 9, 65), (3, 4, 200), (2, 5, 576)])
def test_bgemm_equals_reference_and_float_oracle(m, n, k):
    rng = np.random.default_rng(m * 100 + k)
    a, w = rng.standard_normal((m, k)), rng.standard_normal((n, k))
    oracle = signs(a) @ signs(w).T
    pa, pw = pack_signs(a), pack_signs(w)
    np.testing.assert_array_equal(bgemm_reference(pa, pw, k), oracle)
    np.testing.assert_array_equal(bgemm(pa, pw, k), oracle)


def float_conv_plus_one_padding(x, w, stride, pad):
    """Direct float convolution of sign(x) with sign(w), NHWC / (Cout, kh, kw, Cin), padding with +1."""
    return float_conv_oracle(signs(x), signs(w), None, stride, pad, pad_value=1.0)


@pytest.mark.parametrize("n,h,w,cin,cout,k,stride,pad", [
    (1, 5, 5, 1, 2, 3, 1, 1), (2, 7, 7, 70, 5, 3, 1, 1), (2, 7, 7, 70, 5, 3, 2, 1), (1, 6, 5, 64, 3, 3, 2, 1),
    (1, 4, 4, 130, 4, 1, 1, 0), (3, 9, 8, 33, 6, 3, 2, 0),
])
def test_bconv_equals_reference_and_float_oracle(n, h, w, cin, cout, k, stride, pad):
    rng = np.random.default_rng(h * 1000 + cin)
    x, wt = rng.standard_normal((n, h, w, cin)), rng.standard_normal((cout, k, k, cin))
    oracle = float_conv_plus_one_padding(x, wt, stride, pad)
    px, pw = pack_signs(x), pack_signs(wt)
    np.testing.assert_array_equal(bconv_reference(px, pw, cin, stride, pad), oracle)
    np.testing.assert_array_equal(bconv(px, pw, cin, stride, pad), oracle)


def test_bad_operands_are_refused():
    a = pack_signs(np.ones((2, 70)))
    with pytest.raises(ValueError, match="same word count"):
        bgemm(a, pack_signs(np.ones((2, 200))), 70)
    with pytest.raises(ValueError, match="does not fit"):
        bgemm(a, a, 200)


# -- helpers for the extended tests ---------------------------------------------------------------------------------

from bnncl.device.kernels import (  # noqa: E402
    avgpool,
    avgpool_reference,
    block_epilogue,
    block_epilogue_reference,
    conv2d,
    conv2d_reference,
    conv_weights_for_kernel,
    global_avgpool,
    pack_below,
    pack_below_reference,
    sign_conv_float,
    xor_popcount_sweeps,
)
from fixtures import F32_UNIT, assert_within_float32, float32_sum_bound  # noqa: E402

ODD_CHANNELS = [1, 3, 33, 63, 64, 65, 70, 130]


def float_conv_oracle(x, w, bias, stride, pad, pad_value=0.0):
    """Direct float64 convolution, NHWC input, (Cout, kh, kw, Cin) weights, constant padding ``pad_value``."""
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=pad_value)
    w = np.asarray(w, np.float64)
    n, h, wd, _ = xp.shape
    cout, kh, kw, _ = w.shape
    ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, ho, wo, cout))
    for i in range(ho):
        for j in range(wo):
            win = xp[:, i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[:, i, j] = np.einsum("nyxc,oyxc->no", win, w)
    if bias is not None:
        out += np.asarray(bias, np.float64)
    return out


def packed_bits_oracle(below):
    """Boolean (..., C) -> uint64 words (..., ceil(C/64)) with plain Python ints: bit j of word w is channel 64w+j."""
    c = below.shape[-1]
    nw = (c + 63) // 64
    flat = below.reshape(-1, c)
    out = np.zeros((flat.shape[0], nw), np.uint64)
    for r in range(flat.shape[0]):
        for t in range(nw):
            word = 0
            for j in range(min(64, c - 64 * t)):
                if flat[r, 64 * t + j]:
                    word |= 1 << j
            out[r, t] = word
    return out.reshape(*below.shape[:-1], nw)


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
    """The float path of binary convs: ±1 inputs and weights, +1 padding, gives bconv's integers exactly."""
    rng = np.random.default_rng([n, h, w, cin, cout, k, stride, pad, 1])
    x = signs(rng.standard_normal((n, h, w, cin))).astype(np.float32)
    wt = signs(rng.standard_normal((cout, k, k, cin))).astype(np.float32)
    ref = sign_conv_float(x, wt, stride, pad)
    dots = bconv(pack_signs(x), pack_signs(wt), cin, stride, pad)
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


# -- fused threshold + pack -----------------------------------------------------------------------------------------

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


# -- block epilogue -------------------------------------------------------------------------------------------------

def epilogue_oracle(dot, mult, bias, sc, shift_in, slope, shift_out):
    """float64 loops: z = mult*dot + bias + shortcut[co % Cs], RPReLU."""
    n, h, w, c = dot.shape
    cs = sc.shape[-1]
    out = np.zeros((n, h, w, c))
    for b in range(n):
        for y in range(h):
            for xx in range(w):
                for co in range(c):
                    z = float(mult[co]) * float(dot[b, y, xx, co]) + float(bias[co]) + float(sc[b, y, xx, co % cs])
                    v = z + float(shift_in[co])
                    v = v if v >= 0 else v * float(slope[co])
                    out[b, y, xx, co] = v + float(shift_out[co])
    return out


def epilogue_params(rng, c, cs, shape):
    f = lambda *s, scale=1.0: (scale * rng.standard_normal(s)).astype(np.float32)  # noqa: E731
    k = 9 * c
    dot = rng.integers(-k, k + 1, (*shape, c)).astype(np.int32)
    return dict(dot=dot, mult=f(c, scale=0.05), bias=f(c), shortcut=f(*shape, cs), shift_in=f(c, scale=0.3),
                slope=f(c, scale=0.25), shift_out=f(c, scale=0.3))


@pytest.mark.parametrize("c,cs", [(1, 1), (3, 3), (3, 1), (33, 33), (63, 21), (64, 32), (65, 65), (70, 35),
                                  (130, 65), (130, 130)])
def test_block_epilogue_equals_reference_and_oracle(c, cs):
    rng = np.random.default_rng([c, cs])
    p = epilogue_params(rng, c, cs, (2, 3, int(rng.integers(1, 5))))
    thr = (0.5 * rng.standard_normal(c)).astype(np.float32)
    args = (p["dot"], p["mult"], p["bias"], p["shortcut"], p["shift_in"], p["slope"], p["shift_out"])
    oracle = epilogue_oracle(*args)
    real_ref, bits_ref = block_epilogue_reference(*args, threshold=thr)
    real, bits = block_epilogue(*args, threshold=thr)
    assert real.dtype == np.float32 and bits.dtype == np.uint64
    np.testing.assert_array_equal(real, real_ref)  # one order of operations: the same bits on every CPU
    np.testing.assert_array_equal(bits, bits_ref)
    # Against the float64 oracle: six float32 roundings (the product, three additions, the slope, the last shift);
    # a sum near 0 may take the other RPReLU branch, which moves it by at most (1 + |slope|) times its error.
    abs_sum = epilogue_oracle(np.abs(p["dot"]), np.abs(p["mult"]), np.abs(p["bias"]), np.abs(p["shortcut"]),
                              np.abs(p["shift_in"]), np.ones(c), np.zeros(c))
    bound = float32_sum_bound((1 + np.abs(p["slope"])) * abs_sum + np.abs(p["shift_out"]), 6)
    assert_within_float32(real, oracle, bound, "epilogue vs float64 oracle")
    # Bits against the float64 oracle, except where the output is within that bound of the threshold.
    clear = np.abs(oracle - thr) > bound
    assert clear.mean() > 0.95
    unpacked = (np.unpackbits(bits.view(np.uint8), axis=-1, bitorder="little").reshape(*bits.shape[:-1], -1)[..., :c])
    np.testing.assert_array_equal(unpacked[clear].astype(bool), (oracle < thr)[clear])
    # Variants: no threshold, no real output.
    real2, none_bits = block_epilogue(*args)
    assert none_bits is None
    np.testing.assert_array_equal(real2, real)
    none_real, bits2 = block_epilogue(*args, threshold=thr, want_real=False)
    assert none_real is None
    np.testing.assert_array_equal(bits2, bits)
    r_none, b_ref2 = block_epilogue_reference(*args, threshold=thr, want_real=False)
    assert r_none is None
    np.testing.assert_array_equal(b_ref2, bits_ref)
    assert block_epilogue_reference(*args)[1] is None


def test_block_epilogue_exact_arithmetic_ties_and_tiling():
    """Dyadic values keep every operation exact in float32 and float64, so the results compare exactly, including
    outputs equal to the threshold (bit 0), the negative RPReLU branch and the channel tiling of the shortcut."""
    rng = np.random.default_rng(7)
    n, h, w, c, cs = 2, 3, 3, 70, 35
    dot = rng.integers(-40, 41, (n, h, w, c)).astype(np.int32)
    mult = rng.choice([0.25, 0.5, 1.0, 2.0], c).astype(np.float32)
    bias = rng.integers(-8, 9, c).astype(np.float32) / 4
    sc = rng.integers(-16, 17, (n, h, w, cs)).astype(np.float32) / 8
    shift_in = rng.integers(-4, 5, c).astype(np.float32) / 2
    slope = rng.choice([0.0, 0.125, 0.5, -0.25], c).astype(np.float32)
    shift_out = rng.integers(-4, 5, c).astype(np.float32) / 4
    oracle = epilogue_oracle(dot, mult, bias, sc, shift_in, slope, shift_out)
    assert (oracle < shift_out).any()  # the negative branch is exercised
    thr = oracle[0, 0, 0].astype(np.float32)  # ties at pixel (0, 0, 0) for every channel
    thr[::3] += 0.5
    real, bits = block_epilogue(dot, mult, bias, sc, shift_in, slope, shift_out, threshold=thr)
    real_ref, bits_ref = block_epilogue_reference(dot, mult, bias, sc, shift_in, slope, shift_out, threshold=thr)
    np.testing.assert_array_equal(real, oracle)
    np.testing.assert_array_equal(real_ref, oracle)
    expected_bits = packed_bits_oracle(oracle < thr)
    np.testing.assert_array_equal(bits, expected_bits)
    np.testing.assert_array_equal(bits_ref, expected_bits)
    # At the tie pixel only the raised thresholds (channels 0, 3, 6, ...) set bits.
    tie_bits = [(int(bits[0, 0, 0, ch // 64]) >> (ch % 64)) & 1 for ch in range(c)]
    assert tie_bits == [int(ch % 3 == 0) for ch in range(c)]


@pytest.mark.parametrize("sc_shape", [(1, 3, 3, 3), (1, 3, 4, 70), (1, 3, 3, 140), (2, 3, 3, 70), (1, 3, 3, 4)])
def test_block_epilogue_refuses_mismatched_shortcut(sc_shape):
    c = 70
    dot = np.zeros((1, 3, 3, c), np.int32)
    v = np.ones(c, np.float32)
    with pytest.raises(ValueError, match="shortcut"):
        block_epilogue(dot, v, v, np.zeros(sc_shape, np.float32), v, v, v)


# -- binary GEMM on random shapes, popcount checksum ----------------------------------------------------------------

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


# -- bconv with weights already in the kernel layout ----------------------------------------------------------------

@pytest.mark.parametrize("cin,stride,pad", [(1, 1, 1), (33, 2, 1), (64, 1, 0), (65, 2, 0), (130, 1, 1)])
def test_bconv_kernel_layout_equals_default(cin, stride, pad):
    rng = np.random.default_rng([cin, stride, pad])
    x, wt = rng.standard_normal((2, 7, 6, cin)), rng.standard_normal((5, 3, 3, cin))
    px, pw = pack_signs(x), pack_signs(wt)
    kw = conv_weights_for_kernel(pw)
    assert kw.shape == (3, 3, pw.shape[-1], 5) and kw.flags.c_contiguous
    default = bconv(px, pw, cin, stride, pad)
    np.testing.assert_array_equal(bconv(px, kw, cin, stride, pad, w_is_kernel_layout=True), default)
    np.testing.assert_array_equal(default, float_conv_plus_one_padding(x, wt, stride, pad))


# -- the CPU numba compiles for --------------------------------------------------------------------------------------

def test_numba_compiles_for_the_target_it_is_told():
    """``tools/cpu_target.py`` runs the device tests again with numba told to compile for another CPU: check
    that it does (no 512-bit register in a vectorized loop's code when the target's features leave AVX-512 out, no
    256-bit one without AVX), so that second run really covers another vector width."""
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
