"""The per-tensor affine quantizer of the hybrid-quantized learning step (docs/method.md §5), NumPy only.

Float form (what the simulation computes): ``Q_b(x; m, M) = round((clip(x, m, M) - m) * s) / s + m`` with
``s = (2^b - 1) / (M - m)``. An all-zero tensor passes unchanged, and so does a constant one (``M == m``: one level,
exactly representable). ``b = 32`` is the identity (float32 already).

Integer form (what a device computes): scale ``S = (M - m) / (2^b - 1)``, zero point ``Z = round(-m / S)``,
``q = clip(round(x / S) + Z, 0, 2^b - 1)``, value ``(q - Z) * S``. A product of two quantized tensors is computed on
integers, ``(q_x - Z_x) * (q_w - Z_w)``, and rescaled once by ``S_x * S_w``. The two forms differ only in where the
grid sits (the integer grid contains 0 exactly, the float grid contains ``m``); both have ``2^b`` levels over [m, M].

Rounding: to nearest (ties to even, NumPy's) by default; stochastic rounding ``floor(v + u)``, ``u ~ U[0, 1)``, is an
option *(ours)*: unbiased, so small updates survive on a coarse grid on average.

A NaN or inf reaching a quantizer is an error naming the tensor, never silently turned into a number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnncl.core.errors import BnnclError, ConfigError

ROUNDINGS = ("nearest", "stochastic")
FLOAT_BITS = 32


class NonFiniteError(BnnclError, ArithmeticError):
    """NaN or inf reached a quantizer."""


def check_bits(name: str, bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 32:
        raise ConfigError(f"{name} must be a whole number of bits from 1 to 32, got {bits!r}")
    return int(bits)


CHUNK = 1 << 15  # values per step of the element-wise quantizer loops (256 KiB of float64)


def check_finite(x: np.ndarray, where: str) -> None:
    if not np.all(np.isfinite(x)):
        bad = "NaN" if np.isnan(x).any() else "inf"
        raise NonFiniteError(f"{bad} reached the quantizer at {where}")


def _round(v: np.ndarray, rounding: str, rng: np.random.Generator | None, out: np.ndarray | None = None) -> np.ndarray:
    if rounding == "nearest":
        return np.rint(v, out=out)
    if rounding == "stochastic":
        if rng is None:
            raise ValueError("stochastic rounding needs a random generator")
        u = rng.random(v.shape, dtype=v.dtype if v.dtype in (np.float32, np.float64) else np.float64)
        return np.floor(np.add(v, u, out=u), out=out)
    raise ConfigError(f"unknown rounding {rounding!r} (valid: {', '.join(ROUNDINGS)})")


GRIDS = ("affine", "integer")


def quantize(x: np.ndarray, bits: int, lo: float | None = None, hi: float | None = None, *, rounding: str = "nearest",
             rng: np.random.Generator | None = None, where: str = "a tensor", grid: str = "affine") -> np.ndarray:
    """``Q_bits(x; lo, hi)`` in float form, same dtype as ``x``. ``lo``/``hi`` default to the tensor's min/max
    (the dynamic range); values outside a given range are clipped to it.

    ``grid="integer"`` puts the levels where the integer form has them (``(q - Z) * S``, :class:`QParams`): the values
    the device learner computes with, as floats."""
    x = np.asarray(x)
    check_finite(x, where)
    if bits >= FLOAT_BITS or x.size == 0:
        return x
    lo = float(x.min()) if lo is None else float(lo)
    hi = float(x.max()) if hi is None else float(hi)
    if not hi > lo:  # all-zero or constant: one level, representable as it is
        return x if lo == hi and (x == lo).all() else np.clip(x, lo, hi)
    if grid == "integer":
        p = QParams.for_range(lo, hi, bits)
        dt = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
        return p.dequantize(p.quantize(np.clip(x, lo, hi), rounding, rng, where)).astype(dt)
    if grid != "affine":
        raise ConfigError(f"unknown quantizer grid {grid!r} (valid: {', '.join(GRIDS)})")
    levels = 2 ** bits - 1
    s = levels / (hi - lo)
    dt = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
    v = (np.clip(x, lo, hi).astype(dt) - dt.type(lo)) * dt.type(s)
    return (_round(v, rounding, rng) / dt.type(s) + dt.type(lo)).astype(dt)


@dataclass(frozen=True)
class QParams:
    """Integer quantization parameters of one tensor: value = (q - zero_point) * scale, q in [0, 2^bits - 1]."""

    scale: float
    zero_point: int
    bits: int

    @classmethod
    def for_range(cls, lo: float, hi: float, bits: int) -> "QParams":
        lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)  # the integer grid holds 0 exactly
        levels = 2 ** bits - 1
        scale = (hi - lo) / levels if hi > lo else 1.0
        return cls(scale, int(np.clip(round(-lo / scale), 0, levels)), bits)

    @property
    def qmax(self) -> int:
        return 2 ** self.bits - 1

    def quantize(self, x: np.ndarray, rounding: str = "nearest", rng=None, where: str | None = "a tensor",
                 dtype=np.int64) -> np.ndarray:
        """Levels of ``x`` (``dtype``, int64 unless the caller stores them narrower). ``where`` names the tensor in a
        NaN/inf error; None: the caller checked."""
        x = np.asarray(x)
        if where is not None:
            check_finite(x, where)
        # x / scale, round, + Z, clip, element by element, on a float64 working array of at most CHUNK values, in
        # place: a learning step on the device quantizes arrays of a whole minibatch, and a temporary of each step as
        # large as the array would be the step's largest allocation. Stochastic rounding draws its uniforms chunk
        # after chunk: the same stream as one draw.
        flat, out = x.reshape(-1), np.empty(x.size, dtype)
        for i in range(0, x.size, CHUNK):
            v = np.array(flat[i:i + CHUNK], np.float64)  # a copy, also of float64: the caller's array never changes
            v /= self.scale
            _round(v, rounding, rng, out=v)
            v += self.zero_point
            np.clip(v, 0, self.qmax, out=v)
            out[i:i + CHUNK] = v
        return out.reshape(x.shape)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return (np.asarray(q, np.int64) - self.zero_point) * self.scale


def int_matmul(qa: np.ndarray, pa: QParams, q_b: np.ndarray, pb: QParams) -> np.ndarray:
    """``dequantize(qa) @ dequantize(q_b)`` computed on integers, rescaled once: ``(qa - Za) @ (q_b - Zb) * Sa * Sb``.

    Exact in int64 while ``K * 2^(bits_a + bits_b)`` stays below 2^63 (e.g. 16-bit operands, K up to 2^30)."""
    k = np.shape(qa)[-1]
    if k * 2.0 ** (pa.bits + pb.bits) >= 2.0 ** 63:
        raise ValueError(f"int_matmul: {pa.bits}- and {pb.bits}-bit operands over {k} terms can overflow int64")
    acc = (np.asarray(qa, np.int64) - pa.zero_point) @ (np.asarray(q_b, np.int64) - pb.zero_point)
    return acc * (pa.scale * pb.scale)
