"""Datasets in their official on-disk formats, as NumPy arrays (no torch, nothing downloaded)."""

from .arrays import LabelledArrays
from .cifar import load_cifar10
from .core50 import SCENARIOS, Core50, load_core50
from .datasets import DATASETS, DEFAULT_ROOTS, load_dataset
from .idx import FASHION_CLASSES, load_idx_dataset, read_idx

__all__ = ["LabelledArrays", "load_cifar10", "SCENARIOS", "Core50", "load_core50", "DATASETS", "DEFAULT_ROOTS",
           "load_dataset", "FASHION_CLASSES", "load_idx_dataset", "read_idx"]
