"""The hybrid-quantized learning step in the torch simulation (docs/method.md §5): forward at ``q_f`` bits, gradients
and stored parameters at ``q_b`` bits.

Head-only variant (work A), one SGD step on the bias-free head ``W`` (classes x features) with a minibatch ``h``:

    hq = Q_qf(h)              head input            Wq = Q_qf(W)         weights, as the forward reads them
    p  = Q_qf(softmax(hq Wq^T); 0, 1)               softmax output on [0, 1]
    d  = Q_qf((p - onehot(y)) / B)                  logit gradient
    g  = Q_qb(d^T hq)                               weight gradient
    W <- Q_qb(W - lr g)                             stored weights: the update accumulates at q_b

Ranges: ``dynamic`` takes each tensor's min/max at every call; ``fixed`` (work A) takes the ranges of the head input
and of ``d`` from the float model over experience 0 (which then trains in float), and the weight range from the current
weights widened by 2 % on each side. 32 bits is float32 itself.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bnncl.core.affine import quantize
from bnncl.core.backprop import Bits, BlockParams, QuantizedBackprop, nll, onehot, softmax
from bnncl.core.errors import ConfigError
from bnncl.core.protocol import generator
from bnncl.layers import BinaryBlock, PoolDuplicate

WEIGHT_MARGIN = 0.02


def _widened(w: np.ndarray, margin: float = WEIGHT_MARGIN) -> tuple[float, float]:
    lo, hi = float(w.min()), float(w.max())
    span = max(hi - lo, 1e-12)
    return lo - margin * span, hi + margin * span


class HeadHybridStep:
    """Replaces the autograd SGD step when only the head trains and ``q_f``/``q_b`` are below 32 bits."""

    def __init__(self, head: nn.Linear, q_f: int, q_b: int, lr: float, ranges: str = "dynamic",
                 rounding: str = "nearest", seed: int = 0, grid: str = "affine"):
        self.head, self.q_f, self.q_b, self.lr = head, q_f, q_b, lr
        self.ranges, self.rounding, self.grid = ranges, rounding, grid
        self.rng = generator(seed, "quantizer")
        self.calibrated: dict[str, tuple[float, float]] = {}  # fixed ranges, set over experience 0
        self.calibrating = ranges == "fixed"
        self.grad_errors: list[float] = []  # ||g - g_float|| / ||g_float|| per quantized step

    def _q(self, x, bits, where, lo=None, hi=None):
        return quantize(x, bits, lo, hi, rounding=self.rounding, rng=self.rng, where=where, grid=self.grid)

    def _range(self, name):
        return self.calibrated.get(name, (None, None)) if self.ranges == "fixed" else (None, None)

    def _record(self, name, x):
        lo, hi = self.calibrated.get(name, (np.inf, -np.inf))
        self.calibrated[name] = (min(lo, float(x.min())), max(hi, float(x.max())))

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> float:
        h = x.detach().numpy().astype(np.float32)
        w = self.head.weight.detach().numpy().astype(np.float32)
        yy = y.numpy()
        n = len(yy)
        target = onehot(yy, w.shape[0])
        p_float = softmax(h @ w.T)  # the float step: what float32 training would apply
        d_float = (p_float - target) / n
        g_float = d_float.T @ h
        if self.calibrating:  # experience 0 with fixed ranges: the float step, recording the ranges it sees
            self._record("input", h)
            self._record("delta", d_float)
            self.head.weight.copy_(torch.from_numpy(w - self.lr * g_float))
            return nll(p_float, yy)
        fixed = self.ranges == "fixed"
        w_lo, w_hi = _widened(w) if fixed else (None, None)
        hq = self._q(h, self.q_f, "head input", *self._range("input"))
        wq = self._q(w, self.q_f, "head weights (forward)", w_lo, w_hi)
        p = self._q(softmax(hq @ wq.T), self.q_f, "softmax output", 0.0, 1.0)
        d = self._q((p - target) / n, self.q_f, "logit gradient", *self._range("delta"))
        g = self._q(d.T @ hq, self.q_b, "head weight gradient")
        norm = float(np.linalg.norm(g_float))
        if norm > 0:
            self.grad_errors.append(float(np.linalg.norm(g - g_float)) / norm)
        w_new = self._q(w - np.float32(self.lr) * g, self.q_b, "head weights (stored)", w_lo, w_hi)
        self.head.weight.copy_(torch.from_numpy(w_new.astype(np.float32)))
        return nll(p, yy)

    def end_experience(self) -> None:
        self.calibrating = False

    def gradient_errors(self) -> dict[str, float | None]:
        """Mean relative error of the quantized gradient against the float one, per trained layer."""
        return {"head": float(np.mean(self.grad_errors)) if self.grad_errors else None}


def block_params(name: str, block) -> BlockParams:
    """A torch BinaryBlock's tensors as NumPy arrays sharing their memory: updates land in the torch module."""
    def arr(t):
        return t.detach().numpy()

    if isinstance(block.shortcut, nn.Identity):
        shortcut = "identity"
    elif isinstance(block.shortcut, PoolDuplicate):
        shortcut = "duplicate"
    else:
        raise ConfigError(f"{name}: quantized back-propagation does not handle a "
                          f"{type(block.shortcut).__name__} shortcut")
    return BlockParams(
        name=name, weight=arr(block.conv.weight), stride=block.conv.stride[0], binary_input=block.binary_input,
        shortcut=shortcut, shift=None if block.binary_input else arr(block.shift.bias),
        input_scale=arr(block.input_scale.scale) if block.binary_input else None,
        bn_weight=arr(block.bn.weight), bn_bias=arr(block.bn.bias), running_mean=arr(block.bn.running_mean),
        running_var=arr(block.bn.running_var), shift_in=arr(block.act.shift_in.bias), slope=arr(block.act.prelu.weight),
        shift_out=arr(block.act.shift_out.bias), eps=block.bn.eps, momentum=block.bn.momentum,
        activation=block.conv.activation)


class TorchConv:
    """The binary conv of :mod:`bnncl.core.backprop` (+1 padding, float ±1 operands) with torch's conv kernels."""

    def forward(self, xb, wb, stride):
        x = torch.nn.functional.pad(torch.from_numpy(xb), (1, 1, 1, 1), value=1.0)
        return torch.nn.functional.conv2d(x, torch.from_numpy(wb), stride=stride).numpy(), x

    def backward(self, gc, wb, stride, saved):
        x, w, g = saved, torch.from_numpy(wb), torch.from_numpy(np.ascontiguousarray(gc))
        gx = torch.nn.grad.conv2d_input(x.shape, w, g, stride=stride)[:, :, 1:-1, 1:-1]
        gw = torch.nn.grad.conv2d_weight(x, w.shape, g, stride=stride)
        return np.ascontiguousarray(gx.numpy()), gw.numpy()


class BackpropHybridStep:
    """Replaces the autograd SGD step when blocks above the LR layer train and a bit width is below 32 (work B):
    :class:`~bnncl.core.backprop.QuantizedBackprop` on the torch modules' own memory, so every update lands in
    the model (and CWR* sees the head as usual)."""

    ERROR_EVERY = 25  # steps between two measurements of the gradient error against float

    def __init__(self, trainable: nn.Module, q_f: int, q_b: int, q_bin: int, lr: float, rounding: str = "nearest",
                 seed: int = 0, q_bin_update: str = "rebinarize", grid: str = "affine"):
        blocks, head = [], None
        for name, module in trainable.named_children():
            if isinstance(module, BinaryBlock):
                blocks.append(block_params(name, module))
            elif name == "head":
                head = module.weight.detach().numpy()
            elif name != "pool":
                raise ConfigError(f"quantized back-propagation cannot train {name} ({type(module).__name__}): put the "
                                  "latent-replay layer at a block (or the head)")
        self.lr, self.bits = lr, Bits(q_f, q_b, q_bin, rounding, generator(seed, "quantizer"), grid)
        self.bp = QuantizedBackprop(blocks, head, self.bits, TorchConv())
        # same arrays, no quantizer: the reference gradients
        self.float_bp = QuantizedBackprop(blocks, head, Bits(), TorchConv())
        self.errors: dict[str, list[float]] = {}
        self.steps = 0
        # work B's update of binary latent weights, W <- clip(Q(sign(W) - lr g), -1, 1), or the plain one from W
        self.rebinarize = q_bin_update == "rebinarize"

    def _gradients(self, bp) -> dict[str, np.ndarray]:
        out = {"head": bp.head_grad}
        for b in bp.blocks:
            out[f"{b.name}.conv"] = b.grads["conv.weight"]
        return out

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> float:
        xs, ys = x.detach().numpy(), y.numpy()
        reference = None
        # Float gradients on the same state (running statistics untouched). Not on the very first step: CWR* starts
        # the head at zero there, so nothing flows below it yet.
        if self.steps % self.ERROR_EVERY == 1:
            self.float_bp.loss_and_backward(xs, ys, update_stats=False)
            reference = {k: v.copy() for k, v in self._gradients(self.float_bp).items()}
        loss = self.bp.loss_and_backward(xs, ys)
        if reference is not None:
            for k, g in self._gradients(self.bp).items():
                norm = float(np.linalg.norm(reference[k]))
                if norm > 0:
                    self.errors.setdefault(k, []).append(float(np.linalg.norm(g - reference[k])) / norm)
        self.bp.sgd_step(self.lr, self.rebinarize)
        self.steps += 1
        return loss

    def end_experience(self) -> None:
        pass

    def gradient_errors(self) -> dict[str, float]:
        return {k: float(np.mean(v)) for k, v in self.errors.items()}

    def state_bytes(self) -> dict[str, int]:
        """The trainable state at its stored precision: binary latent weights at q_bin, BN in float32,
        the rest at q_b."""
        q = self.bits
        latent = sum(b.weight.size for b in self.bp.blocks)
        bn = sum(b.bn_weight.size * 2 for b in self.bp.blocks)  # gamma, beta (running statistics are not trained)
        vectors = sum(v.size for b in self.bp.blocks for v in (b.shift, b.input_scale, b.shift_in, b.slope, b.shift_out)
                      if v is not None) + self.bp.head.size
        return {"binary_latent_weights": -(-latent * q.q_bin // 8), "batchnorm_fp32": 4 * bn,
                "other_parameters": -(-vectors * q.q_b // 8)}
