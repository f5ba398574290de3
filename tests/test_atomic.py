"""atomic_write: complete replacement on success; on failure the old file stays and no temporary file is left."""

import os

import pytest

import bnncl.atomic as atomic_mod
from bnncl.atomic import atomic_write, atomic_write_bytes, atomic_write_text


def test_replaces_content_completely(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"A" * 10_000)
    with atomic_write(path) as f:
        f.write(b"short")
    assert path.read_bytes() == b"short"  # no tail of the longer old content
    assert os.listdir(tmp_path) == ["f.bin"]


def test_creates_new_file_and_parent_dirs(tmp_path):
    path = tmp_path / "a" / "b" / "f.txt"
    atomic_write_text(path, "héllo\n")
    assert path.read_bytes() == "héllo\n".encode("utf-8")
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert os.listdir(path.parent) == ["f.txt"]


def test_content_invisible_until_context_exits(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with atomic_write(path) as f:
        f.write(b"new content")
        f.flush()
        assert path.read_bytes() == b"old"
    assert path.read_bytes() == b"new content"


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_exception_in_body_keeps_old_file_and_removes_temp(tmp_path, exc):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old content")
    with pytest.raises(exc):
        with atomic_write(path) as f:
            f.write(b"partial new")
            raise exc("boom")
    assert path.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_exception_in_body_creates_nothing(tmp_path):
    path = tmp_path / "never.bin"
    with pytest.raises(ValueError):
        with atomic_write(path) as f:
            f.write(b"x")
            raise ValueError
    assert os.listdir(tmp_path) == []


def test_failed_rename_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def failing_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(atomic_mod.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_bytes(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_written_file_gets_the_mode_of_a_plain_open(tmp_path):
    import stat

    from bnncl.atomic import atomic_write_bytes as write

    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    write(tmp_path / "atomic", b"y")
    assert stat.S_IMODE((tmp_path / "atomic").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
