"""The affine quantizer (docs/method.md §5): float form, integer form, ranges, rounding, bad input."""

import numpy as np
import pytest

from bnncl.core import affine as quant
from bnncl.core.affine import NonFiniteError, QParams, check_bits, int_matmul, quantize
from bnncl.core.errors import ConfigError


def test_float_form_by_hand():
    x = np.array([-1.0, -0.3, 0.0, 0.26, 1.0, 2.0])
    # 2 bits on [-1, 1]: levels -1, -1/3, 1/3, 1 (s = 1.5); 2.0 is clipped to 1
    np.testing.assert_allclose(quantize(x, 2, -1.0, 1.0), [-1, -1 / 3, 1 / 3, 1 / 3, 1, 1])


@pytest.mark.parametrize("bits", [1, 2, 4, 8, 12, 16])
def test_levels_error_and_idempotence(bits):
    rng = np.random.default_rng(bits)
    x = rng.standard_normal(1000)
    q = quantize(x, bits)
    lo, hi = x.min(), x.max()
    step = (hi - lo) / (2 ** bits - 1)
    assert len(np.unique(q)) <= 2 ** bits
    assert np.abs(q - x).max() <= step / 2 * (1 + 1e-9)  # round to nearest: at most half a step
    assert q.min() == pytest.approx(lo) and q.max() == pytest.approx(hi)  # the range ends are levels
    np.testing.assert_allclose(quantize(q, bits), q, atol=1e-12)  # a quantized tensor stays put


def test_32_bits_zero_and_constant_tensors_pass_unchanged():
    x = np.random.default_rng(0).standard_normal(10).astype(np.float32)
    assert quantize(x, 32) is x
    z = np.zeros(5)
    np.testing.assert_array_equal(quantize(z, 4), z)
    c = np.full(5, 0.37)
    np.testing.assert_array_equal(quantize(c, 3), c)


def test_stochastic_rounding_is_unbiased_and_seeded():
    x = np.full(20000, 0.1)  # 1 bit on [0, 1]: levels 0 and 1
    a = quantize(x, 1, 0.0, 1.0, rounding="stochastic", rng=np.random.default_rng(1))
    b = quantize(x, 1, 0.0, 1.0, rounding="stochastic", rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) == {0.0, 1.0}
    assert a.mean() == pytest.approx(0.1, abs=0.01)
    assert quantize(x, 1, 0.0, 1.0).mean() == 0.0  # nearest rounding loses it



@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_integer_levels_equal_the_plain_formula_across_chunks(rounding, dtype):
    """QParams.quantize works a chunk at a time, in place: the same levels as clip(round(x / s) + Z) on the whole
    array (its uniforms for stochastic rounding drawn at once), for arrays several chunks long, transposed too."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((3, quant.CHUNK + 41)) * 2).astype(dtype)
    p = QParams.for_range(-2.0, 3.0, 8)  # values beyond the range too: clipped
    for arr in (x, x.T, x[:, :5], x[0, 0]):
        kept = np.array(arr, copy=True)
        got = p.quantize(arr, rounding, np.random.default_rng(7), dtype=np.uint8)
        v = np.asarray(arr, np.float64) / p.scale
        r = np.rint(v) if rounding == "nearest" else np.floor(v + np.random.default_rng(7).random(v.shape))
        want = np.clip(r + p.zero_point, 0, p.qmax)
        assert got.dtype == np.uint8 and got.shape == np.shape(arr)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(arr, kept)  # the caller's array is left as it was
    assert p.quantize(x).dtype == np.int64

def test_integer_form_matches_values_and_products():
    rng = np.random.default_rng(3)
    a, w = rng.uniform(-2, 3, (7, 33)), rng.uniform(-0.5, 0.4, (33, 5))
    pa, pw = QParams.for_range(a.min(), a.max(), 8), QParams.for_range(w.min(), w.max(), 8)
    qa, qw = pa.quantize(a), pw.quantize(w)
    assert qa.min() >= 0 and qa.max() <= 255 and qa.dtype == np.int64
    assert np.abs(pa.dequantize(qa) - a).max() <= pa.scale / 2 + 1e-12
    assert pa.dequantize(pa.quantize(np.zeros(1)))[0] == 0.0  # zero is exactly representable
    np.testing.assert_allclose(int_matmul(qa, pa, qw, pw), pa.dequantize(qa) @ pw.dequantize(qw), rtol=1e-12)
    with pytest.raises(ValueError, match="overflow"):
        int_matmul(qa, QParams(1.0, 0, 32), qw, QParams(1.0, 0, 32))


@pytest.mark.parametrize("bad", [0, 33, -1, 8.0, True, "8", None])
def test_bit_widths_outside_1_to_32_are_refused(bad):
    with pytest.raises(ConfigError, match="from 1 to 32"):
        check_bits("q_f", bad)


@pytest.mark.parametrize("value,word", [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")])
def test_non_finite_input_names_where(value, word):
    x = np.array([0.0, value, 1.0])
    with pytest.raises(NonFiniteError, match=f"{word} reached the quantizer at block6.conv weight gradient"):
        quantize(x, 8, where="block6.conv weight gradient")
    with pytest.raises(NonFiniteError, match="head input"):
        QParams.for_range(0, 1, 8).quantize(x, where="head input")
    with pytest.raises(NonFiniteError):
        quantize(x, 32)  # even the identity refuses it: it is never silently passed on
