"""Layers of a binary network (torch side): learnable shift, RPReLU, binary conv and linear, the residual block.

Downsampling shortcut: ``duplicate`` (default; avg-pool + channel repetition, no weights, keeps the real-valued
residual path) or ``binary`` (docs/method.md §2's avg-pool + 1x1 conv + BN, with the 1x1 conv binary, which cuts the
residual stream to signs at every downsampling; in our Fashion-MNIST trials it trained about a point lower).

Padding of binary convs: the binarized input is padded with **+1**, not 0. A packed bit holds only +1 or -1, so
+1-padding lets the device compute exactly what training computed without a correction term for the border
(Larq Compute Engine's "one-padding" makes the same choice).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bnncl.binarizers import activation_binarizer, magnitude_aware_sign
from bnncl.core.errors import ConfigError

PAD_VALUE = 1.0


def _per_channel(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a (C,) vector to broadcast over channel dim 1 of x (N, C) or (N, C, H, W)."""
    return v.view(1, -1, *([1] * (x.dim() - 2)))


class LearnableBias(nn.Module):
    """A learnable per-channel shift ``x + b`` (ReActNet's RSign/RPReLU shift); starts at zero."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return x + _per_channel(self.bias, x)


class LearnableScale(nn.Module):
    """A learnable per-channel multiplier ``x * s``; starts at one."""

    def __init__(self, channels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        return x * _per_channel(self.scale, x)


class BinarizeInput(nn.Module):
    """``sign(x + b)``: a learnable shift, then the activation binarizer. Output is exactly ±1.

    Placed before a block built with ``binary_input=True`` it makes the whole tensor crossing that point one sign per
    element, so a latent-replay layer there stores 1 bit per activation without losing anything.
    """

    def __init__(self, channels: int, activation: str = "approx"):
        super().__init__()
        self.shift = LearnableBias(channels)
        self.binarize = activation_binarizer(activation)

    def forward(self, x):
        return self.binarize(self.shift(x))


class RPReLU(nn.Module):
    """shift -> PReLU (one slope per channel) -> shift."""

    def __init__(self, channels: int, init_slope: float = 0.25):
        super().__init__()
        self.shift_in = LearnableBias(channels)
        self.prelu = nn.PReLU(channels, init=init_slope)
        self.shift_out = LearnableBias(channels)

    def forward(self, x):
        return self.shift_out(self.prelu(self.shift_in(x)))


class BinaryConv2d(nn.Conv2d):
    """Conv with sign-binarized input and magnitude-aware binary weights; +1 padding; no bias.

    ``latent weight`` = ``self.weight`` (float, clipped to [-1, 1] by the trainer); the effective weight is
    ``sign(W) * mean(|W|)`` per output channel.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, activation="approx"):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=False)
        self.pad = int(padding)
        self.activation = activation
        self._binarize = activation_binarizer(activation)

    def forward(self, x):
        xb = self._binarize(x)
        if self.pad:
            xb = F.pad(xb, (self.pad,) * 4, value=PAD_VALUE)
        return F.conv2d(xb, magnitude_aware_sign(self.weight), None, self.stride, 0, self.dilation, self.groups)

    def extra_repr(self):
        return super().extra_repr() + f", pad={self.pad} (value +1), activation={self.activation}"


class BinaryLinear(nn.Linear):
    """Linear layer with sign-binarized input and magnitude-aware binary weights; no bias."""

    def __init__(self, in_features, out_features, activation="approx"):
        super().__init__(in_features, out_features, bias=False)
        self.activation = activation
        self._binarize = activation_binarizer(activation)

    def forward(self, x):
        return F.linear(self._binarize(x), magnitude_aware_sign(self.weight))


class Downsample(nn.Module):
    """Shortcut of a block that changes resolution or width: 2x2 avg-pool -> shift -> binary 1x1 conv -> BN.

    The pool uses ceil mode without padding in the average, so odd sizes (7 -> 4) match the strided 3x3 conv.
    """

    def __init__(self, cin, cout, stride, activation):
        super().__init__()
        self.pool = (nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1
                     else nn.Identity())
        self.shift = LearnableBias(cin)
        self.conv = BinaryConv2d(cin, cout, 1, activation=activation)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.conv(self.shift(self.pool(x))))


class PoolDuplicate(nn.Module):
    """Parameter-free shortcut (ReActNet): 2x2 avg-pool, then the channels repeated ``cout / cin`` times.

    It keeps the real-valued residual stream flowing through a downsampling block with no weights at all, where the
    binary 1x1 conv of :class:`Downsample` would cut it to signs.
    """

    def __init__(self, cin, cout, stride):
        super().__init__()
        if cout % cin:
            raise ConfigError("a 'duplicate' shortcut needs output channels divisible by input channels, "
                              f"got {cin} -> {cout}")
        self.repeat = cout // cin
        self.pool = (nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1
                     else nn.Identity())

    def forward(self, x):
        x = self.pool(x)
        return x.repeat(1, self.repeat, 1, 1) if self.repeat > 1 else x


SHORTCUTS = ("duplicate", "binary")


class BinaryBlock(nn.Module):
    """Bi-Real/ReActNet residual block: shift -> binary 3x3 conv -> BN -> + shortcut -> RPReLU.

    The block input and output are real-valued; only the conv sees binary activations and binary weights.
    """

    def __init__(self, cin, cout, stride=1, activation="approx", shortcut="duplicate", binary_input=False):
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ConfigError(f"unknown shortcut {shortcut!r} (valid: {', '.join(SHORTCUTS)})")
        # binary_input: the input is already ±1 (a BinarizeInput precedes the block); the conv takes it as is and the
        # shortcut carries it through a learnable per-channel scale instead of the real-valued stream.
        self.binary_input = binary_input
        self.shift = nn.Identity() if binary_input else LearnableBias(cin)
        self.input_scale = LearnableScale(cin) if binary_input else nn.Identity()
        self.conv = BinaryConv2d(cin, cout, 3, stride=stride, padding=1, activation=activation)
        self.bn = nn.BatchNorm2d(cout)
        if stride == 1 and cin == cout:
            self.shortcut = nn.Identity()
        elif shortcut == "duplicate":
            self.shortcut = PoolDuplicate(cin, cout, stride)
        else:
            self.shortcut = Downsample(cin, cout, stride, activation)
        self.act = RPReLU(cout)

    def forward(self, x):
        return self.act(self.bn(self.conv(self.shift(x))) + self.shortcut(self.input_scale(x)))
