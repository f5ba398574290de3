"""The block epilogue (:mod:`bnncl.device.kernels.epilogue`) against its NumPy reference (bit for bit: one fixed
order of float32 operations) and against a float64 oracle (within the float32 rounding bound,
``fixtures.float32_sum_bound``), with exact dyadic values, ties at the threshold, and refusals."""

import numpy as np
import pytest

from bnncl.device.kernels import block_epilogue, block_epilogue_reference
from fixtures import assert_within_float32, float32_sum_bound, packed_bits_oracle

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
