import numpy as np
import pytest

from bnncl.device.bitpack import pack_signs, unpack_signs, words_for


@pytest.mark.parametrize("shape", [(1,), (63,), (64,), (65,), (3, 130), (2, 3, 4, 200)])
def test_round_trip_and_bit_layout(shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape)
    x.flat[0] = 0.0  # zero is +1
    p = pack_signs(x)
    c = shape[-1]
    assert p.dtype == np.uint64 and p.shape == (*shape[:-1], words_for(c))
    np.testing.assert_array_equal(unpack_signs(p, c), np.where(x < 0, -1, 1))
    # Independent oracle of the layout: bit j of word w is channel 64 w + j, set for a negative value.
    flat_x, flat_p = x.reshape(-1, c), p.reshape(-1, p.shape[-1])
    for r in range(len(flat_x)):
        for ch in range(c):
            bit = (int(flat_p[r, ch // 64]) >> (ch % 64)) & 1
            assert bit == int(flat_x[r, ch] < 0)
        for ch in range(c, words_for(c) * 64):  # unused tail bits are zero
            assert (int(flat_p[r, ch // 64]) >> (ch % 64)) & 1 == 0
