"""bnncl.core.rng: PCG32 and the draws built on it, against the reference implementation's published outputs and
against a plain one-draw-at-a-time implementation of the specification written here (the module draws in bulk)."""

from __future__ import annotations

import numpy as np
import pytest

from bnncl.core.protocol import SEED_OFFSETS, generator
from bnncl.core.rng import CHUNK, Pcg32

M64, M32 = (1 << 64) - 1, (1 << 32) - 1


class Spec:
    """The specification in the module's docstring, one draw at a time, written without the module's code."""

    def __init__(self, initstate, initseq):
        self.s, self.inc = 0, (initseq << 1 | 1) & M64
        self.u32()
        self.s = (self.s + initstate) & M64
        self.u32()

    def u32(self):
        old = self.s
        self.s = (old * 6364136223846793005 + self.inc) & M64
        x, rot = ((old >> 18) ^ old) >> 27 & M32, old >> 59
        return (x >> rot | x << (32 - rot) % 32) & M32

    def below(self, n):
        while True:  # Lemire: accept unless the low half falls below (2^32 - n) mod n
            m = self.u32() * n
            if m & M32 >= (2 ** 32 - n) % n:
                return m >> 32

    def permutation(self, n):
        a = list(range(n))
        for i in range(n - 1, 0, -1):
            j = self.below(i + 1)
            a[i], a[j] = a[j], a[i]
        return a

    def choice(self, n, k):
        a = list(range(n))
        for i in range(k):
            j = i + self.below(n - i)
            a[i], a[j] = a[j], a[i]
        return a[:k]


def test_the_reference_implementations_outputs():
    """pcg32-demo (pcg-c-basic) seeded pcg32_srandom_r(42, 54): its round 1, and round 5 after 614 more draws."""
    rng = Pcg32(42, 54)
    assert [rng.next_u32() for _ in range(6)] == [0xa15c02b7, 0x7b47f409, 0xba1d3330, 0x83d2f293, 0xbfa4784b,
                                                  0xcbed606e]
    for _ in range(614):
        rng.next_u32()
    assert [rng.next_u32() for _ in range(6)] == [0xfcef7cd6, 0x1b488b5a, 0xd0daf7ea, 0x1d9a70f7, 0x241a37cf,
                                                  0x9a3857b7]


@pytest.mark.parametrize("count", [0, 1, 5, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
def test_bulk_draws_are_the_one_at_a_time_draws(count):
    bulk, spec = Pcg32(123, 45), Spec(123, 45)
    out = bulk.u32(count)
    assert out.dtype == np.uint32 and out.tolist() == [spec.u32() for _ in range(count)]
    assert bulk.next_u32() == spec.u32()  # and the generator is left where the one-at-a-time draws leave it


def test_bounded_integers_follow_lemire_also_where_it_rejects():
    """Bounds just above 2^31 reject about half the draws: the bulk form must redraw exactly as one at a time."""
    bounds = np.array([1, 2, 3, 10, 2 ** 31 + 1, 2 ** 32 - 1, 2 ** 32, 6000, 2 ** 31 + 3] * 300, np.uint64)
    bulk, spec = Pcg32(9, 1), Spec(9, 1)
    got = bulk.belows(bounds)
    assert got.tolist() == [spec.below(int(n)) for n in bounds]
    assert (got >= 0).all() and (got < bounds.astype(np.float64)).all()
    assert bulk.next_u32() == spec.u32()
    one = Pcg32(9, 1)
    assert [one.below(int(n)) for n in bounds[:50]] == got[:50].tolist()
    with pytest.raises(ValueError):
        one.below(0)
    with pytest.raises(ValueError):
        one.below(2 ** 32 + 1)


def test_bounded_integers_are_uniform():
    counts = np.bincount(Pcg32(5, 5).belows(np.full(60_000, 6, np.uint64)), minlength=6)
    expected, sigma = 10_000, np.sqrt(60_000 * (1 / 6) * (5 / 6))
    assert (np.abs(counts - expected) < 5 * sigma).all(), counts


@pytest.mark.parametrize("n", [0, 1, 2, 7, 1000, 12_345])
def test_permutation_is_fisher_yates_from_the_end(n):
    got = Pcg32(77, 3).permutation(n)
    assert got.dtype == np.int64 and sorted(got.tolist()) == list(range(n))
    assert got.tolist() == Spec(77, 3).permutation(n)


@pytest.mark.parametrize("n,k", [(10, 0), (10, 1), (10, 10), (1500, 128), (12_000, 50)])
def test_choice_is_fisher_yates_from_the_front(n, k):
    got = Pcg32(2, 8).choice(n, size=k, replace=False)
    assert len(set(got.tolist())) == k and all(0 <= v < n for v in got.tolist())
    assert got.tolist() == Spec(2, 8).choice(n, k)
    with pytest.raises(ValueError):
        Pcg32(2, 8).choice(n, size=n + 1, replace=False)
    with pytest.raises(ValueError):
        Pcg32(2, 8).choice(n, size=1, replace=True)


def test_random_floats_from_the_specified_bits():
    spec = Spec(4, 4)
    f32 = Pcg32(4, 4).random((3, 5), dtype=np.float32)
    assert f32.shape == (3, 5) and f32.dtype == np.float32
    assert f32.ravel().tolist() == [(spec.u32() >> 8) * 2.0 ** -24 for _ in range(15)]
    spec = Spec(4, 4)
    f64 = Pcg32(4, 4).random(7)
    want = []
    for _ in range(7):
        a, b = spec.u32(), spec.u32()
        want.append(((a >> 5) * 2 ** 26 + (b >> 6)) * 2.0 ** -53)
    assert f64.dtype == np.float64 and f64.tolist() == want
    many = Pcg32(1, 1).random(100_000, dtype=np.float32)
    assert many.min() >= 0 and many.max() < 1 and abs(many.mean() - 0.5) < 0.005


def test_state_round_trip_and_refusals():
    rng = Pcg32(31, 7)
    rng.u32(100)
    saved = rng.state
    after = rng.u32(20).tolist()
    other = Pcg32(0, 0)
    other.state = saved
    assert other.u32(20).tolist() == after
    numpy_state = np.random.default_rng(0).bit_generator.state  # a state saved by bnncl 0.2.0
    with pytest.raises(ValueError, match="cannot be resumed"):
        other.state = numpy_state
    with pytest.raises(ValueError, match="odd"):
        other.state = {**saved, "inc": "2"}


def test_each_learner_generator_is_pcg32_seeded_with_its_offset():
    for name, offset in SEED_OFFSETS.items():
        spec = Spec(3 + offset, offset)
        assert generator(3, name).u32(4).tolist() == [spec.u32() for _ in range(4)]
    assert generator(3, "shuffle").u32(3).tolist() != generator(3, "replay").u32(3).tolist()
