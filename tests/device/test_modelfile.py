"""The model file (and the learner state): the flat container of docs/model-format.md checked against the spec with
``struct`` and ``zlib`` (independently of the reader), its round trip, and every kind of damage, writer bug and
altered metadata refused with a ModelFileError naming the file; the bnncl 0.1 npz container still read, and its
damage still refused."""

import hashlib
import io
import json
import os
import struct
import zipfile
import zlib

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


# -- the spec (docs/model-format.md), restated ----------------------------------------------------------------------

MAGIC = b"\x89BNNCL\r\n"
HEADER_SIZE = ENTRY_SIZE = ALIGN = 64
KIND_MODEL, KIND_STATE = 1, 2
SPEC_DTYPES = {1: "<f4", 2: "<f8", 3: "|u1", 4: "|i1", 5: "<u2", 6: "<i2", 7: "<u4", 8: "<i4", 9: "<u8", 10: "<i8"}
# header fields: offset, struct format
H = {"version": (8, "<I"), "kind": (12, "<I"), "size": (16, "<Q"), "count": (24, "<I"), "table": (28, "<I"),
     "meta": (32, "<I"), "meta_size": (36, "<I"), "data": (40, "<I"), "crc": (44, "<I"), "header_crc": (60, "<I")}
# tensor-table entry fields, from the entry's start
E = {"name": (0, "<I"), "name_len": (4, "<I"), "dtype": (8, "<I"), "ndim": (12, "<I"), "dims": (16, "<6I"),
     "offset": (40, "<Q"), "size": (48, "<Q")}


def spec_header(data) -> dict:
    h = {k: struct.unpack_from(f, data, at)[0] for k, (at, f) in H.items()}
    h["magic"], h["reserved"] = bytes(data[:8]), bytes(data[48:60])
    return h


def spec_entries(data) -> list[dict]:
    h = spec_header(data)
    out = []
    for i in range(h["count"]):
        at = h["table"] + ENTRY_SIZE * i
        e = {k: struct.unpack_from(f, data, at + off) for k, (off, f) in E.items()}
        e = {k: (v if k == "dims" else v[0]) for k, v in e.items()}
        e["at"], e["reserved"] = at, bytes(data[at + 56:at + 64])
        e["name_str"] = bytes(data[e["name"]:e["name"] + e["name_len"]]).decode()
        out.append(e)
    return out


def spec_read(data) -> tuple[dict, dict[str, np.ndarray]]:
    """(metadata, arrays in table order) of a flat container, read by the spec alone."""
    h = spec_header(data)
    meta = json.loads(bytes(data[h["meta"]:h["meta"] + h["meta_size"]]).decode())
    arrays = {}
    for e in spec_entries(data):
        shape = e["dims"][:e["ndim"]]
        count = int(np.prod(shape, dtype=np.int64))
        arrays[e["name_str"]] = np.frombuffer(bytes(data), SPEC_DTYPES[e["dtype"]], count, e["offset"]).reshape(shape)
    return meta, arrays


def restamp(data) -> bytes:
    """Both CRCs recomputed as the spec says (payload over [64, end of file), header over [0, 60))."""
    data = bytearray(data)
    struct.pack_into("<I", data, 44, zlib.crc32(bytes(data[HEADER_SIZE:])))
    struct.pack_into("<I", data, 60, zlib.crc32(bytes(data[:60])))
    return bytes(data)


def patched(data, edits) -> bytes:
    """``data`` with every ``(offset, format, value)`` of ``edits`` written, then both CRCs restamped: a file whose
    checksums hold and whose structure is what the edits made it (a writer bug, not damage)."""
    data = bytearray(data)
    for at, fmt, value in edits:
        struct.pack_into(fmt, data, at, *(value if isinstance(value, tuple) else (value,)))
    return restamp(data)


# -- files ----------------------------------------------------------------------------------------------------------

def rewrite_npz(path, entries):
    """Save ``entries`` (name -> array) as an uncompressed npz at ``path`` (np.savez, bnncl 0.1's container)."""
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


def independent_meta_checksum(meta):
    """The documented metadata checksum: SHA-256 of its JSON with sorted keys, compact, without the field itself."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_legacy(path, meta, arrays, fmt="bnncl-model", version=1):
    """A bnncl 0.1 file: an uncompressed npz, the metadata as the uint8 entry ``__meta__``, the documented checksums."""
    meta = {"format": fmt, "version": version, **meta, "sha256": independent_checksum(arrays)}
    meta["meta_sha256"] = independent_meta_checksum(meta)
    rewrite_npz(path, {"__meta__": meta_array(meta), **arrays})


def stamped(meta, arrays):
    """``meta`` with both checksums recomputed for ``arrays``: a genuine file's metadata."""
    meta = {**meta, "sha256": independent_checksum(arrays)}
    meta["meta_sha256"] = independent_meta_checksum(meta)
    return meta


def is_flat(path) -> bool:
    return path.read_bytes().startswith(MAGIC)


def entries(path) -> tuple[dict, dict[str, np.ndarray]]:
    """The metadata and arrays of either container, read without the reader under test."""
    if is_flat(path):
        meta, arrays = spec_read(path.read_bytes())
        return meta, {k: v.copy() for k, v in arrays.items()}
    arrays = raw_entries(path)
    return json.loads(arrays.pop("__meta__").tobytes()), arrays


def rewrite(path, meta, arrays):
    """Write ``meta`` (a dict, or the metadata's bytes as they are) and ``arrays`` back into ``path``'s own container,
    with every CRC right (``modelfile.pack`` for the flat container, np.savez for the npz) and no checksum of the
    metadata or arrays recomputed."""
    meta_bytes = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    if is_flat(path):
        path.write_bytes(modelfile.pack(KIND_MODEL, meta_bytes, arrays))
    else:
        rewrite_npz(path, {"__meta__": np.frombuffer(meta_bytes, np.uint8), **arrays})


@pytest.fixture
def model(tmp_path):
    """A model file as every bnncl since 0.2 writes it: the flat container."""
    arrays = sample_arrays(np.random.default_rng(0))
    path = tmp_path / "model.bnn"
    write_model_file(path, META, arrays)
    return path, arrays


@pytest.fixture
def legacy_model(tmp_path):
    """A model file as bnncl 0.1 wrote it: the npz container."""
    arrays = sample_arrays(np.random.default_rng(0))
    path = tmp_path / "legacy.bnn"
    write_legacy(path, META, arrays)
    return path, arrays


@pytest.fixture(params=["flat", "npz"])
def either(request):
    return request.getfixturevalue("model" if request.param == "flat" else "legacy_model")


def expect_error(path, *fragments):
    with pytest.raises(ModelFileError) as info:
        read_model_file(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    for f in fragments:
        assert f in msg, msg
    assert isinstance(info.value, BnnclError)
    return msg


# -- round trip -----------------------------------------------------------------------------------------------------

def test_round_trip_meta_and_arrays(either):
    path, arrays = either
    meta, got = read_model_file(path)
    assert meta["format"] == "bnncl-model"
    assert meta["version"] == (modelfile.VERSION if is_flat(path) else 1)
    for key, value in META.items():
        assert meta[key] == value
    assert meta["sha256"] == independent_checksum(arrays)
    assert list(got) == list(arrays)
    for name, a in arrays.items():
        assert got[name].dtype == a.dtype, name
        assert got[name].shape == a.shape, name
        np.testing.assert_array_equal(got[name], a)


def test_new_files_are_the_flat_container_not_a_zip(model):
    path, _ = model
    assert is_flat(path) and not zipfile.is_zipfile(path)


@pytest.mark.parametrize("fmt,kind,version", [("bnncl-model", KIND_MODEL, modelfile.VERSION),
                                              ("bnncl-learner-state", KIND_STATE, 1)])
def test_flat_container_layout_follows_the_spec(tmp_path, fmt, kind, version):
    """Header, table, names, metadata and data exactly where docs/model-format.md puts them, parsed with struct."""
    arrays = sample_arrays(np.random.default_rng(0))
    path = tmp_path / "file"
    modelfile.write_container(path, fmt, version, META, arrays)
    data = path.read_bytes()
    h = spec_header(data)
    assert h["magic"] == MAGIC
    assert h["version"] == 1 and h["kind"] == kind
    assert h["size"] == len(data)
    assert h["count"] == len(arrays)
    assert h["table"] == HEADER_SIZE
    assert h["reserved"] == bytes(12)
    assert h["header_crc"] == zlib.crc32(data[:60])
    assert h["crc"] == zlib.crc32(data[HEADER_SIZE:h["size"]])
    names_at = h["table"] + ENTRY_SIZE * h["count"]
    assert names_at <= h["meta"] and h["meta"] + h["meta_size"] <= h["data"] <= h["size"]
    assert h["data"] % ALIGN == 0
    meta = json.loads(data[h["meta"]:h["meta"] + h["meta_size"]].decode("utf-8"))
    assert meta["format"] == fmt and meta["version"] == version and meta["classes"] == META["classes"]
    assert meta["sha256"] == independent_checksum(arrays)
    assert meta["meta_sha256"] == independent_meta_checksum(meta)
    spans = []
    table = spec_entries(data)
    assert [e["name_str"] for e in table] == list(arrays)  # the tensors in the writer's order
    for e, (name, a) in zip(table, arrays.items()):
        assert names_at <= e["name"] and e["name"] + e["name_len"] < h["meta"], name  # inside the name area
        assert data[e["name"]:e["name"] + e["name_len"]] == name.encode() and data[e["name"] + e["name_len"]] == 0
        assert np.dtype(SPEC_DTYPES[e["dtype"]]) == a.dtype.newbyteorder("<"), name
        assert e["ndim"] == a.ndim and e["dims"][:a.ndim] == a.shape and not any(e["dims"][a.ndim:]), name
        assert e["offset"] % ALIGN == 0 and e["offset"] >= h["data"], name
        assert e["size"] == a.size * a.itemsize and e["offset"] + e["size"] <= h["size"], name
        assert data[e["offset"]:e["offset"] + e["size"]] == a.astype(a.dtype.newbyteorder("<")).tobytes(), name
        assert e["reserved"] == bytes(8), name
        spans.append((e["offset"], e["offset"] + e["size"]))
    spans.sort()
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))  # no two tensors overlap
    assert h["size"] == max(end for _, end in spans)  # the file ends with the last tensor's data


def test_round_trip_keeps_uint64_bits_and_float_bits(tmp_path):
    extremes = np.array([0, 1, 2**63, 2**64 - 1, 0x5555555555555555], np.uint64)
    floats = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, np.finfo(np.float32).max], np.float32)
    path = tmp_path / "m.bnn"
    write_model_file(path, {}, {"u": extremes, "f": floats})
    _, got = read_model_file(path)
    np.testing.assert_array_equal(got["u"], extremes)
    assert got["u"].tobytes() == extremes.tobytes()
    assert got["f"].tobytes() == floats.tobytes()  # bit-exact, including -0.0 and NaN
    _, raw = spec_read(path.read_bytes())  # and so they are in the file
    assert raw["u"].tobytes() == extremes.tobytes() and raw["f"].tobytes() == floats.tobytes()


@pytest.mark.parametrize("code", sorted(SPEC_DTYPES))
def test_every_dtype_has_its_spec_code(tmp_path, code):
    dtype = np.dtype(SPEC_DTYPES[code])
    info = np.finfo(dtype) if dtype.kind == "f" else np.iinfo(dtype)
    a = np.array([0, 1, info.max, info.min, info.max // 3 if dtype.kind != "f" else info.tiny], dtype).reshape(5, 1)
    path = tmp_path / "m.bnn"
    write_model_file(path, {}, {"a": a})
    data = path.read_bytes()
    (e,) = spec_entries(data)
    assert e["dtype"] == code
    assert data[e["offset"]:e["offset"] + e["size"]] == a.tobytes()
    _, got = read_model_file(path)
    assert got["a"].dtype == dtype and got["a"].tobytes() == a.tobytes()


@pytest.mark.parametrize("dtype", [">f4", ">u2", ">i8", ">f8"])
def test_a_big_endian_array_is_stored_little_endian(tmp_path, dtype):
    a = np.array([1, 2, 300, -7 if "u" not in dtype else 7], dtype)
    path = tmp_path / "m.bnn"
    write_model_file(path, {}, {"a": a})
    data = path.read_bytes()
    (e,) = spec_entries(data)
    little = a.astype(a.dtype.newbyteorder("<"))
    assert np.dtype(SPEC_DTYPES[e["dtype"]]) == little.dtype
    assert data[e["offset"]:e["offset"] + e["size"]] == little.tobytes()
    _, got = read_model_file(path)
    np.testing.assert_array_equal(got["a"], a)


def test_zero_d_empty_and_six_dimensional_arrays(tmp_path):
    arrays = {"zero-d": np.array(-2.5, np.float32), "empty": np.zeros((0, 4), np.float32),
              "empty-middle": np.zeros((3, 0, 2), np.int16), "six": np.arange(64, dtype=np.uint8).reshape((2,) * 6),
              "é unicode name": np.ones(3, np.int8)}
    path = tmp_path / "m.bnn"
    write_model_file(path, {}, arrays)
    data = path.read_bytes()
    table = {e["name_str"]: e for e in spec_entries(data)}
    assert table["zero-d"]["ndim"] == 0 and table["zero-d"]["dims"] == (0,) * 6 and table["zero-d"]["size"] == 4
    assert table["empty"]["dims"] == (0, 4, 0, 0, 0, 0) and table["empty"]["size"] == 0
    assert table["empty-middle"]["dims"] == (3, 0, 2, 0, 0, 0) and table["empty-middle"]["size"] == 0
    assert table["six"]["dims"] == (2,) * 6 and table["six"]["size"] == 64
    assert table["é unicode name"]["name_len"] == len("é unicode name".encode())
    _, got = read_model_file(path)
    for name, a in arrays.items():
        assert got[name].shape == a.shape and got[name].dtype == a.dtype, name
        np.testing.assert_array_equal(got[name], a)


def test_no_arrays_at_all(tmp_path):
    path = tmp_path / "m.bnn"
    write_model_file(path, {"arch": "none"}, {})
    h = spec_header(path.read_bytes())
    assert h["count"] == 0 and h["size"] == h["data"] == len(path.read_bytes())
    meta, got = read_model_file(path)
    assert meta["arch"] == "none" and got == {}


def test_reserved_array_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        write_model_file(tmp_path / "m", {}, {"__meta__": np.zeros(1)})
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("array", [np.zeros(3, bool), np.zeros(3, np.float16), np.zeros(3, np.complex64),
                                   np.array([{"a": 1}], object), np.array(["ab"]), np.zeros((1,) * 7, np.float32)],
                         ids=["bool", "float16", "complex64", "object", "str", "7-d"])
def test_an_array_the_container_cannot_hold_is_refused_by_the_writer(tmp_path, array):
    with pytest.raises(ValueError, match="does not fit the container"):
        write_model_file(tmp_path / "m", {}, {"a": np.ones(2, np.float32), "bad": array})
    assert not os.listdir(tmp_path)


def test_a_learner_state_is_not_a_model_file(tmp_path):
    path = tmp_path / "state.bnst"
    modelfile.write_container(path, "bnncl-learner-state", 1, {}, {"w": np.ones(3, np.float32)})
    expect_error(path, "not a bnncl model file")


# -- missing, truncated, corrupt ------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.bnn", "no such model file")


def test_directory_is_not_a_model_file(tmp_path):
    expect_error(tmp_path, "is a directory, not a model file")


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.1, 0.5, 0.9, 0.99])
def test_truncated_file(either, fraction):
    path, _ = either
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])
    expect_error(path)


@pytest.mark.parametrize("cut", [1, 4, 6, 22, 63, 64, 65, 100])
def test_truncated_by_few_bytes_or_to_a_few_bytes(either, cut):
    path, _ = either
    data = path.read_bytes()
    path.write_bytes(data[:-cut])
    msg = expect_error(path)
    if is_flat(path):
        assert "truncated" in msg, msg
    path.write_bytes(data[:cut])
    expect_error(path)


@pytest.mark.parametrize("extra", [b"\0", bytes(64), b"trailing garbage"])
def test_padded_flat_file_is_refused(model, extra):
    path, _ = model
    path.write_bytes(path.read_bytes() + extra)
    expect_error(path, "not a readable model file", "padded")


@pytest.mark.parametrize("name,offset", [("b1.w", 0), ("b1.w", 1000), ("stem.w", 17), ("odd", -1)])
def test_flipped_byte_inside_array_data(either, name, offset):
    path, arrays = either
    data = bytearray(path.read_bytes())
    payload = arrays[name].tobytes()
    start = bytes(data).find(payload)
    assert start > 0 and bytes(data).find(payload, start + 1) == -1  # located exactly once
    pos = start + (offset % len(payload))
    data[pos] ^= 0x10
    path.write_bytes(bytes(data))
    msg = expect_error(path)
    if is_flat(path):
        assert "checksum mismatch" in msg, msg
    else:
        assert "checksum mismatch" in msg or "not a readable model file" in msg, msg


def _assert_every_flip_refused(path, original, positions):
    """Every single-bit flip at ``positions`` is refused (CRC-32 detects every single-bit error)."""
    for pos in positions:
        for bit in range(8):
            data = bytearray(original)
            data[pos] ^= 1 << bit
            path.write_bytes(bytes(data))
            with pytest.raises(ModelFileError) as info:
                read_model_file(path)
            assert str(path) in str(info.value), (pos, bit, str(info.value))


def test_every_bit_of_the_header_flipped_is_refused(model):
    path, _ = model
    _assert_every_flip_refused(path, path.read_bytes(), range(HEADER_SIZE))


def test_every_bit_flipped_at_a_large_sample_of_positions_is_refused(model):
    """Table, names, metadata, alignment padding and data: each of the 8 bits at 400 random positions."""
    path, _ = model
    original = path.read_bytes()
    assert len(original) > 1000
    positions = np.random.default_rng(5).choice(np.arange(HEADER_SIZE, len(original)), 400, replace=False)
    _assert_every_flip_refused(path, original, positions)


@pytest.mark.parametrize("seed,size", [(0, 0), (1, 5), (2, 100), (3, 4096)])
def test_random_bytes_file(tmp_path, seed, size):
    path = tmp_path / "junk.bnn"
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    expect_error(path)


@pytest.mark.parametrize("size", [0, 1, 56, 100, 4096])
def test_the_magic_followed_by_random_bytes(tmp_path, size):
    path = tmp_path / "junk.bnn"
    path.write_bytes(MAGIC + np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes())
    msg = expect_error(path, "not a readable model file")
    if size < 56:
        assert "truncated" in msg, msg


def test_a_file_that_is_the_magic_and_nothing_else(tmp_path):
    path = tmp_path / "m.bnn"
    path.write_bytes(MAGIC)
    expect_error(path, "not a readable model file", "truncated")


@pytest.mark.parametrize("transfer", ["CRLF -> LF", "LF -> CRLF"])
def test_a_text_mode_transfer_breaks_the_magic(model, transfer):
    path, _ = model
    data = path.read_bytes()
    path.write_bytes(data.replace(b"\r\n", b"\n") if transfer == "CRLF -> LF" else data.replace(b"\n", b"\r\n"))
    expect_error(path, "not a bnncl model file")


def test_plain_npy_file_is_refused_with_model_file_error(tmp_path):
    path = tmp_path / "weights.bnn"
    with open(path, "wb") as f:
        np.save(f, np.arange(10))
    expect_error(path)


# -- a writer bug: the CRCs hold, the structure does not --------------------------------------------------------------

def _entry(table, name):
    return next(e for e in table if e["name_str"] == name)


def _field(entry, key, value):
    return entry["at"] + E[key][0], E[key][1], value


def _hdr(key, value):
    return H[key][0], H[key][1], value


def _past(h):
    """A 64-aligned offset past the end of the file."""
    return -(-h["size"] // ALIGN) * ALIGN + ALIGN


BAD_STRUCTURE = {  # name -> (header, table) -> the edits
    "size field one byte short": lambda h, t: [_hdr("size", h["size"] - 1)],
    "size field one block long": lambda h, t: [_hdr("size", h["size"] + 64)],
    "size field 2**64-1": lambda h, t: [_hdr("size", 2**64 - 1)],
    "table offset 0": lambda h, t: [_hdr("table", 0)],
    "table offset 128": lambda h, t: [_hdr("table", 128)],
    "table offset 65": lambda h, t: [_hdr("table", 65)],
    "table past the end (count)": lambda h, t: [_hdr("count", h["count"] + h["size"] // ENTRY_SIZE)],
    "count 2**32-1": lambda h, t: [_hdr("count", 2**32 - 1)],
    "metadata offset past the end": lambda h, t: [_hdr("meta", h["size"] + 64)],
    "metadata size past the end": lambda h, t: [_hdr("meta_size", h["size"])],
    "metadata size 2**32-1": lambda h, t: [_hdr("meta_size", 2**32 - 1)],
    "metadata inside the table": lambda h, t: [_hdr("meta", HEADER_SIZE)],
    "metadata inside the header": lambda h, t: [_hdr("meta", 0)],
    "metadata running into the data": lambda h, t: [_hdr("meta_size", h["data"] - h["meta"] + 1)],
    "first data offset past the end": lambda h, t: [_hdr("data", h["size"] + 64)],
    "first data offset inside the metadata": lambda h, t: [_hdr("data", h["meta"])],
    "first data offset not a multiple of 64": lambda h, t: [_hdr("data", h["data"] - 1)],
    "tensor offset past the end": lambda h, t: [_field(_entry(t, "stem.w"), "offset", _past(h))],
    "tensor data running past the end": lambda h, t: [_field(t[-1], "offset", t[-1]["offset"] + 64)],
    "tensor offset 2**64-64": lambda h, t: [_field(_entry(t, "b1.w"), "offset", 2**64 - 64)],
    "empty tensor offset past the end": lambda h, t: [_field(_entry(t, "empty"), "offset", _past(h))],
    "tensor offset not 64-aligned": lambda h, t: [_field(_entry(t, "stem.w"), "offset",
                                                         _entry(t, "stem.w")["offset"] + 4)],
    "tensor offset inside the header": lambda h, t: [_field(_entry(t, "stem.b"), "offset", 0)],
    "tensor offset inside the table": lambda h, t: [_field(_entry(t, "stem.b"), "offset", HEADER_SIZE)],
    "tensor offset inside the metadata": lambda h, t: [_field(_entry(t, "stem.b"), "offset", h["meta"] // 64 * 64)],
    "tensor size one byte more": lambda h, t: [_field(_entry(t, "stem.w"), "size", _entry(t, "stem.w")["size"] + 1)],
    "tensor size one element less": lambda h, t: [_field(_entry(t, "stem.w"), "size", _entry(t, "stem.w")["size"] - 4)],
    "tensor size 2**64-1": lambda h, t: [_field(_entry(t, "odd"), "size", 2**64 - 1)],
    "empty tensor with a size": lambda h, t: [_field(_entry(t, "empty"), "size", 16)],
    "dimension changed, size kept": lambda h, t: [_field(_entry(t, "odd"), "dims", (3, 1, 5, 8, 0, 0))],
    "dimensions whose product overflows 64 bits": lambda h, t: [
        _field(_entry(t, "empty"), "ndim", 4), _field(_entry(t, "empty"), "dims", (2**16,) * 4 + (0, 0))],
    "dtype code 0": lambda h, t: [_field(_entry(t, "stem.w"), "dtype", 0)],
    "dtype code 11": lambda h, t: [_field(_entry(t, "stem.w"), "dtype", 11)],
    "dtype code 2**32-1": lambda h, t: [_field(_entry(t, "stem.w"), "dtype", 2**32 - 1)],
    "dtype of another size": lambda h, t: [_field(_entry(t, "stem.w"), "dtype", 2)],  # float64 over float32 bytes
    "ndim 7": lambda h, t: [_field(_entry(t, "stem.b"), "ndim", 7)],
    "ndim 2**32-1": lambda h, t: [_field(_entry(t, "stem.b"), "ndim", 2**32 - 1)],
    "non-zero unused dimension": lambda h, t: [_field(_entry(t, "stem.b"), "dims", (8, 0, 0, 0, 0, 1))],
    "non-zero dimension of a 0-d tensor": lambda h, t: [_field(_entry(t, "scalar"), "dims", (1, 0, 0, 0, 0, 0))],
    "name offset inside the header": lambda h, t: [_field(t[0], "name", 0)],
    "name offset inside the table": lambda h, t: [_field(t[1], "name", HEADER_SIZE + 8)],
    "name offset in the metadata": lambda h, t: [_field(t[1], "name", h["meta"])],
    "name offset past the end": lambda h, t: [_field(t[0], "name", 2**32 - 1)],
    "name length past the name area": lambda h, t: [_field(t[-1], "name_len", h["meta"] - t[-1]["name"])],
    "name length 2**32-1": lambda h, t: [_field(t[0], "name_len", 2**32 - 1)],
    "name without its NUL (length one short)": lambda h, t: [_field(t[2], "name_len", t[2]["name_len"] - 1)],
    "name running into the next one": lambda h, t: [_field(t[2], "name_len", t[2]["name_len"] + 1)],
    "last name running into the metadata": lambda h, t: [_field(t[-1], "name_len", t[-1]["name_len"] + 1)],
    "two tensors of one name": lambda h, t: [_field(t[3], "name", t[1]["name"]),
                                             _field(t[3], "name_len", t[1]["name_len"])],
}


@pytest.mark.parametrize("case", list(BAD_STRUCTURE))
def test_a_writer_bug_in_the_structure_is_refused(model, case):
    """Both CRCs right, one field of the header or the table wrong: a ModelFileError naming the file, never an
    IndexError, struct.error, ValueError... from reading past what the fields promise."""
    path, _ = model
    good = path.read_bytes()
    data = patched(good, BAD_STRUCTURE[case](spec_header(good), spec_entries(good)))
    assert data != good
    h = spec_header(data)
    assert h["header_crc"] == zlib.crc32(data[:60]) and h["crc"] == zlib.crc32(data[HEADER_SIZE:])
    path.write_bytes(data)
    expect_error(path, "not a readable model file")


@pytest.mark.parametrize("kind", [0, KIND_STATE, 3, 2**32 - 1])
def test_a_header_kind_that_is_not_the_metadatas_format_is_refused(model, kind):
    """The header says what the file is (the C runtime and ``container_format`` go by it): a model file whose kind
    says learner state (or nothing known) is not read as a model file."""
    path, _ = model
    path.write_bytes(patched(path.read_bytes(), [_hdr("kind", kind)]))
    assert modelfile.container_format(path) != "bnncl-model"
    expect_error(path)


@pytest.mark.parametrize("version", [2, 7, 2**32 - 1])
def test_a_newer_container_version_asks_for_an_upgrade(model, version):
    path, _ = model
    path.write_bytes(patched(path.read_bytes(), [_hdr("version", version)]))
    msg = expect_error(path, "newer", "upgrade")
    assert str(version) in msg


def test_a_newer_container_version_is_not_called_corrupt_whatever_its_layout(model):
    """A newer container may lay out its header otherwise: the version is what is reported, not its sizes."""
    path, _ = model
    path.write_bytes(patched(path.read_bytes() + bytes(100), [_hdr("version", 2), _hdr("table", 128)]))
    expect_error(path, "newer", "upgrade")


def test_a_flat_file_holding_the_bytes_of_a_zip_end_record_still_reads(tmp_path):
    """A tensor's bytes are anything, among them a zip's end-of-central-directory record near the end of the file (a
    uint8 tensor of replay bits, or of an embedded file): the file starts with the magic, so it is a flat
    container, and it reads."""
    blob = np.frombuffer(b"PK\x05\x06" + bytes(18), np.uint8)
    arrays = {"w": np.ones(3, np.float32), "blob": blob}
    path = tmp_path / "m.bnn"
    write_model_file(path, {"arch": "zip-like"}, arrays)
    assert modelfile.is_model_file(path)
    meta, got = read_model_file(path)
    assert meta["arch"] == "zip-like"
    np.testing.assert_array_equal(got["blob"], blob)


# -- the metadata and arrays altered, every CRC right (both containers) --------------------------------------------

def test_array_replaced_keeping_old_meta(either):
    path, _ = either
    meta, arrays = entries(path)
    arrays["stem.b"] = arrays["stem.b"] + np.float32(1.0)
    rewrite(path, meta, arrays)
    expect_error(path, "checksum mismatch")


@pytest.mark.parametrize("change", ["dtype", "shape", "rename", "drop", "add", "reorder"])
def test_array_altered_otherwise_keeping_old_meta(either, change):
    path, _ = either
    meta, arrays = entries(path)
    if change == "dtype":
        arrays["ints"] = arrays["ints"].view(np.uint32)  # same bytes, other dtype
    elif change == "shape":
        arrays["odd"] = arrays["odd"].reshape(3, 5, 1, 7)  # same bytes, other shape
    elif change == "rename":
        arrays["stem.bias"] = arrays.pop("stem.b")
    elif change == "drop":
        del arrays["empty"]
    elif change == "add":
        arrays["extra"] = np.zeros(3, np.float32)
    else:  # the tensors in another order: the same content, so it loads (the checksum is over the names' order)
        arrays = dict(reversed(list(arrays.items())))
        rewrite(path, meta, arrays)
        _, got = read_model_file(path)
        assert list(got) == list(arrays)
        return
    rewrite(path, meta, arrays)
    expect_error(path, "checksum mismatch")


def test_metadata_carries_its_own_checksum(either):
    path, _ = either
    meta, _ = read_model_file(path)
    assert meta["meta_sha256"] == independent_meta_checksum(meta)


@pytest.mark.parametrize("edit", ["class renamed", "input shape", "field added", "field dropped", "sha256 swapped"])
def test_metadata_altered_keeping_valid_json_and_arrays(either, edit):
    """Valid JSON, a valid container (rewritten, so the CRCs match) and the arrays' checksum intact: the metadata's
    own checksum is what notices."""
    path, _ = either
    meta, arrays = entries(path)
    if edit == "class renamed":
        meta["classes"][0] = "lion"
    elif edit == "input shape":
        meta["input_shape"] = [28, 28, 1]
    elif edit == "field added":
        meta["note"] = "edited by hand"
    elif edit == "field dropped":
        del meta["split"]
    else:  # the arrays altered and their checksum recomputed, the metadata's left
        arrays["stem.b"] = arrays["stem.b"] * 2
        meta["sha256"] = independent_checksum(arrays)
    rewrite(path, meta, arrays)
    expect_error(path, "checksum mismatch", "metadata")


def test_file_from_before_the_metadata_checksum_still_loads(either):
    path, arrays = either
    meta, raw = entries(path)
    del meta["meta_sha256"]
    rewrite(path, meta, raw)
    got_meta, got = read_model_file(path)
    assert got_meta["classes"] == META["classes"]
    assert set(got) == set(arrays)


def test_without_either_checksum_is_refused(either):
    path, _ = either
    meta, arrays = entries(path)
    del meta["meta_sha256"], meta["sha256"]
    rewrite(path, meta, arrays)
    expect_error(path, "checksum mismatch")


def test_newer_version_asks_for_upgrade(either):
    path, _ = either
    meta, arrays = entries(path)
    meta["version"] = modelfile.VERSION + 1
    rewrite(path, stamped(meta, arrays), arrays)  # a genuine file from a newer writer
    msg = expect_error(path, "newer", "upgrade")
    assert str(modelfile.VERSION + 1) in msg


@pytest.mark.parametrize("version", [0, -1, "1", 1.0, None, [1]])
def test_invalid_version(either, version):
    path, _ = either
    meta, arrays = entries(path)
    meta["version"] = version
    rewrite(path, stamped(meta, arrays), arrays)
    expect_error(path, "version")


def test_npz_without_meta(tmp_path):
    path = tmp_path / "plain.npz"
    rewrite_npz(path, {"w": np.ones(3, np.float32)})
    expect_error(path, "not a bnncl model file", "__meta__")


@pytest.mark.parametrize("fmt", ["other-model", "bnncl-learner-state", None, 1])
def test_wrong_format(either, fmt):
    path, _ = either
    meta, arrays = entries(path)
    if fmt is None:
        del meta["format"]
    else:
        meta["format"] = fmt
    rewrite(path, stamped(meta, arrays), arrays)
    expect_error(path, "not a bnncl model file")


@pytest.mark.parametrize("payload", [b"not json at all", b"\xff\xfe\x00 bad utf-8", b"[1, 2, 3]", b"\"bnncl-model\"",
                                     b"", b"{\"format\": \"bnncl-model\"", b"null"])
def test_corrupt_metadata(either, payload):
    path, _ = either
    _, arrays = entries(path)
    rewrite(path, payload, arrays)
    expect_error(path)


# -- the bnncl 0.1 npz container: its own damage ----------------------------------------------------------------------

def test_flipped_bit_anywhere_before_the_central_directory_is_refused_or_harmless(legacy_model):
    """Flip one bit at many positions in the local headers and array data: the reader either refuses with
    ModelFileError or returns exactly the original content (a flip in a zip field nobody reads, e.g. a timestamp)."""
    path, arrays = legacy_model
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
def test_flipped_bit_in_central_directory_is_a_model_file_error(legacy_model, field, bit):
    path, _ = legacy_model
    data = bytearray(path.read_bytes())
    offset = {"version needed": 6, "flags: encrypted": 8, "compression method": 10}[field]
    data[central_directory_field(data, 0, offset)] ^= 1 << bit
    path.write_bytes(bytes(data))
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


def test_npz_whose_meta_entry_is_not_uint8(legacy_model):
    path, _ = legacy_model
    raw = raw_entries(path)
    raw["__meta__"] = raw["__meta__"].astype(np.int32)
    rewrite_npz(path, raw)
    expect_error(path, "__meta__")


def test_npz_with_object_array_is_refused_not_unpickled(legacy_model):
    path, _ = legacy_model
    raw = raw_entries(path)
    buf = io.BytesIO()
    np.savez(buf, **raw, evil=np.array([{"a": 1}], dtype=object))
    path.write_bytes(buf.getvalue())
    expect_error(path)


def test_overwriting_a_legacy_file_writes_the_flat_container(legacy_model):
    path, arrays = legacy_model
    write_model_file(path, META, arrays)
    assert is_flat(path) and not zipfile.is_zipfile(path)
    _, got = read_model_file(path)
    assert set(got) == set(arrays)


# -- what a file says it is -----------------------------------------------------------------------------------------

def _make(case, path):
    arrays = {"w": np.ones(3, np.float32)}
    if case == "flat model":
        write_model_file(path, META, arrays)
    elif case == "flat learner state":
        modelfile.write_container(path, "bnncl-learner-state", 1, {}, arrays)
    elif case == "legacy model":
        write_legacy(path, META, arrays)
    elif case == "legacy learner state":
        write_legacy(path, {}, arrays, fmt="bnncl-learner-state")
    elif case == "flat model, header damaged":
        write_model_file(path, META, arrays)
        data = bytearray(path.read_bytes())
        data[20] ^= 0x04  # the size field, under the header's CRC
        path.write_bytes(bytes(data))
    elif case == "flat model, header truncated":
        write_model_file(path, META, arrays)
        path.write_bytes(path.read_bytes()[:40])
    elif case == "the magic only":
        path.write_bytes(MAGIC)
    elif case == "another zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("readme.txt", b"hello")
    elif case == "npz without metadata":
        rewrite_npz(path, arrays)
    elif case == "random bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes())
    elif case == "empty file":
        path.write_bytes(b"")
    elif case == "a directory":
        path.mkdir()
    # "missing": nothing


FORMATS = {"flat model": "bnncl-model", "flat learner state": "bnncl-learner-state", "legacy model": "bnncl-model",
           "legacy learner state": "bnncl-learner-state", "flat model, header damaged": None,
           "flat model, header truncated": None, "the magic only": None, "another zip": None,
           "npz without metadata": None, "random bytes": None, "empty file": None, "a directory": None, "missing": None}


@pytest.mark.parametrize("case", list(FORMATS))
def test_container_format_and_is_model_file(tmp_path, case):
    path = tmp_path / "file.bnn"
    _make(case, path)
    assert modelfile.container_format(path) == FORMATS[case]
    assert modelfile.is_model_file(path) == (FORMATS[case] == "bnncl-model")


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
        raise RuntimeError("serialisation failed")

    monkeypatch.setattr(modelfile, "container_bytes", boom)
    with pytest.raises(RuntimeError, match="serialisation failed"):
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
