"""The hybrid-quantized learning step on the device, in integer arithmetic (METHOD §5, integer form). NumPy + numba.

Every tensor the step quantizes becomes an :class:`IntTensor`: unsigned levels ``q`` in ``[0, 2^b - 1]`` (stored in
the smallest unsigned type that holds them: 8 bits in a uint8, 16 in a uint16), a scale ``S`` and a zero point ``Z``;
its value is ``(q - Z) * S``. Products run on the centred integers ``q - Z`` (:func:`~bnncl.device.kernels.imatmul`,
exact int64 sums) and are rescaled once by ``S_a * S_b``. The few element-wise steps between two products (the
softmax, the logit gradient's division by the batch size, the SGD update ``theta - lr g`` and the requantization onto
a new range) compute on the dequantized values in float32/float64, as an integer-only engine's requantization does
with its fixed-point multipliers; nothing else is float.

Head-only step (work A), head ``W`` (classes x features) stored at ``q_b``, minibatch ``h`` (B x features):

    hq = Q_qf(h)      Wq = Q_qf(W)      logits = (hq - Z) @ (Wq - Z)^T * S_h * S_w        integers
    p  = Q_qf(softmax(logits); 0, 1)    d = Q_qf((p - onehot(y)) / B)                      softmax in float32
    g  = Q_qb((d - Z)^T @ (hq - Z) * S_d * S_h)                                             integers
    W <- Q_qb(W - lr g)

This is :class:`bnncl.learning.hybrid.HeadHybridStep` with the integer form's grid (``grid="integer"``); the test
suite holds one step of the two equal. The simulation's default grid (METHOD's float form) puts the levels at
``m + k (M - m) / (2^b - 1)`` instead of on multiples of ``S``, so the two differ by less than one step of each
quantizer; BENCHMARKS.md compares whole streams.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..functional import nll, onehot, softmax
from ..quant import FLOAT_BITS, QParams, check_finite
from .kernels import imatmul


def _storage(bits: int):
    return np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32


@dataclass
class IntTensor:
    """``value = (q - zero_point) * scale``, ``q`` unsigned in ``[0, 2^bits - 1]``."""

    q: np.ndarray
    params: QParams

    @classmethod
    def quantize(cls, x: np.ndarray, bits: int, lo: float | None = None, hi: float | None = None, *,
                 rounding: str = "nearest", rng=None, where: str = "a tensor") -> "IntTensor":
        x = np.asarray(x)
        check_finite(x, where)
        lo = float(x.min()) if lo is None else float(lo)
        hi = float(x.max()) if hi is None else float(hi)
        p = QParams.for_range(lo, hi, bits)
        q = p.quantize(np.clip(x, lo, hi), rounding, rng, where)
        return cls(q.astype(_storage(bits)), p)

    @property
    def bits(self) -> int:
        return self.params.bits

    @property
    def shape(self) -> tuple[int, ...]:
        return self.q.shape

    def centred(self) -> np.ndarray:
        """``q - Z`` as int32: the operand of the integer products."""
        return self.q.astype(np.int32) - np.int32(self.params.zero_point)

    def value(self) -> np.ndarray:
        return (self.centred() * np.float64(self.params.scale)).astype(np.float32)

    @property
    def nbytes(self) -> int:
        """The levels at ``bits`` each (packed as a device would store them), plus the scale and zero point."""
        return -(-self.q.size * self.bits // 8) + 8


def int_product(a: IntTensor, b: IntTensor, transpose_a: bool = False, transpose_b: bool = False) -> np.ndarray:
    """The real-valued ``a @ b`` computed on integers and rescaled once (float64)."""
    ca, cb = a.centred(), b.centred()
    if transpose_a:
        ca = ca.T
    if transpose_b:
        cb = cb.T
    return imatmul(ca, cb) * (a.params.scale * b.params.scale)


@dataclass
class HeadStepResult:
    loss: float
    gradient: np.ndarray  # the weight gradient as applied (float values of the quantized gradient)


class IntegerHeadStep:
    """One SGD step on a head stored at ``q_b`` (an :class:`IntTensor`), forward at ``q_f``. ``rng`` drives
    stochastic rounding."""

    def __init__(self, qf: int, qb: int, lr: float, rounding: str = "nearest", rng: np.random.Generator | None = None):
        if max(qf, qb) >= FLOAT_BITS:
            raise ValueError("IntegerHeadStep needs q_f and q_b below 32 bits (32 is the float learner)")
        self.qf, self.qb, self.lr, self.rounding, self.rng = qf, qb, lr, rounding, rng

    def _q(self, x, bits, where, lo=None, hi=None) -> IntTensor:
        return IntTensor.quantize(x, bits, lo, hi, rounding=self.rounding, rng=self.rng, where=where)

    def store(self, w: np.ndarray) -> IntTensor:
        return self._q(w, self.qb, "head weights (stored)")

    def __call__(self, w: IntTensor, h: np.ndarray, y: np.ndarray) -> tuple[IntTensor, HeadStepResult]:
        n, classes = len(y), w.shape[0]
        hq = self._q(h, self.qf, "head input")
        wq = self._q(w.value(), self.qf, "head weights (forward)")
        p_float = softmax(int_product(hq, wq, transpose_b=True).astype(np.float32))
        p = self._q(p_float, self.qf, "softmax output", 0.0, 1.0)
        d = self._q((p.value() - onehot(y, classes)) / np.float32(n), self.qf, "logit gradient")
        g = self._q(int_product(d, hq, transpose_a=True), self.qb, "head weight gradient")
        g_value = g.value()
        w_new = self._q(w.value() - np.float32(self.lr) * g_value, self.qb, "head weights (stored)")
        return w_new, HeadStepResult(nll(p.value(), y), g_value)


def float_head_step(w: np.ndarray, h: np.ndarray, y: np.ndarray, lr: float) -> tuple[np.ndarray, HeadStepResult]:
    """The fp32 step of the same head (the float learner and the baseline of benchmarks/learning.py)."""
    p = softmax(h @ w.T)
    g = ((p - onehot(y, w.shape[0])) / np.float32(len(y))).T @ h
    return (w - np.float32(lr) * g).astype(np.float32), HeadStepResult(nll(p, y), g)
