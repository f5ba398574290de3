"""Latent replay memory (docs/method.md §4). NumPy only: the device learner uses the same memory.

Patterns are latent-replay (LR) layer activations with their labels, stored either as float32 or as **1-bit packed
signs** (8 per byte, 32x smaller). With a per-channel ``offset`` ``o`` (the learnable shift the next block applies
before its sign), a 1-bit pattern stores ``sign(x + o)`` and decodes as ``sign(x + o) * s[c] - o[c]``, with ``s[c]``
the mean ``|x + o|`` of channel ``c`` over every pattern stored so far (one float per channel, not per pattern). The
next block's binary conv then sees exactly the signs it would have computed from ``x``; only its real-valued
shortcut gets the approximation. Where the LR layer output is already ±1 (a backbone with ``binary_boundary``), the
offset is 0, ``s`` is exactly 1 and 1-bit storage loses nothing.

Update rules at the end of experience ``i`` (``M`` slots):

* ``ar1`` (AR1*): ``h = min(M // (i + 1), n_new)`` random current patterns go into free slots first, then replace
  random occupied slots;
* ``balanced``: a class-balanced random subset: each class seen so far keeps at most ``M // classes_seen`` patterns,
  drawn at random from its stored and new patterns; spare room goes to classes with more patterns.
"""

from __future__ import annotations

import numpy as np

from bnncl.core.errors import ConfigError

STORAGES = ("bits", "float32")
UPDATE_RULES = ("ar1", "balanced")


class LatentMemory:
    def __init__(self, capacity: int, latent_shape, storage: str = "bits", offset: np.ndarray | None = None):
        if storage not in STORAGES:
            raise ConfigError(f"unknown replay storage {storage!r} (valid: {', '.join(STORAGES)})")
        if capacity < 0:
            raise ConfigError(f"replay memory size must be >= 0, got {capacity}")
        self.capacity, self.storage = int(capacity), storage
        self.latent_shape = tuple(int(v) for v in latent_shape)
        self.pattern_size = int(np.prod(self.latent_shape))
        if storage == "bits":
            self.data = np.zeros((self.capacity, (self.pattern_size + 7) // 8), np.uint8)
        else:
            self.data = np.zeros((self.capacity, self.pattern_size), np.float32)
        self.labels = np.zeros(self.capacity, np.int16)  # up to 32767 classes
        self.size = 0
        self.updates = 0  # experiences seen, the i of AR1*
        channels = self.latent_shape[0]
        self._abs_sum = np.zeros(channels, np.float64)  # for the per-channel decode scale
        self._abs_count = 0
        self.offset = (np.zeros(channels, np.float32) if offset is None
                       else np.asarray(offset, np.float32).reshape(channels))
        self._offset_b = self.offset.reshape(-1, *([1] * (len(self.latent_shape) - 1)))  # broadcast over H, W

    def __len__(self) -> int:
        return self.size

    # -- storage -------------------------------------------------------------------------------------------------
    def _encode(self, latents: np.ndarray) -> np.ndarray:
        if self.storage == "bits":  # sign(0) = +1, as everywhere in bnncl
            return np.packbits((latents + self._offset_b).reshape(len(latents), -1) >= 0, axis=1)
        flat = latents.reshape(len(latents), -1)
        return flat.astype(np.float32)

    @property
    def channel_scale(self) -> np.ndarray:
        """Per-channel mean |x + offset| of every pattern stored so far (1 where nothing was stored)."""
        if not self._abs_count:
            return np.ones(self.latent_shape[0], np.float32)
        return (self._abs_sum / self._abs_count).astype(np.float32)

    def decode(self, index: np.ndarray) -> np.ndarray:
        if self.storage == "float32":
            return self.data[index].reshape(len(index), *self.latent_shape)
        signs = np.unpackbits(self.data[index], axis=1, count=self.pattern_size).astype(np.float32) * 2 - 1
        signs = signs.reshape(len(index), *self.latent_shape)
        return signs * self.channel_scale.reshape(self._offset_b.shape) - self._offset_b

    def _store(self, slots: np.ndarray, latents: np.ndarray, labels: np.ndarray) -> None:
        self.data[slots] = self._encode(latents)
        self.labels[slots] = labels

    def _account(self, latents: np.ndarray) -> None:
        # in a fixed order (the C learner's): per pattern, its pixels' |x + o| of each channel summed in float64 in
        # row-major order; the patterns' sums added to the running sum one pattern after the other
        channels = self.latent_shape[0]
        per_channel_count = latents.size // channels
        if len(latents) == 0:
            return
        a = np.abs(latents + self._offset_b).astype(np.float64).reshape(len(latents), channels, -1)
        per_pattern = np.cumsum(a, axis=2)[:, :, -1]
        self._abs_sum[...] = np.cumsum(np.concatenate([self._abs_sum[None], per_pattern]), axis=0)[-1]
        self._abs_count += per_channel_count

    # -- update rules --------------------------------------------------------------------------------------------
    def update(self, latents: np.ndarray, labels: np.ndarray, rule: str, rng: np.random.Generator) -> None:
        """Store patterns of the experience that just ended (``latents``: N x latent_shape, float)."""
        if rule not in UPDATE_RULES:
            raise ConfigError(f"unknown replay update rule {rule!r} (valid: {', '.join(UPDATE_RULES)})")
        if not hasattr(latents, "shape"):  # an array, or anything with .shape that computes latents[index] on demand
            latents = np.asarray(latents)
        if tuple(latents.shape[1:]) != self.latent_shape:
            raise ConfigError(f"replay memory holds {self.latent_shape} patterns, got {latents.shape[1:]}")
        labels = np.asarray(labels, np.int64)
        if self.capacity == 0 or len(labels) == 0:
            self.updates += 1
            return
        if rule == "ar1":
            self._update_ar1(latents, labels, rng)
        else:
            self._update_balanced(latents, labels, rng)
        self.updates += 1

    def _update_ar1(self, latents, labels, rng):
        h = min(self.capacity // (self.updates + 1), len(labels))
        if self.size < self.capacity:  # the memory fills first (h may exceed M // (i + 1) until then)
            h = min(max(h, self.capacity - self.size), len(labels))
        chosen = rng.choice(len(labels), size=h, replace=False)
        free = np.arange(self.size, min(self.capacity, self.size + h))
        taken = rng.choice(self.size, size=h - len(free), replace=False) if h > len(free) else np.zeros(0, int)
        slots = np.concatenate([free, taken]).astype(np.int64)
        self._account(latents[chosen])
        self._store(slots, latents[chosen], labels[chosen])
        self.size += len(free)

    def _update_balanced(self, latents, labels, rng):
        # Candidates: what is stored (kept encoded) and the new patterns.
        old_idx = np.arange(self.size)
        classes = np.union1d(self.labels[: self.size], labels)
        counts = {c: int((self.labels[: self.size] == c).sum() + (labels == c).sum()) for c in classes}
        quota = _balanced_quota(counts, self.capacity)
        keep_old, keep_new = [], []
        for c in classes:
            o = old_idx[self.labels[: self.size] == c]
            n = np.flatnonzero(labels == c)
            pick = rng.choice(len(o) + len(n), size=quota[c], replace=False)
            keep_old.append(o[pick[pick < len(o)]])
            keep_new.append(n[pick[pick >= len(o)] - len(o)])
        keep_old, keep_new = np.concatenate(keep_old), np.concatenate(keep_new)
        data, lab = self.data[keep_old].copy(), self.labels[keep_old].copy()
        self.size = len(keep_old) + len(keep_new)
        self.data[: len(keep_old)], self.labels[: len(keep_old)] = data, lab
        self._account(latents[keep_new])
        self._store(np.arange(len(keep_old), self.size), latents[keep_new], labels[keep_new])

    # -- use -----------------------------------------------------------------------------------------------------
    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` patterns drawn without replacement (all if fewer are stored), decoded to float32."""
        idx = rng.choice(self.size, size=min(n, self.size), replace=False)
        return self.decode(idx), self.labels[idx].astype(np.int64)

    def class_counts(self, num_classes: int) -> np.ndarray:
        return np.bincount(self.labels[: self.size], minlength=num_classes)

    def state(self) -> tuple[dict, dict]:
        """(arrays, JSON-able scalars): everything :meth:`load_state` needs to continue exactly."""
        arrays = {"data": self.data[: self.size].copy(), "labels": self.labels[: self.size].copy(),
                  "abs_sum": self._abs_sum.copy(), "offset": self.offset.copy()}
        return arrays, {"size": self.size, "updates": self.updates, "abs_count": self._abs_count}

    def load_state(self, arrays: dict, scalars: dict) -> None:
        size = int(scalars["size"])
        data, labels = arrays["data"], arrays["labels"]
        if not 0 <= size <= self.capacity or data.shape != (size, *self.data.shape[1:]) or labels.shape != (size,) \
                or data.dtype != self.data.dtype or arrays["abs_sum"].shape != self._abs_sum.shape:
            raise ConfigError(f"replay memory state of {size} patterns {data.shape} {data.dtype} does not fit a "
                              f"memory of {self.capacity} x {self.data.shape[1:]} {self.data.dtype}")
        self.data[:size], self.labels[:size] = data, labels
        self.size, self.updates, self._abs_count = size, int(scalars["updates"]), int(scalars["abs_count"])
        self._abs_sum[...] = arrays["abs_sum"]
        self.offset[...] = arrays["offset"]

    def pattern_bytes(self) -> int:
        """Bytes of the stored patterns alone, at full capacity (1-bit storage: exactly 1/32 of float32's when a
        pattern is a multiple of 8 values)."""
        return self.data.nbytes

    def nbytes(self) -> int:
        """Bytes of the stored patterns and int16 labels at full capacity, plus, for 1-bit storage, the per-channel
        offset (float32) and the sum of |x + offset| its decode scale comes from (float64)."""
        return (self.data.nbytes + self.labels.nbytes
                + (self._abs_sum.nbytes + self.offset.nbytes if self.storage == "bits" else 0))


def _balanced_quota(counts: dict, capacity: int) -> dict:
    """At most ``capacity`` slots shared equally among classes; a class with fewer patterns leaves
    its share to others."""
    quota = {c: 0 for c in counts}
    left, open_ = capacity, sorted(counts)
    while left > 0 and open_:
        share = max(1, left // len(open_))
        nxt = []
        for c in open_:
            if left == 0:
                break
            give = min(share, counts[c] - quota[c], left)
            quota[c] += give
            left -= give
            if quota[c] < counts[c]:
                nxt.append(c)
        open_ = nxt
    return quota
