"""The idx format of the MNIST family (MNIST, Fashion-MNIST, KMNIST ...), gzip-compressed or raw.

A file is a 4-byte magic number ``0 0 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the data.
Only unsigned bytes (type 0x08) occur in these datasets, so only they are accepted.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from bnncl.core.errors import DataError
from bnncl.data.arrays import LabelledArrays

UBYTE = 0x08
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
DIGIT_CLASSES = tuple(str(d) for d in range(10))

# split -> (images stem, labels stem); files may end in .gz and use '-' or '.' before idx (both spellings exist).
_STEMS = {"train": ("train-images", "train-labels"), "test": ("t10k-images", "t10k-labels")}


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not an idx file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise DataError(f"{path}: truncated gzip file (the compressed stream ends early)") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip file ({e})") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in one idx file (uint8), with clear errors for anything malformed."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: too short to be an idx file ({len(data)} bytes)")
    zero, dtype, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or dtype != UBYTE or not 1 <= ndim <= 4:
        raise DataError(f"{path}: wrong idx magic number 0x{data[:4].hex()} "
                        f"(expected 0x000008NN: unsigned bytes, NN = 01..04 dimensions)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated idx header")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(shape)  # Python integers: a header's dimensions cannot overflow
    if len(data) < expected:
        raise DataError(f"{path}: truncated: header says {'x'.join(map(str, shape))} "
                        f"({expected - header} bytes of data) but only {len(data) - header} are there")
    if len(data) > expected:
        raise DataError(f"{path}: {len(data) - expected} unexpected bytes after the {'x'.join(map(str, shape))} data")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()  # writable, owns its memory


def find_idx_file(root: Path, stem: str, kind: str) -> Path:
    """``<stem>-<kind>-ubyte`` or ``<stem>.<kind>-ubyte``, gzip or raw; the error lists what was looked for."""
    names = [f"{stem}{sep}{kind}-ubyte{ext}" for sep in ("-", ".") for ext in (".gz", "")]
    for n in names:
        if (root / n).is_file():
            return root / n
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: is a file, not a directory of dataset files")
    if not root.is_dir():
        raise DataError(f"{root}: no such data directory")
    raise DataError(f"{root / names[0]}: no such file (also looked for {', '.join(names[1:])})")


def load_idx_dataset(root: str | os.PathLike, split: str = "train", class_names=FASHION_CLASSES,
                     name: str = "fashion-mnist") -> LabelledArrays:
    if split not in _STEMS:
        raise DataError(f"unknown split {split!r} for {name} (valid: {', '.join(_STEMS)})")
    root = Path(root)
    img_stem, lab_stem = _STEMS[split]
    img_path, lab_path = find_idx_file(root, img_stem, "idx3"), find_idx_file(root, lab_stem, "idx1")
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3:
        raise DataError(f"{img_path}: expected images of N x rows x cols, got {images.ndim} dimensions")
    if labels.ndim != 1:
        raise DataError(f"{lab_path}: expected a vector of labels, got {labels.ndim} dimensions")
    if len(images) != len(labels):
        raise DataError(f"{lab_path}: {len(labels)} labels but {img_path.name} holds {len(images)} images")
    if len(labels) and labels.max() >= len(class_names):
        bad = int(np.argmax(labels >= len(class_names)))
        raise DataError(f"{lab_path}: label {int(labels[bad])} at index {bad} is out of range for "
                        f"{len(class_names)} classes")
    return LabelledArrays(images[..., None], labels.astype(np.int64), tuple(class_names), f"{name} {split}")
