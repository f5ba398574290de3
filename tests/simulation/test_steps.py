"""Work A's head-only hybrid step (docs/method.md §5) against its definition and against torch autograd."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnncl.core.affine import NonFiniteError
from bnncl.core.errors import ConfigError
from bnncl.models import BackboneConfig, build_model
from bnncl.simulation.steps import HeadHybridStep
from bnncl.simulation.strategy import LearnOptions, build_strategy
from fixtures import F32_UNIT, assert_within_float32, float32_head_step_bounds


def head_and_batch(seed=0, classes=5, features=12, n=9):
    torch.manual_seed(seed)
    head = nn.Linear(features, classes, bias=False)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((n, features)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, classes, n))
    return head, x, y


def assert_the_sgd_step(after, before, x, y, lr, what):
    """``after`` within the float32 rounding bound of the exact (float64) SGD step of the head from ``before``."""
    (exact, bound), _, _ = float32_head_step_bounds(before.numpy(), x.numpy(), y.numpy(), lr)
    assert_within_float32(after.numpy(), exact, bound, what)


def test_32_bits_is_the_autograd_sgd_step():
    """Both the step at 32 bits and torch autograd + SGD within float32 rounding of the exact step (a bound derived
    from float32 arithmetic, fixtures.float32_head_step_bounds), so within twice that of each other."""
    head, x, y = head_and_batch()
    before = head.weight.data.clone()
    ref = nn.Linear(12, 5, bias=False)
    ref.weight.data.copy_(head.weight.data)
    F.cross_entropy(ref(x), y).backward()
    expected = ref.weight.data - 0.1 * ref.weight.grad
    HeadHybridStep(head, 32, 32, lr=0.1)(x, y)
    assert_the_sgd_step(head.weight.data, before, x, y, 0.1, "HeadHybridStep at 32 bits")
    assert_the_sgd_step(expected, before, x, y, 0.1, "torch autograd")
    assert not torch.equal(head.weight.data, before)


def _grid_ok(values, bits):
    """At most 2^bits distinct values, evenly spaced between the min and max."""
    u = np.unique(values)
    if len(u) <= 1:
        return True
    step = (u[-1] - u[0]) / (2 ** bits - 1)
    k = (u - u[0]) / step
    return len(u) <= 2 ** bits and np.allclose(k, np.round(k), atol=1e-3)


@pytest.mark.parametrize("q_f,q_b", [(4, 8), (8, 16), (6, 12)])
def test_low_bits_follow_the_definition(q_f, q_b):
    """The update equals the q_b-quantized float gradient of the q_f-quantized forward, and weights sit
    on a q_b grid."""
    head, x, y = head_and_batch(seed=q_f)
    w0 = head.weight.detach().numpy().copy()
    h = x.numpy()
    HeadHybridStep(head, q_f, q_b, lr=0.5)(x, y)
    w1 = head.weight.detach().numpy()
    assert _grid_ok(w1, q_b)
    # Independent float computation of what the step simulates: forward on q_f values, float gradient.
    hq = _q(h, q_f)
    wq = _q(w0, q_f)
    z = hq @ wq.T
    p = np.exp(z - z.max(1, keepdims=True))
    p = _q(p / p.sum(1, keepdims=True), q_f, 0.0, 1.0)
    d = _q((p - np.eye(5)[y.numpy()]) / len(y), q_f)
    g_float = d.T @ hq
    g_step = (w0 - w1) / 0.5  # the gradient the update applied, seen through W's own q_b rounding
    step_g = (g_float.max() - g_float.min()) / (2 ** q_b - 1)  # q_b rounding of the gradient: half a step
    step_w = (w1.max() - w1.min()) / (2 ** q_b - 1)  # q_b rounding of the stored weights: half a step, / lr
    rounding = 4 * F32_UNIT * (np.abs(w0).max() + np.abs(w1).max()) / 0.5  # float32 w0 - w1, seen through / lr
    assert np.abs(g_step - g_float).max() <= step_g / 2 + step_w / 2 / 0.5 + rounding


def _q(x, bits, lo=None, hi=None):
    """A plain re-statement of docs/method.md §5's formula (the oracle)."""
    x = np.asarray(x, np.float32)
    lo = x.min() if lo is None else lo
    hi = x.max() if hi is None else hi
    s = (2 ** bits - 1) / (hi - lo)
    return np.round((np.clip(x, lo, hi) - lo) * s) / s + lo


def test_fixed_ranges_calibrate_on_the_first_experience_in_float():
    head, x, y = head_and_batch()
    step = HeadHybridStep(head, 8, 16, lr=0.1, ranges="fixed")
    before = head.weight.data.clone()
    step(x, y)  # experience 0: float, recording ranges
    assert_the_sgd_step(head.weight.data, before, x, y, 0.1, "experience 0 with fixed ranges")
    assert step.calibrated["input"] == (float(x.min()), float(x.max()))
    step.end_experience()
    w_before = head.weight.detach().numpy().copy()
    span = w_before.max() - w_before.min()
    step(x * 100, y)  # a later experience: inputs clipped to the calibrated range, weights to +-2 % of their own
    w = head.weight.detach().numpy()
    rounding = 4 * F32_UNIT * np.abs(w_before).max()  # the bounds computed in float32
    assert w.min() >= w_before.min() - 0.02 * span - rounding and w.max() <= w_before.max() + 0.02 * span + rounding


def test_nan_is_reported_where_it_appeared():
    head, x, y = head_and_batch()
    x[3, 4] = float("nan")
    with pytest.raises(NonFiniteError, match="NaN reached the quantizer at head input"):
        HeadHybridStep(head, 8, 16, lr=0.1)(x, y)


def test_bad_bit_widths_and_unsupported_layers():
    with pytest.raises(ConfigError, match="from 1 to 32"):
        LearnOptions(q_f=0)
    with pytest.raises(ConfigError, match="from 1 to 32"):
        LearnOptions(q_b=33)
    with pytest.raises(ConfigError, match="q_b .* must be at least q_f"):
        LearnOptions(q_f=16, q_b=8)
    with pytest.raises(ConfigError, match="q_ranges"):
        LearnOptions(q_ranges="static")
    model = build_model(BackboneConfig(input_shape=(8, 8, 1), num_classes=4, stem_channels=4,
                                       stages=((4, 1, 1), (8, 1, 2))))
    with pytest.raises(ConfigError, match="dynamic ranges"):
        build_strategy(model, LearnOptions(strategy="ar1", q_f=8, q_b=16, lr_layer="block2", replay_size=4,
                                          q_ranges="fixed"))
    multi = build_strategy(model, LearnOptions(strategy="ar1", q_f=8, q_b=16, q_bin=8, lr_layer="block2",
                                               replay_size=4))
    parts = multi.nbytes()
    # block2's 8 x 4 x 3 x 3 latent weights at 8 bits; its per-channel vectors and the head at 16 bits; BN in float32
    assert parts["trainable_binary_latent_weights"] == 8 * 4 * 9
    assert parts["trainable_batchnorm_fp32"] == 4 * 2 * 8
    assert parts["trainable_state"] <= parts["trainable_parameters_fp32"] / 2
    learner = build_strategy(model, LearnOptions(strategy="cwr", q_f=8, q_b=16))
    assert learner.hybrid is not None
    assert learner.nbytes()["trainable_state"] == 4 * 8 * 16 // 8  # head 4 x 8 at 16 bits: half of fp32
    assert learner.nbytes()["trainable_parameters_fp32"] == 4 * 8 * 4
