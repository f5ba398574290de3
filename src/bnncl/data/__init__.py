"""Datasets in their official on-disk formats, as NumPy arrays (no torch, nothing downloaded)."""

from bnncl.data.arrays import LabelledArrays
from bnncl.data.cifar import load_cifar10
from bnncl.data.core50 import SCENARIOS, Core50, load_core50
from bnncl.data.datasets import DATASETS, DEFAULT_ROOTS, load_dataset
from bnncl.data.idx import FASHION_CLASSES, load_idx_dataset, read_idx

__all__ = ["LabelledArrays", "load_cifar10", "SCENARIOS", "Core50", "load_core50", "DATASETS", "DEFAULT_ROOTS",
           "load_dataset", "FASHION_CLASSES", "load_idx_dataset", "read_idx"]
