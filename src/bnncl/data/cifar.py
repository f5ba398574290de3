"""CIFAR-10 in its official "python version" layout: ``cifar-10-batches-py/`` with ``data_batch_1`` .. ``data_batch_5``,
``test_batch`` and ``batches.meta``, each a Python 2 pickle of a dict (keys ``data``: N x 3072 uint8 in channel-major
order, ``labels``: N ints; ``label_names`` in the meta file).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bnncl.core.errors import DataError
from bnncl.data.arrays import LabelledArrays
from bnncl.data.safe_pickle import load_pickle

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
FOLDER = "cifar-10-batches-py"


def _root(root: Path) -> Path:
    """Accept the batches folder itself or the directory that holds it."""
    if (root / "batches.meta").is_file() or not (root / FOLDER).is_dir():
        return root
    return root / FOLDER


def _get(d: dict, key: str, path: Path):
    # Python 2 pickles loaded with latin1 have str keys; loaded as bytes they have bytes keys. Accept both.
    for k in (key, key.encode()):
        if k in d:
            return d[k]
    raise DataError(f"{path}: no {key!r} entry (has: {', '.join(sorted(str(k) for k in d))})")


def read_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = load_pickle(path)
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a dict, got {type(d).__name__}")
    data = np.asarray(_get(d, "data", path))
    labels = np.asarray(_get(d, "labels", path), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' must be N x 3072 uint8, got {data.dtype} {data.shape}")
    if len(data) != len(labels):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: label {int(labels.max() if labels.max() >= num_classes else labels.min())} "
                        f"out of range for {num_classes} classes")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def load_cifar10(root: str | os.PathLike, split: str = "train") -> LabelledArrays:
    files = {"train": TRAIN_FILES, "test": TEST_FILES}.get(split)
    if files is None:
        raise DataError(f"unknown split {split!r} for cifar10 (valid: train, test)")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such data directory")
    root = _root(root)
    meta_path = root / "batches.meta"
    meta = load_pickle(meta_path)
    names = tuple(str(n.decode() if isinstance(n, bytes) else n) for n in _get(meta, "label_names", meta_path))
    if len(names) != 10:
        raise DataError(f"{meta_path}: expected 10 label names, got {len(names)}")
    xs, ys = zip(*(read_batch(root / f, len(names)) for f in files))
    return LabelledArrays(np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys), names, f"cifar10 {split}")
