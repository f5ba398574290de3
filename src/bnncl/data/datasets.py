"""One entry point, ``load_dataset(name, root, split, **options)``, over every supported format."""

from __future__ import annotations

from pathlib import Path

from bnncl.core.errors import DataError
from bnncl.data.arrays import LabelledArrays
from bnncl.data.cifar import load_cifar10
from bnncl.data.core50 import load_core50
from bnncl.data.idx import DIGIT_CLASSES, FASHION_CLASSES, load_idx_dataset

DATASETS = ("fashion-mnist", "mnist", "cifar10", "core50")
# Only Fashion-MNIST has a default location (Debian's dataset-fashion-mnist); the others need --data.
DEFAULT_ROOTS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist"}
# Options each dataset takes beyond the split; anything else is an error, not silently ignored.
OPTIONS = {"core50": ("scenario", "run", "labels", "batch")}


def load_dataset(name: str, root: str | None = None, split: str = "train", **options) -> LabelledArrays:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r} (valid: {', '.join(DATASETS)})")
    bad = set(options) - set(OPTIONS.get(name, ()))
    if bad:
        raise DataError(f"{name} takes no option {', '.join(sorted(bad))}")
    if root is None:
        if name not in DEFAULT_ROOTS:
            raise DataError(f"{name}: give the directory that holds its files (--data DIR)")
        root = DEFAULT_ROOTS[name]
        if not Path(root).is_dir():
            raise DataError(f"{root}: no such data directory; install Debian's dataset-fashion-mnist "
                            f"(apt-get install dataset-fashion-mnist) or give --data DIR")
    if name == "fashion-mnist":
        return load_idx_dataset(root, split, FASHION_CLASSES, name)
    if name == "mnist":
        return load_idx_dataset(root, split, DIGIT_CLASSES, name)
    if name == "cifar10":
        return load_cifar10(root, split)
    return load_core50(root, split, **options)
