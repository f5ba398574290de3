"""The hybrid-quantized learning step in the torch simulation (METHOD §5): forward at ``q_f`` bits, gradients and
stored parameters at ``q_b`` bits.

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

from ..quant import quantize

RANGES = ("dynamic", "fixed")
WEIGHT_MARGIN = 0.02


def _widened(w: np.ndarray, margin: float = WEIGHT_MARGIN) -> tuple[float, float]:
    lo, hi = float(w.min()), float(w.max())
    span = max(hi - lo, 1e-12)
    return lo - margin * span, hi + margin * span


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class HeadHybridStep:
    """Replaces the autograd SGD step when only the head trains and ``q_f``/``q_b`` are below 32 bits."""

    def __init__(self, head: nn.Linear, qf: int, qb: int, lr: float, ranges: str = "dynamic", rounding: str = "nearest",
                 seed: int = 0):
        self.head, self.qf, self.qb, self.lr = head, qf, qb, lr
        self.ranges, self.rounding = ranges, rounding
        self.rng = np.random.default_rng(seed + 104729)
        self.calibrated: dict[str, tuple[float, float]] = {}  # fixed ranges, set over experience 0
        self.calibrating = ranges == "fixed"

    def _q(self, x, bits, where, lo=None, hi=None):
        return quantize(x, bits, lo, hi, rounding=self.rounding, rng=self.rng, where=where)

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
        onehot = np.zeros((n, w.shape[0]), np.float32)
        onehot[np.arange(n), yy] = 1.0
        if self.calibrating:  # experience 0 with fixed ranges: the float step, recording the ranges it sees
            p = softmax(h @ w.T)
            d = (p - onehot) / n
            self._record("input", h)
            self._record("delta", d)
            self.head.weight.copy_(torch.from_numpy(w - self.lr * (d.T @ h)))
            return float(-np.log(np.maximum(p[np.arange(n), yy], 1e-30)).mean())
        fixed = self.ranges == "fixed"
        w_lo, w_hi = _widened(w) if fixed else (None, None)
        hq = self._q(h, self.qf, "head input", *self._range("input"))
        wq = self._q(w, self.qf, "head weights (forward)", w_lo, w_hi)
        p = self._q(softmax(hq @ wq.T), self.qf, "softmax output", 0.0, 1.0)
        d = self._q((p - onehot) / n, self.qf, "logit gradient", *self._range("delta"))
        g = self._q(d.T @ hq, self.qb, "head weight gradient")
        w_new = self._q(w - np.float32(self.lr) * g, self.qb, "head weights (stored)", w_lo, w_hi)
        self.head.weight.copy_(torch.from_numpy(w_new.astype(np.float32)))
        return float(-np.log(np.maximum(p[np.arange(n), yy], 1e-30)).mean())

    def end_experience(self) -> None:
        self.calibrating = False
