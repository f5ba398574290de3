"""Folding of trained parameters against torch as the independent oracle (eval-mode BatchNorm, conv2d)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from bnncl.device.bitpack import words_for  # noqa: E402
from bnncl.device.fold import fold_batchnorm, fold_binary_conv_bn, fold_conv_bn, pack_conv_weights  # noqa: E402
from fixtures import F32_UNIT, assert_within_float32, float32_sum_bound  # noqa: E402

CHANNELS = [1, 3, 33, 63, 64, 65, 70, 130]


def random_bn(rng, c, eps):
    """A BatchNorm2d in eval mode with random running statistics and affine parameters."""
    bn = torch.nn.BatchNorm2d(c, eps=eps)
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(rng.standard_normal(c).astype(np.float32)))
        bn.bias.copy_(torch.from_numpy(rng.standard_normal(c).astype(np.float32)))
        bn.running_mean.copy_(torch.from_numpy((2 * rng.standard_normal(c)).astype(np.float32)))
        bn.running_var.copy_(torch.from_numpy(rng.uniform(0.01, 4.0, c).astype(np.float32)))
    return bn.eval()


def bn_params(bn):
    return (bn.weight.detach().numpy(), bn.bias.detach().numpy(), bn.running_mean.numpy(), bn.running_var.numpy(),
            bn.eps)


# fold_batchnorm in float32: var + eps, sqrt, 1/x, * gamma (a: at most 5 roundings relative), then
# beta - mean * a; x * a + b applied: at most 8 roundings of |x a| + |mean a| + |beta| (derived in the test below). A
# float32 BN of torch is allowed as many (10): it computes the same few operations in an order of its own.
FOLD_ROUNDINGS, TORCH_BN_ROUNDINGS = 8, 10


def bn_magnitude(x_scaled, bn, channel_axis=1):
    """|x a| + |mean a| + |beta| per element (float64): what every rounding of a folded BN is relative to."""
    g, beta, mean, var, eps = (np.asarray(v, np.float64) if not isinstance(v, float) else v for v in bn_params(bn))
    a = np.abs(g / np.sqrt(var + eps))
    shape = [1] * np.ndim(x_scaled)
    shape[channel_axis] = -1
    return np.abs(x_scaled) * a.reshape(shape) + (np.abs(mean) * a + np.abs(beta)).reshape(shape)


@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_fold_batchnorm_equals_torch_eval(c, eps):
    rng = np.random.default_rng([c, int(eps * 1e5)])
    bn = random_bn(rng, c, eps)
    x = rng.standard_normal((2, c, 5, 3)).astype(np.float32)
    with torch.no_grad():
        expected = bn(torch.from_numpy(x)).numpy()
    a, b = fold_batchnorm(*bn_params(bn))
    assert a.dtype == np.float32 and b.dtype == np.float32 and a.shape == b.shape == (c,)
    got = x * a[None, :, None, None] + b[None, :, None, None]
    # Against the textbook float64 formula, within the float32 roundings of each side (not a fixed tolerance):
    g, beta, mean, var, _ = (np.asarray(v, np.float64) for v in bn_params(bn))
    textbook = (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + eps) * g[None, :, None, None] \
        + beta[None, :, None, None]
    magnitude = bn_magnitude(x, bn)
    assert_within_float32(got, textbook, FOLD_ROUNDINGS * F32_UNIT * magnitude, "folded BN")
    assert_within_float32(expected, textbook, TORCH_BN_ROUNDINGS * F32_UNIT * magnitude, "torch's BN")


@pytest.mark.parametrize("cin,cout,k,stride,pad", [
    (1, 4, 3, 1, 1), (3, 8, 3, 2, 1), (3, 5, 3, 1, 0), (33, 7, 3, 2, 1), (65, 3, 1, 1, 0), (70, 6, 3, 1, 1),
])
def test_fold_conv_bn_equals_torch_conv_then_bn(cin, cout, k, stride, pad):
    rng = np.random.default_rng([cin, cout, k, stride, pad])
    conv = torch.nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(rng.standard_normal((cout, cin, k, k)).astype(np.float32)))
    bn = random_bn(rng, cout, 1e-5)
    x = rng.standard_normal((2, cin, 7, 6)).astype(np.float32)
    with torch.no_grad():
        expected = bn(conv(torch.from_numpy(x))).numpy()  # NCHW
    w, b = fold_conv_bn(conv.weight.detach().numpy(), *bn_params(bn))
    assert w.shape == (cout, k, k, cin) and w.dtype == np.float32 and w.flags.c_contiguous
    assert b.shape == (cout,) and b.dtype == np.float32
    # The folded conv, done by torch in float64 from the NHWC-ordered weights: (Cout, kh, kw, Cin) -> OIHW.
    w_oihw = torch.from_numpy(np.transpose(w, (0, 3, 1, 2)).astype(np.float64))
    folded = F.conv2d(torch.from_numpy(x.astype(np.float64)), w_oihw, torch.from_numpy(b.astype(np.float64)),
                      stride=stride, padding=pad).numpy()
    # The exact result: torch's conv in float64, then BN in float64. torch's float32 conv sums K = k*k*Cin products
    # (gamma_K of sum |x w|, times |a| through BN), then its BN; the folded weights W*a and bias err by the fold's
    # roundings (8, as above) relative to |x W a| summed, |mean a|, |beta|.
    w64 = torch.from_numpy(conv.weight.detach().numpy().astype(np.float64))
    x64 = torch.from_numpy(x.astype(np.float64))
    conv64 = F.conv2d(x64, w64, stride=stride, padding=pad).numpy()
    exact = bn_textbook(conv64, bn)
    sum_abs = F.conv2d(x64.abs(), w64.abs(), stride=stride, padding=pad).numpy()
    magnitude = bn_magnitude(sum_abs, bn)
    conv_error = float32_sum_bound(magnitude - bn_magnitude(0 * sum_abs, bn), k * k * cin)
    assert_within_float32(expected, exact, conv_error + TORCH_BN_ROUNDINGS * F32_UNIT * magnitude, "torch conv + BN")
    assert_within_float32(folded, exact, FOLD_ROUNDINGS * F32_UNIT * magnitude, "the folded conv")
    # The folded weights are W * a per output channel, channels last: a within 5 roundings, the product one more.
    a = bn.weight.detach().numpy().astype(np.float64) / np.sqrt(bn.running_var.numpy().astype(np.float64) + 1e-5)
    w_exact = np.transpose(conv.weight.detach().numpy(), (0, 2, 3, 1)) * a[:, None, None, None]
    assert_within_float32(w, w_exact, 6 * F32_UNIT * np.abs(w_exact), "folded weights")


@pytest.mark.parametrize("cin", CHANNELS)
def test_pack_conv_weights_packs_the_signs(cin):
    rng = np.random.default_rng(cin)
    cout, kh, kw = 5, 3, 2
    latent = rng.standard_normal((cout, cin, kh, kw)).astype(np.float32)
    latent[rng.random(latent.shape) < 0.1] = 0.0  # sign(0) = +1: bit 0
    latent.flat[0] = -0.0  # negative zero is zero: +1 as well
    packed = pack_conv_weights(latent)
    nw = words_for(cin)
    assert packed.dtype == np.uint64 and packed.shape == (cout, kh, kw, nw)
    for co in range(cout):
        for y in range(kh):
            for x in range(kw):
                for t in range(nw):
                    word = int(packed[co, y, x, t])
                    expected = 0
                    for j in range(min(64, cin - 64 * t)):
                        if float(latent[co, 64 * t + j, y, x]) < 0.0:
                            expected |= 1 << j
                    assert word == expected, (co, y, x, t)
    assert int(packed[0, 0, 0, 0]) & 1 == 0  # the -0.0 at channel 0


def alpha_of(latent: np.ndarray) -> np.ndarray:
    """The per-output-channel scale ``mean|W|`` (float32), as the export takes it from torch's forward."""
    return np.abs(latent).mean(axis=(1, 2, 3), dtype=np.float32)


@pytest.mark.parametrize("cin,cout", [(1, 1), (3, 4), (33, 7), (64, 5), (65, 3), (130, 6)])
def test_fold_binary_conv_bn_equals_bn_of_alpha_dot(cin, cout):
    rng = np.random.default_rng([cin, cout, 3])
    latent = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32)
    alpha = alpha_of(latent)
    bn = random_bn(rng, cout, 1e-5)
    k = 9 * cin
    dot = rng.integers(-k, k + 1, (2, cout, 4, 5)).astype(np.float32)  # integer dot products, NCHW for torch
    alpha_t = torch.from_numpy(latent).abs().mean(dim=(1, 2, 3))
    with torch.no_grad():
        expected = bn(alpha_t[None, :, None, None] * torch.from_numpy(dot)).numpy()
    mult, bias = fold_binary_conv_bn(alpha, *bn_params(bn))
    assert mult.dtype == np.float32 and bias.dtype == np.float32 and mult.shape == bias.shape == (cout,)
    got = mult[None, :, None, None] * dot + bias[None, :, None, None]
    # alpha (a mean of 9 Cin terms) times an exact integer dot, then BN: the mean's rounding on top of the fold's
    exact = bn_textbook(alpha_t.double().numpy()[None, :, None, None] * dot, bn)
    magnitude = bn_magnitude(alpha_t.double().numpy()[None, :, None, None] * dot, bn)
    mean_error = float32_sum_bound(1.0, k + 1) * np.abs(exact - bn_textbook(0 * dot, bn))
    assert_within_float32(got, exact, FOLD_ROUNDINGS * F32_UNIT * magnitude + mean_error, "folded binary conv BN")
    assert_within_float32(expected, exact, TORCH_BN_ROUNDINGS * F32_UNIT * magnitude + mean_error, "torch")


def bn_textbook(x, bn):
    """BN in eval mode in float64, NCHW."""
    g, beta, mean, var, eps = (np.asarray(v, np.float64) if not isinstance(v, float) else v for v in bn_params(bn))
    c = (slice(None),) + (None,) * 2
    return (np.asarray(x, np.float64) - mean[c]) / np.sqrt(var[c] + eps) * g[c] + beta[c]


def test_fold_binary_conv_bn_through_a_real_binary_conv():
    """End to end with torch: BN(alpha * conv(sign(x), sign(W))) == mult * dot + bias, dot from the sign conv."""
    rng = np.random.default_rng(11)
    cin, cout = 70, 6
    latent = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32)
    x = rng.standard_normal((1, cin, 6, 5)).astype(np.float32)
    bn = random_bn(rng, cout, 1e-5)
    sign = lambda t: torch.where(t < 0, -1.0, 1.0)  # noqa: E731
    xt, wt = torch.from_numpy(x), torch.from_numpy(latent)
    with torch.no_grad():
        dot = F.conv2d(F.pad(sign(xt), (1, 1, 1, 1), value=1.0), sign(wt))
        alpha_t = wt.abs().mean(dim=(1, 2, 3))
        expected = bn(alpha_t[None, :, None, None] * dot).numpy()
    alpha = alpha_of(latent)
    mult, bias = fold_binary_conv_bn(alpha, *bn_params(bn))
    got = mult[None, :, None, None] * dot.numpy() + bias[None, :, None, None]
    # the ±1 conv's sums are exact integers in float32; then as in the test above
    scaled = np.abs(latent).astype(np.float64).mean(axis=(1, 2, 3))[None, :, None, None] * dot.double().numpy()
    exact = bn_textbook(scaled, bn)
    mean_error = float32_sum_bound(1.0, 9 * cin + 1) * np.abs(exact - bn_textbook(0 * scaled, bn))
    magnitude = bn_magnitude(scaled, bn)
    assert_within_float32(got, exact, FOLD_ROUNDINGS * F32_UNIT * magnitude + mean_error, "folded binary conv BN")
    assert_within_float32(expected, exact, TORCH_BN_ROUNDINGS * F32_UNIT * magnitude + mean_error, "torch")
