"""The C kernels through ctypes (:mod:`bnncl.device.kernels._native` and the wrappers of the binary, floating and
epilogue families): a call split over threads gives the unsplit result bit for bit (each image, pixel or row is
computed on its own), small calls stay on the calling thread, empty inputs and non-contiguous or other-typed inputs
are handled in Python, and bad shapes are refused before C runs.

Oracles: the kernels' NumPy references (every kernel against its reference on random inputs: test_registry.py)."""

import numpy as np
import pytest

from bnncl.device import cruntime
from bnncl.device.bitpack import pack_signs
from bnncl.device.kernels import (
    _native,
    avgpool,
    avgpool_reference,
    bconv,
    bconv_reference,
    bgemm,
    bgemm_reference,
    block_epilogue,
    block_epilogue_reference,
    conv2d,
    conv2d_reference,
    pack_below,
    pack_below_reference,
)
from fixtures import assert_same_bits


def _f32(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def _calls(rng):
    """(name, kernel, reference, args) with 5 to 13 rows along the axis the kernel splits (images, pixels, rows)."""
    x70 = pack_signs(rng.standard_normal((7, 6, 5, 70)))
    w3, w1 = pack_signs(rng.standard_normal((9, 3, 3, 70))), pack_signs(rng.standard_normal((6, 1, 1, 70)))
    c, cs = 70, 35
    dot = rng.integers(-9 * c, 9 * c + 1, (5, 3, 4, c)).astype(np.int32)
    epilogue = (dot, _f32(rng, c, scale=0.05), _f32(rng, c), _f32(rng, 5, 3, 4, cs), _f32(rng, c, scale=0.3),
                _f32(rng, c, scale=0.25), _f32(rng, c, scale=0.3), _f32(rng, c, scale=0.5), True)
    return [
        ("bgemm", bgemm, bgemm_reference,
         (pack_signs(rng.standard_normal((13, 100))), pack_signs(rng.standard_normal((7, 100))), 100)),
        ("bconv 3x3", bconv, bconv_reference, (x70, w3, 70, 1, 1)),
        ("bconv 3x3 stride 2", bconv, bconv_reference, (x70, w3, 70, 2, 1)),
        ("bconv 1x1", bconv, bconv_reference, (x70, w1, 70, 2, 0)),
        ("pack_below", pack_below, pack_below_reference, (_f32(rng, 5, 4, 3, 70), _f32(rng, 70, scale=0.5))),
        ("conv2d", conv2d, conv2d_reference, (_f32(rng, 7, 9, 8, 3), _f32(rng, 8, 3, 3, 3), _f32(rng, 8), 2, 1)),
        ("avgpool", avgpool, avgpool_reference, (_f32(rng, 7, 5, 5, 33), 2)),
        ("block_epilogue", block_epilogue, block_epilogue_reference, epilogue),
    ]


CALLS = [name for name, *_ in _calls(np.random.default_rng(0))]


class CountingPool:
    """cruntime's pool, counting the chunks handed to it."""

    def __init__(self, pool):
        self.pool, self.submitted = pool, 0

    def submit(self, *args):
        self.submitted += 1
        return self.pool.submit(*args)


@pytest.fixture
def pool(monkeypatch):
    """cruntime's thread count restored after the test; its pool counting what it is given."""
    before = cruntime.get_num_threads()
    counting = CountingPool(cruntime.executor())
    monkeypatch.setattr(cruntime, "executor", lambda: counting)
    yield counting
    cruntime.set_num_threads(before)


@pytest.mark.parametrize("name", CALLS)
def test_a_call_split_over_threads_gives_the_unsplit_result(name, pool, monkeypatch):
    _, kernel, reference, args = next(c for c in _calls(np.random.default_rng(1)) if c[0] == name)
    cruntime.set_num_threads(1)
    alone = kernel(*args)
    assert pool.submitted == 0
    assert_same_bits(alone, reference(*args), name)
    monkeypatch.setattr(_native, "MIN_NS_PER_THREAD", 0)  # every call split, however small
    for threads in (2, 3, 5):
        cruntime.set_num_threads(threads)
        pool.submitted = 0
        assert_same_bits(kernel(*args), alone, f"{name}, {threads} threads")
        assert pool.submitted == threads - 1  # the calling thread runs the first chunk


def test_the_split_gives_every_thread_enough_work(pool):
    """Below MIN_NS_PER_THREAD per chunk a call stays on the calling thread; above, one chunk per thread."""
    cruntime.set_num_threads(4)
    x, t = np.zeros((16, 4, 4, 64), np.float32), np.zeros(64, np.float32)  # 16384 values: ~1 us
    pack_below(x, t)
    assert pool.submitted == 0
    x = np.zeros((64, 64, 64, 64), np.float32)  # 2^24 values: ~5 chunks' worth, capped at the 4 threads
    assert x.size * _native.NS_PER["pack_below"] >= 4 * _native.MIN_NS_PER_THREAD
    pack_below(x, t)
    assert pool.submitted == 3
    pool.submitted = 0
    cruntime.set_num_threads(2)
    pack_below(x[:20], t)  # ~1.7 chunks' worth: one
    assert pool.submitted == 0


def test_empty_inputs_give_empty_outputs_without_calling_c():
    rng = np.random.default_rng(2)
    w = pack_signs(rng.standard_normal((4, 3, 3, 33)))
    assert bconv(np.zeros((0, 5, 5, 1), np.uint64), w, 33).shape == (0, 5, 5, 4)
    assert bconv(np.zeros((2, 0, 5, 1), np.uint64), w, 33, 2).shape == (2, 0, 3, 4)
    assert bgemm(np.zeros((0, 2), np.uint64), np.zeros((3, 2), np.uint64), 100).shape == (0, 3)
    assert pack_below(np.zeros((2, 0, 3, 5), np.float32), np.zeros(5, np.float32)).shape == (2, 0, 3, 1)
    assert conv2d(np.zeros((0, 4, 4, 3), np.float32), np.ones((2, 3, 3, 3), np.float32), None).shape == (0, 4, 4, 2)
    assert conv2d(np.zeros((1, 2, 2, 1), np.float32), np.ones((2, 3, 3, 1), np.float32), None, 1, 0).shape \
        == (1, 0, 0, 2)  # the kernel larger than the image: no output pixel
    assert avgpool(np.zeros((0, 5, 5, 3), np.float32), 2).shape == (0, 3, 3, 3)
    v = np.ones(6, np.float32)
    real, bits = block_epilogue(np.zeros((0, 2, 2, 6), np.int32), v, v, np.zeros((0, 2, 2, 3), np.float32), v, v, v,
                                threshold=v)
    assert real.shape == (0, 2, 2, 6) and bits.shape == (0, 2, 2, 1)
    assert block_epilogue(np.zeros((1, 2, 2, 6), np.int32), v, v, np.zeros((1, 2, 2, 6), np.float32), v, v, v,
                          want_real=False) == (None, None)


def test_strided_and_other_typed_inputs_are_made_contiguous_first():
    """Views with strides and float64 inputs: the wrappers pass C-contiguous float32 / uint64 copies (the
    references take the same values)."""
    rng = np.random.default_rng(3)
    x = _f32(rng, 3, 9, 8, 6).astype(np.float64)[:, ::2, 1:, ::2]  # float64, strided: (3, 5, 7, 3)
    w = _f32(rng, 4, 3, 3, 3).transpose(0, 2, 1, 3)
    x32 = x.astype(np.float32)
    assert_same_bits(conv2d(x, w, None, 1, 1), conv2d_reference(x32, w, None, 1, 1), "conv2d")
    assert_same_bits(avgpool(x, 2), avgpool_reference(x32, 2), "avgpool")
    t = np.arange(3, dtype=np.float64) - 1
    assert_same_bits(pack_below(x, t), pack_below_reference(x32, t.astype(np.float32)), "pack_below")
    packed = pack_signs(rng.standard_normal((4, 8, 8, 70)))[:, ::2, ::2]
    wk = pack_signs(rng.standard_normal((5, 3, 3, 70)))
    assert_same_bits(bconv(packed, wk, 70), bconv_reference(packed, wk, 70, 1, 1), "bconv")
    a, b = pack_signs(rng.standard_normal((9, 70)))[::2], pack_signs(rng.standard_normal((6, 70)))[::-1]
    assert_same_bits(bgemm(a, b, 70), bgemm_reference(a, b, 70), "bgemm")
    dot = rng.integers(-50, 50, (2, 3, 3, 8)).astype(np.int64)  # any integer type: int32 in C
    f = lambda *s: _f32(rng, *s)  # noqa: E731
    args = (dot, f(8), f(8), f(2, 3, 3, 4)[..., ::-1], f(8), f(8), f(8), f(8).astype(np.float64))
    assert_same_bits(block_epilogue(*args), block_epilogue_reference(*args), "block_epilogue")


def test_bad_shapes_are_refused_before_c_runs():
    with pytest.raises(ValueError, match="same word count"):
        bgemm(np.zeros(4, np.uint64), np.zeros((2, 4), np.uint64), 10)
    with pytest.raises(ValueError, match="threshold has shape"):
        pack_below(np.zeros((1, 2, 2, 5), np.float32), np.zeros(4, np.float32))
    x, w = np.zeros((1, 4, 4, 3), np.float32), np.zeros((2, 3, 3, 3), np.float32)
    for stride, pad in ((0, 1), (1, -1)):
        with pytest.raises(ValueError, match="do not make a convolution"):
            conv2d(x, w, None, stride, pad)
    with pytest.raises(ValueError, match="bias"):
        conv2d(x, w, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="stride"):
        avgpool(x, 0)
    v = np.ones(6, np.float32)
    with pytest.raises(ValueError, match="conv output"):
        block_epilogue(np.zeros((2, 2, 6), np.int32), v, v, np.zeros((2, 2, 6), np.float32), v, v, v)
    with pytest.raises(ValueError, match="shortcut"):
        block_epilogue(np.zeros((1, 2, 2, 6), np.int32), v, v, np.zeros((1, 2, 2, 3, 1), np.float32), v, v, v)
    with pytest.raises(ValueError, match="threshold has shape"):
        block_epilogue(np.zeros((1, 2, 2, 6), np.int32), v, v, np.zeros((1, 2, 2, 6), np.float32), v, v, v,
                       threshold=np.ones(5, np.float32))
