"""The exported model file: round trip, and every kind of damage refused with a ModelFileError naming the file."""

import hashlib
import io
import json
import os
import zipfile

import numpy as np
import pytest

from bnncl.core.errors import BnnclError, ModelFileError, OutputError
from bnncl.device import modelfile
from bnncl.device.modelfile import read_model_file, write_model_file

META = {"arch": "toy-bnn", "input_shape": [32, 32, 3], "classes": ["cat", "dog", "émeu"], "split": "stage3",
        "precision": {"stem": "float32", "blocks": "binary"}, "source": "ckpt/best.pt", "nested": {"k": [1, 2.5, None]}}


def sample_arrays(rng):
    return {
        "stem.w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "stem.b": rng.standard_normal(8).astype(np.float32),
        "b1.w": rng.integers(0, 2**64, (8, 3, 3, 2), dtype=np.uint64, endpoint=False),
        "b1.mult": rng.standard_normal(8).astype(np.float32),
        "scalar": np.float32(3.5) * np.ones((), np.float32),
        "empty": np.zeros((0, 4), np.float32),
        "ints": np.arange(-5, 6, dtype=np.int32).reshape(1, 11),
        "odd": rng.standard_normal((3, 1, 5, 7)).astype(np.float32),
    }


@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(0)
    arrays = sample_arrays(rng)
    path = tmp_path / "model.bnn"
    write_model_file(path, META, arrays)
    return path, arrays


def expect_error(path, *fragments):
    with pytest.raises(ModelFileError) as info:
        read_model_file(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    for f in fragments:
        assert f in msg, msg
    assert isinstance(info.value, BnnclError)
    return msg


def rewrite_npz(path, entries):
    """Save ``entries`` (name -> array) as an uncompressed npz at ``path`` (np.savez, the writer's own container)."""
    buf = io.BytesIO()
    np.savez(buf, **entries)
    path.write_bytes(buf.getvalue())


def raw_entries(path):
    with np.load(path, allow_pickle=False) as z:
        return {name: z[name] for name in z.files}


def meta_array(meta):
    return np.frombuffer(json.dumps(meta).encode(), np.uint8)


def independent_checksum(arrays):
    """The documented checksum: SHA-256 over every array's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# -- round trip -----------------------------------------------------------------------------------------------------

def test_round_trip_meta_and_arrays(model):
    path, arrays = model
    meta, got = read_model_file(path)
    assert meta["format"] == "bnncl-model" and meta["version"] == 1
    for key, value in META.items():
        assert meta[key] == value
    assert meta["sha256"] == independent_checksum(arrays)
    assert set(got) == set(arrays)
    for name, a in arrays.items():
        assert got[name].dtype == a.dtype, name
        assert got[name].shape == a.shape, name
        np.testing.assert_array_equal(got[name], a)
    # The container is a plain npz readable by NumPy alone, no pickles.
    assert zipfile.is_zipfile(path)
    assert "__meta__" in raw_entries(path)


def test_round_trip_keeps_uint64_bits_and_float_bits(tmp_path):
    extremes = np.array([0, 1, 2**63, 2**64 - 1, 0x5555555555555555], np.uint64)
    floats = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, np.finfo(np.float32).max], np.float32)
    path = tmp_path / "m.npz"
    write_model_file(path, {}, {"u": extremes, "f": floats})
    _, got = read_model_file(path)
    np.testing.assert_array_equal(got["u"], extremes)
    assert got["f"].tobytes() == floats.tobytes()  # bit-exact, including -0.0 and NaN


def test_reserved_array_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        write_model_file(tmp_path / "m", {}, {"__meta__": np.zeros(1)})
    assert not (tmp_path / "m").exists()


# -- missing, truncated, corrupt ------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.bnn", "no such model file")


def test_directory_is_not_a_model_file(tmp_path):
    expect_error(tmp_path, "is a directory, not a model file")


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.1, 0.5, 0.9, 0.99])
def test_truncated_file(model, fraction):
    path, _ = model
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])
    expect_error(path)


@pytest.mark.parametrize("cut", [1, 4, 6, 22, 100])
def test_truncated_by_few_bytes_or_to_a_few_bytes(model, cut):
    path, _ = model
    data = path.read_bytes()
    path.write_bytes(data[:-cut])
    expect_error(path)
    path.write_bytes(data[:cut])
    expect_error(path)


@pytest.mark.parametrize("name,offset", [("b1.w", 0), ("b1.w", 1000), ("stem.w", 17), ("odd", -1)])
def test_flipped_byte_inside_array_data(model, name, offset):
    path, arrays = model
    data = bytearray(path.read_bytes())
    payload = arrays[name].tobytes()
    start = bytes(data).find(payload)
    assert start > 0 and bytes(data).find(payload, start + 1) == -1  # located exactly once
    pos = start + (offset % len(payload))
    data[pos] ^= 0x10
    path.write_bytes(bytes(data))
    msg = expect_error(path)
    assert "checksum mismatch" in msg or "not a readable model file" in msg, msg


def test_flipped_bit_anywhere_before_the_central_directory_is_refused_or_harmless(model):
    """Flip one bit at many positions in the local headers and array data: the reader either refuses with
    ModelFileError or returns exactly the original content (a flip in a field nobody reads, e.g. a timestamp)."""
    path, arrays = model
    original = path.read_bytes()
    central = original.find(b"PK\x01\x02")  # start of the zip central directory
    assert central > 0
    rng = np.random.default_rng(5)
    refused = 0
    for pos in rng.choice(central, 80, replace=False):
        data = bytearray(original)
        data[pos] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(data))
        try:
            meta, got = read_model_file(path)
        except ModelFileError as e:
            assert str(path) in str(e)
            refused += 1
            continue
        assert set(got) == set(arrays)
        for n, a in arrays.items():
            assert got[n].dtype == a.dtype and got[n].shape == a.shape
            assert got[n].tobytes() == a.tobytes()
        for key, value in META.items():
            assert meta[key] == value
    assert refused > 40  # most of the bytes are array data, meta or header fields that matter


def central_directory_field(data, entry, offset):
    """Byte position of a field of the ``entry``-th central-directory header (zip spec: version needed at 6,
    general-purpose flags at 8, compression method at 10)."""
    pos = -1
    for _ in range(entry + 1):
        pos = data.find(b"PK\x01\x02", pos + 1)
        assert pos > 0
    return pos + offset


@pytest.mark.parametrize("field,bit", [("version needed", 7), ("flags: encrypted", 0), ("compression method", 0)])
def test_flipped_bit_in_central_directory_is_a_model_file_error(model, field, bit):
    path, _ = model
    data = bytearray(path.read_bytes())
    offset = {"version needed": 6, "flags: encrypted": 8, "compression method": 10}[field]
    data[central_directory_field(data, 0, offset)] ^= 1 << bit
    path.write_bytes(bytes(data))
    expect_error(path)


def test_array_replaced_keeping_old_meta(model):
    path, _ = model
    entries = raw_entries(path)
    entries["stem.b"] = entries["stem.b"] + np.float32(1.0)
    rewrite_npz(path, entries)
    expect_error(path, "checksum mismatch")


@pytest.mark.parametrize("change", ["dtype", "shape", "rename", "drop", "add"])
def test_array_altered_otherwise_keeping_old_meta(model, change):
    path, _ = model
    entries = raw_entries(path)
    if change == "dtype":
        entries["ints"] = entries["ints"].view(np.uint32)  # same bytes, other dtype
    elif change == "shape":
        entries["odd"] = entries["odd"].reshape(3, 5, 1, 7)  # same bytes, other shape
    elif change == "rename":
        entries["stem.bias"] = entries.pop("stem.b")
    elif change == "drop":
        del entries["empty"]
    else:
        entries["extra"] = np.zeros(3, np.float32)
    rewrite_npz(path, entries)
    expect_error(path, "checksum mismatch")


def independent_meta_checksum(meta):
    """The documented metadata checksum: SHA-256 of its JSON with sorted keys, compact, without the field itself."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def test_metadata_carries_its_own_checksum(model):
    path, _ = model
    meta, _ = read_model_file(path)
    assert meta["meta_sha256"] == independent_meta_checksum(meta)


@pytest.mark.parametrize("edit", ["class renamed", "input shape", "field added", "field dropped"])
def test_metadata_altered_keeping_valid_json_and_arrays(model, edit):
    """Valid JSON, a valid zip (rewritten, so the CRCs match) and the arrays' checksum intact: the metadata's own
    checksum is what notices."""
    path, _ = model
    entries = raw_entries(path)
    meta = json.loads(entries.pop("__meta__").tobytes())
    if edit == "class renamed":
        meta["classes"][0] = "lion"
    elif edit == "input shape":
        meta["input_shape"] = [28, 28, 1]
    elif edit == "field added":
        meta["note"] = "edited by hand"
    else:
        del meta["split"]
    rewrite_npz(path, {"__meta__": meta_array(meta), **entries})
    expect_error(path, "checksum mismatch", "metadata")


def test_file_from_before_the_metadata_checksum_still_loads(model):
    path, arrays = model
    entries = raw_entries(path)
    meta = json.loads(entries.pop("__meta__").tobytes())
    del meta["meta_sha256"]
    rewrite_npz(path, {"__meta__": meta_array(meta), **entries})
    got_meta, got = read_model_file(path)
    assert got_meta["classes"] == META["classes"]
    assert set(got) == set(arrays)

def test_newer_version_asks_for_upgrade(model):
    path, _ = model
    entries = raw_entries(path)
    meta = json.loads(entries.pop("__meta__").tobytes())
    meta["version"] = 2
    meta["sha256"] = independent_checksum(entries)  # a genuine file from a newer writer
    rewrite_npz(path, {"__meta__": meta_array(meta), **entries})
    msg = expect_error(path, "newer", "upgrade")
    assert "2" in msg


@pytest.mark.parametrize("version", [0, -1, "1", 1.0, None])
def test_invalid_version(model, version):
    path, _ = model
    entries = raw_entries(path)
    meta = json.loads(entries.pop("__meta__").tobytes())
    meta["version"] = version
    rewrite_npz(path, {"__meta__": meta_array(meta), **entries})
    expect_error(path, "version")


def test_npz_without_meta(tmp_path):
    path = tmp_path / "plain.npz"
    rewrite_npz(path, {"w": np.ones(3, np.float32)})
    expect_error(path, "not a bnncl model file", "__meta__")


@pytest.mark.parametrize("fmt", ["other-model", None, 1])
def test_wrong_format(model, fmt):
    path, _ = model
    entries = raw_entries(path)
    meta = json.loads(entries.pop("__meta__").tobytes())
    if fmt is None:
        del meta["format"]
    else:
        meta["format"] = fmt
    meta["sha256"] = independent_checksum(entries)
    rewrite_npz(path, {"__meta__": meta_array(meta), **entries})
    expect_error(path, "not a bnncl model file")


@pytest.mark.parametrize("payload", [b"not json at all", b"\xff\xfe\x00 bad utf-8", b"[1, 2, 3]", b"\"bnncl-model\""])
def test_corrupt_metadata(model, payload):
    path, _ = model
    entries = raw_entries(path)
    entries["__meta__"] = np.frombuffer(payload, np.uint8)
    rewrite_npz(path, entries)
    expect_error(path)


@pytest.mark.parametrize("seed,size", [(0, 0), (1, 5), (2, 100), (3, 4096)])
def test_random_bytes_file(tmp_path, seed, size):
    path = tmp_path / "junk.bnn"
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    expect_error(path)


def test_zip_that_is_not_an_npz(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", b"hello")
    expect_error(path, "not a bnncl model file")


@pytest.mark.parametrize("payload", [b"this is no npy header", b'{"format": "bnncl-model", "version": 1}'])
def test_zip_whose_meta_entry_is_not_npy(tmp_path, payload):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("__meta__.npy", payload)
    expect_error(path)


def test_npz_with_object_array_is_refused_not_unpickled(model):
    path, _ = model
    entries = raw_entries(path)
    buf = io.BytesIO()
    np.savez(buf, **entries, evil=np.array([{"a": 1}], dtype=object))
    path.write_bytes(buf.getvalue())
    expect_error(path)


def test_plain_npy_file_is_refused_with_model_file_error(tmp_path):
    path = tmp_path / "weights.bnn"
    with open(path, "wb") as f:
        np.save(f, np.arange(10))
    expect_error(path)


# -- atomic writes --------------------------------------------------------------------------------------------------

def _assert_old_file_intact(path, arrays):
    assert sorted(os.listdir(path.parent)) == [path.name]  # no temporary file left behind
    meta, got = read_model_file(path)
    assert meta["arch"] == META["arch"]
    for name, a in arrays.items():
        np.testing.assert_array_equal(got[name], a)


def test_failed_serialisation_leaves_old_file(model, monkeypatch):
    path, arrays = model

    def boom(*args, **kwargs):
        raise RuntimeError("savez failed")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(RuntimeError, match="savez failed"):
        write_model_file(path, {"arch": "new"}, {"w": np.ones(3, np.float32)})
    monkeypatch.undo()
    _assert_old_file_intact(path, arrays)


def test_array_that_fails_to_serialise_leaves_old_file(model):
    path, arrays = model

    class Exploding:  # an array-like whose data cannot be produced (e.g. a lazily loaded tensor failing)
        def __array__(self, *a, **k):
            raise MemoryError("array unreadable")

    bad = Exploding()
    with pytest.raises(MemoryError):
        write_model_file(path, {"arch": "new"}, {"w": bad})
    _assert_old_file_intact(path, arrays)


@pytest.mark.parametrize("stage", ["write", "fsync", "replace"])
def test_failure_midway_through_the_write_leaves_old_file_and_no_temporary(model, monkeypatch, stage):
    """The bytes are being written to the temporary file when the disk fills up (or the fsync / rename fails)."""
    path, arrays = model
    import bnncl.core.atomic as atomic

    if stage == "write":
        real = atomic.atomic_write

        def half_then_fail(p, data):
            with real(p) as f:
                f.write(data[:len(data) // 2])
                f.flush()
                tmp = [n for n in os.listdir(path.parent) if n != path.name]
                assert len(tmp) == 1  # the temporary file exists beside the target while writing
                raise OSError(28, "No space left on device")

        monkeypatch.setattr(modelfile, "atomic_write_bytes", half_then_fail)
    elif stage == "fsync":
        def fail(fd):
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(atomic.os, "fsync", fail)
    else:
        def fail(src, dst):
            raise OSError(18, "Invalid cross-device link")

        monkeypatch.setattr(atomic.os, "replace", fail)
    with pytest.raises(OutputError, match=f"{path}: cannot write"):  # one line naming the file, for the CLI
        write_model_file(path, {"arch": "new"}, {"w": np.ones(3, np.float32)})
    monkeypatch.undo()
    _assert_old_file_intact(path, arrays)


def test_successful_overwrite_replaces_content(model):
    path, _ = model
    write_model_file(path, {"arch": "new"}, {"w": np.ones(3, np.float32)})
    assert sorted(os.listdir(path.parent)) == [path.name]
    meta, got = read_model_file(path)
    assert meta["arch"] == "new" and list(got) == ["w"]
    np.testing.assert_array_equal(got["w"], np.ones(3, np.float32))
