"""The device's inference layers (:mod:`bnncl.device.ops`), built by hand from arrays (no model file, no torch):
``Activation``, ``link``'s fusion, each op on both backends, ``build_op``, and the refusals.

Oracles: the definitions stated in the module, computed here in float64 NumPy with explicit loops (a binary 3x3 conv
with +1 padding as a sum of ±1 products, the folded BN, the shortcut and RPReLU; the stem's zero-padded conv; the
mean over the pixels; the head's product), held to float32 rounding (``float32_sum_bound`` of each sum, one rounding
per elementwise operation); the thresholds ``x < t`` written out; byte counts computed by hand. The two backends give
the same values bit for bit (the module's fixed-order contract). The ops against torch, layer by layer, on exported
models: tests/test_export.py."""

from __future__ import annotations

import numpy as np
import pytest

from bnncl.device import kernels as K
from bnncl.device.bitpack import pack_signs
from bnncl.device.ops import BACKENDS, Activation, Binarize, Block, FoldedStem, GlobalPool, Head, build_op, link
from fixtures import F32_UNIT, assert_within_float32, float32_sum_bound


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_kernel_thread):
    yield


def _signs(x, threshold):
    """``sign(x - threshold)`` with ties to +1, written out: -1 where ``x < threshold``."""
    return np.where(x < threshold, -1.0, 1.0).astype(np.float32)


def _binary_part(signs, backend):
    return pack_signs(signs) if backend == "packed" else signs


def make_block(name, cin, cout, seed, binary_input=False, shortcut="identity", stride=1):
    """A block built from random arrays, and its ±1 weights (Cout, 3, 3, Cin) and arrays."""
    rng = np.random.default_rng(seed)
    w = np.where(rng.standard_normal((cout, 3, 3, cin)) >= 0, 1.0, -1.0).astype(np.float32)

    def vec(scale, shift=0.0, n=cout):
        return (shift + scale * rng.standard_normal(n)).astype(np.float32)

    arrays = {f"{name}.conv.weight": K.conv_weights_for_kernel(pack_signs(w)),
              f"{name}.mult": np.abs(vec(0.1, 0.05)),
              f"{name}.bias": vec(0.3), f"{name}.rprelu.shift_in": vec(0.2), f"{name}.rprelu.slope": vec(0.1, 0.25),
              f"{name}.rprelu.shift_out": vec(0.2)}
    if binary_input:
        arrays[f"{name}.input_scale"] = np.abs(vec(0.3, 0.8, cin))
    else:
        arrays[f"{name}.threshold"] = vec(0.2, 0.0, cin)
    spec = {"cin": cin, "cout": cout, "stride": stride, "binary_input": binary_input,
            "shortcut": {"kind": shortcut, "stride": stride}}
    return Block(name, arrays, spec), w, arrays


def block_oracle(x, signs, w, arrays, name, stride, binary_input):
    """The block in float64: ±1 conv with +1 padding, ``z = mult * dot + bias + shortcut + shift_in``, RPReLU; with,
    for each output, the sum of its terms' magnitudes (for the rounding bound), and ``z``."""
    n, h, wd, cin = signs.shape
    cout = w.shape[0]
    xp = np.pad(signs.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=1.0)
    ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
    dot = np.zeros((n, ho, wo, cout))
    for y in range(ho):
        for xx in range(wo):
            window = xp[:, y * stride:y * stride + 3, xx * stride:xx * stride + 3, :]
            dot[:, y, xx, :] = np.einsum("nabc,oabc->no", window, w.astype(np.float64))
    shortcut = signs * arrays[f"{name}.input_scale"].astype(np.float64) if binary_input else x.astype(np.float64)
    if stride > 1:
        shortcut = shortcut.reshape(n, ho, stride, wo, stride, cin).mean(axis=(2, 4))
    shortcut = np.tile(shortcut, (1, 1, 1, cout // cin))
    a = {k.split(".", 1)[1]: v.astype(np.float64) for k, v in arrays.items() if v.ndim == 1}
    z = a["mult"] * dot + a["bias"] + shortcut + a["rprelu.shift_in"]
    out = np.where(z >= 0, z, z * a["rprelu.slope"]) + a["rprelu.shift_out"]
    magnitude = (np.abs(a["mult"] * dot) + np.abs(a["bias"]) + np.abs(shortcut) + np.abs(a["rprelu.shift_in"])
                 + np.abs(a["rprelu.shift_out"]))
    return out, magnitude, z


# -- Activation -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("channels", [1, 5, 63, 64, 65, 130])
def test_activation_signs_round_trip_through_the_packed_bits(channels):
    rng = np.random.default_rng(channels)
    signs = np.where(rng.standard_normal((2, 3, 4, channels)) >= 0, 1.0, -1.0).astype(np.float32)
    bits = pack_signs(signs)
    assert bits.dtype == np.uint64 and bits.shape == (2, 3, 4, -(-channels // 64))
    got = Activation(channels, None, bits).signs()
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, signs)
    assert (signs == -1).any() and (signs == 1).any()
    floats = Activation(channels, None, signs)  # the float backend's binary part is the ±1 tensor itself
    assert floats.signs() is signs


def test_activation_without_a_binary_part_has_no_signs_and_counts_its_bytes():
    real = np.zeros((2, 4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="no binary part"):
        Activation(3, real).signs()
    bits = pack_signs(np.ones((2, 4, 4, 3), np.float32))
    assert Activation(3, real).nbytes == 2 * 4 * 4 * 3 * 4
    assert Activation(3, None, bits).nbytes == 2 * 4 * 4 * 8  # one word per pixel
    assert Activation(3, real, bits).nbytes == 2 * 4 * 4 * (3 * 4 + 8)


# -- link -----------------------------------------------------------------------------------------------------------

def test_link_fuses_each_threshold_into_the_op_before_and_drops_real_outputs_nobody_reads():
    rng = np.random.default_rng(0)
    stem = FoldedStem("stem", rng.standard_normal((5, 3, 3, 1)).astype(np.float32), np.zeros(5, np.float32), 1)
    block1, _, a1 = make_block("block1", 5, 5, 1)  # real input: its own threshold, and its shortcut reads the real
    binarize = Binarize("binarize", (0.1 * rng.standard_normal(5)).astype(np.float32))
    block2, _, _ = make_block("block2", 5, 5, 2, binary_input=True)  # the ±1 output of binarize only
    pool, head = GlobalPool("pool"), Head("head", rng.standard_normal((3, 5)).astype(np.float32))
    ops = [stem, block1, binarize, block2, pool, head]
    assert all(op.out_threshold is None and op.keep_real for op in ops)  # before: nothing fused
    assert link(ops) is ops
    assert stem.out_threshold is a1["block1.threshold"] and stem.keep_real  # block1's shortcut reads the real
    assert block1.out_threshold is binarize.in_threshold and not block1.keep_real  # binarize needs signs only
    assert binarize.out_threshold is None and not binarize.keep_real  # block2 binarizes nothing itself
    assert block2.out_threshold is None and block2.keep_real  # the pool reads the real output
    assert pool.out_threshold is None and pool.keep_real
    assert head.out_threshold is None and head.keep_real  # the last op keeps its logits


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_fused_threshold_gives_the_signs_the_next_op_would_compute(backend):
    """A stem and a block with ``out_threshold`` set: the bits they return are ``x < t`` of the real output they
    compute unfused, bit for bit; with ``keep_real`` off the real output is dropped."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 6, 1)).astype(np.float32)
    stem = FoldedStem("stem", rng.standard_normal((5, 3, 3, 1)).astype(np.float32),
                      rng.standard_normal(5).astype(np.float32), 1)
    block, _, arrays = make_block("block1", 5, 5, 4)
    threshold = (0.3 * rng.standard_normal(5)).astype(np.float32)
    unfused = stem.run(Activation(1, x), backend)
    assert unfused.bits is None
    stem.out_threshold = arrays["block1.threshold"]
    fused = stem.run(Activation(1, x), backend)
    np.testing.assert_array_equal(fused.real, unfused.real)
    np.testing.assert_array_equal(fused.signs(), _signs(unfused.real, arrays["block1.threshold"]))
    assert (fused.signs() == -1).any() and (fused.signs() == 1).any()

    real_out = block.run(fused, backend).real
    block.out_threshold, block.keep_real = threshold, False
    out = block.run(fused, backend)
    assert out.real is None
    np.testing.assert_array_equal(out.signs(), _signs(real_out, threshold))
    assert out.channels == 5


# -- the ops --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("binary_input,shortcut,cin,cout,stride", [
    (False, "identity", 5, 5, 1),
    (False, "duplicate", 3, 6, 2),  # average-pooled 2x2 real input, its channels repeated
    (True, "identity", 70, 70, 1),  # ±1 input scaled per channel; two words, the second partly filled
    (True, "duplicate", 4, 8, 2),
])
def test_block_on_both_backends_equals_the_hand_computed_block(binary_input, shortcut, cin, cout, stride):
    block, w, arrays = make_block("block3", cin, cout, cin + cout, binary_input, shortcut, stride)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 6, 6, cin)).astype(np.float32)
    signs = _signs(x, 0.0 if binary_input else arrays["block3.threshold"])
    exact, magnitude, z = block_oracle(x, signs, w, arrays, "block3", stride, binary_input)
    outs = {}
    for backend in BACKENDS:
        out = block.run(Activation(cin, None if binary_input else x, _binary_part(signs, backend)), backend)
        assert out.channels == cout and out.real.dtype == np.float32 and out.real.shape == exact.shape
        assert out.bits is None  # nothing fused: no signs made
        # the elementwise steps, one float32 rounding each (the ±1 sums are exact), and the pooled shortcut
        assert_within_float32(out.real, exact, 8 * F32_UNIT * magnitude, f"{backend} block")
        outs[backend] = out.real
    assert np.abs(exact).max() > 1 and (z < 0).any() and (z > 0).any()  # both sides of RPReLU are reached
    np.testing.assert_array_equal(outs["packed"], outs["float"])


@pytest.mark.parametrize("binary_input", [False, True])
def test_binary_shortcut_is_the_same_float32_arithmetic_on_both_backends(binary_input):
    """The binary 1x1-conv shortcut (pool, threshold, ±1 conv, folded BN): ``(float32) dot * mult + bias`` in float32
    (``kernels.shortcut_affine``, the C runtime's too), bit for bit on both backends, whose dots are the same
    integers (int32 on the packed backend, float32 on the float one)."""
    cin, cout, stride, name = 5, 10, 2, "block4"
    block, w, arrays = make_block(name, cin, cout, 11, binary_input, "duplicate", stride)
    rng = np.random.default_rng(12)
    wsc = np.where(rng.standard_normal((cout, 1, 1, cin)) >= 0, 1.0, -1.0).astype(np.float32)
    sc = {f"{name}.shortcut.threshold": (0.2 * rng.standard_normal(cin)).astype(np.float32),
          f"{name}.shortcut.weight": K.conv_weights_for_kernel(pack_signs(wsc)),
          f"{name}.shortcut.mult": (0.05 + 0.1 * np.abs(rng.standard_normal(cout))).astype(np.float32),
          f"{name}.shortcut.bias": (0.3 * rng.standard_normal(cout)).astype(np.float32)}
    spec = {"cin": cin, "cout": cout, "stride": stride, "binary_input": binary_input,
            "shortcut": {"kind": "binary", "stride": stride}}
    block = Block(name, {**arrays, **sc}, spec)
    x = rng.standard_normal((3, 6, 6, cin)).astype(np.float32)
    signs = _signs(x, 0.0 if binary_input else arrays[f"{name}.threshold"])
    outs = {}
    for backend in BACKENDS:
        act = Activation(cin, None if binary_input else x, _binary_part(signs, backend))
        outs[backend] = (block._shortcut(act, backend), block.run(act, backend).real)
    np.testing.assert_array_equal(outs["packed"][0], outs["float"][0])
    np.testing.assert_array_equal(outs["packed"][1], outs["float"][1])
    # the hand computation: the pooled input (2x2 means of the real input, or of the scaled signs) thresholded, the
    # ±1 1x1 conv as an exact integer dot, then the two float32 roundings
    src = signs * arrays[f"{name}.input_scale"] if binary_input else x
    got = outs["packed"][0]
    assert got.dtype == np.float32 and got.shape == (3, 3, 3, cout)
    pooled = K.avgpool_reference(src.astype(np.float32), stride)
    bits = np.where(pooled < sc[f"{name}.shortcut.threshold"], -1.0, 1.0)
    dot = np.einsum("nhwc,oc->nhwo", bits, wsc[:, 0, 0, :].astype(np.float64)).astype(np.int64)
    expected = dot.astype(np.float32) * sc[f"{name}.shortcut.mult"]
    expected = expected + sc[f"{name}.shortcut.bias"]
    np.testing.assert_array_equal(got, expected)


def test_block_refuses_an_input_the_previous_op_did_not_binarize():
    block, _, _ = make_block("block9", 5, 5, 0)
    with pytest.raises(ValueError, match="block9: the previous op did not binarize its output for this block"):
        block.run(Activation(5, np.zeros((1, 4, 4, 5), np.float32)), "packed")


def test_block_weight_bytes_on_each_backend():
    """Per-channel vectors (mult, bias, three RPReLU vectors, the input threshold: 6 x 5 float32 = 120 B), plus the
    packed weights (5 x 3 x 3 words of 8 B = 360 B) or the float backend's ±1 float32 weights (5 x 9 x 5 x 4 B)."""
    block, _, _ = make_block("block1", 5, 5, 0)
    assert block.weight_bytes("packed") == 120 + 360
    assert block.weight_bytes("float") == 120 + 900


@pytest.mark.parametrize("stride", [1, 2])
def test_stem_on_both_backends_equals_the_hand_computed_conv(stride):
    rng = np.random.default_rng(stride)
    x = rng.standard_normal((2, 7, 6, 3)).astype(np.float32)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    stem = FoldedStem("stem", weight, bias, stride)
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))  # zero padding
    ho, wo = (7 - 1) // stride + 1, (6 - 1) // stride + 1
    exact, magnitude = np.zeros((2, ho, wo, 4)), np.zeros((2, ho, wo, 4))
    for y in range(ho):
        for xx in range(wo):
            window = xp[:, y * stride:y * stride + 3, xx * stride:xx * stride + 3, :]
            exact[:, y, xx] = np.einsum("nabc,oabc->no", window, weight.astype(np.float64)) + bias
            magnitude[:, y, xx] = np.einsum("nabc,oabc->no", np.abs(window), np.abs(weight)) + np.abs(bias)
    outs = [stem.run(Activation(3, x), backend) for backend in BACKENDS]
    for backend, out in zip(BACKENDS, outs):
        assert out.channels == 4 and out.bits is None
        assert_within_float32(out.real, exact, float32_sum_bound(magnitude, 27 + 1), f"{backend} stem")
    np.testing.assert_array_equal(outs[0].real, outs[1].real)


@pytest.mark.parametrize("backend", BACKENDS)
def test_binarize_thresholds_a_real_input_or_passes_given_bits_on(backend):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 3, 6)).astype(np.float32)
    threshold = (0.5 * rng.standard_normal(6)).astype(np.float32)
    op = Binarize("binarize", threshold)
    out = op.run(Activation(6, x), backend)
    assert out.real is None and out.channels == 6
    np.testing.assert_array_equal(out.signs(), _signs(x, threshold))
    given = _binary_part(np.ones_like(x), backend)  # bits fused upstream: used as they are, not recomputed
    assert op.run(Activation(6, x, given), backend).bits is given


def test_global_pool_and_head_equal_their_definitions():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 5, 7)).astype(np.float32)
    pooled = GlobalPool("pool").run(Activation(7, x), "packed")
    mean = x.astype(np.float64).mean(axis=(1, 2))
    # a sum of 20 pixels and one division
    bound = float32_sum_bound(np.abs(x.astype(np.float64)).sum(axis=(1, 2)), 20) / 20 + F32_UNIT * np.abs(mean)
    assert pooled.channels == 7
    assert_within_float32(pooled.real, mean, bound, "global average pool")
    weight = rng.standard_normal((4, 7))
    head = Head("head", weight)
    assert head.weight.dtype == np.float32 and head.weight.flags.c_contiguous
    logits = head.run(Activation(7, pooled.real), "float")
    w64, h64 = head.weight.astype(np.float64), pooled.real.astype(np.float64)
    assert logits.channels == 4 and logits.real.shape == (3, 4)
    assert_within_float32(logits.real, h64 @ w64.T, float32_sum_bound(np.abs(h64) @ np.abs(w64).T, 7), "head")


# -- build_op -------------------------------------------------------------------------------------------------------

def test_build_op_makes_each_kind_and_refuses_one_it_does_not_know():
    rng = np.random.default_rng(8)
    arrays = {"stem.weight": rng.standard_normal((4, 3, 3, 1)).astype(np.float32), "stem.bias": np.zeros(4, np.float32),
              "binarize.threshold": np.zeros(4, np.float32), "head.weight": np.ones((3, 4), np.float64)}
    _, _, block_arrays = make_block("block1", 4, 4, 9)
    arrays.update(block_arrays)
    stem = build_op({"kind": "stem", "name": "stem", "stride": 2}, arrays)
    assert type(stem) is FoldedStem and stem.stride == 2 and stem.cout == 4
    block = build_op({"kind": "block", "name": "block1", "cin": 4, "cout": 4, "stride": 1, "binary_input": False,
                      "shortcut": {"kind": "identity", "stride": 1}}, arrays)
    assert type(block) is Block and block.in_threshold is arrays["block1.threshold"] and block.needs_real_input
    binarize = build_op({"kind": "binarize", "name": "binarize"}, arrays)
    assert type(binarize) is Binarize and binarize.in_threshold is arrays["binarize.threshold"]
    assert not binarize.needs_real_input
    assert type(build_op({"kind": "pool", "name": "pool"}, arrays)) is GlobalPool
    head = build_op({"kind": "head", "name": "head"}, arrays)
    assert type(head) is Head and head.weight.dtype == np.float32
    with pytest.raises(ValueError, match="unknown layer kind 'conv3d' in odd"):
        build_op({"kind": "conv3d", "name": "odd"}, arrays)
    with pytest.raises(KeyError):
        build_op({"kind": "head", "name": "missing"}, arrays)
