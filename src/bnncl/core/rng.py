"""The one random generator of bnncl's learners: PCG32, specified here so that the C runtime draws the same numbers.

The simulation, the Python device learner and the C learner (runtime/) draw every shuffle, every replayed pattern,
every memory update and every stochastic rounding from it, so that given a seed they see the same minibatches. The
specification (also in docs/method.md, "Random numbers"):

* **PCG32** (O'Neill, "PCG: a family of simple fast space-efficient statistically good algorithms for random number
  generation", 2014; the XSH-RR output of pcg-c-basic): a 64-bit LCG state ``s`` and an odd increment ``inc``;
  ``next``: ``old = s; s = old * 6364136223846793005 + inc (mod 2^64)``; output
  ``rotr32(((old >> 18) ^ old) >> 27, old >> 59)``. Seeding ``(initstate, initseq)`` as pcg32_srandom_r:
  ``s = 0; inc = 2 initseq + 1; next; s += initstate; next``. A learner's generator ``name`` seeded with ``seed`` is
  ``(seed + SEED_OFFSETS[name], SEED_OFFSETS[name])`` (:func:`bnncl.core.protocol.generator`).
* **below(n)**, an integer uniform in [0, n) for 1 <= n <= 2^32: Lemire's multiply-shift with rejection ("Fast random
  integer generation in an interval", 2019): ``m = next * n`` (64-bit); while ``(m mod 2^32) < (2^32 - n) mod n``:
  ``m = next * n``; the result is ``m >> 32``.
* **permutation(n)**: Fisher-Yates from the end: ``a = [0, .., n-1]``; for ``i = n-1`` down to 1: ``j = below(i+1)``,
  swap ``a[i], a[j]``.
* **choice(n, k)** (k distinct of n, in the order drawn): the first k steps of Fisher-Yates from the front: for
  ``i = 0 .. k-1``: ``j = i + below(n - i)``, swap ``a[i], a[j]``; the result is ``a[:k]``.
* **random floats** in [0, 1): float32 ``(next >> 8) * 2^-24``; float64 from two draws a, b:
  ``((a >> 5) * 2^26 + (b >> 6)) * 2^-53``.

NumPy alone; bulk draws use the LCG's jump-ahead (the states of k draws are ``A_i s + G_i inc``), so a million
floats take milliseconds. :class:`Pcg32` has the methods of ``numpy.random.Generator`` the learners use
(``permutation``, ``choice`` without replacement, ``random``), so it replaces one where one was taken.
"""

from __future__ import annotations

import numpy as np

MULTIPLIER = 6364136223846793005
MASK64 = (1 << 64) - 1
MASK32 = (1 << 32) - 1
CHUNK = 1 << 14  # draws per jump-ahead block


def _jump_tables(count: int) -> tuple[np.ndarray, np.ndarray]:
    """A_i = a^i and G_i = 1 + a + .. + a^(i-1) mod 2^64 for i < count: the state after i steps is A_i s + G_i inc."""
    a, g = np.empty(count + 1, np.uint64), np.empty(count + 1, np.uint64)
    ai, gi = 1, 0
    for i in range(count + 1):
        a[i], g[i] = ai, gi
        ai, gi = (ai * MULTIPLIER) & MASK64, (gi * MULTIPLIER + 1) & MASK64
    return a, g


_A, _G = _jump_tables(CHUNK)  # _A[CHUNK], _G[CHUNK]: one whole block


def _output(states: np.ndarray) -> np.ndarray:
    """XSH-RR of each (old) state: uint32."""
    x = (((states >> np.uint64(18)) ^ states) >> np.uint64(27)).astype(np.uint32)
    rot = (states >> np.uint64(59)).astype(np.uint32)
    return (x >> rot) | (x << ((np.uint32(32) - rot) & np.uint32(31)))


class Pcg32:
    """PCG32 (XSH-RR), seeded as pcg32_srandom_r(initstate, initseq)."""

    def __init__(self, initstate: int, initseq: int):
        self.inc = ((int(initseq) << 1) | 1) & MASK64
        self.s = 0
        self.next_u32()
        self.s = (self.s + int(initstate)) & MASK64
        self.next_u32()

    # -- state -------------------------------------------------------------------------------------------------------

    @property
    def state(self) -> dict:
        """The generator's whole state, for a learner's saved state (hexadecimal: exact in any JSON reader)."""
        return {"generator": "pcg32", "state": f"{self.s:016x}", "inc": f"{self.inc:016x}"}

    @state.setter
    def state(self, value: dict) -> None:
        kind = value.get("generator", value.get("bit_generator")) if isinstance(value, dict) else None
        if kind != "pcg32":
            raise ValueError(f"the random generator's state is {kind!r}'s, not pcg32's (a state saved before bnncl "
                             "0.2.1, whose generators were NumPy's, cannot be resumed)")
        s, inc = int(value["state"], 16), int(value["inc"], 16)
        if not (0 <= s <= MASK64 and 0 <= inc <= MASK64 and inc % 2 == 1):
            raise ValueError("the random generator's state is out of range (its increment must be odd)")
        self.s, self.inc = s, inc

    # -- draws -------------------------------------------------------------------------------------------------------

    def next_u32(self) -> int:
        old = self.s
        self.s = (old * MULTIPLIER + self.inc) & MASK64
        x = (((old >> 18) ^ old) >> 27) & MASK32
        rot = old >> 59
        return ((x >> rot) | (x << ((-rot) & 31))) & MASK32

    def _states(self, k: int) -> np.ndarray:
        """The k states the next k draws start from (uint64), the generator advanced past them."""
        out = np.empty(k, np.uint64)
        s, inc = self.s, self.inc
        for i in range(0, k, CHUNK):
            n = min(CHUNK, k - i)
            out[i:i + n] = _A[:n] * np.uint64(s) + _G[:n] * np.uint64(inc)  # uint64 arrays wrap mod 2^64
            s = (int(_A[n]) * s + int(_G[n]) * inc) & MASK64
        self.s = s
        return out

    def u32(self, k: int) -> np.ndarray:
        """The next k outputs, uint32 (k = 0: none)."""
        return _output(self._states(int(k))) if k else np.zeros(0, np.uint32)

    def below(self, n: int) -> int:
        """Uniform in [0, n), 1 <= n <= 2^32 (Lemire)."""
        n = int(n)
        if not 1 <= n <= 1 << 32:
            raise ValueError(f"below({n}): the bound must be in [1, 2^32]")
        m = self.next_u32() * n
        if (m & MASK32) < n:
            t = ((1 << 32) - n) % n
            while (m & MASK32) < t:
                m = self.next_u32() * n
        return m >> 32

    def belows(self, bounds: np.ndarray) -> np.ndarray:
        """below(bounds[0]), below(bounds[1]), ... in turn (int64): the same draws as one below() per bound, drawn in
        bulk; where Lemire's test rejects a draw (rarely: fewer than n in 2^32) the rest is drawn again after it."""
        bounds = np.asarray(bounds, np.uint64)
        out = np.empty(len(bounds), np.int64)
        done = 0
        while done < len(bounds):
            b = bounds[done:]
            start = self.s
            m = self.u32(len(b)).astype(np.uint64) * b
            low = m & np.uint64(MASK32)
            threshold = ((np.uint64(1 << 32) - b) & np.uint64(MASK32)) % b
            rejected = np.flatnonzero(low < threshold)
            if len(rejected) == 0:
                out[done:] = (m >> np.uint64(32)).astype(np.int64)
                return out
            p = int(rejected[0])
            out[done:done + p] = (m[:p] >> np.uint64(32)).astype(np.int64)
            self.s = start
            self._states(p)  # back to the state before draw p, which is drawn again one at a time
            out[done + p] = self.below(int(b[p]))
            done += p + 1
        return out

    def permutation(self, n: int) -> np.ndarray:
        """A permutation of range(n) (int64): Fisher-Yates from the end."""
        n = int(n)
        a = np.arange(n, dtype=np.int64)
        if n < 2:
            return a
        js = self.belows(np.arange(n, 1, -1, dtype=np.uint64))  # below(i + 1) for i = n-1 .. 1
        for i, j in zip(range(n - 1, 0, -1), js.tolist()):
            a[i], a[j] = a[j], a[i]
        return a

    def choice(self, n: int, size: int, replace: bool = False) -> np.ndarray:
        """``size`` distinct integers of range(n) in the order drawn (int64): Fisher-Yates from the front."""
        if replace:
            raise ValueError("Pcg32.choice draws without replacement only")
        n, size = int(n), int(size)
        if not 0 <= size <= n:
            raise ValueError(f"cannot choose {size} of {n} without replacement")
        a = np.arange(n, dtype=np.int64)
        if size == 0:
            return a[:0]
        js = self.belows(np.arange(n, n - size, -1, dtype=np.uint64))  # below(n - i) for i = 0 .. size-1
        for i, j in enumerate(js.tolist()):
            j += i
            a[i], a[j] = a[j], a[i]
        return a[:size].copy()

    def random(self, shape=None, dtype=np.float64) -> np.ndarray | float:
        """Uniform floats in [0, 1): float32 from one draw each, float64 from two."""
        dtype = np.dtype(dtype)
        count = int(np.prod(shape)) if shape is not None else 1
        if dtype == np.float32:
            v = (self.u32(count) >> np.uint32(8)).astype(np.float32) * np.float32(2.0 ** -24)
        elif dtype == np.float64:
            ab = self.u32(2 * count).astype(np.uint64)
            v = ((ab[0::2] >> np.uint64(5)) * np.uint64(1 << 26) + (ab[1::2] >> np.uint64(6))).astype(np.float64)
            v *= 2.0 ** -53
        else:
            raise ValueError(f"random floats are float32 or float64, not {dtype}")
        return v.reshape(shape) if shape is not None else v[0].item()
