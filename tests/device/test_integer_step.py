"""The integer pieces of the device's learning step (:mod:`bnncl.device.integer_step`): ``IntTensor``, one head
step (``IntegerHeadStep``, and the fp32 ``float_head_step``), ``IntegerBits``/``QArray`` with ``IntegerBits.matmul``,
and ``IntegerConv``.

Oracles:

* ``IntTensor``: the definition of the integer quantizer (levels in range, error at most half a step, 0 exact) and
  ``bnncl.core.affine.quantize(..., grid="integer")``, the simulation's float form of the same grid.
* One integer head step: the torch simulation ``HeadHybridStep(grid="integer")``; the float step: torch autograd.
* ``IntegerBits``: the definition of the integer grid (``QParams.for_range`` of the input's range; values
  ``centred * scale``; levels in ``[0, 2^b - 1]``), and plain NumPy arithmetic for what a QArray becomes.
* ``IntegerBits.matmul``: the float64 product of the operands' values, the exact int64 NumPy product of their
  integers, and ``@`` itself.
* ``IntegerConv``: ``NumpyConv`` (float im2col products) on the same quantized operands, in float32 and float64; its
  backward in chunks: the whole minibatch's, bit for bit.

The kernels these run on (``imatmul``, ``col2im``): tests/device/kernels/test_integer.py. The steps inside the
learner: tests/device/test_learner.py (the head) and tests/device/test_trainable.py (the blocks above the LR layer).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bnncl.device.integer_step as hybrid
from bnncl.core.affine import NonFiniteError, QParams, quantize
from bnncl.core.backprop import NumpyConv
from bnncl.core.backprop import col2im as reference_col2im
from bnncl.device.integer_step import (
    IntegerBits,
    IntegerConv,
    IntegerHeadStep,
    IntTensor,
    QArray,
    float_head_step,
    integers,
)
from bnncl.device.kernels import bconv as kernel_bconv
from bnncl.simulation.steps import HeadHybridStep
from fixtures import F32_UNIT, F64_UNIT, assert_within_float32, float32_head_step_bounds, float32_sum_bound


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_kernel_thread):
    yield


# -- 1. IntTensor ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [1, 2, 4, 7, 8, 9, 12, 16])
@pytest.mark.parametrize("kind", ["mixed", "positive", "negative", "clipped"])
def test_int_tensor_quantize(bits, kind):
    rng = np.random.default_rng(bits)
    x = (rng.standard_normal((7, 13)) * 3).astype(np.float32)
    lo = hi = None
    if kind == "positive":
        x = np.abs(x) + 0.5
    elif kind == "negative":
        x = -np.abs(x) - 0.5
    elif kind == "clipped":
        lo, hi = -1.0, 2.5
    x.flat[5] = 0.0
    t = IntTensor.quantize(x, bits, lo, hi, where="test tensor")
    assert t.q.dtype == (np.uint8 if bits <= 8 else np.uint16)
    assert t.q.shape == x.shape and t.bits == bits
    assert t.q.min() >= 0 and int(t.q.max()) <= 2 ** bits - 1
    v = t.value()
    assert v.dtype == np.float32
    target = np.clip(x, lo if lo is not None else x.min(), hi if hi is not None else x.max()).astype(np.float64)
    # at most half a step from the (clipped) value, plus the float32 rounding of the value itself
    bound = t.params.scale / 2 + np.spacing(np.abs(v)).astype(np.float64)
    assert (np.abs(v - target) <= bound).all(), f"max error {np.abs(v - target).max()} for a scale {t.params.scale}"
    assert v.flat[5] == 0.0  # 0 is a level of the integer grid: exact
    np.testing.assert_array_equal(v, quantize(x, bits, lo, hi, grid="integer"))
    assert t.nbytes == -(-x.size * bits // 8) + 8


def test_int_tensor_value_is_levels_minus_zero_times_scale_across_chunks():
    """value() works a chunk at a time: ((q - Z) * scale) in float64, rounded once to float32, over the whole array."""
    from bnncl.core import affine as quant

    x = np.random.default_rng(4).standard_normal((5, quant.CHUNK // 2 + 9)).astype(np.float32)
    for bits in (8, 16):
        t = IntTensor.quantize(x, bits, where="test tensor")
        want = ((t.q.astype(np.int64) - t.params.zero_point) * np.float64(t.params.scale)).astype(np.float32)
        np.testing.assert_array_equal(t.value(), want)
        assert t.value().shape == x.shape


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_int_tensor_refuses_non_finite_values_naming_the_tensor(bad):
    x = np.linspace(-1, 1, 12, dtype=np.float32)
    x[4] = bad
    with pytest.raises(NonFiniteError, match="the tensor under test"):
        IntTensor.quantize(x, 8, where="the tensor under test")
    with pytest.raises(NonFiniteError, match="the tensor under test"):
        IntTensor.quantize(x, 8, -1.0, 1.0, where="the tensor under test")  # a given range clips, never hides a NaN
    step = IntegerHeadStep(8, 16, 0.1)
    h = np.ones((3, 4), np.float32)
    h[1, 2] = bad
    with pytest.raises(NonFiniteError, match="head input"):
        step(step.store(np.full((2, 4), 0.1, np.float32)), h, np.array([0, 1, 0]))


# -- 2. one step against the torch simulation and torch autograd ---------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("features", [64, 256])
@pytest.mark.parametrize("start", ["random", "zero"])
def test_integer_step_equals_the_simulation_on_the_integer_grid(seed, features, start):
    """One ``IntegerHeadStep(8, 16)`` equals ``HeadHybridStep(grid="integer")`` on the same stored head and batch.

    The two compute the same quantities; the only difference is float rounding order (the device rescales exact
    integer sums in float64, the simulation multiplies in float32 BLAS), which can flip one rounding at a level
    boundary. Bounds: read on the device's grid (scale S, zero point Z), the simulation's new weights sit on the same
    integer levels up to one level anywhere; from a random head at least 99 % of the new weights are bit-for-bit
    equal. The simulation's values are (level - Z) * S up to the float32 rounding of its range, at most n u relative
    (n = 178 terms per sum, u = 2^-24: 1.1e-5), plus half a float32 ulp. From a zero head (where CWR* starts every
    new class) the new weights' range is that of lr * g, whose float32 sums differ from the exact ones in the last
    bits, so the two scales differ by that rounding and no value need be bit-for-bit equal: the levels and the scale
    bound are what holds there.
    """
    classes, batch, lr = 10, 178, (0.05, 0.5)[seed % 2]
    rng = np.random.default_rng(seed)
    w_float = (0.1 * rng.standard_normal((classes, features))).astype(np.float32)
    if start == "zero":
        w_float[:] = 0
    h = rng.standard_normal((batch, features)).astype(np.float32)
    y = rng.integers(0, classes, batch)
    step = IntegerHeadStep(8, 16, lr, "nearest")
    w = step.store(w_float)
    w_new, _ = step(w, h, y)

    head = nn.Linear(features, classes, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(w.value()))
    HeadHybridStep(head, 8, 16, lr, "dynamic", "nearest", grid="integer")(torch.from_numpy(h), torch.from_numpy(y))
    ours, theirs = w_new.value(), head.weight.detach().numpy()

    assert w_new.q.dtype == np.uint16
    assert not np.array_equal(ours, w.value()), "the step changed nothing: the comparison would be vacuous"
    scale, zero = w_new.params.scale, w_new.params.zero_point
    levels = np.rint(theirs.astype(np.float64) / scale) + zero
    level_diff = np.abs(levels - w_new.q.astype(np.int64))
    assert level_diff.max() <= 1, f"a weight is {level_diff.max()} levels off"
    off_grid = np.abs(theirs - (levels - zero) * scale)
    assert (off_grid <= batch * 2.0 ** -24 * np.abs(theirs) + np.spacing(np.abs(theirs))).all()
    if start == "random":
        assert np.mean(ours == theirs) >= 0.99, f"only {np.mean(ours == theirs):.2%} of the weights are equal"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float_step_equals_torch_autograd_sgd(seed):
    """The fp32 head step and torch autograd + SGD, both against the exact step (float64) within the float32 bounds of
    :func:`float32_head_step_bounds`, and against each other within the two bounds together."""
    classes, features, batch, lr = 10, 48, 23, 0.3
    rng = np.random.default_rng(seed)
    w = (0.2 * rng.standard_normal((classes, features))).astype(np.float32)
    h = rng.standard_normal((batch, features)).astype(np.float32)
    y = rng.integers(0, classes, batch)
    ref = nn.Linear(features, classes, bias=False)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(w))
    loss = F.cross_entropy(ref(torch.from_numpy(h)), torch.from_numpy(y))
    loss.backward()
    expected = (ref.weight - lr * ref.weight.grad).detach().numpy()
    ours, result = float_head_step(w, h, y, lr)
    assert ours.dtype == np.float32
    (w_exact, ew), (g_exact, eg), (loss_exact, eloss) = float32_head_step_bounds(w, h, y, lr)
    assert np.abs(g_exact).max() > 100 * eg.max()  # the bounds are far below the step itself: the test can fail
    for name, new_w, grad, value in (("device", ours, result.gradient, result.loss),
                                     ("torch", expected, ref.weight.grad.numpy(), loss.item())):
        assert_within_float32(new_w, w_exact, ew, f"{name}: new head")
        assert_within_float32(grad, g_exact, eg, f"{name}: gradient")
        assert abs(value - loss_exact) <= eloss, f"{name}: loss {value} vs {loss_exact} (bound {eloss:.3g})"
    assert_within_float32(ours, expected, 2 * ew, "device vs torch: new head")


# -- 3. IntegerBits and QArray ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("kind", ["mixed", "positive"])
def test_integer_bits_return_values_with_their_integers(rounding, kind):
    rng = np.random.default_rng(7)
    x = (3 * rng.standard_normal((4, 6, 5))).astype(np.float32)
    if kind == "positive":
        x = np.abs(x) + 0.25  # the grid still holds 0: the range is [0, max]
    bits = IntegerBits(8, 16, 8, rounding, np.random.default_rng(11))
    for name, width in (("f", 8), ("b", 16), ("bin", 8)):
        q = getattr(bits, name)(x, f"test tensor ({name})")
        assert isinstance(q, QArray) and q.dtype == np.float32 and q.shape == x.shape
        got = integers(q)
        assert got is not None, f"{name}: no integers attached"
        centred, scale = got
        assert centred.dtype == np.int32 and centred.shape == x.shape
        grid = QParams.for_range(float(x.min()), float(x.max()), width)
        assert scale == grid.scale, f"{name}: scale {scale} for the range's {grid.scale}"
        levels = centred.astype(np.int64) + grid.zero_point
        assert levels.min() >= 0 and levels.max() <= 2 ** width - 1, f"{name}: levels outside {width} bits"
        exact = centred.astype(np.float64) * scale
        # the float values are centred * scale up to their float32 rounding (half a float32 ulp)
        assert (np.abs(q - exact) <= np.spacing(np.abs(q)).astype(np.float64) / 2).all(), name
        # a quantizer: within half a step of x (nearest), within one step (stochastic)
        step = (0.5 if rounding == "nearest" else 1.0) * scale
        assert (np.abs(exact - x) <= step * (1 + 1e-9)).all(), f"{name}: {np.abs(exact - x).max()} > {step}"
        derived = {"x + 1": q + 1, "x * 2": q * 2, "x.T": q.T, "np.where": np.where(q > 0, q, 0), "-x": -q,
                   "x[1:]": q[1:], "x.reshape": q.reshape(-1), "x.sum(axis=0)": q.sum(axis=0), "x - x": q - q}
        for what, y in derived.items():
            assert integers(y) is None, f"{name}: {what} still carries integers"
    if rounding == "stochastic":  # a seeded generator: the same levels again; and other levels than nearest's
        one, two = (IntegerBits(8, 16, 8, "stochastic", np.random.default_rng(11)).f(x, "seeded") for _ in range(2))
        np.testing.assert_array_equal(integers(one)[0], integers(two)[0])
        assert not np.array_equal(integers(one)[0], integers(IntegerBits(8, 16, 8).f(x, "nearest"))[0])


# -- 4. matmul --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ta,tb", list(itertools.product([False, True], repeat=2)))
def test_matmul_of_qarrays_runs_on_integers_and_equals_the_float_product(ta, tb):
    rng = np.random.default_rng(int(ta) * 2 + int(tb))
    m, k, n = 6, 33, 5
    a_val, b_val = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    bits = IntegerBits(8, 16, 8)
    a = bits.f((a_val.T if ta else a_val).astype(np.float32), "a")  # stored transposed when ta: matmul reads a.T
    b = bits.b((b_val.T if tb else b_val).astype(np.float32), "b")
    out = bits.matmul(a, b, ta, tb)
    av, bv = np.asarray(a, np.float64), np.asarray(b, np.float64)
    av, bv = (av.T if ta else av), (bv.T if tb else bv)
    assert out.dtype == np.float32 and out.shape == (m, n)
    # the float product of the values: the values are the integers times the scale rounded once to float32 (the
    # product of two: 2u relative per term), the result the exact sum rescaled and rounded once (u)
    ref = av @ bv
    abs_terms = np.abs(av) @ np.abs(bv)
    bound = 3 * F32_UNIT * abs_terms + float32_sum_bound(abs_terms, k, F64_UNIT)
    assert_within_float32(out, ref, bound, "integer matmul vs the float64 product of the values")
    # computed on the integers: the exact int64 product rescaled once
    (ca, sa), (cb, sb) = integers(a), integers(b)
    ca, cb = (ca.T if ta else ca).astype(np.int64), (cb.T if tb else cb).astype(np.int64)
    np.testing.assert_array_equal(out, ((ca @ cb) * (sa * sb)).astype(np.float32))

    # plain operands, one plain operand, or a QArray whose integers are gone: the float product itself
    pa = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    pb = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    tr = lambda x, t: np.asarray(x).T if t else np.asarray(x)  # noqa: E731
    for x, y in ((pa, pb), (a, pb), (pa, b), (a + 0, b)):
        np.testing.assert_array_equal(bits.matmul(x, y, ta, tb), tr(x, ta) @ tr(y, tb))


# -- 5. IntegerConv ---------------------------------------------------------------------------------------------------

def _two_valued(wb: np.ndarray, latent: np.ndarray) -> bool:
    """Per output channel, one value where the latent weight is >= 0 and one where it is < 0."""
    for c in range(len(wb)):
        plus = latent[c] >= 0
        if len(np.unique(wb[c][plus])) > 1 or len(np.unique(wb[c][~plus])) > 1:
            return False
    return True


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("cin,cout", [(5, 3), (64, 16), (70, 3)])
@pytest.mark.parametrize("path", ["popcount", "stochastic", "not two-valued"])
def test_integer_conv_equals_the_float_conv(monkeypatch, path, cin, cout, stride):
    """Forward and backward of the binary conv (+1 padding) on the same quantized operands, against a float64
    oracle (the float conv in float64 on the operands' float32 values). The integer conv sums the exact levels and
    rounds once to float32; the float operands are those levels times the scale, each rounded once to float32: within
    ``u * (sum|term| + |result|)`` of the oracle (u: float32's unit roundoff). The float conv (float32 BLAS) sums K
    terms in an order of its own: within ``gamma_K * sum|term|`` of it (float32 arithmetic, any order).
    ``popcount``: weights ``Q_8(sign(W) mean|W|)`` with nearest rounding, two values per channel, the XNOR-popcount
    path; ``stochastic``: the same weights rounded stochastically, and ``not two-valued``: ``Q_8(W)`` itself; both
    take the integer GEMM."""
    rng = np.random.default_rng(cin * 10 + cout + stride)
    x = np.where(rng.standard_normal((2, cin, 7, 7)) >= 0, 1.0, -1.0).astype(np.float32)
    latent = (0.1 * rng.standard_normal((cout, cin, 3, 3))).astype(np.float32)
    alpha = np.abs(latent).mean(axis=(1, 2, 3), keepdims=True)
    bits = IntegerBits(8, 16, 8, "stochastic" if path == "stochastic" else "nearest", np.random.default_rng(1))
    wb = bits.f(latent if path == "not two-valued" else np.where(latent >= 0, 1, -1) * alpha, "conv weights")
    assert _two_valued(wb, latent) == (path == "popcount")
    popcounts = []
    monkeypatch.setattr(hybrid.kernels, "bconv", lambda *a, **kw: popcounts.append(1) or kernel_bconv(*a, **kw))

    conv, ref = IntegerConv(), NumpyConv()
    w64 = np.asarray(wb, np.float64)
    c, saved = conv.forward(x, wb, stride)
    c_ref, saved_ref = ref.forward(x, np.asarray(wb), stride)
    c_64, saved_64 = ref.forward(x.astype(np.float64), w64, stride)
    assert (len(popcounts) > 0) == (path == "popcount"), f"popcount kernel called {len(popcounts)} times"
    assert c.dtype == np.float32 and c.shape == c_ref.shape == (2, cout, -(-7 // stride), -(-7 // stride))
    # |x| = 1 at every tap (the padding is +1 too): each output's terms sum to its channel's sum |w|
    k = cin * 9
    sum_abs = np.broadcast_to(np.abs(w64).sum(axis=(1, 2, 3))[None, :, None, None], c.shape)
    oracle_error = float32_sum_bound(sum_abs, k, F64_UNIT)
    assert_within_float32(c, c_64, F32_UNIT * (sum_abs + np.abs(c_64)) + oracle_error, "integer forward")
    assert_within_float32(c_ref, c_64, float32_sum_bound(sum_abs, k) + oracle_error, "float forward")

    gc = bits.b(rng.standard_normal(c_ref.shape).astype(np.float32), "conv output gradient")
    gx, gw = conv.backward(gc, wb, stride, saved)
    gx_ref, gw_ref = ref.backward(np.asarray(gc), np.asarray(wb), stride, saved_ref)
    gx_64, gw_64 = ref.backward(np.asarray(gc, np.float64), w64, stride, saved_64)
    assert gx.shape == x.shape and gw.shape == latent.shape and gx.dtype == gw.dtype == np.float32
    abs_gc = np.abs(np.asarray(gc, np.float64))
    # input gradient: per input value, Cout products per tap (BLAS), then up to 9 taps added by col2im; the integer
    # path's scale product and rescaling are float64 roundings, then one float32 rounding; each float term is the
    # product of two values rounded once
    abs_gcols = abs_gc.transpose(0, 2, 3, 1).reshape(-1, cout) @ np.abs(w64).reshape(cout, -1)
    sum_abs_gx = reference_col2im(abs_gcols, saved_ref[1], 3, stride, 1)
    oracle_error = float32_sum_bound(sum_abs_gx, cout + 9, F64_UNIT)
    bound = 2 * F32_UNIT * sum_abs_gx + (F32_UNIT + 3 * F64_UNIT) * np.abs(gx_64) + oracle_error
    assert_within_float32(gx, gx_64, bound, "integer input gradient")
    assert_within_float32(gx_ref, gx_64, float32_sum_bound(sum_abs_gx, cout + 9) + oracle_error, "float input gradient")
    # weight gradient: per weight, one term gc * (±1) for every output position of every image
    m = gc.shape[0] * gc.shape[2] * gc.shape[3]
    sum_abs_gw = np.broadcast_to(abs_gc.sum(axis=(0, 2, 3))[:, None, None, None], gw.shape)
    oracle_error = float32_sum_bound(sum_abs_gw, m, F64_UNIT)
    assert_within_float32(gw, gw_64, F32_UNIT * sum_abs_gw + (F32_UNIT + F64_UNIT) * np.abs(gw_64) + oracle_error,
                          "integer weight gradient")
    assert_within_float32(gw_ref, gw_64, float32_sum_bound(sum_abs_gw, m) + oracle_error, "float weight gradient")


@pytest.mark.parametrize("stride", [1, 2])
def test_integer_conv_backward_in_chunks_is_the_whole_minibatchs_bit_for_bit(stride):
    """The backward a few images at a time: integer sums split differently, the same gradients to the last bit."""
    rng = np.random.default_rng(stride)
    x = np.where(rng.standard_normal((7, 12, 6, 6)) >= 0, 1.0, -1.0).astype(np.float32)
    bits = IntegerBits(8, 16, 8, "nearest", None)
    wb = bits.f((0.1 * rng.standard_normal((5, 12, 3, 3))).astype(np.float32), "conv weights")
    _, saved = IntegerConv(chunk=7).forward(x, wb, stride)
    side = -(-6 // stride)
    gc = bits.b(rng.standard_normal((7, 5, side, side)).astype(np.float32), "conv output gradient")
    gx, gw = IntegerConv(chunk=7).backward(gc, wb, stride, saved)
    assert np.abs(gw).max() > 0 and np.abs(gx).max() > 0
    for chunk in (1, 3, 100):
        gx_c, gw_c = IntegerConv(chunk=chunk).backward(gc, wb, stride, saved)
        assert gx_c.dtype == gw_c.dtype == np.float32
        np.testing.assert_array_equal(gx_c, gx, err_msg=f"input gradient, chunks of {chunk}")
        np.testing.assert_array_equal(gw_c, gw, err_msg=f"weight gradient, chunks of {chunk}")
