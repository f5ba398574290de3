"""The device learner's trainable part above a block (work B): :mod:`bnncl.device.trainable` (``BlocksPart``), its
integer pieces (:mod:`bnncl.device.integer_step`: ``IntegerBits``/``QArray``, ``IntegerConv``) and kernels (``col2im``).

Oracles:

* ``kernels.col2im``: the NumPy reference ``bnncl.core.backprop.col2im``.
* ``IntegerBits``: the definition of the integer grid (``QParams.for_range`` of the input's range; values
  ``centred * scale``; levels in ``[0, 2^b - 1]``), and plain NumPy arithmetic for what a QArray becomes.
* ``IntegerBits.matmul``: the float64 product of the operands' values, the exact int64 NumPy product of their
  integers, and ``@`` itself.
* ``IntegerConv``: ``NumpyConv`` (float im2col products) on the same quantized operands.
* One learning step of ``BlocksPart``: the torch simulation ``BackpropHybridStep(grid="integer")`` at 8/16/8, and
  torch autograd + ``torch.optim.SGD`` (+ latent-weight clipping) at 32/32/32.
* Inference after ``end``: the torch model in eval mode holding the same trained parameters.
* Refusals: the error type and the file named in its message. Determinism and resume: an uninterrupted run with the
  same seed. Memory: counts of the torch model's tensors and the float32 replay memory.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bnncl.device.integer_step as hybrid
from bnncl.binarizers import clip_latent_weights
from bnncl.checkpoint import load_model, save_checkpoint
from bnncl.core.affine import QParams
from bnncl.core.backprop import Bits, NumpyConv
from bnncl.core.backprop import col2im as reference_col2im
from bnncl.core.errors import ConfigError
from bnncl.core.options import LearnOptions
from bnncl.device import Learner, Model
from bnncl.device.integer_step import IntegerBits, IntegerConv, QArray, integers
from bnncl.device.kernels import bconv as kernel_bconv
from bnncl.device.kernels import col2im as kernel_col2im
from bnncl.export import export_checkpoint
from bnncl.layers import BinaryBlock
from bnncl.models import BackboneConfig, normalize_tensor
from bnncl.simulation.steps import BackpropHybridStep
from fixtures import (
    F32_UNIT,
    F64_UNIT,
    assert_within_float32,
    float32_chain_bound,
    float32_sum_bound,
    randomized,
    reduction_terms,
)

CLASSES = 5
# 8x8 grey images; block2 (5 -> 15 channels, stride 2, duplicate shortcut) is the LR layer, block3 (15 -> 15,
# identity shortcut, real input with a shift) sits above it. Odd widths: the packed words are partly filled.
TINY = dict(input_shape=(8, 8, 1), num_classes=CLASSES, stem_channels=5, stages=((5, 1, 1), (15, 2, 2)), name="tiny")
CONFIGS = {
    "binary": BackboneConfig(**TINY, binary_boundary="block2"),  # block2 takes the ±1 output of a binarize layer
    "real": BackboneConfig(**TINY),  # block2 takes block1's real output through its own shift
}
LR_LAYER = "block2"
LATENT = (5, 8, 8)  # the LR layer's activation (C, H, W): 320 values, a multiple of 8
# BlockParams field -> the torch block's state-dict key
BLOCK_KEYS = {"weight": "conv.weight", "bn_weight": "bn.weight", "bn_bias": "bn.bias",
              "running_mean": "bn.running_mean", "running_var": "bn.running_var", "shift": "shift.bias",
              "input_scale": "input_scale.scale", "shift_in": "act.shift_in.bias", "slope": "act.prelu.weight",
              "shift_out": "act.shift_out.bias"}
BN_KEYS = ("bn_weight", "bn_bias", "running_mean", "running_var")


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_numba_thread):
    yield


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``(checkpoint, model file)`` per name. ``binary-<seed>``/``real-<seed>``: exported with the LR layer at
    block2 and the latent weights; ``signs-only``: without them; ``downsample``: block2 has the binary 1x1
    shortcut; ``lr-at-3``: exported with the LR layer at block3 (block2 frozen). The names share no word with
    the messages the refusal tests look for."""
    d = tmp_path_factory.mktemp("trainable")
    out = {}

    def make(name, config, seed, lr_layer=LR_LAYER, latent_weights=True):
        if name not in out:
            save_checkpoint(d / f"{name}.pt", randomized(config, seed))
            export_checkpoint(d / f"{name}.pt", d / f"{name}.bnn", lr_layer=lr_layer, latent_weights=latent_weights)
            out[name] = (d / f"{name}.pt", d / f"{name}.bnn")
        return out[name]

    return make


def device_options(bits=8, **kw) -> LearnOptions:
    base = dict(strategy="ar1", lr_layer=LR_LAYER, q_f=bits, q_b=16 if bits < 32 else 32, q_bin=bits, lr=0.1, epochs=1,
                batch_size=4, replay_size=8, replay_batch=4)
    return LearnOptions(**{**base, **kw})


# -- 1. col2im ------------------------------------------------------------------------------------------------------

COL2IM_CASES = [(hw, stride) for hw in (7, 4) for stride in (1, 2)]


def _columns(rng, dtype, hw, stride, n=3, c=5, k=3, pad=1, values="random"):
    ho = (hw + 2 * pad - k) // stride + 1
    shape = (n, c, hw, hw, ho, ho)
    size = (n * ho * ho, c * k * k)
    if values == "small integers":
        g = rng.integers(-64, 65, size).astype(dtype)
    elif np.issubdtype(dtype, np.floating):
        g = rng.standard_normal(size).astype(dtype)
    else:
        big = 2 ** 26 if dtype == np.int32 else 2 ** 58  # nine terms stay within the type
        g = rng.integers(-big, big, size).astype(dtype)
    return g, shape


@pytest.mark.parametrize("hw,stride", COL2IM_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64])
def test_col2im_equals_the_numpy_reference(dtype, hw, stride):
    """Random columns (normal floats; integers up to 2^26 / 2^58): the kernel's result is the reference's exactly,
    same dtype and shape. (Floats: the nine contributions to a pixel must be summed in the reference's order.)"""
    rng = np.random.default_rng(hw * 10 + stride)
    g, shape = _columns(rng, dtype, hw, stride)
    ours, ref = kernel_col2im(g, shape, 3, stride, 1), reference_col2im(g, shape, 3, stride, 1)
    assert ours.dtype == ref.dtype == dtype and ours.shape == ref.shape == shape[:4]
    assert np.abs(ref).max() > 0
    differ = int((ours != ref).sum())
    assert differ == 0, f"{differ} of {ours.size} values differ, by up to {np.abs(ours - ref).max():.3g}"


@pytest.mark.parametrize("hw,stride", COL2IM_CASES)
def test_col2im_float32_scatter_is_the_reference_where_sums_are_exact(hw, stride):
    """float32 columns holding small integers (every partial sum exact in any order): equal, also for
    Fortran-ordered columns. Where this passes and the random case fails, only the order of the float additions
    differs, not which column lands on which pixel."""
    rng = np.random.default_rng(100 + hw * 10 + stride)
    g, shape = _columns(rng, np.float32, hw, stride, values="small integers")
    ref = reference_col2im(g, shape, 3, stride, 1)
    np.testing.assert_array_equal(kernel_col2im(g, shape, 3, stride, 1), ref)
    np.testing.assert_array_equal(kernel_col2im(np.asfortranarray(g), shape, 3, stride, 1), ref)


# -- 2. IntegerBits and QArray ----------------------------------------------------------------------------------------

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


# -- 3. matmul --------------------------------------------------------------------------------------------------------

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


# -- 4. IntegerConv ---------------------------------------------------------------------------------------------------

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
    monkeypatch.setattr(hybrid, "bconv", lambda *a, **kw: popcounts.append(1) or kernel_bconv(*a, **kw))

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

# -- 5. one learning step of BlocksPart ------------------------------------------------------------------------------

def _step_setup(exported, kind, seed, options, n=6):
    """The device learner's part and the torch model's trainable part, with the same head rows, latent batch and
    labels."""
    pt, path = exported(f"{kind}-{seed}", CONFIGS[kind], seed)
    model, _ = load_model(pt)
    frozen, trainable = model.split(LR_LAYER)
    learner = Learner(Model.load(path), options)
    rng = np.random.default_rng(seed)
    if kind == "binary":
        x = np.where(rng.standard_normal((n, *LATENT)) >= 0, 1.0, -1.0).astype(np.float32)
    else:
        images = rng.integers(0, 256, (n, *CONFIGS[kind].input_shape), dtype=np.uint8)
        with torch.no_grad():
            x = frozen(normalize_tensor(torch.from_numpy(images))).numpy()
    y = rng.integers(0, CLASSES, n)
    rows = (0.3 * rng.standard_normal((CLASSES, 15))).astype(np.float32)
    assert (rows != 0).all()
    learner.part.begin(rows)
    with torch.no_grad():
        trainable.get_submodule("head").weight.copy_(torch.from_numpy(rows))
    return model, trainable, learner, x, y


def _pairs(learner, trainable):
    """(name, device array, torch array, key) for every trained tensor, the head last."""
    sd = trainable.state_dict()
    out = []
    for p in learner.part.params:
        for key, tkey in BLOCK_KEYS.items():
            if getattr(p, key) is not None:
                out.append((f"{p.name}.{key}", getattr(p, key), sd[f"{p.name}.{tkey}"].numpy(), key))
    out.append(("head", learner.part.head, sd["head.weight"].numpy(), "head"))
    return out


def _grid(values: np.ndarray, step: float, what: str) -> tuple[np.ndarray, float]:
    """The integer levels of ``values`` on a grid through 0 of about ``step`` (the simulation's), and the grid's
    exact step fitted to them; every value (but those clipped to ±1) must sit on that grid up to its float32
    rounding."""
    q = np.rint(values / step)
    free = np.abs(values) < 1  # latent weights are clipped to [-1, 1] after their quantizer
    k = np.argmax(np.where(free, np.abs(q), -1))
    fitted = float(values.flat[k]) / float(q.flat[k])
    off = np.abs(values - q * fitted)[free]
    assert (off <= np.spacing(np.abs(values).max())).all(), f"{what}: off its grid by {off.max():.3g}"
    return q, fitted


@pytest.mark.parametrize("q_bin_update", ["plain", "rebinarize"])
@pytest.mark.parametrize("kind", ["binary", "real"])
def test_one_integer_step_equals_the_simulation_on_the_integer_grid(exported, kind, q_bin_update):
    """One SGD step of the device's ``BlocksPart`` at 8/16/8 equals ``BackpropHybridStep(grid="integer")`` on the
    same parameters, head rows and batch.

    The two compute the same quantities on the same grids; the only allowed difference is float rounding order: the
    device's conv and head products are exact integer sums rescaled once, torch's are float32 convs and BLAS sums.
    That can tip a rounding at a level boundary. It also moves a tensor's min/max (so its quantizer's step) in the
    last bits, which moves every value of the tensor by a float32 rounding while it stays on the same integer
    level: bit-for-bit equality of the values is not what holds, equality of the levels is. So, for the
    parameters stored on a grid (conv latent weights at q_bin, shifts, slopes, input scales and the head at q_b),
    read as integer levels of a grid through 0:

    * each side's values sit on one grid (integer multiples of one step, up to float32 rounding), the two steps
      within 1 % of each other (the simulation's step: that of its pre-rounding range);
    * every entry at most one level apart, and at least 99 % of all those entries on the same level;

    BN parameters and running statistics (float, never quantized) within float32 rounding through the network
    (``float32_chain_bound``: twice, two float32 computations in different orders).

    Exact ties are frequent here: a binary conv's output is an integer multiple of its weights' step, so its 8-bit
    requantization puts some values exactly half-way between two levels; a flip there in the forward pass moves
    every later value by more than the bounds above (seeds 0 to 3 have one, in one or both configurations). The
    seed below has none, which the test checks first: the two losses agree to float32 rounding (a flipped level
    moves a logit by a step of its 8-bit grid, orders of magnitude above that bound).
    """
    seed, lr = 4, 0.1
    options = device_options(8, q_bin_update=q_bin_update, lr=lr, seed=seed)
    _, trainable, learner, x, y = _step_setup(exported, kind, seed, options)
    assert learner.part.params[0].binary_input == (kind == "binary")
    before = {k: v.clone() for k, v in trainable.state_dict().items()}
    with torch.no_grad():
        logits = trainable(torch.from_numpy(x))
    logit_bound = 2 * float32_chain_bound(reduction_terms(trainable, torch.from_numpy(x)), logits.abs().max().item())
    terms = reduction_terms(trainable, torch.from_numpy(x), backward=True)
    step = BackpropHybridStep(trainable, 8, 16, 8, lr, "nearest", seed, q_bin_update, grid="integer")
    loss_sim = step(torch.from_numpy(x.copy()), torch.from_numpy(y))
    loss_dev = learner.part.train_step(x.copy(), y)
    # |d loss / d logit| sums to at most 2 per image: the loss moves by at most twice the logits' largest error
    assert abs(loss_dev - loss_sim) <= 2 * logit_bound, f"losses {loss_dev} vs {loss_sim}: a forward tie flipped"

    same_level, total = 0, 0
    sim_blocks = {b.name: b for b in step.bp.blocks}
    for name, ours, theirs, key in _pairs(learner, trainable):
        tkey = "head.weight" if key == "head" else f"{name.split('.')[0]}.{BLOCK_KEYS[key]}"
        assert ours.shape == theirs.shape and ours.dtype == np.float32, name
        assert not np.array_equal(theirs, before[tkey].numpy()), f"{name}: the step changed nothing"
        if key in BN_KEYS:
            assert_within_float32(ours, theirs, 2 * float32_chain_bound(terms, np.abs(theirs).max()), name)
            continue
        if key == "weight":  # quantized before the clip to [-1, 1]: the grid is that of the pre-clip range
            w0 = before[tkey].numpy()
            pre = (np.where(w0 >= 0, 1.0, -1.0) if q_bin_update == "rebinarize" else w0) \
                - np.float32(lr) * sim_blocks[name.split(".")[0]].grads["conv.weight"]
            step_sim = QParams.for_range(float(pre.min()), float(pre.max()), 8).scale
        else:  # the quantized tensor spans its grid: its own range gives the step
            step_sim = QParams.for_range(float(theirs.min()), float(theirs.max()), 16).scale
        q_dev, step_dev = _grid(ours, step_sim, f"{name} (device)")
        q_sim, step_fit = _grid(theirs, step_sim, f"{name} (simulation)")
        assert abs(step_dev / step_fit - 1) <= 0.01, f"{name}: grid steps {step_dev} vs {step_fit}"
        assert np.abs(q_dev - q_sim).max() <= 1, f"{name}: {np.abs(q_dev - q_sim).max():.0f} levels apart"
        same_level += int((q_dev == q_sim).sum())
        total += q_dev.size
    assert same_level >= 0.99 * total, f"only {same_level} of {total} quantized entries on the same level"


@pytest.mark.parametrize("kind", ["binary", "real"])
def test_fp32_step_equals_torch_autograd_sgd(exported, kind):
    """At 32/32/32 (``Bits()`` and ``NumpyConv``) with the plain update, against torch autograd in float64 on the
    trainable part in training mode, cross entropy, ``torch.optim.SGD`` and the latent weights clipped to [-1, 1]:
    every parameter and running statistic within float32 rounding through the forward and backward passes
    (``float32_chain_bound``)."""
    seed, lr = 4, 0.1
    _, trainable, learner, x, y = _step_setup(exported, kind, seed, device_options(32, q_bin_update="plain", lr=lr))
    assert type(learner.part.bits) is Bits and type(learner.part.conv) is NumpyConv  # the float32 learner's pieces
    before = {k: v.clone() for k, v in trainable.state_dict().items()}
    terms = reduction_terms(trainable, torch.from_numpy(x), backward=True)
    loss_dev = learner.part.train_step(x.copy(), y)

    exact = copy.deepcopy(trainable).double().train()
    optimizer = torch.optim.SGD(exact.parameters(), lr=lr)
    logits = exact(torch.from_numpy(x).double())
    loss = F.cross_entropy(logits, torch.from_numpy(y))
    loss.backward()
    optimizer.step()
    clip_latent_weights(exact)
    logit_bound = float32_chain_bound(reduction_terms(trainable, torch.from_numpy(x)), logits.abs().max().item())
    assert abs(loss_dev - loss.item()) <= 2 * logit_bound  # see the integer step's test
    sd = exact.state_dict()
    for name, ours, _, key in _pairs(learner, trainable):
        tkey = "head.weight" if key == "head" else f"{name.split('.')[0]}.{BLOCK_KEYS[key]}"
        theirs = sd[tkey].numpy()
        assert not np.array_equal(theirs, before[tkey].double().numpy()), f"{name}: the step changed nothing"
        assert_within_float32(ours, theirs, float32_chain_bound(terms, np.abs(theirs).max()), name)
    assert learner.part.params[0].binary_input == (kind == "binary")


# -- 6. inference after end ------------------------------------------------------------------------------------------

def _copy_into_torch(learner, trainable, rows):
    with torch.no_grad():
        for p in learner.part.params:
            block = trainable.get_submodule(p.name)
            for key, tkey in BLOCK_KEYS.items():
                if getattr(p, key) is not None:
                    target = block.get_parameter(tkey) if "running" not in key else block.get_buffer(tkey)
                    target.copy_(torch.from_numpy(getattr(p, key)))
        trainable.get_submodule("head").weight.copy_(torch.from_numpy(rows))


@pytest.mark.parametrize("q_bin_update", ["plain", "rebinarize"])
@pytest.mark.parametrize("kind", ["binary", "real"])
def test_inference_after_end_equals_torch_with_the_trained_parameters(exported, kind, q_bin_update):
    """After three 8/16/8 steps and ``end(rows)``, the device's packed (and float) inference equals the torch model
    in eval mode holding the device's trained parameters and ``rows``: logits within float32 rounding through the
    network of the exact (float64) ones (``float32_chain_bound``), the same predictions. (lr 0.5, so that every
    parameter moves enough to show in the logits.) The logits before the steps differ from both (the rebuild is not
    a no-op); the float backend's weights were cached before the steps (the rebuild must drop them)."""
    seed = 4
    options = device_options(8, q_bin_update=q_bin_update, lr=0.5)  # large steps: every parameter moves visibly
    model, trainable, learner, x, y = _step_setup(exported, kind, seed, options)
    images = np.random.default_rng(9).integers(0, 256, (16, *CONFIGS[kind].input_shape), dtype=np.uint8)
    before = {b: learner.model.logits(images, b) for b in ("packed", "float")}  # the float backend caches its weights
    for _ in range(3):
        learner.part.train_step(x, y)
    rows = (0.3 * np.random.default_rng(10).standard_normal((CLASSES, 15))).astype(np.float32)
    learner.part.end(rows)
    _copy_into_torch(learner, trainable, rows)
    model.eval()
    exact = copy.deepcopy(model).double()
    with torch.no_grad():
        theirs = exact(normalize_tensor(torch.from_numpy(images)).double()).numpy()
    terms = reduction_terms(model, normalize_tensor(torch.from_numpy(images)))
    bound = float32_chain_bound(terms, np.abs(theirs).max())
    for backend in ("packed", "float"):
        ours = learner.model.logits(images, backend)
        assert_within_float32(ours, theirs, bound, f"{backend} logits")
        np.testing.assert_array_equal(learner.model.predict(images, backend), theirs.argmax(1), err_msg=backend)
        moved = np.abs(before[backend] - theirs).max() / np.abs(theirs).max()
        assert moved > 1e-2, f"{backend}: the logits moved by only {moved:.2g}"


# -- 7. refusals ------------------------------------------------------------------------------------------------------

def test_plain_update_without_latent_weights_is_refused_naming_the_file(exported):
    _, path = exported("signs-only", CONFIGS["real"], 0, latent_weights=False)
    with pytest.raises(ConfigError, match="plain update needs the latent weights") as e:
        Learner(Model.load(path), device_options(8, q_bin_update="plain"))
    assert str(path) in str(e.value)
    Learner(Model.load(path), device_options(8, q_bin_update="rebinarize"))  # the signs and scale are enough there


def test_binary_shortcut_in_the_trainable_part_is_refused_naming_the_file(exported):
    config = BackboneConfig(input_shape=(8, 8, 1), num_classes=CLASSES, stem_channels=5, stages=((5, 1, 1), (15, 1, 2)),
                            shortcut="binary")
    pt, path = exported("downsample", config, 0)
    model, _ = load_model(pt)
    assert type(model.layers[LR_LAYER].shortcut).__name__ == "Downsample"
    with pytest.raises(ConfigError, match="binary shortcut") as e:
        Learner(Model.load(path), device_options(8, q_bin_update="plain"))
    assert str(path) in str(e.value), f"the message does not name the model file: {e.value}"


def test_lr_layer_exported_frozen_is_refused_naming_the_file(exported):
    _, path = exported("lr-at-3", CONFIGS["real"], 0, lr_layer="block3")
    with pytest.raises(ConfigError, match="no trainable parameters of block2") as e:
        Learner(Model.load(path), device_options(8, q_bin_update="rebinarize"))
    assert str(path) in str(e.value)
    Learner(Model.load(path), device_options(8, lr_layer="block3"))  # where it was exported: fine


# -- 8. determinism, resume, memory ---------------------------------------------------------------------------------

def _experiences(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (n, *TINY["input_shape"]), dtype=np.uint8), rng.choice(classes, n))
            for classes in ((0, 1, 2), (2, 3, 4))]


def _arrays(learner):
    return {k: v.copy() for k, v in learner.state()[1].items()}


def _assert_same_arrays(a, b, what):
    assert sorted(a) == sorted(b), what
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, f"{what}: {k}"
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{what}: {k}")


@pytest.mark.parametrize("kind", ["binary", "real"])
def test_same_seed_same_state_and_resume_equals_an_uninterrupted_run(exported, tmp_path, kind):
    _, path = exported(f"{kind}-4", CONFIGS[kind], 4)
    opts = device_options(8, q_rounding="stochastic", seed=3, lr=0.05)  # stochastic: resuming needs its generator
    exps = _experiences()
    fresh = _arrays(Learner.open(path, None, opts))
    runs = []
    for _ in range(2):
        learner = Learner.open(path, None, opts)
        for images, labels in exps:
            learner.learn(images, labels)
        runs.append(learner)
    whole = _arrays(runs[0])
    assert any(k.startswith("blocks.block2.") for k in whole) and any(k.startswith("blocks.block3.") for k in whole)
    for k in ("blocks.block2.weight", "blocks.block3.weight", "blocks.block3.shift", "blocks.block2.running_var"):
        assert not np.array_equal(whole[k], fresh[k]), f"{k} did not change: the comparison would be vacuous"
    _assert_same_arrays(_arrays(runs[1]), whole, "same seed")

    state = tmp_path / "state.bnst"
    first = Learner.open(path, state, opts)
    first.learn(*exps[0])
    del first
    resumed = Learner.open(path, state, opts)
    assert resumed.experiences == 1
    resumed.learn(*exps[1])
    _assert_same_arrays(_arrays(resumed), whole, "resumed")
    images = np.random.default_rng(5).integers(0, 256, (20, *TINY["input_shape"]), dtype=np.uint8)
    np.testing.assert_array_equal(resumed.predict(images), runs[0].predict(images))
    np.testing.assert_array_equal(resumed.model.logits(images), runs[0].model.logits(images))


def test_frozen_chunk_gives_the_same_learning_of_the_blocks(exported):
    """Work B with the frozen part run 3 images at a time: the same ±1 latents, the same trained blocks."""
    _, path = exported("binary-4", CONFIGS["binary"], 4)
    opts = device_options(8, q_rounding="stochastic", seed=3, lr=0.05)
    whole, chunked = Learner.open(path, None, opts), Learner.open(path, None, opts, frozen_chunk=3)
    images = _experiences()[0][0]
    np.testing.assert_array_equal(chunked.latents(images), whole.latents(images))
    assert chunked.frozen_peak_bytes < whole.frozen_peak_bytes
    for images, labels in _experiences():
        whole.learn(images, labels)
        chunked.learn(images, labels)
    _assert_same_arrays(_arrays(chunked), _arrays(whole), "frozen part in chunks of 3")

def test_nbytes_counts_the_trainable_state_at_its_precision(exported):
    pt, path = exported("binary-4", CONFIGS["binary"], 4)
    model, _ = load_model(pt)
    _, trainable = model.split(LR_LAYER)
    blocks = [m for m in trainable.modules() if isinstance(m, BinaryBlock)]
    n_weights = sum(b.conv.weight.numel() for b in blocks)
    bn_channels = sum(b.bn.num_features for b in blocks)
    opts = device_options(8, replay_size=12)
    nb = Learner(Model.load(path), opts).nbytes()
    for key in ("trainable_binary_latent_weights", "trainable_batchnorm_fp32", "trainable_other_vectors",
                "trainable_head", "replay_patterns"):
        assert key in nb, key
    # q_bin 8: one byte per latent weight, plus each block's weight tensor's scale and zero point (8 bytes)
    assert nb["trainable_binary_latent_weights"] == math.ceil(n_weights * 8 / 8) + 8 * len(blocks)
    assert nb["trainable_batchnorm_fp32"] == 4 * 4 * bn_channels  # weight, bias, running mean and variance
    latent_size = int(np.prod(LATENT))
    assert latent_size % 8 == 0
    assert nb["replay_patterns"] == 12 * latent_size // 8
    float_replay = Learner(Model.load(path), replace(opts, replay_storage="float32")).nbytes()
    assert 32 * nb["replay_patterns"] == float_replay["replay_patterns"]
