"""Binarizers with straight-through gradients (torch side).

Forward, every binarizer maps x >= 0 to +1 and x < 0 to -1: zero goes to +1, the same convention the device
runtime uses when it packs a sign into a bit. Backward, the gradient is a surrogate:

* ``ste``: the STE box, ``1`` where ``|x| <= 1``, else ``0``;
* ``approx``: ApproxSign (Bi-Real Net), the derivative of the piecewise quadratic that approximates sign,
  ``2 - 2|x|`` where ``|x| <= 1``, else ``0``.

Weights are binarized magnitude-aware: ``sign(W) * mean(|W|)`` per output channel. Their gradient reaches the latent
float weight through the STE box, and the latent weights are clipped to [-1, 1] after every optimizer step
(``clip_latent_weights``), so a weight can always flip back.
"""

from __future__ import annotations

import torch

from bnncl.core.errors import ConfigError


def hard_sign(x: torch.Tensor) -> torch.Tensor:
    """sign with sign(0) = +1 (torch.sign gives 0 there, which a bit cannot hold)."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class _SignWithSurrogate(torch.autograd.Function):
    """Forward ``hard_sign``; backward the incoming gradient times ``surrogate(x)``."""

    @staticmethod
    def surrogate(x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def forward(cls, ctx, x):
        ctx.save_for_backward(x)
        return hard_sign(x)

    @classmethod
    def backward(cls, ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * cls.surrogate(x).to(grad.dtype)


class _SignSTE(_SignWithSurrogate):
    @staticmethod
    def surrogate(x):
        return x.abs() <= 1


class _ApproxSign(_SignWithSurrogate):
    @staticmethod
    def surrogate(x):
        return torch.clamp(2 - 2 * x.abs(), min=0)


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    return _SignSTE.apply(x)


def approx_sign(x: torch.Tensor) -> torch.Tensor:
    return _ApproxSign.apply(x)


ACTIVATION_BINARIZERS = {"ste": sign_ste, "approx": approx_sign}


def activation_binarizer(name: str):
    try:
        return ACTIVATION_BINARIZERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown activation binarizer {name!r} (valid: {', '.join(ACTIVATION_BINARIZERS)})"
        ) from None


def weight_scale(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel scale mean(|W|), shaped to broadcast against ``w``."""
    dims = tuple(range(1, w.dim()))
    return w.abs().mean(dim=dims, keepdim=True)


class _MagnitudeAwareSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w):
        ctx.save_for_backward(w)
        return hard_sign(w) * weight_scale(w)

    @staticmethod
    def backward(ctx, grad):
        (w,) = ctx.saved_tensors
        return grad * (w.abs() <= 1).to(grad.dtype)


def magnitude_aware_sign(w: torch.Tensor) -> torch.Tensor:
    """Forward exactly ``sign(W) * mean(|W|)`` per output channel; backward the STE box on the latent weight.

    The scale is treated as a constant in the backward pass (as in ReActNet): the gradient is the incoming gradient
    where ``|W| <= 1`` and zero elsewhere. The forward value is bit-exact, so the device's folded scale matches it.
    """
    return _MagnitudeAwareSign.apply(w)


@torch.no_grad()
def clip_latent_weights(module: torch.nn.Module) -> None:
    """Clip the latent float weights of every binary layer in ``module`` to [-1, 1]."""
    from bnncl.layers import BinaryConv2d, BinaryLinear

    for m in module.modules():
        if isinstance(m, (BinaryConv2d, BinaryLinear)):
            m.weight.clamp_(-1.0, 1.0)
