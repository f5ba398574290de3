"""The hybrid-quantized learning step on the device, in integer arithmetic (docs/method.md §5, integer form).
NumPy (the head); numba's kernels for the blocks' products (work B).

Every tensor the step quantizes becomes an :class:`IntTensor`: unsigned levels ``q`` in ``[0, 2^b - 1]`` (stored in
the smallest unsigned type that holds them: 8 bits in a uint8, 16 in a uint16), a scale ``S`` and a zero point ``Z``;
its value is ``(q - Z) * S``. Products run on the centred integers ``q - Z`` (exact int64 sums: NumPy's for the
head, :func:`~bnncl.device.kernels.imatmul` for the blocks) and are rescaled once by ``S_a * S_b``. The few
element-wise steps between two products (the softmax, the logit gradient's division by the batch size, the SGD update
``theta - lr g`` and the requantization onto a new range) compute on the dequantized values in float32/float64, in a
fixed order of operations (the C learner's, runtime/src/bnn_learner.c: the two are bit for bit equal), as an
integer-only engine's requantization does with its fixed-point multipliers; the softmax's exp is
:func:`bnncl.core.functional.exp_fixed`, not NumPy's (whose SIMD routine differs per CPU). Nothing else is float.

Head-only step (work A), head ``W`` (classes x features) stored at ``q_b``, minibatch ``h`` (B x features):

    hq = Q_qf(h)      Wq = Q_qf(W)      logits = (hq - Z) @ (Wq - Z)^T * S_h * S_w        integers
    p  = Q_qf(softmax(logits); 0, 1)    d = Q_qf((p - onehot(y)) / B)                      softmax in float32
    g  = Q_qb((d - Z)^T @ (hq - Z) * S_d * S_h)                                             integers
    W <- Q_qb(W - lr g)

This is :class:`bnncl.simulation.steps.HeadHybridStep` with the integer form's grid (``grid="integer"``); the test
suite holds one step of the two equal. The simulation's default grid (docs/method.md's float form) puts the levels at
``m + k (M - m) / (2^b - 1)`` instead of on multiples of ``S``, so the two differ by less than one step of each
quantizer; BENCHMARKS.md compares whole streams.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnncl.core.affine import CHUNK, FLOAT_BITS, QParams, check_finite
from bnncl.core.backprop import float_matmul, im2col
from bnncl.core.functional import nll, onehot, softmax, softmax_fixed
from bnncl.device import kernels  # its numba kernels (imatmul, col2im) load on first use: the blocks' path only
from bnncl.device.bitpack import pack_signs


def quantized_bytes(size: int, bits: int) -> int:
    """Bytes of ``size`` values stored at ``bits`` each (packed as a device would store them), plus the tensor's
    scale (float32) and zero point (int32)."""
    return -(-size * bits // 8) + 8


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
        check_finite(x, where)  # before min/max, which a NaN would poison
        clip = lo is not None or hi is not None  # a given range may be narrower than the values; their own never is
        lo = float(x.min()) if lo is None else float(lo)
        hi = float(x.max()) if hi is None else float(hi)
        p = QParams.for_range(lo, hi, bits)
        return cls(p.quantize(np.clip(x, lo, hi) if clip else x, rounding, rng, where=None, dtype=_storage(bits)), p)

    @property
    def bits(self) -> int:
        return self.params.bits

    @property
    def shape(self) -> tuple[int, ...]:
        return self.q.shape

    def centred(self) -> np.ndarray:
        """``q - Z`` as int32: the operand of the integer products (computed once)."""
        if getattr(self, "_centred", None) is None:
            self._centred = self.q.astype(np.int32) - np.int32(self.params.zero_point)
        return self._centred

    def value(self) -> np.ndarray:
        """``(q - Z) * scale`` in float64 (``q - Z`` is exact there), rounded once to float32; a chunk at a time (see
        :meth:`QParams.quantize`), nothing cached: most tensors never meet a product."""
        flat, out = self.q.reshape(-1), np.empty(self.q.size, np.float32)
        for i in range(0, flat.size, CHUNK):
            v = flat[i:i + CHUNK].astype(np.float64)
            v -= self.params.zero_point
            v *= np.float64(self.params.scale)
            out[i:i + CHUNK] = v
        return out.reshape(self.q.shape)

    @property
    def nbytes(self) -> int:
        return quantized_bytes(self.q.size, self.bits)


def exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` of integer matrices in int64, exact (NumPy's integer loops; no numba: the head's products are small,
    and the head-only learner runs on NumPy and the C library alone)."""
    return np.matmul(np.asarray(a, np.int64), np.asarray(b, np.int64))


def int_product(a: IntTensor, b: IntTensor, transpose_a: bool = False, transpose_b: bool = False) -> np.ndarray:
    """The real-valued ``a @ b`` computed on integers and rescaled once (float64)."""
    ca, cb = a.centred(), b.centred()
    if transpose_a:
        ca = ca.T
    if transpose_b:
        cb = cb.T
    return exact_matmul(ca, cb) * (a.params.scale * b.params.scale)


@dataclass
class HeadStepResult:
    loss: float
    gradient: np.ndarray  # the weight gradient as applied (float values of the quantized gradient)


class IntegerHeadStep:
    """One SGD step on a head stored at ``q_b`` (an :class:`IntTensor`), forward at ``q_f``. ``rng`` drives
    stochastic rounding."""

    def __init__(self, q_f: int, q_b: int, lr: float, rounding: str = "nearest",
                 rng: np.random.Generator | None = None):
        if max(q_f, q_b) >= FLOAT_BITS:
            raise ValueError("IntegerHeadStep needs q_f and q_b below 32 bits (32 is the float learner)")
        self.q_f, self.q_b, self.lr, self.rounding, self.rng = q_f, q_b, lr, rounding, rng

    def _q(self, x, bits, where, lo=None, hi=None) -> IntTensor:
        return IntTensor.quantize(x, bits, lo, hi, rounding=self.rounding, rng=self.rng, where=where)

    def store(self, w: np.ndarray) -> IntTensor:
        return self._q(w, self.q_b, "head weights (stored)")

    def __call__(self, w: IntTensor, h: np.ndarray, y: np.ndarray) -> tuple[IntTensor, HeadStepResult]:
        n, classes = len(y), w.shape[0]
        hq = self._q(h, self.q_f, "head input")
        wq = self._q(w.value(), self.q_f, "head weights (forward)")
        p_float = softmax_fixed(int_product(hq, wq, transpose_b=True).astype(np.float32))
        p = self._q(p_float, self.q_f, "softmax output", 0.0, 1.0)
        d = self._q((p.value() - onehot(y, classes)) / np.float32(n), self.q_f, "logit gradient")
        g = self._q(int_product(d, hq, transpose_a=True), self.q_b, "head weight gradient")
        g_value = g.value()
        w_new = self._q(w.value() - np.float32(self.lr) * g_value, self.q_b, "head weights (stored)")
        return w_new, HeadStepResult(nll(p.value(), y), g_value)


def float_head_step(w: np.ndarray, h: np.ndarray, y: np.ndarray, lr: float) -> tuple[np.ndarray, HeadStepResult]:
    """The fp32 step of the same head (the float learner and the baseline of benchmarks/learning.py)."""
    p = softmax(h @ w.T)
    g = ((p - onehot(y, w.shape[0])) / np.float32(len(y))).T @ h
    return (w - np.float32(lr) * g).astype(np.float32), HeadStepResult(nll(p, y), g)


# -- back-propagation through the blocks above the LR layer (work B) --------------------------------------------------
#
# The device runs :class:`bnncl.core.backprop.QuantizedBackprop` (the simulation's hand-written forward and
# backward) with two device pieces: :class:`IntegerBits`, whose quantizers return the values on the integer grid
# *with* their integers attached (:class:`QArray`), and :class:`IntegerConv`, which computes every conv product on
# those integers. The head's three products take the same integer path (:meth:`IntegerBits.matmul`).


class QArray(np.ndarray):
    """Float values on an integer grid, ``centred * scale``, carrying the :class:`IntTensor` they came from (its
    levels, 1 or 2 bytes each; the int32 centred levels are made only for a product). Anything computed from it is a
    plain float array again (the attribute does not survive arithmetic)."""

    tensor: IntTensor | None = None

    @classmethod
    def of(cls, t: IntTensor) -> "QArray":
        out = t.value().view(cls)
        out.tensor = t
        return out

    def __array_finalize__(self, obj):
        self.tensor = None

    @property
    def centred(self) -> np.ndarray | None:
        """The centred levels as int32 (what :meth:`IntegerBits.matmul` multiplies), or None."""
        return None if self.tensor is None else self.tensor.centred()

    @property
    def scale(self) -> float | None:
        return None if self.tensor is None else float(self.tensor.params.scale)


def integers(x) -> tuple[np.ndarray, float] | None:
    """(centred int32, scale) when ``x`` came straight from an integer quantizer, else None."""
    if isinstance(x, QArray) and x.tensor is not None:
        return x.centred, x.scale
    return None


class IntegerBits:
    """The quantizers of :class:`bnncl.core.backprop.Bits` in integer form: each returns a :class:`QArray`."""

    grid = "integer"

    def __init__(self, q_f: int, q_b: int, q_bin: int, rounding: str = "nearest",
                 rng: np.random.Generator | None = None):
        if max(q_f, q_b, q_bin) >= FLOAT_BITS:
            raise ValueError("IntegerBits needs every bit width below 32 (32 is the float learner)")
        self.q_f, self.q_b, self.q_bin, self.rounding, self.rng = q_f, q_b, q_bin, rounding, rng

    def _q(self, x, bits, where, lo=None, hi=None):
        return QArray.of(IntTensor.quantize(np.asarray(x), bits, lo, hi, rounding=self.rounding, rng=self.rng,
                                            where=where))

    def f(self, x, where):
        return self._q(x, self.q_f, where)

    def b(self, x, where):
        return self._q(x, self.q_b, where)

    def bin(self, x, where):
        return self._q(x, self.q_bin, where)

    def matmul(self, a, b, ta: bool = False, tb: bool = False) -> np.ndarray:
        """``a @ b`` (``a.T``/``b.T`` with ``ta``/``tb``): on the integers when both operands came straight from
        these quantizers (:class:`QArray` holding its levels), rescaled once; otherwise in float."""
        ia, ib = integers(a), integers(b)
        if ia is None or ib is None:
            return float_matmul(a, b, ta, tb)
        (ca, sa), (cb, sb) = ia, ib
        ca, cb = (ca.T if ta else ca), (cb.T if tb else cb)
        return (kernels.imatmul(np.ascontiguousarray(ca), np.ascontiguousarray(cb)) * (sa * sb)).astype(np.float32)


def _columns(xb: np.ndarray, stride: int):
    """±1 (N, C, H, W) -> ±1 int8 columns (N*Ho*Wo, C*9) with +1 padding, torch's weight order."""

    return im2col(xb.astype(np.int8, copy=False), 3, stride, 1, 1)


class IntegerConv:
    """The trainable binary conv (3x3, +1 padding) on integers. Forward: the activations are ±1 and each output
    channel's quantized weights take two values, ``P`` where ``sign(W) = +1`` and ``N`` where it is -1, so
    ``2 * sum(x w) = (P + N) * sum(x) + (P - N) * dot(x, sign W)``: both sums are XNOR-popcounts of packed bits
    (:func:`~bnncl.device.kernels.bconv`). Backward: the output gradient's integers times the ±1 input columns
    (weight gradient) and times the weights' integers (input gradient), int32/int64 sums (:func:`imatmul`), ``chunk``
    images at a time: the columns of a whole minibatch (and the input gradient's, int32 per column entry) would be the
    largest arrays of a step, and integer sums come out the same however they are split."""

    def __init__(self, chunk: int = 16):
        self.chunk = int(chunk)

    def forward(self, xb: np.ndarray, wb, stride: int):
        iw = integers(wb)
        if iw is None:
            raise ValueError("IntegerConv needs weights from an integer quantizer")
        wc, scale = iw
        cout, cin = wc.shape[:2]
        flat = wc.reshape(cout, -1).astype(np.int64)
        plus = flat >= 0
        p = np.where(plus, flat, 0).max(axis=1)
        n = np.where(plus, 0, flat).min(axis=1)
        if not np.array_equal(flat, np.where(plus, p[:, None], n[:, None])):
            # not two values per channel (stochastic rounding can put equal weights on neighbouring levels):
            # the same products as an integer GEMM of the ±1 columns
            cols, shape = _columns(xb, stride)
            acc = kernels.imatmul(cols, np.ascontiguousarray(flat.T))
            c = (acc * scale).astype(np.float32).reshape(shape[0], shape[4], shape[5], cout).transpose(0, 3, 1, 2)
            return np.ascontiguousarray(c), (xb.astype(np.int8), stride)  # kept for the backward: ±1 in a byte
        xp = pack_signs(xb.transpose(0, 2, 3, 1))
        signs = np.where(plus, 1, -1).reshape(cout, cin, 3, 3).transpose(0, 2, 3, 1)
        dot = kernels.bconv(xp, pack_signs(signs), cin, stride, 1)  # sum of x * sign(w) per window
        ones = kernels.bconv(xp, np.zeros((1, 3, 3, xp.shape[-1]), np.uint64), cin, stride, 1)  # sum of x per window
        twice = (p + n) * ones.astype(np.int64) + (p - n) * dot.astype(np.int64)  # NHWC
        c = (twice * (scale / 2)).astype(np.float32).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(c), (xb.astype(np.int8), stride)  # kept for the backward: ±1 in a byte

    def backward(self, gc, wb, stride: int, saved):
        xb, stride = saved
        (gcc, gscale), (wc, wscale) = integers(gc), integers(wb)
        cout = wc.shape[0]
        w_flat = wc.reshape(cout, -1)
        gw = np.zeros(w_flat.shape, np.int64)
        gx = np.empty(xb.shape, np.float32)
        for i in range(0, len(xb), self.chunk):
            part = slice(i, i + self.chunk)
            cols, shape = _columns(xb[part], stride)
            g = np.ascontiguousarray(gcc[part].transpose(0, 2, 3, 1).reshape(-1, cout))
            gw += kernels.imatmul(np.ascontiguousarray(g.T), cols)
            gx[part] = kernels.col2im(kernels.imatmul(g, w_flat), shape, 3, stride, 1) * (gscale * wscale)
        return gx, (gw * gscale).reshape(wc.shape).astype(np.float32)  # ±1 columns: only gc's scale
