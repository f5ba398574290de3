"""``LabelledArrays``: images and labels as plain NumPy arrays, the common currency of every loader."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnncl.core.errors import DataError, reason


@dataclass(frozen=True)
class LabelledArrays:
    """``x``: uint8 images, NHWC. ``y``: int64 labels in ``[0, len(class_names))``.

    Labels keep the dataset's numbering even when only some classes are selected, so a head sized for all classes
    (CWR* needs one) lines up with every subset.
    """

    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    name: str

    def __post_init__(self):
        if self.x.ndim != 4 or self.x.dtype != np.uint8:
            raise DataError(f"{self.name}: images must be a uint8 NHWC array, got {self.x.dtype} {self.x.shape}")
        if self.y.ndim != 1 or len(self.y) != len(self.x):
            raise DataError(f"{self.name}: {len(self.x)} images but labels of shape {self.y.shape}")
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= len(self.class_names)):
            raise DataError(f"{self.name}: label "
                            f"{int(self.y.max() if self.y.max() >= len(self.class_names) else self.y.min())} "
                            f"out of range [0, {len(self.class_names)})")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, index: np.ndarray, name: str | None = None) -> "LabelledArrays":
        index = np.asarray(index)
        return LabelledArrays(self.x[index], self.y[index], self.class_names, name or self.name)

    def select(self, classes=None, fraction: float | None = None, seed: int = 0) -> "LabelledArrays":
        """The patterns of ``classes`` (all if None), then a class-stratified random ``fraction`` of them.

        The kept indices stay in dataset order, so the result does not depend on how the caller iterates.
        """
        keep = np.arange(len(self))
        name = self.name
        if classes is not None:
            classes = sorted({int(c) for c in classes})
            bad = [c for c in classes if not 0 <= c < self.num_classes]
            if bad:
                raise DataError(f"{self.name}: classes {bad} out of range [0, {self.num_classes})")
            if not classes:
                raise DataError(f"{self.name}: empty class list")
            keep = keep[np.isin(self.y, classes)]
            name += f" classes {','.join(map(str, classes))}"
        if fraction is not None and fraction != 1:
            keep = self._stratified(keep, fraction, seed)
            name += f" {fraction:g} of instances"
        if len(keep) == len(self) and name == self.name:
            return self
        return self.subset(keep, name)

    def _stratified(self, keep: np.ndarray, fraction: float, seed: int) -> np.ndarray:
        """A class-stratified random ``fraction`` of the indices ``keep`` (at least one per class), sorted."""
        if not 0 < fraction <= 1:
            raise DataError(f"{self.name}: fraction must be in (0, 1], got {fraction}")
        rng = np.random.default_rng(seed)
        chosen = []
        for c in np.unique(self.y[keep]):
            idx = keep[self.y[keep] == c]
            n = max(1, int(round(fraction * len(idx))))
            chosen.append(rng.choice(idx, size=n, replace=False))
        return np.sort(np.concatenate(chosen)) if chosen else keep

    def split_fraction(self, fraction: float, seed: int = 0) -> tuple["LabelledArrays", "LabelledArrays"]:
        """(a stratified ``fraction`` of the instances, the rest): disjoint, together the whole set."""
        if not 0 < fraction < 1:
            raise DataError(f"{self.name}: a split fraction must be in (0, 1), got {fraction}")
        part = self._stratified(np.arange(len(self)), fraction, seed)
        rest = np.setdiff1d(np.arange(len(self)), part)
        return self.subset(part, f"{self.name} {fraction:g} held out"), self.subset(rest, f"{self.name} rest")

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.y, minlength=self.num_classes)


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """One array from a ``.npy`` file (never a pickle); a missing, truncated or non-.npy file is a DataError."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a .npy file")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if magic != b"\x93NUMPY":
        raise DataError(f"{path}: not a .npy file (no NumPy header; give an array saved with numpy.save)")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy array ({reason(e)})") from None
