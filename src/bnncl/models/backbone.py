"""The residual BNN backbone: float stem, binary blocks, global average pool, bias-free float head.

The network is a flat list of named layers, ``stem, block1 .. blockN, pool, head`` (plus ``binarize`` before the
``binary_boundary`` block, if one is set), so it can be cut before any of
them into a frozen part and a trainable part (the latent-replay split); running one after the other is exactly the
whole network.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from bnncl.binarizers import ACTIVATION_BINARIZERS
from bnncl.core.errors import ConfigError
from bnncl.layers import SHORTCUTS, BinarizeInput, BinaryBlock
from bnncl.presets import PRESETS


@dataclass(frozen=True)
class BackboneConfig:
    """Everything needed to rebuild the architecture; stored in every checkpoint.

    ``stages`` is a tuple of ``(channels, blocks, stride)``; the first block of a stage applies its stride.
    """

    input_shape: tuple[int, int, int]  # (H, W, C)
    num_classes: int
    stem_channels: int = 32
    stem_stride: int = 1
    stages: tuple[tuple[int, int, int], ...] = ((64, 2, 2), (128, 2, 2), (256, 2, 2))
    activation: str = "approx"
    # A block whose input is binarized in full (conv path and shortcut): a latent-replay layer placed before it
    # stores exactly 1 bit per activation. None: every block input is real-valued (the Bi-Real/ReActNet default).
    binary_boundary: str | None = None
    # downsampling shortcut: "duplicate" (pool + repeat channels) or "binary" (pool + 1x1 binary conv + BN)
    shortcut: str = "duplicate"
    name: str = "custom"

    def __post_init__(self):
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        object.__setattr__(self, "stages", tuple(tuple(int(v) for v in s) for s in self.stages))
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ConfigError(f"input_shape must be (H, W, C) with positive sizes, got {self.input_shape}")
        if self.num_classes < 2:
            raise ConfigError(f"num_classes must be at least 2, got {self.num_classes}")
        if not self.stages or any(len(s) != 3 or min(s) < 1 for s in self.stages):
            raise ConfigError(f"stages must be a non-empty list of (channels, blocks, stride) >= 1, got {self.stages}")
        if self.activation not in ACTIVATION_BINARIZERS:
            raise ConfigError(f"unknown activation {self.activation!r} (valid: {', '.join(ACTIVATION_BINARIZERS)})")
        blocks = [f"block{i + 1}" for i in range(sum(s[1] for s in self.stages))]
        if self.binary_boundary is not None and self.binary_boundary not in blocks[1:]:
            raise ConfigError(f"binary_boundary must name a block after the first ({', '.join(blocks[1:])}), "
                              f"got {self.binary_boundary!r}")
        if self.shortcut not in SHORTCUTS:
            raise ConfigError(f"unknown shortcut {self.shortcut!r} (valid: {', '.join(SHORTCUTS)})")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["stages"] = [list(s) for s in self.stages]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "BackboneConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown backbone config keys {sorted(unknown)} (valid: {sorted(names)})")
        return cls(**d)

    def describe(self) -> str:
        h, w, c = self.input_shape
        stages = " ".join(f"{ch}x{n}/s{s}" for ch, n, s in self.stages)
        boundary = f", binary input at {self.binary_boundary}" if self.binary_boundary else ""
        return (f"{self.name}: input {h}x{w}x{c}, stem {self.stem_channels}/s{self.stem_stride}, stages {stages}, "
                f"{self.num_classes} classes{boundary}")


def preset_config(name: str, num_classes: int, **overrides) -> BackboneConfig:
    try:
        base = PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r} (valid: {', '.join(PRESETS)})") from None
    return BackboneConfig(**{**base, "num_classes": num_classes, "name": name, **overrides})


def preset_for_shape(input_shape) -> str:
    """The preset whose input shape matches, e.g. (28, 28, 1) -> 'fmnist'."""
    for name, p in PRESETS.items():
        if tuple(p["input_shape"]) == tuple(input_shape):
            return name
    shapes = ", ".join(f"{n} {'x'.join(map(str, p['input_shape']))}" for n, p in PRESETS.items())
    raise ConfigError(f"no preset for input shape {'x'.join(map(str, input_shape))} (presets: {shapes}); give --preset")


class Stem(nn.Module):
    """Float 3x3 conv + BN: the first layer stays real-valued in a BNN."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


class GlobalAvgPool(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


class BinaryResNet(nn.Module):
    """Input: float tensor (N, C, H, W), already normalized by :func:`normalize_tensor`. Output: logits (N, classes)."""

    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.config = config
        h, w, c = config.input_shape
        layers: dict[str, nn.Module] = {"stem": Stem(c, config.stem_channels, config.stem_stride)}
        cin = config.stem_channels
        for channels, blocks, stride in config.stages:
            for i in range(blocks):
                name = f"block{sum(n.startswith('block') for n in layers) + 1}"
                boundary = name == config.binary_boundary
                if boundary:
                    layers["binarize"] = BinarizeInput(cin, config.activation)
                layers[name] = BinaryBlock(cin, channels, stride if i == 0 else 1, config.activation, config.shortcut,
                                           binary_input=boundary)
                cin = channels
        layers["pool"] = GlobalAvgPool()
        # Bias-free: CWR* consolidates weights only, and the head holds a row for every class from the start.
        layers["head"] = nn.Linear(cin, config.num_classes, bias=False)
        self.layers = nn.ModuleDict(layers)

    @property
    def feature_dim(self) -> int:
        return self.layers["head"].in_features

    @property
    def split_points(self) -> list[str]:
        """Names the model can be cut before: every layer after the stem."""
        return list(self.layers)[1:]

    def forward(self, x):
        for layer in self.layers.values():
            x = layer(x)
        return x

    def split(self, before: str) -> tuple[nn.Sequential, nn.Sequential]:
        """Cut before layer ``before``: (frozen part, trainable part), sharing this model's modules.

        ``trainable(frozen(x)) == model(x)``. The frozen part's output is the latent-replay layer.
        """
        if before not in self.split_points:
            raise ConfigError(f"no layer {before!r} to split at (valid: {', '.join(self.split_points)})")
        names = list(self.layers)
        k = names.index(before)
        frozen = nn.Sequential(OrderedDict((n, self.layers[n]) for n in names[:k]))
        trainable = nn.Sequential(OrderedDict((n, self.layers[n]) for n in names[k:]))
        return frozen, trainable


def build_model(config: BackboneConfig) -> BinaryResNet:
    return BinaryResNet(config)


def normalize_tensor(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC images -> float NCHW in [-1, 1]. The device runtime applies the same map
    (``bnncl.core.functional.normalize_images``)."""
    return x_uint8.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
