"""atomic_write: complete replacement on success; on failure the old file stays and no temporary file is left."""

import os

import pytest

import bnncl.core.atomic as atomic_mod
from bnncl.core.atomic import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    check_output,
    check_writable,
    check_writable_dir,
    is_json_file,
)
from bnncl.core.errors import OutputError


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
    with pytest.raises(OutputError, match=f"{path}: cannot write \\(disk gone\\)"):
        atomic_write_bytes(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_written_file_gets_the_mode_of_a_plain_open(tmp_path):
    import stat

    from bnncl.core.atomic import atomic_write_bytes as write

    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    write(tmp_path / "atomic", b"y")
    assert stat.S_IMODE((tmp_path / "atomic").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


# -- destinations checked before the work ---------------------------------------------------------------------------

def test_a_destination_that_cannot_be_written_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(OutputError, match=f"{tmp_path}: is a directory"):
        check_writable(tmp_path)
    with pytest.raises(OutputError, match="a_file is a file, not a directory"):
        check_writable(tmp_path / "a_file" / "out.json")
    with pytest.raises(OutputError, match="a_file is a file, not a directory"):
        check_writable(tmp_path / "a_file" / "deeper" / "out.json")  # the nearest existing ancestor decides
    with pytest.raises(OutputError, match="is a file, not a directory to write"):
        check_writable_dir(tmp_path / "a_file")
    assert check_writable(tmp_path / "new" / "out.json") == tmp_path / "new" / "out.json"
    assert not (tmp_path / "new").exists()  # checking makes nothing
    assert check_writable_dir(tmp_path / "run") == tmp_path / "run"

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(atomic_mod.tempfile, "mkstemp", read_only)  # root ignores permissions; a mount does not
    with pytest.raises(OutputError, match="out.json: cannot write there .*Read-only file system"):
        check_writable(tmp_path / "out.json")
    with pytest.raises(OutputError, match="Read-only file system"):
        check_writable_dir(tmp_path / "run")
    assert sorted(os.listdir(tmp_path)) == ["a_file"]


def test_an_input_is_never_an_output_and_another_kind_only_with_force(tmp_path):
    data = tmp_path / "model.pt"
    data.write_bytes(b"weights")
    link = tmp_path / "same.pt"
    os.link(data, link)
    for out in (data, link):
        for force in (False, True):
            with pytest.raises(OutputError, match="is the input .*model.pt; refusing to overwrite it"):
                check_output(out, [data], "JSON file", is_json_file, force)
    notes = tmp_path / "notes.txt"
    notes.write_text("not JSON")
    with pytest.raises(OutputError, match="notes.txt: exists and is not a JSON file; refusing .*--force"):
        check_output(notes, [data], "JSON file", is_json_file)
    assert check_output(notes, [data], "JSON file", is_json_file, force=True) == notes
    old = tmp_path / "old.json"
    old.write_text("{}")
    assert check_output(old, [data], "JSON file", is_json_file) == old  # its own kind: replaced as asked
    assert data.read_bytes() == b"weights" and notes.read_text() == "not JSON"
