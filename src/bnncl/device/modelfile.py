"""The model file and the learner state: one flat, versioned, checksummed container (docs/model-format.md) that the
C runtime reads in place and this module reads and writes with NumPy alone.

Layout: a 64-byte header (magic, container version, kind, sizes, a CRC-32 of the header and one of everything after
it), a table of 64-byte tensor entries (name, dtype, dimensions, offset, size), the names, UTF-8 JSON metadata, and
each tensor's data at a 64-byte boundary. The metadata holds format, version, architecture, input shape, class
names, the latent-replay split, the precision of every part, the source checkpoint, a SHA-256 over every array (name,
dtype, shape, bytes) and one over the metadata itself (its canonical JSON). A model file also holds the tensors
``graph`` and ``input``: the network as the C runtime reads it. A truncated, corrupt or altered file, or one written
by a newer bnncl, is refused with an error that names the file, before anything is used.

Files written by bnncl 0.1 (an uncompressed ``.npz``, metadata in the entry ``__meta__``) are still read, for one
release: a learner's state from before the upgrade is not lost.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from bnncl.core.atomic import atomic_write_bytes
from bnncl.core.errors import ModelFileError, reason

FORMAT = "bnncl-model"
VERSION = 2  # 1: the npz container of bnncl 0.1
META = "__meta__"

MAGIC = b"\x89BNNCL\r\n"
CONTAINER_VERSION = 1
KINDS = {"bnncl-model": 1, "bnncl-learner-state": 2}
HEADER = struct.Struct("<8sIIQIIIIII12xI")  # the 64-byte header (docs/model-format.md)
ENTRY = struct.Struct("<IIII6IQQ8x")  # one tensor: name offset and length, dtype, ndim, dims, data offset, size
ALIGN = 64
MAX_DIMS = 6
DTYPES = {1: "<f4", 2: "<f8", 3: "|u1", 4: "|i1", 5: "<u2", 6: "<i2", 7: "<u4", 8: "<i4", 9: "<u8", 10: "<i8"}
DTYPE_CODES = {np.dtype(v): k for k, v in DTYPES.items()}

# The network as the C runtime reads it: one int32 row of GRAPH_COLUMNS per layer (docs/model-format.md)
LAYER_KINDS = {"stem": 1, "block": 2, "binarize": 3, "pool": 4, "head": 5}
SHORTCUT_KINDS = {"identity": 0, "duplicate": 1, "binary": 2}
GRAPH_COLUMNS = 20
GRAPH_TENSORS = {  # column -> the tensor's name after the layer's name
    "stem": {8: "weight", 9: "bias"},
    "block": {8: "conv.weight", 9: "mult", 10: "bias", 11: "threshold", 12: "input_scale", 13: "rprelu.shift_in",
              14: "rprelu.slope", 15: "rprelu.shift_out", 16: "shortcut.weight", 17: "shortcut.mult",
              18: "shortcut.bias", 19: "shortcut.threshold"},
    "binarize": {11: "threshold"},
    "pool": {},
    "head": {8: "weight"},
}


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _little_endian(a) -> np.ndarray:
    """C order and little-endian, as stored (the checksum is of what is stored); 0-d stays 0-d."""
    a = np.asarray(a, order="C")
    return a.astype(a.dtype.newbyteorder("<"), copy=False) if a.dtype.byteorder == ">" else a


def checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def meta_checksum(meta: dict) -> str:
    """SHA-256 of the metadata's canonical JSON (sorted keys), its own checksum field left out."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_container(path: str | os.PathLike, fmt: str, version: int, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write ``meta`` (JSON-able) and ``arrays`` atomically (temporary file, fsync, rename) as one flat container,
    stamped with ``fmt``, ``version``, the arrays' SHA-256 and the metadata's."""
    atomic_write_bytes(path, container_bytes(fmt, version, meta, arrays))


def container_bytes(fmt: str, version: int, meta: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """The bytes :func:`write_container` writes (docs/model-format.md); the tensors in ``arrays``' order."""
    if META in arrays:
        raise ValueError(f"{META!r} is reserved")
    arrays = {name: _little_endian(a) for name, a in arrays.items()}
    meta = {"format": fmt, "version": version, **meta, "sha256": checksum(arrays)}
    meta["meta_sha256"] = meta_checksum(meta)
    return pack(KINDS.get(fmt, 0), json.dumps(meta, indent=1).encode(), arrays)


def pack(kind: int, meta_bytes: bytes, arrays: dict[str, np.ndarray]) -> bytes:
    """The container's bytes for metadata ``meta_bytes`` taken as they are (no checksum of them is added: that is
    :func:`container_bytes`' job) and ``arrays`` in their order, with the header's sizes, offsets and CRCs."""
    arrays = {name: _little_endian(a) for name, a in arrays.items()}
    for name, a in arrays.items():
        if a.dtype.newbyteorder("<") not in DTYPE_CODES or a.ndim > MAX_DIMS:
            raise ValueError(f"array {name!r}: {a.dtype} of {a.ndim} dimensions does not fit the container")
    names = [name.encode() for name in arrays]
    table = HEADER.size
    name_at = table + ENTRY.size * len(arrays)
    meta_at = name_at + sum(len(n) + 1 for n in names)
    offset = data_at = _align(meta_at + len(meta_bytes))
    entries, blobs = [], []
    for (name, a), encoded in zip(arrays.items(), names):
        dims = list(a.shape) + [0] * (MAX_DIMS - a.ndim)
        data = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        entries.append(ENTRY.pack(name_at, len(encoded), DTYPE_CODES[a.dtype.newbyteorder("<")], a.ndim, *dims,
                                  offset, len(data)))
        blobs.append((offset, data))
        name_at += len(encoded) + 1
        offset = _align(offset + len(data))
    size = blobs[-1][0] + len(blobs[-1][1]) if blobs else data_at
    out = bytearray(size)
    out[table:table + ENTRY.size * len(entries)] = b"".join(entries)
    at = table + ENTRY.size * len(entries)
    for encoded in names:
        out[at:at + len(encoded)] = encoded
        at += len(encoded) + 1  # the NUL is already there
    out[meta_at:meta_at + len(meta_bytes)] = meta_bytes
    for at, data in blobs:
        out[at:at + len(data)] = data
    head = HEADER.pack(MAGIC, CONTAINER_VERSION, kind, size, len(arrays), table, meta_at, len(meta_bytes), data_at,
                       zlib.crc32(memoryview(out)[HEADER.size:]), 0)
    out[:HEADER.size] = head[:60] + struct.pack("<I", zlib.crc32(head[:60]))
    return bytes(out)


def _parse(data: bytearray, path, error, what: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The metadata and arrays of a flat container held in ``data`` (the arrays are views of it), every field
    checked before it is used."""
    def bad(why: str):
        return error(f"{path}: not a readable {what} ({why})")

    if len(data) < HEADER.size:
        raise bad(f"truncated: {len(data)} bytes, shorter than its header")
    (magic, container, kind, size, count, table, meta_at, meta_size, data_at, crc, header_crc) = \
        HEADER.unpack_from(data)
    if zlib.crc32(memoryview(data)[:60]) != header_crc:
        raise bad("its header is damaged: checksum mismatch")
    if container < 1:
        raise bad(f"invalid container version {container}")
    if container > CONTAINER_VERSION:
        raise error(f"{path}: {what} container version {container} is newer than this bnncl reads (up to "
                    f"{CONTAINER_VERSION}); upgrade bnncl on the device")
    if size != len(data):
        raise bad(f"truncated or padded: {len(data)} bytes, its header says {size}")
    if zlib.crc32(memoryview(data)[HEADER.size:]) != crc:
        raise error(f"{path}: checksum mismatch: the file was damaged or altered after it was written")
    end_table = table + ENTRY.size * count
    if table != HEADER.size or end_table > size or data_at % ALIGN \
            or not (end_table <= meta_at <= meta_at + meta_size <= data_at <= size):
        raise bad("inconsistent offsets in its header")
    try:
        meta = json.loads(bytes(data[meta_at:meta_at + meta_size]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: corrupt metadata ({e})") from None
    arrays = {}
    for i in range(count):
        name_at, name_len, code, ndim, *rest = ENTRY.unpack_from(data, table + ENTRY.size * i)
        dims, offset, nbytes = rest[:MAX_DIMS], rest[MAX_DIMS], rest[MAX_DIMS + 1]
        if not (end_table <= name_at and name_at + name_len < meta_at and data[name_at + name_len] == 0):
            raise bad(f"tensor {i}: its name lies outside the name area")
        name = bytes(data[name_at:name_at + name_len]).decode("utf-8", "replace")
        if code not in DTYPES or ndim > MAX_DIMS or any(dims[ndim:]):
            raise bad(f"tensor {name!r}: unknown dtype or dimensions")
        dtype = np.dtype(DTYPES[code])
        shape = tuple(dims[:ndim])
        count = math.prod(shape)  # Python ints: no overflow
        if count * dtype.itemsize != nbytes or offset % ALIGN or offset < data_at or offset + nbytes > size:
            raise bad(f"tensor {name!r}: its size or offset does not fit the file")
        if name in arrays:
            raise bad(f"tensor {name!r} appears twice")
        arrays[name] = np.frombuffer(data, dtype, count, offset).reshape(shape)
    return kind, meta, arrays


def _read_npz(path: Path, error, what: str) -> tuple[dict, dict[str, np.ndarray]]:
    """A container written by bnncl 0.1: an uncompressed npz whose entry ``__meta__`` is the metadata."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if META not in z.files:
                raise error(f"{path}: not a bnncl {what} (no {META} entry)")
            arrays = {name: z[name] for name in z.files}
    except error:
        raise
    # zipfile reports a damaged archive with many types (BadZipFile, NotImplementedError for a garbled compression
    # method or version, RuntimeError for a garbled encryption flag), numpy with ValueError/OSError.
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError, RuntimeError) as e:
        raise error(f"{path}: not a readable {what} (truncated or corrupt: {reason(e)})") from None
    raw = arrays.pop(META)
    if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8:  # numpy hands back raw bytes for a non-.npy entry
        raise error(f"{path}: corrupt metadata entry ({META} is not a uint8 array)")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: corrupt metadata ({e})") from None
    bad = [name for name, a in arrays.items() if not isinstance(a, np.ndarray)]
    if bad:
        raise error(f"{path}: entry {bad[0]!r} is not an array")
    return meta, arrays


def read_container(path: str | os.PathLike, fmt: str, version_max: int, error: type[Exception] = ModelFileError,
                   what: str = "model file") -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a file written by :func:`write_container` (or by bnncl 0.1): ``(meta, arrays)``. Every
    failure is an ``error`` naming the file and what is wrong."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: is a directory, not a {what}")
    if not path.is_file():
        raise error(f"{path}: no such {what}")
    try:
        with open(path, "rb") as f:
            flat = f.read(len(MAGIC)) == MAGIC  # the magic first: a flat file may hold a zip's bytes in a tensor
    except OSError as e:
        raise error(f"{path}: cannot read the {what} ({e.strerror})") from None
    if flat:
        try:
            data = bytearray(path.read_bytes())  # writable: the learner updates some arrays in place
        except OSError as e:
            raise error(f"{path}: cannot read the {what} ({e.strerror})") from None
        kind, meta, arrays = _parse(data, path, error, what)
        if kind != KINDS.get(fmt, 0):
            found = next((f for f, k in KINDS.items() if k == kind), f"kind {kind}")
            raise error(f"{path}: not a bnncl {what} (the header says {found})")
    elif zipfile.is_zipfile(path):
        meta, arrays = _read_npz(path, error, what)
    else:
        raise error(f"{path}: not a bnncl {what} (another format, or not the start of one)")
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise error(f"{path}: not a bnncl {what} (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise error(f"{path}: invalid {what} version {version!r}")
    if version > version_max:
        raise error(f"{path}: {what} version {version} is newer than this bnncl reads (up to {version_max}); "
                    "upgrade bnncl on the device")
    # Files written before the metadata had its own checksum have none; the zip's CRC still covers them.
    if "meta_sha256" in meta and meta["meta_sha256"] != meta_checksum(meta):
        raise error(f"{path}: checksum mismatch: the metadata was altered or damaged after it was written")
    if meta.get("sha256") != checksum(arrays):
        raise error(f"{path}: checksum mismatch: the arrays were altered or damaged after they were written")
    return meta, arrays


def container_format(path: str | os.PathLike) -> str | None:
    """The ``format`` a container file says it has (``bnncl-model``, ``bnncl-learner-state``), or None for any other
    file; reads the header (or, for a 0.1 file, the metadata entry) only, verifies nothing beyond the header's CRC
    (to tell whether a file may be overwritten)."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER.size)
        if head.startswith(MAGIC) and len(head) == HEADER.size and zlib.crc32(head[:60]) == HEADER.unpack(head)[-1]:
            kind = HEADER.unpack(head)[2]
            return next((fmt for fmt, k in KINDS.items() if k == kind), None)
        with zipfile.ZipFile(path) as z, z.open(META + ".npy") as f:
            meta = json.loads(np.lib.format.read_array(f, allow_pickle=False).tobytes().decode("utf-8"))
        return meta.get("format") if isinstance(meta, dict) else None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError):
        return None


def is_model_file(path: str | os.PathLike) -> bool:
    return container_format(path) == FORMAT


def graph_tensors(meta: dict, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``graph`` and ``input``: the network as the C runtime reads it (docs/model-format.md), from the layer table of
    ``meta`` and the tensors' positions in ``arrays`` (the order they are written in)."""
    index = {name: i for i, name in enumerate(arrays)}
    layers = meta["layers"]
    graph = np.full((len(layers), GRAPH_COLUMNS), -1, np.int32)
    graph[:, :8] = 0
    for row, layer in zip(graph, layers):
        kind, name = layer["kind"], layer["name"]
        row[0] = LAYER_KINDS[kind]
        row[7] = int(name == meta.get("lr_layer"))
        if kind == "block":
            row[1:5] = layer["cin"], layer["cout"], layer["stride"], int(layer["binary_input"])
            row[5] = SHORTCUT_KINDS[layer["shortcut"]["kind"]]
            row[6] = layer["shortcut"].get("repeat", 0)
        elif kind == "stem":
            w = arrays[f"{name}.weight"]
            row[1:4] = w.shape[-1], w.shape[0], layer["stride"]
        elif kind == "head":
            row[1], row[2] = arrays[f"{name}.weight"].shape[::-1]
        for col, field in GRAPH_TENSORS[kind].items():
            row[col] = index.get(f"{name}.{field}", -1)
    h, w, c = meta["input_shape"]
    return {"graph": graph, "input": np.array([h, w, c, len(meta["class_names"])], np.int32)}


def write_model_file(path: str | os.PathLike, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write a model file atomically (temporary file, fsync, rename), with the ``graph`` the C runtime reads when
    ``meta`` has a layer table."""
    if "layers" in meta:
        arrays = {**arrays, **graph_tensors(meta, arrays)}
    write_container(path, FORMAT, VERSION, meta, arrays)


def read_model_file(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a model file: ``(meta, arrays)``. Every failure is a :class:`ModelFileError` naming the file.
    A version-1 file (bnncl 0.1) is brought to version 2's layout as it is read."""
    meta, arrays = read_container(path, FORMAT, VERSION, ModelFileError, "model file")
    if meta["version"] < 2:
        arrays = _from_version_1(meta, arrays)
    return meta, arrays


def _from_version_1(meta: dict, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Version 1 stored the blocks' packed conv weights as (Cout, kh, kw, words); version 2 stores the kernels'
    layout (kh, kw, words, Cout), which the C runtime reads in place."""
    out = dict(arrays)
    for layer in meta.get("layers", []):
        if isinstance(layer, dict) and layer.get("kind") == "block":
            for key in (f"{layer.get('name')}.conv.weight", f"{layer.get('name')}.shortcut.weight"):
                if key in out and out[key].ndim == 4:
                    out[key] = np.ascontiguousarray(np.transpose(out[key], (1, 2, 3, 0)))
    return out
