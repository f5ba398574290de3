"""The exported model file: one versioned, checksummed file that the device runtime reads with NumPy alone.

Container: an uncompressed ``.npz`` (a zip of ``.npy`` arrays, read with ``allow_pickle=False``, so the file is data,
never code). The entry ``__meta__`` holds UTF-8 JSON: format, version, architecture, input shape, class names, the
latent-replay split, the precision of every part, the source checkpoint, a SHA-256 over every array (name, dtype,
shape, bytes) and one over the metadata itself (its canonical JSON). A truncated, corrupt or altered file, or one
written by a newer bnncl, is refused with an error that names the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from bnncl.core.atomic import atomic_write_bytes
from bnncl.core.errors import ModelFileError, reason

FORMAT = "bnncl-model"
VERSION = 1
META = "__meta__"


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
    """Write ``meta`` (JSON-able) and ``arrays`` atomically (temporary file, fsync, rename), stamped with ``fmt``,
    ``version``, the arrays' SHA-256 and the metadata's."""
    if META in arrays:
        raise ValueError(f"{META!r} is reserved")
    meta = {"format": fmt, "version": version, **meta, "sha256": checksum(arrays)}
    meta["meta_sha256"] = meta_checksum(meta)
    buf = io.BytesIO()
    np.savez(buf, **{META: np.frombuffer(json.dumps(meta, indent=1).encode(), np.uint8)}, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def read_container(path: str | os.PathLike, fmt: str, version_max: int, error: type[Exception] = ModelFileError,
                   what: str = "model file") -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a file written by :func:`write_container`: ``(meta, arrays)``. Every failure is an ``error``
    naming the file and what is wrong."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: is a directory, not a {what}")
    if not path.is_file():
        raise error(f"{path}: no such {what}")
    if not zipfile.is_zipfile(path):
        raise error(f"{path}: not a bnncl {what} (not an .npz archive; truncated or another format)")
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
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise error(f"{path}: not a bnncl {what} (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    version = meta.get("version")
    if not isinstance(version, int) or version < 1:
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
    file; reads the metadata entry only, verifies nothing (to tell whether a file may be overwritten)."""
    try:
        with zipfile.ZipFile(path) as z, z.open(META + ".npy") as f:
            meta = json.loads(np.lib.format.read_array(f, allow_pickle=False).tobytes().decode("utf-8"))
        return meta.get("format") if isinstance(meta, dict) else None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError):
        return None


def is_model_file(path: str | os.PathLike) -> bool:
    return container_format(path) == FORMAT


def write_model_file(path: str | os.PathLike, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write a model file atomically (temporary file, fsync, rename)."""
    write_container(path, FORMAT, VERSION, meta, arrays)


def read_model_file(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a model file: ``(meta, arrays)``. Every failure is a :class:`ModelFileError` naming the file."""
    return read_container(path, FORMAT, VERSION, ModelFileError, "model file")
