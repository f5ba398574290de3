"""Latent replay memory (docs/method.md §4): 1-bit and float32 storage, the AR1* and class-balanced
update rules, sampling."""

import math

import numpy as np
import pytest

from bnncl.core.errors import ConfigError
from bnncl.core.memory import LatentMemory
from fixtures import F32_UNIT, F64_UNIT, assert_within_float32

# Fingerprinted ±1 latents: pattern id encoded in binary over 16 activations of shape (4, 2, 2).
FP_SHAPE = (4, 2, 2)
FP_BITS = 16


def fingerprint(ids) -> np.ndarray:
    ids = np.asarray(ids, np.int64)
    bits = (ids[:, None] >> np.arange(FP_BITS)) & 1
    return (bits * 2 - 1).astype(np.float32).reshape(len(ids), *FP_SHAPE)


def read_ids(latents) -> np.ndarray:
    flat = np.asarray(latents).reshape(len(latents), FP_BITS)
    assert set(np.unique(flat).tolist()) <= {-1.0, 1.0}
    return ((flat > 0).astype(np.int64) << np.arange(FP_BITS)).sum(axis=1)


def stored_ids(mem: LatentMemory) -> np.ndarray:
    return read_ids(mem.decode(np.arange(len(mem))))


def label_of(ids, num_classes=5):
    return (np.asarray(ids) * 7 + 3) % num_classes


# -- storage -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3,), (8, 2, 2), (5, 3, 3), (1, 1, 1), (7, 4, 4)])
def test_bits_storage_packs_8_per_byte(shape):
    mem = LatentMemory(6, shape, "bits")
    assert mem.data.dtype == np.uint8
    assert mem.data.shape == (6, math.ceil(np.prod(shape) / 8))
    rng = np.random.default_rng(0)
    mem.update(rng.standard_normal((4, *shape)).astype(np.float32), np.arange(4), "ar1", rng)
    assert mem.data.shape == (6, math.ceil(np.prod(shape) / 8))


@pytest.mark.parametrize("storage", ["bits", "float32"])
def test_pm1_latents_decode_exactly(storage):
    rng = np.random.default_rng(1)
    n, shape = 20, (5, 3, 3)  # 45 bits: the last byte is partly padding
    x = np.where(rng.random((n, *shape)) < 0.5, -1.0, 1.0).astype(np.float32)
    mem = LatentMemory(n, shape, storage)
    mem.update(x, np.arange(n), "ar1", rng)  # labels double as pattern ids
    assert len(mem) == n
    idx = np.arange(n)
    got = mem.decode(idx)
    assert got.dtype == np.float32 and got.shape == (n, *shape)
    np.testing.assert_array_equal(got, x[mem.labels[idx]])
    if storage == "bits":
        np.testing.assert_array_equal(mem.channel_scale, np.ones(5, np.float32))


def test_real_latents_decode_to_sign_times_channel_mean_abs():
    rng = np.random.default_rng(2)
    n, shape = 30, (3, 2, 4)
    # Channels of very different magnitude, no exact zeros.
    x = (rng.standard_normal((n, *shape)) * np.array([0.1, 1.0, 5.0])[None, :, None, None]).astype(np.float32)
    mem = LatentMemory(n, shape, "bits")
    mem.update(x, np.arange(n), "ar1", rng)
    # Oracle: per channel, the mean |x| over every stored pattern and position, computed with plain loops.
    scale = np.zeros(3)
    for c in range(3):
        vals = [abs(float(x[i, c, h, w])) for i in range(n) for h in range(2) for w in range(4)]
        scale[c] = sum(vals) / len(vals)
    got = mem.decode(np.arange(n))
    ids = mem.labels[:n]
    expected = np.sign(x[ids]) * scale[None, :, None, None]
  # the scale: a float64 sum over n values, rounded once to float32; decode multiplies it by ±1 exactly
    assert_within_float32(got, expected, (F32_UNIT + 8 * n * F64_UNIT) * np.abs(expected), "decoded patterns")


def test_decode_scale_counts_every_pattern_that_entered():
    """After replacement, the scale still averages over every pattern ever stored (not only the survivors)."""
    rng = np.random.default_rng(3)
    shape = (2, 3)
    first = rng.standard_normal((10, *shape)).astype(np.float32)
    second = (3 * rng.standard_normal((10, *shape))).astype(np.float32)
    mem = LatentMemory(10, shape, "bits")
    mem.update(first, np.arange(10), "ar1", rng)
    mem.update(second, np.arange(10, 20), "ar1", rng)  # h = min(10 // 2, 10) = 5 enter
    entered_second = sorted(set(mem.labels[:10].tolist()) - set(range(10)))
    assert len(entered_second) == 5
    entered = np.concatenate([first, second[np.array(entered_second) - 10]])
    scale = np.abs(entered.astype(np.float64)).mean(axis=(0, 2))
  # the scale: a float64 sum over n values, rounded once to float32; decode multiplies it by ±1 exactly
    assert_within_float32(mem.channel_scale, scale, (F32_UNIT + 60 * F64_UNIT) * scale, "decode scale")


def test_float32_round_trip_exact():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((12, 4, 3, 3)).astype(np.float32)
    mem = LatentMemory(12, (4, 3, 3), "float32")
    mem.update(x, np.arange(12), "ar1", rng)
    got = mem.decode(np.arange(12))
    np.testing.assert_array_equal(got, x[mem.labels[:12]])


def test_nbytes_formula_and_ratio():
    cap, shape = 300, (512, 4, 4)  # work B's CIFAR-10 setting
    p = 512 * 4 * 4
    bits, f32 = LatentMemory(cap, shape, "bits"), LatentMemory(cap, shape, "float32")
    # documented: stored patterns + int16 labels at full capacity (+ float32 per-channel scale for bits)
    # per channel: the float32 offset and the float64 sum of |x + offset| the decode scale comes from
    assert bits.nbytes() == cap * math.ceil(p / 8) + cap * 2 + 512 * (4 + 8)
    assert f32.nbytes() == cap * p * 4 + cap * 2
    ratio = bits.nbytes() / f32.nbytes()
    assert 1 / 32 <= ratio < 1 / 31
    # the pattern payload alone is exactly 32x smaller
    assert bits.data.nbytes * 32 == f32.data.nbytes


# -- AR1* ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("storage", ["bits", "float32"])
def test_ar1_replaces_min_of_quota_and_new(storage):
    M = 20
    mem = LatentMemory(M, FP_SHAPE, storage)
    rng = np.random.default_rng(5)
    next_id = 0
    # (n_new, expected number of new patterns in memory after the update, expected size)
    plan = [
        (8, 8, 8),      # i = 0: memory empty, all 8 enter
        (30, 12, 20),   # i = 1: quota 20 // 2 = 10, but the memory fills first: 12 free slots
        (30, 6, 20),    # i = 2: full, min(20 // 3, 30) = 6
        (4, 4, 20),     # i = 3: min(20 // 4, 4) = 4
        (30, 4, 20),    # i = 4: min(20 // 5, 30) = 4
    ]
    for i, (n_new, n_in, size) in enumerate(plan):
        before = set(stored_ids(mem).tolist())
        ids = np.arange(next_id, next_id + n_new)
        next_id += n_new
        mem.update(fingerprint(ids), label_of(ids), "ar1", rng)
        now = stored_ids(mem)
        assert len(mem) == size
        assert len(set(now.tolist())) == size  # no pattern stored twice
        new_in = set(now.tolist()) & set(ids.tolist())
        assert len(new_in) == n_in, f"experience {i}"
        old_kept = set(now.tolist()) & before
        assert len(old_kept) == size - n_in
        if i == 1:
            assert old_kept == before  # filling the memory evicts nothing
        np.testing.assert_array_equal(mem.labels[:size], label_of(now))  # labels travel with their latents
    assert mem.updates == len(plan)


def test_ar1_quota_with_partly_free_memory():
    """15 of 20 slots used, quota 20 // 2 = 10: 5 go into free slots, 5 replace stored ones."""
    mem = LatentMemory(20, FP_SHAPE, "bits")
    rng = np.random.default_rng(6)
    mem.update(fingerprint(np.arange(15)), label_of(np.arange(15)), "ar1", rng)
    mem.update(fingerprint(np.arange(100, 140)), label_of(np.arange(100, 140)), "ar1", rng)
    now = set(stored_ids(mem).tolist())
    assert len(mem) == 20 and len(now) == 20
    assert len(now & set(range(100, 140))) == 10
    assert len(now & set(range(15))) == 10


# -- class-balanced ------------------------------------------------------------------------------------------------

def _class_counts(mem, k):
    return np.bincount(mem.labels[: len(mem)], minlength=k)


def test_balanced_rule():
    M = 31
    mem = LatentMemory(M, FP_SHAPE, "bits")
    rng = np.random.default_rng(7)
    label = {}

    def batch(ids, cls):
        for i, c in zip(ids, cls):
            label[int(i)] = int(c)
        return fingerprint(ids), np.asarray(cls)

    # Experience 0: classes 0 and 1, 40 patterns each.
    ids0 = np.arange(80)
    mem.update(*batch(ids0, ids0 % 2), "balanced", rng)
    counts = _class_counts(mem, 4)
    assert counts.sum() == M and len(mem) == M
    assert counts[:2].max() - counts[:2].min() <= 1
    # Experience 1: class 2 with 50 patterns, class 3 with only 4.
    ids1 = np.arange(1000, 1054)
    cls1 = np.where(ids1 < 1050, 2, 3)
    before = set(stored_ids(mem).tolist())
    mem.update(*batch(ids1, cls1), "balanced", rng)
    counts = _class_counts(mem, 4)
    assert counts.sum() == M and len(mem) == M
    assert counts[3] == 4  # the small class keeps all its patterns
    assert counts[:3].max() - counts[:3].min() <= 1
    now = stored_ids(mem)
    assert len(set(now.tolist())) == M  # no duplicates
    assert set(now[mem.labels[:M] == 3].tolist()) == {1050, 1051, 1052, 1053}
    # Every stored pattern is one that was stored before or came with this experience, with its own label.
    assert set(now.tolist()) <= before | set(ids1.tolist())
    np.testing.assert_array_equal(mem.labels[:M], [label[i] for i in now])


def test_balanced_keeps_everything_when_it_fits():
    mem = LatentMemory(50, FP_SHAPE, "float32")
    rng = np.random.default_rng(8)
    ids = np.arange(12)
    mem.update(fingerprint(ids), ids % 3, "balanced", rng)
    assert len(mem) == 12
    assert sorted(stored_ids(mem).tolist()) == ids.tolist()
    np.testing.assert_array_equal(_class_counts(mem, 3), [4, 4, 4])


def test_balanced_with_many_classes_fills_capacity():
    """More classes than a quota of one each: the total still never exceeds the capacity."""
    mem = LatentMemory(5, FP_SHAPE, "bits")
    rng = np.random.default_rng(9)
    ids = np.arange(16)
    mem.update(fingerprint(ids), ids % 8, "balanced", rng)
    counts = _class_counts(mem, 8)
    assert counts.sum() == 5 and counts.max() == 1


# -- sampling, determinism, errors ---------------------------------------------------------------------------------

def test_sample():
    mem = LatentMemory(30, FP_SHAPE, "bits")
    rng = np.random.default_rng(10)
    ids = np.arange(200, 212)
    mem.update(fingerprint(ids), label_of(ids), "ar1", rng)
    x, y = mem.sample(5, rng)
    assert x.shape == (5, *FP_SHAPE) and x.dtype == np.float32 and y.dtype == np.int64
    got = read_ids(x)
    assert len(set(got.tolist())) == 5 and set(got.tolist()) <= set(ids.tolist())
    np.testing.assert_array_equal(y, label_of(got))
    x, y = mem.sample(100, rng)  # more than stored: all 12, each once
    assert len(x) == 12 and sorted(read_ids(x).tolist()) == ids.tolist()
    np.testing.assert_array_equal(y, label_of(read_ids(x)))
    empty = LatentMemory(30, FP_SHAPE, "bits")
    x, y = empty.sample(4, rng)
    assert len(x) == 0 and len(y) == 0


@pytest.mark.parametrize("rule", ["ar1", "balanced"])
def test_deterministic_given_seed(rule):
    def run(seed):
        mem = LatentMemory(16, FP_SHAPE, "bits")
        rng = np.random.default_rng(seed)
        for e in range(3):
            ids = np.arange(100 * e, 100 * e + 25)
            mem.update(fingerprint(ids), label_of(ids), rule, rng)
        return mem.data.copy(), mem.labels.copy(), mem.sample(6, rng)

    a, b = run(11), run(11)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2][0], b[2][0])
    np.testing.assert_array_equal(a[2][1], b[2][1])


def test_class_counts():
    mem = LatentMemory(10, FP_SHAPE, "bits")
    ids = np.arange(7)
    mem.update(fingerprint(ids), np.array([0, 2, 2, 4, 4, 4, 0]), "ar1", np.random.default_rng(0))
    np.testing.assert_array_equal(mem.class_counts(6), [2, 0, 2, 0, 3, 0])


def test_zero_capacity_and_empty_update_store_nothing():
    rng = np.random.default_rng(0)
    mem = LatentMemory(0, FP_SHAPE, "bits")
    mem.update(fingerprint(np.arange(5)), np.zeros(5), "ar1", rng)
    assert len(mem) == 0 and mem.updates == 1
    mem = LatentMemory(4, FP_SHAPE, "bits")
    mem.update(np.zeros((0, *FP_SHAPE), np.float32), np.zeros(0), "balanced", rng)
    assert len(mem) == 0 and mem.updates == 1


def test_errors():
    rng = np.random.default_rng(0)
    mem = LatentMemory(4, FP_SHAPE, "bits")
    with pytest.raises(ConfigError, match=r"holds \(4, 2, 2\) patterns"):
        mem.update(np.zeros((3, 4, 2, 3), np.float32), np.zeros(3), "ar1", rng)
    with pytest.raises(ConfigError, match=r"unknown replay update rule 'fifo' \(valid: ar1, balanced\)"):
        mem.update(fingerprint(np.arange(3)), np.zeros(3), "fifo", rng)
    with pytest.raises(ConfigError, match=r"unknown replay storage 'int8' \(valid: bits, float32\)"):
        LatentMemory(4, FP_SHAPE, "int8")
    with pytest.raises(ConfigError, match=">= 0"):
        LatentMemory(-1, FP_SHAPE, "bits")
    assert len(mem) == 0


def test_offset_makes_the_consumers_signs_exact():
    """With the next block's shift o as offset, sign(decoded + o) == sign(x + o) for every stored value."""
    rng = np.random.default_rng(11)
    shape = (3, 2, 2)
    o = np.array([0.5, -0.3, 0.0], np.float32)
    x = rng.standard_normal((10, *shape)).astype(np.float32)
    mem = LatentMemory(10, shape, "bits", offset=o)
    mem.update(x, np.arange(10), "balanced", rng)  # one class per pattern: the label says which pattern a slot holds
    dec = mem.decode(np.arange(10))
    ob = o.reshape(3, 1, 1)
    src = x[mem.labels[:10].astype(int)]
    np.testing.assert_array_equal(dec + ob >= 0, src + ob >= 0)
    # Decoded magnitudes: |decoded + o| is the per-channel mean |x + o| of what was stored.
    scale = np.abs((x + ob).astype(np.float64)).mean(axis=(0, 2, 3))
    # the scale rounded once to float32 (u, plus x + o's own rounding per term: u), then decode's subtraction of o
    # and the test's addition of it back (u each, relative to |scale| + |o|)
    target = np.broadcast_to(scale.reshape(3, 1, 1), dec.shape)
    bound = F32_UNIT * (2 * target + 2 * (target + np.abs(ob)))
    assert_within_float32(np.abs(dec + ob), target, bound, "decoded magnitudes with an offset")
