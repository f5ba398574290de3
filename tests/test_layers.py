"""Binary layers against numpy loop oracles; block shapes, shortcut validation and gradient flow."""

import numpy as np
import pytest
import torch

from bnncl.core.errors import ConfigError
from bnncl.layers import (
    BinaryBlock,
    BinaryConv2d,
    BinaryLinear,
    Downsample,
    LearnableBias,
    PoolDuplicate,
    RPReLU,
)
from fixtures import assert_within_float32, float32_sum_bound


def _np_sign(a):
    return np.where(a >= 0, 1.0, -1.0)


def _np_binary_weight(w):
    w = w.astype(np.float64)
    scale = np.abs(w).reshape(w.shape[0], -1).mean(axis=1)
    return _np_sign(w) * scale.reshape(-1, *([1] * (w.ndim - 1)))


def _np_binary_conv(x, w, stride, pad):
    """Direct loop convolution of sign(x) (padded with +1) with sign(W) * mean|W| per output channel."""
    xb = _np_sign(x.astype(np.float64))
    n, cin, h, wd = xb.shape
    xp = np.ones((n, cin, h + 2 * pad, wd + 2 * pad))  # +1 padding
    xp[:, :, pad : pad + h, pad : pad + wd] = xb
    wb = _np_binary_weight(w)
    cout, _, kh, kw = wb.shape
    hout = (h + 2 * pad - kh) // stride + 1
    wout = (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, cout, hout, wout))
    for b in range(n):
        for o in range(cout):
            for i in range(hout):
                for j in range(wout):
                    acc = 0.0
                    for c in range(cin):
                        for u in range(kh):
                            for v in range(kw):
                                acc += xp[b, c, i * stride + u, j * stride + v] * wb[o, c, u, v]
                    out[b, o, i, j] = acc
    return out


@pytest.mark.parametrize("stride,pad,size", [(1, 1, 5), (2, 1, 5), (2, 1, 6), (1, 0, 4)])
@pytest.mark.parametrize("activation", ["approx", "ste"])
def test_binary_conv2d_matches_numpy_loop(stride, pad, size, activation):
    gen = torch.Generator().manual_seed(10 + stride + size)
    conv = BinaryConv2d(3, 4, 3, stride=stride, padding=pad, activation=activation)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.5)
    x = torch.randn(2, 3, size, size, generator=gen)
    x[0, 0, 0, 0] = 0.0  # sign(0) = +1 inside the image too
    out = conv(x)
    expected = _np_binary_conv(x.numpy(), conv.weight.detach().numpy(), stride, pad)
    assert out.shape == expected.shape
    # float32: the scale mean|W| (a mean of K terms) and a sum of K terms ±scale, in any order
    k = 3 * 3 * 3
    scale = np.abs(conv.weight.detach().numpy().astype(np.float64)).mean(axis=(1, 2, 3))[None, :, None, None]
    bound = float32_sum_bound(k * scale, k) + float32_sum_bound(np.abs(expected), k + 1)
    assert_within_float32(out.detach().numpy(), expected, bound, "binary conv")


def test_binary_conv2d_border_differs_from_zero_padding():
    """The +1 padding is observable: an all-negative input gives a different border than 0-padding would."""
    conv = BinaryConv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        conv.weight.fill_(0.5)
    out = conv(-torch.ones(1, 1, 3, 3)).detach().numpy()[0, 0]
    # Corner: 4 image taps of -1 and 5 padding taps of +1 -> (5 - 4) * 0.5; centre: 9 taps of -1.
    assert out[0, 0] == pytest.approx(0.5)
    assert out[1, 1] == pytest.approx(-4.5)
    assert out[0, 1] == pytest.approx(-1.5)  # 6 image taps of -1, 3 padding taps of +1 (0-padding: -3.0)


def test_binary_linear_matches_numpy():
    gen = torch.Generator().manual_seed(11)
    lin = BinaryLinear(7, 5)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * 0.4)
    x = torch.randn(3, 7, generator=gen)
    x[1, 2] = 0.0
    out = lin(x)
    xb = _np_sign(x.numpy().astype(np.float64))
    wb = _np_binary_weight(lin.weight.detach().numpy())
    expected = np.array([[sum(xb[n, k] * wb[o, k] for k in range(7)) for o in range(5)] for n in range(3)])
    assert lin.bias is None
    # as for the conv: the scale (a mean of 7) and a sum of 7 terms ±scale
    scale = np.abs(lin.weight.detach().numpy().astype(np.float64)).mean(axis=1)[None, :]
    bound = float32_sum_bound(7 * scale, 7) + float32_sum_bound(np.abs(expected), 8)
    assert_within_float32(out.detach().numpy(), expected, bound, "binary linear")


def test_learnable_bias_shapes_and_value():
    lb = LearnableBias(2)
    assert torch.equal(lb.bias.detach(), torch.zeros(2))  # starts as the identity
    with torch.no_grad():
        lb.bias.copy_(torch.tensor([1.0, -2.0]))
    x4 = torch.arange(2 * 2 * 2 * 3, dtype=torch.float32).reshape(2, 2, 2, 3)
    out4 = lb(x4)
    assert out4.shape == x4.shape
    expected = x4.numpy().copy()
    expected[:, 0] += 1.0
    expected[:, 1] -= 2.0
    np.testing.assert_array_equal(out4.detach().numpy(), expected)
    x2 = torch.tensor([[0.5, 0.5], [3.0, -1.0]])
    np.testing.assert_array_equal(lb(x2).detach().numpy(), [[1.5, -1.5], [4.0, -3.0]])


def test_rprelu_shapes_and_hand_computed_value():
    m = RPReLU(2, init_slope=0.25)
    with torch.no_grad():
        m.shift_in.bias.copy_(torch.tensor([0.5, -1.0]))
        m.prelu.weight.copy_(torch.tensor([0.25, 0.1]))
        m.shift_out.bias.copy_(torch.tensor([1.0, 2.0]))
    x = torch.tensor([[-1.0, 3.0], [2.0, 0.5]])
    # ch0: slope 0.25, shifts +0.5/+1; ch1: slope 0.1, shifts -1/+2.
    # [-1 + .5 = -.5 -> -.125 -> .875,   3 - 1 = 2 -> 2 -> 4]
    # [ 2 + .5 = 2.5 -> 2.5 -> 3.5,     .5 - 1 = -.5 -> -.05 -> 1.95]
    out = m(x)
    torch.testing.assert_close(out, torch.tensor([[0.875, 4.0], [3.5, 1.95]]))
    x4 = torch.randn(3, 2, 4, 5)
    assert m(x4).shape == x4.shape
    assert RPReLU(3).prelu.weight.detach().tolist() == [0.25, 0.25, 0.25]


@pytest.mark.parametrize("shortcut", ["duplicate", "binary"])
@pytest.mark.parametrize(
    "cin,cout,stride,size,out_size",
    [(4, 4, 1, 6, 6), (4, 8, 1, 6, 6), (4, 8, 2, 6, 3), (4, 8, 2, 7, 4), (4, 4, 2, 8, 4)],
)
def test_binary_block_output_shapes(shortcut, cin, cout, stride, size, out_size):
    block = BinaryBlock(cin, cout, stride=stride, shortcut=shortcut)
    x = torch.randn(2, cin, size, size)
    assert block(x).shape == (2, cout, out_size, out_size)
    block.eval()
    assert block(x).shape == (2, cout, out_size, out_size)
    if stride == 1 and cin == cout:
        assert isinstance(block.shortcut, torch.nn.Identity)
    elif shortcut == "duplicate":
        assert isinstance(block.shortcut, PoolDuplicate)
    else:
        assert isinstance(block.shortcut, Downsample)
        assert isinstance(block.shortcut.conv, BinaryConv2d)


def test_pool_duplicate_values():
    x = torch.arange(2 * 2 * 4 * 4, dtype=torch.float32).reshape(2, 2, 4, 4)
    out = PoolDuplicate(2, 6, 2)(x).numpy()
    pooled = x.numpy().astype(np.float64).reshape(2, 2, 2, 2, 2, 2).mean(axis=(3, 5))
    # small integers: every sum and the division by 4 are exact in float32
    np.testing.assert_array_equal(out, np.concatenate([pooled] * 3, axis=1))


def test_pool_duplicate_rejects_non_multiple_widths():
    with pytest.raises(ConfigError, match="6 -> 9|divisible"):
        PoolDuplicate(6, 9, 2)
    with pytest.raises(ConfigError):
        BinaryBlock(4, 6, stride=2, shortcut="duplicate")
    BinaryBlock(4, 6, stride=2, shortcut="binary")  # the 1x1 conv shortcut has no such constraint


def test_binary_block_unknown_shortcut_raises():
    with pytest.raises(ConfigError, match="bogus"):
        BinaryBlock(4, 8, stride=2, shortcut="bogus")
    with pytest.raises(ConfigError, match="bogus"):  # also where the identity shortcut would be used
        BinaryBlock(4, 4, stride=1, shortcut="bogus")


@pytest.mark.parametrize("shortcut", ["duplicate", "binary"])
def test_gradients_reach_latent_weights_through_block(shortcut):
    torch.manual_seed(12)
    block = BinaryBlock(4, 8, stride=2, shortcut=shortcut)
    x = torch.randn(3, 4, 6, 6, requires_grad=True)
    target = torch.randn(3, 8, 3, 3)
    (block(x) * target).sum().backward()
    convs = [block.conv] + ([block.shortcut.conv] if shortcut == "binary" else [])
    for conv in convs:
        assert conv.weight.grad is not None
        assert conv.weight.grad.abs().sum() > 0
        assert torch.isfinite(conv.weight.grad).all()
    assert block.shift.bias.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0


def test_latent_weights_outside_box_get_no_gradient():
    torch.manual_seed(13)
    conv = BinaryConv2d(2, 3, 3, padding=1)
    with torch.no_grad():
        conv.weight[0].fill_(1.5)  # channel 0 entirely outside [-1, 1]
    conv(torch.randn(2, 2, 5, 5)).mul(torch.randn(2, 3, 5, 5)).sum().backward()
    assert torch.equal(conv.weight.grad[0], torch.zeros_like(conv.weight.grad[0]))
    assert conv.weight.grad[1:].abs().sum() > 0
