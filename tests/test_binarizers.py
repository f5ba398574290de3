"""Binarizers: forward sign convention, surrogate gradients checked against independent autograd/numpy oracles."""

import numpy as np
import pytest
import torch
from torch import nn

from bnncl.binarizers import (
    activation_binarizer,
    approx_sign,
    clip_latent_weights,
    hard_sign,
    magnitude_aware_sign,
    sign_ste,
)
from bnncl.core.errors import ConfigError
from bnncl.layers import BinaryConv2d, BinaryLinear
from fixtures import F32_UNIT, assert_within_float32, float32_sum_bound

# Points on both sides of every kink: 0, +-1, inside and outside the box, plus exact zeros of both signs.
GRID = torch.tensor([-3.0, -1.5, -1.0, -0.999, -0.75, -0.5, -0.1, -0.0, 0.0, 1e-6, 0.1, 0.5, 0.75, 0.999, 1.0, 1.001,
                     2.0, 7.0])


def _np_sign(a):
    return np.where(a >= 0, 1.0, -1.0)


def test_hard_sign_maps_zero_to_plus_one_and_matches_numpy():
    x = torch.cat([GRID, torch.randn(200, generator=torch.Generator().manual_seed(0))])
    out = hard_sign(x)
    np.testing.assert_array_equal(out.numpy(), _np_sign(x.numpy()))
    assert hard_sign(torch.zeros(3)).tolist() == [1.0, 1.0, 1.0]
    assert torch.sign(torch.zeros(1)).item() == 0.0  # the convention hard_sign exists to fix
    assert set(out.unique().tolist()) == {-1.0, 1.0}


@pytest.mark.parametrize("fn", [sign_ste, approx_sign])
def test_activation_binarizers_forward_is_hard_sign(fn):
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    x[0, 0] = 0.0
    np.testing.assert_array_equal(fn(x).numpy(), _np_sign(x.numpy()))


def _grad(fn, x, upstream):
    x = x.clone().requires_grad_(True)
    (fn(x) * upstream).sum().backward()
    return x.grad


def test_sign_ste_backward_is_box():
    x = torch.cat([GRID, torch.linspace(-2.5, 2.5, 101)])
    upstream = torch.linspace(0.5, 3.0, x.numel())
    g = _grad(sign_ste, x, upstream)
    a = x.numpy().astype(np.float64)
    expected = upstream.numpy() * (np.abs(a) <= 1.0)
    np.testing.assert_array_equal(g.numpy(), expected.astype(np.float32))


def _quadratic_sign(x):
    """Bi-Real's piecewise polynomial: -1 | 2x+x^2 | 2x-x^2 | 1, whose derivative is 2-2|x| on |x|<=1, else 0."""
    return torch.where(
        x < -1,
        -torch.ones_like(x),
        torch.where(x < 0, 2 * x + x * x, torch.where(x < 1, 2 * x - x * x, torch.ones_like(x))),
    )


def test_approx_sign_backward_matches_autograd_of_quadratic():
    x = torch.cat([GRID, torch.linspace(-2.5, 2.5, 101), torch.randn(100, generator=torch.Generator().manual_seed(2))])
    upstream = torch.rand(x.numel(), generator=torch.Generator().manual_seed(3)) + 0.5
    g = _grad(approx_sign, x, upstream)
    oracle = _grad(_quadratic_sign, x, upstream)
    # float32: 2 - 2|x| (two roundings relative to 2 + 2|x|), times the upstream gradient (one more); the autograd of
    # the quadratic computes 2 + 2x or 2 - 2x and the product in as many
    a = x.numpy().astype(np.float64)
    closed = upstream.numpy() * np.where(np.abs(a) <= 1.0, 2.0 - 2.0 * np.abs(a), 0.0)
    bound = 3 * F32_UNIT * upstream.numpy() * (2 + 2 * np.abs(a))
    assert_within_float32(g.numpy(), closed, bound, "ApproxSign's gradient")
    assert_within_float32(oracle.numpy(), closed, bound, "the quadratic's autograd")
    # Peak 2 at 0, zero outside the box.
    assert _grad(approx_sign, torch.tensor([0.0]), torch.ones(1)).item() == 2.0
    assert _grad(approx_sign, torch.tensor([-1.5, 1.5]), torch.ones(2)).tolist() == [0.0, 0.0]


def _np_magnitude_aware(w):
    w = w.astype(np.float64)
    out = np.empty_like(w)
    for o in range(w.shape[0]):
        out[o] = _np_sign(w[o]) * np.mean(np.abs(w[o]))
    return out


@pytest.mark.parametrize("shape", [(6, 4), (5, 3, 3, 3), (2, 3, 1, 1)])
def test_magnitude_aware_sign_forward_per_output_channel(shape):
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(*shape, generator=gen) * 0.7
    w.view(-1)[0] = 0.0  # a zero weight binarizes to +scale
    out = magnitude_aware_sign(w)
    assert out.shape == w.shape
    # a float32 mean of the channel's K magnitudes (gamma_K, one more for the division), times ±1 exactly
    k = int(np.prod(shape[1:]))
    expected = _np_magnitude_aware(w.numpy())
    assert_within_float32(out.numpy(), expected, float32_sum_bound(np.abs(expected), k + 1), "magnitude-aware sign")
    # Bit-exact against the same product in torch: no straight-through arithmetic may perturb the forward value.
    assert torch.equal(out, torch.where(w >= 0, 1.0, -1.0) * w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True))
    # The sign pattern is exactly sign(W) (zero -> +), whatever the float rounding of the magnitude.
    np.testing.assert_array_equal(np.sign(out.numpy()), _np_sign(w.numpy()))


def test_magnitude_aware_sign_backward_is_ste_box():
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(4, 3, 3, 3, generator=gen) * 1.2
    w[0, 0, 0, 0], w[1, 0, 0, 0], w[2, 0, 0, 0] = 1.0, -1.0, 3.0
    upstream = torch.randn(w.shape, generator=gen)
    g = _grad(magnitude_aware_sign, w, upstream)
    expected = upstream.numpy() * (np.abs(w.numpy()) <= 1.0)
    np.testing.assert_array_equal(g.numpy(), expected)
    assert (np.abs(w.numpy()) > 1.0).any() and (np.abs(w.numpy()) <= 1.0).any()


def test_clip_latent_weights_clips_only_binary_layers():
    torch.manual_seed(6)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, bias=True),
        BinaryConv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.Flatten(),
        BinaryLinear(8, 5),
        nn.Linear(5, 2),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape) * 3.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clip_latent_weights(model)
    after = model.state_dict()
    for key in ("1.weight", "4.weight"):
        np.testing.assert_array_equal(after[key].numpy(), np.clip(before[key].numpy(), -1.0, 1.0))
        assert before[key].abs().max() > 1.0  # the clip really had something to do
    for key in before:
        if key not in ("1.weight", "4.weight"):
            assert torch.equal(after[key], before[key]), key


def test_unknown_activation_binarizer_raises_config_error():
    assert activation_binarizer("ste") is sign_ste
    assert activation_binarizer("approx") is approx_sign
    with pytest.raises(ConfigError, match="nope"):
        activation_binarizer("nope")
