"""CORe50 in its official on-disk layout.

``root`` holds ``paths.pkl`` (relative image paths, ``s<session>/o<object>/C_<ss>_<oo>_<fff>.png``), ``LUP.pkl`` and
``labels.pkl`` (both indexed ``[scenario][run][batch]``: image indices and object labels 0-49; the last batch of
every run is the test set), and the images either as ``core50_imgs.npz`` (array ``x``, N x 128 x 128 x 3 uint8, in
``paths.pkl`` order) or as the folders ``core50_128x128/s1/o1/...png``.

When ``x`` is stored uncompressed in the npz (as ``np.savez`` writes it), it is memory-mapped so that a batch of a few
hundred images costs a few hundred images of memory, not the whole 8 GB array.
"""

from __future__ import annotations

import os
import struct
import zipfile
from functools import cached_property
from pathlib import Path

import numpy as np

from bnncl.core.errors import DataError
from bnncl.data.arrays import LabelledArrays
from bnncl.data.safe_pickle import load_pickle

SCENARIOS = {"ni": 8, "nc": 9, "nic": 79, "nicv2_79": 79, "nicv2_196": 196, "nicv2_391": 391}  # training batches
RUNS = 10
NUM_OBJECTS = 50
CATEGORIES = ("plug adapter", "mobile phone", "scissors", "light bulb", "can", "glasses", "ball", "marker", "cup",
              "remote control")
OBJECT_NAMES = tuple(f"o{i + 1} ({CATEGORIES[i // 5]})" for i in range(NUM_OBJECTS))
IMAGE_SHAPE = (128, 128, 3)
NPZ = "core50_imgs.npz"
FOLDER = "core50_128x128"


def _npz_memmap(path: Path, member: str = "x.npy"):
    """A read-only memmap of an uncompressed npz member, or None when it is compressed."""
    with zipfile.ZipFile(path) as z:
        try:
            info = z.getinfo(member)
        except KeyError:
            raise DataError(f"{path}: no array 'x' "
                            f"(has: {', '.join(n.removesuffix('.npy') for n in z.namelist())})") from None
        if info.compress_type != zipfile.ZIP_STORED:
            return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            raise DataError(f"{path}: corrupt zip local header for {member}")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if fortran:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


class Core50:
    """One scenario and run of CORe50: its training batches and its test set, as ``LabelledArrays``."""

    def __init__(self, root: str | os.PathLike, scenario: str = "ni", run: int = 0, labels: str = "category"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such data directory")
        if labels not in ("object", "category"):
            raise DataError(f"CORe50 labels must be 'object' or 'category', got {labels!r}")
        self.scenario, self.run, self.labels = scenario, int(run), labels
        lup_path = self.root / "LUP.pkl"
        lup = load_pickle(lup_path)
        self.lup = self._pick(lup, lup_path)
        lab_path = self.root / "labels.pkl"
        self.object_labels = self._pick(load_pickle(lab_path), lab_path)
        if len(self.object_labels) != len(self.lup):
            raise DataError(f"{lab_path}: {len(self.object_labels)} batches for {scenario} run {run}, "
                            f"but LUP.pkl has {len(self.lup)}")
        for b, (idx, lab) in enumerate(zip(self.lup, self.object_labels)):
            if len(idx) != len(lab):
                raise DataError(f"{lab_path}: {scenario} run {run} batch {b} has {len(lab)} labels "
                                f"but LUP.pkl lists {len(idx)} images")
            lab = np.asarray(lab)
            if len(lab) and (lab.min() < 0 or lab.max() >= NUM_OBJECTS):
                raise DataError(f"{lab_path}: {scenario} run {run} batch {b}: object label out of range "
                                f"[0, {NUM_OBJECTS})")
        paths_path = self.root / "paths.pkl"
        self.paths = load_pickle(paths_path)
        if not isinstance(self.paths, (list, tuple)):
            raise DataError(f"{paths_path}: expected a list of image paths, got {type(self.paths).__name__}")
        top = max((int(np.max(i)) for i in self.lup if len(i)), default=-1)
        if top >= len(self.paths):
            raise DataError(f"{lup_path}: image index {top} but paths.pkl lists only {len(self.paths)} images")
        self.class_names = OBJECT_NAMES if labels == "object" else CATEGORIES

    def _pick(self, table, path: Path) -> list:
        """``table[scenario][run]`` with errors that name the file and what it does have."""
        if not isinstance(table, dict):
            raise DataError(f"{path}: expected a dict of scenarios, got {type(table).__name__}")
        if self.scenario not in table:
            raise DataError(f"{path.name}: no scenario {self.scenario!r} (has: {', '.join(map(str, table))}) in {path}")
        runs = table[self.scenario]
        if not 0 <= self.run < len(runs):
            raise DataError(f"{path}: scenario {self.scenario!r} has runs 0-{len(runs) - 1}, not {self.run}")
        batches = runs[self.run]
        if len(batches) < 2:
            raise DataError(f"{path}: scenario {self.scenario!r} run {self.run} needs training batches and a test "
                            f"batch, has {len(batches)} entries")
        return list(batches)

    @property
    def num_train_batches(self) -> int:
        return len(self.lup) - 1

    @cached_property
    def _images(self):
        npz = self.root / NPZ
        if npz.is_file():
            try:
                x = _npz_memmap(npz)
                if x is None:
                    with np.load(npz) as f:
                        x = f["x"]
            except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
                raise DataError(f"{npz}: not a readable npz file ({e})") from None
            if x.dtype != np.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != IMAGE_SHAPE:
                raise DataError(f"{npz}: 'x' must be N x 128 x 128 x 3 uint8, got {x.dtype} {x.shape}")
            if len(x) != len(self.paths):
                raise DataError(f"{npz}: {len(x)} images but paths.pkl lists {len(self.paths)}")
            return x
        if (self.root / FOLDER).is_dir():
            return None  # read lazily from the folders
        raise DataError(f"{self.root}: neither {NPZ} nor the {FOLDER}/ image folders are there")

    def _load_images(self, index: np.ndarray) -> np.ndarray:
        x = self._images
        if x is not None:
            return np.ascontiguousarray(x[index])
        try:
            from PIL import Image
        except ImportError:
            raise DataError("reading the CORe50 image folders needs Pillow: pip install pillow") from None
        out = np.empty((len(index), *IMAGE_SHAPE), np.uint8)
        for k, i in enumerate(index):
            p = self.root / FOLDER / self.paths[i]
            try:
                with Image.open(p) as im:
                    arr = np.asarray(im.convert("RGB"))
            except FileNotFoundError:
                raise DataError(f"{p}: no such file (listed in paths.pkl)") from None
            except OSError as e:
                raise DataError(f"{p}: not a readable image ({e})") from None
            if arr.shape != IMAGE_SHAPE:
                raise DataError(f"{p}: expected a 128x128 RGB image, got {arr.shape}")
            out[k] = arr
        return out

    def batch(self, b: int) -> LabelledArrays:
        """Training batch ``b`` (0-based); ``-1`` or ``num_train_batches`` is the test set."""
        if b == -1:
            b = self.num_train_batches
        if not 0 <= b <= self.num_train_batches:
            raise DataError(f"CORe50 {self.scenario} run {self.run} has training batches "
                            f"0-{self.num_train_batches - 1}, not {b}")
        index = np.asarray(self.lup[b], dtype=np.int64)
        y = np.asarray(self.object_labels[b], dtype=np.int64)
        if self.labels == "category":
            y = y // 5
        what = "test" if b == self.num_train_batches else f"batch {b}"
        return LabelledArrays(self._load_images(index), y, self.class_names,
                              f"core50 {self.scenario} run {self.run} {what}")

    def train_batches(self) -> list[LabelledArrays]:
        return [self.batch(b) for b in range(self.num_train_batches)]

    def test(self) -> LabelledArrays:
        return self.batch(self.num_train_batches)

    def split(self, split: str, batch: int | None = None) -> LabelledArrays:
        """``test``, or ``train``: every training batch (or only ``batch``) joined in order."""
        if split == "test":
            return self.test()
        if split != "train":
            raise DataError(f"unknown split {split!r} for core50 (valid: train, test)")
        if batch is not None:
            if not 0 <= batch < self.num_train_batches:  # the last entry is the test set, never a training batch
                raise DataError(f"CORe50 {self.scenario} run {self.run} has training batches "
                                f"0-{self.num_train_batches - 1}, not {batch}")
            return self.batch(batch)
        parts = self.train_batches()
        return LabelledArrays(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]),
                              self.class_names, f"core50 {self.scenario} run {self.run} train")


def load_core50(root, split: str = "train", scenario: str = "ni", run: int = 0, labels: str = "category",
                batch: int | None = None) -> LabelledArrays:
    return Core50(root, scenario, run, labels).split(split, batch)
