"""Batch augmentation on normalized NCHW tensors, driven by an explicit generator (deterministic given a seed)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# (crop padding in pixels, horizontal flip) suited to each dataset: digits must not be mirrored.
AUGMENTATION = {
    "fashion-mnist": (2, True),
    "mnist": (2, False),
    "cifar10": (4, True),
    "core50": (8, True),
}


def random_crop_flip(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Pad by ``pad`` with -1 (a black pixel after normalization), crop back at a random offset, maybe mirror."""
    n, c, h, w = x.shape
    out = x
    if pad:
        padded = F.pad(x, (pad,) * 4, value=-1.0)
        oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
        out = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    if flip:
        mirror = torch.rand(n, generator=generator) < 0.5
        out = torch.where(mirror[:, None, None, None], out.flip(3), out)
    return out
