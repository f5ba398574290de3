"""Crash-safe file writes: write to a temporary file in the same directory, fsync, rename; and the checks every
command makes on its destinations before it starts working (writable, not one of its inputs, not a file of another
kind).

A reader never sees a half-written file: it sees the old content or the new one. No torch import here, so the
device runtime can use it too.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from bnncl.core.errors import OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temporary binary file beside ``path``; on success it replaces ``path`` atomically.

    If the body raises, the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a directory, cannot write a file there")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            # mkstemp makes the file 0600; give it the mode a plain open() would have (0666 minus the umask).
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # a full disk, a file system gone read-only: the target is left as it was
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# -- destinations, checked before the work starts ------------------------------------------------------------------

def _existing_ancestor(path: Path) -> Path:
    """The nearest parent of ``path`` that exists (what a write would make the missing folders in)."""
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path(".")


def _probe(directory: Path, what: Path) -> None:
    """Create and remove a file in ``directory``: the only check that holds for root and read-only mounts."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".bnncl-probe.", dir=directory)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise OutputError(f"{what}: cannot write there ({directory}: {e.strerror or e})") from None


def check_writable(path: str | os.PathLike) -> Path:
    """Refuse now, with one line, a file destination a write would fail on after the work: a directory, a parent
    that is a file, a directory that cannot be written (read-only file system, permissions)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a directory, not a file to write")
    ancestor = _existing_ancestor(path)
    if not ancestor.is_dir():
        raise OutputError(f"{path}: cannot write there, {ancestor} is a file, not a directory")
    _probe(ancestor, path)
    return path


def check_writable_dir(path: str | os.PathLike) -> Path:
    """The same for an output directory (made later if missing)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: is a file, not a directory to write the results in")
    ancestor = path if path.exists() else _existing_ancestor(path)
    if not ancestor.is_dir():
        raise OutputError(f"{path}: cannot write there, {ancestor} is a file, not a directory")
    _probe(ancestor, path)
    return path


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output(path: str | os.PathLike, inputs=(), kind: str | None = None,
                 is_kind: Callable[[Path], bool] | None = None, force: bool = False) -> Path:
    """A file destination: writable (:func:`check_writable`), none of ``inputs`` (never, even with ``force``), and,
    when it exists, a file of its own ``kind`` (``is_kind(path)``) unless ``force``: no command replaces a file it
    did not write without being told to."""
    path = Path(path)
    for given in inputs:
        if given is not None and same_file(path, given):
            raise OutputError(f"{path}: is the input {given}; refusing to overwrite it (give another output path)")
    if path.is_file() and is_kind is not None and not force and not is_kind(path):
        raise OutputError(f"{path}: exists and is not a {kind}; refusing to overwrite it (give --force to replace "
                          "it, or another output path)")
    return check_writable(path)  # last: it probes the directory with a file of its own


def is_json_file(path: Path) -> bool:
    import json

    try:
        json.loads(path.read_text(encoding="utf-8"))
        return True
    except (OSError, ValueError):
        return False
