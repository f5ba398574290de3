"""Each numba kernel against its NumPy reference and both against a float oracle (±1 arithmetic in float64)."""

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
    xs = np.pad(signs(x), ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=1.0)
    ws = signs(w)
    n, h, wd, _ = xs.shape
    cout, kh, kw, _ = w.shape
    ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, ho, wo, cout))
    for i in range(ho):
        for j in range(wo):
            out[:, i, j] = np.einsum("nyxc,oyxc->no", xs[:, i * stride:i * stride + kh, j * stride:j * stride + kw], ws)
    return out


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
