"""CWR* (Copy Weights with Re-init, star), docs/method.md §3. NumPy only: the device learner runs the same code.

The head is bias-free and has a row for every class. ``cw`` holds the consolidated rows, ``past`` how many patterns
each class has been consolidated from. Per experience:

1. ``begin(cur)``: the rows to load into the head for training: zero everywhere, ``cw[j]`` for each present class
   (``cur[j] > 0``) that was consolidated before.
2. the strategy trains the head (and whatever lies above the latent-replay layer);
3. ``consolidate(trained_rows, cur)``: ``a`` = mean of every entry of the present rows; for each present class
   ``w = tw[j] - a``, ``wpast = sqrt(past[j] / cur[j])``, ``cw[j] = (cw[j] * wpast + w) / (wpast + 1)`` if the class was
   consolidated before, else ``w``; then ``past[j] += cur[j]``;
4. ``inference_rows()``: ``cw`` for every class, loaded into the head for evaluation.

``cur`` counts every pattern of class j used in the experience, new and replayed.
"""

from __future__ import annotations

import numpy as np

from bnncl.core.errors import ConfigError


class CWRStar:
    def __init__(self, num_classes: int, feature_dim: int, dtype=np.float64):
        self.cw = np.zeros((num_classes, feature_dim), dtype=dtype)
        self.past = np.zeros(num_classes, dtype=np.int32)  # patterns consolidated per class

    @property
    def num_classes(self) -> int:
        return len(self.past)

    def _check(self, cur) -> np.ndarray:
        cur = np.asarray(cur, dtype=np.int64)
        if cur.shape != self.past.shape or (cur < 0).any():
            raise ConfigError(f"CWR*: cur must be {self.num_classes} non-negative counts, got shape {cur.shape}")
        return cur

    def begin(self, cur) -> np.ndarray:
        """Head rows for training on an experience with class counts ``cur``."""
        cur = self._check(cur)
        rows = np.zeros_like(self.cw)
        keep = (cur > 0) & (self.past > 0)
        rows[keep] = self.cw[keep]
        return rows

    def consolidate(self, trained_rows: np.ndarray, cur) -> None:
        cur = self._check(cur)
        present = cur > 0
        if not present.any():
            return
        tw = np.asarray(trained_rows, dtype=self.cw.dtype)[present]
        # the mean in a fixed order (the C learner's): every entry in row-major order summed in float64, divided by
        # the count, rounded once to the rows' type
        a = self.cw.dtype.type(np.cumsum(tw, dtype=np.float64)[-1] / tw.size)
        w = tw - a
        wpast = np.sqrt(self.past[present] / cur[present])
        old = self.past[present] > 0
        merged = np.where(old[:, None], (self.cw[present] * wpast[:, None] + w) / (wpast[:, None] + 1), w)
        self.cw[present] = merged
        self.past[present] += cur[present]

    def inference_rows(self) -> np.ndarray:
        return self.cw.copy()

    def nbytes(self, bytes_per_value: int = 4) -> int:
        """Consolidated rows at ``bytes_per_value`` each plus the int32 counts."""
        return self.cw.size * bytes_per_value + self.past.nbytes

    def state(self) -> dict:
        return {"cw": self.cw.copy(), "past": self.past.copy()}

    def load_state(self, state: dict) -> None:
        cw, past = np.asarray(state["cw"]), np.asarray(state["past"])
        if cw.shape != self.cw.shape or past.shape != self.past.shape:
            raise ConfigError(f"CWR* state of shape {cw.shape} does not fit a head of {self.cw.shape}")
        self.cw[...] = cw
        self.past[...] = past
