"""The C runtime (runtime/, loaded by :mod:`bnncl.device.cruntime`) against the Python runtime's packed backend.

Oracles: the packed backend on the same model file (the same kernels' order of float32 operations: latents bit for
bit); the head's float32 sum bound (``gamma_F * sum|x w|``, twice: two float32 sums in different orders, C's fixed
one and BLAS's) for the logits; the predictions equal wherever the top two logits are further apart than that.
Bad blobs: every damage refused with a ModelFileError naming the file, never a crash (the C side is also fuzzed
under AddressSanitizer by ``make -C runtime fuzz``, part of ``make test``).
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest

from bnncl.core.errors import ConfigError, ModelFileError
from bnncl.device import Model, cruntime
from bnncl.device import modelfile as mf
from bnncl.device.cruntime import CModel, build_path
from fixtures import EXPORT_CONFIGS, exported_randomized, head_bound

pytestmark = pytest.mark.usefixtures("one_kernel_thread")


@pytest.fixture(scope="module", params=sorted(EXPORT_CONFIGS))
def exported(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    _, model, images = exported_randomized(request.param, d)
    rng = np.random.default_rng(5)
    more = rng.integers(0, 256, (40, *model.input_shape), dtype=np.uint8)
    return model, d / "model.bnn", np.concatenate([images, more])


def test_the_library_names_its_build():
    assert build_path() in ("portable", "avx2", "avx512", "neon")


def test_bnncl_library_names_the_build_to_load(tmp_path):
    """$BNNCL_LIBRARY (tools/cpu_target.py's build for another instruction set) is the library loaded; a missing
    file is a ConfigError naming it (in a fresh process: the library is loaded once per process)."""
    import subprocess
    import sys

    code = ("from bnncl.device import cruntime\n"
            "try:\n    print(cruntime.build_path())\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    missing = tmp_path / "nothing.so"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "BNNCL_LIBRARY": str(missing)},
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("ConfigError") and str(missing) in out
    ours = cruntime.library()._name
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "BNNCL_LIBRARY": ours},
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == build_path()


def test_c_runtime_equals_the_packed_backend(exported):
    model, path, images = exported
    c = Model.load(path, backend="c")
    assert c.backend == "c" and c.c_model().arena_bytes > 0
    ours = c.latent(images)
    # packed: the same C kernels called op by op from Python; float: NumPy (±1 convs by BLAS) -- independent of C
    for backend in ("packed", "float"):
        theirs = model.latent(images, backend)
        if ours.real is None:  # a binary LR layer: the packed bits (packed), the ±1 signs (float)
            assert ours.bits.dtype == np.uint64 and theirs.real is None
            if backend == "packed":
                np.testing.assert_array_equal(ours.bits, theirs.bits)
            np.testing.assert_array_equal(ours.signs(), theirs.signs(), err_msg=backend)
        else:
            np.testing.assert_array_equal(ours.real, theirs.real, err_msg=backend)
    logits_c, logits_py = c.logits(images), model.logits(images, "packed")
    bound = head_bound(model, model.latent(images, "packed"))
    assert (np.abs(logits_c.astype(np.float64) - logits_py) <= bound).all()
    top2 = np.sort(logits_py, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * bound.max(axis=1)
    assert clear.mean() > 0.9  # most images are far from a tie, so the check below covers them
    np.testing.assert_array_equal(c.predict(images)[clear], model.predict(images, "packed")[clear])


@pytest.fixture
def two_c_threads():
    before = cruntime.get_num_threads()
    cruntime.set_num_threads(2)
    yield
    cruntime.set_num_threads(before)


def test_a_batch_split_over_threads_gives_every_image_what_it_gets_alone(exported, two_c_threads):
    """The batch goes to two models on the same bytes in two threads: each image's latent and logits are the ones
    it gets alone, bit for bit (the chunk boundary falls inside the batch: 2 * MIN_IMAGES_PER_THREAD images and
    more)."""
    _, path, images = exported
    images = np.concatenate([images] * (1 + 2 * cruntime.MIN_IMAGES_PER_THREAD // len(images)))[:37]
    assert len(images) >= 2 * cruntime.MIN_IMAGES_PER_THREAD
    c = CModel(path.read_bytes(), str(path))
    latent, logits, labels = c.latent(images), c.logits(images), c.predict(images)
    assert len(c._workers) == 2  # the second model was made and used
    alone = [(c.latent(x[None]), c.logits(x[None]), c.predict(x[None])) for x in images]
    np.testing.assert_array_equal(latent, np.concatenate([a[0] for a in alone]))
    np.testing.assert_array_equal(logits, np.concatenate([a[1] for a in alone]))
    np.testing.assert_array_equal(labels, np.concatenate([a[2] for a in alone]))
    cruntime.set_num_threads(1)
    np.testing.assert_array_equal(c.logits(images), logits)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_num_threads_refuses_what_is_not_a_count(bad):
    with pytest.raises(ConfigError, match="number of threads"):
        cruntime.set_num_threads(bad)


def test_the_c_runtime_runs_the_files_own_split(exported):
    model, path, images = exported
    c = Model.load(path, backend="c")
    others = [op.name for op in c.ops[1:] if op.name != c.lr_layer]
    c.cut(others[0])
    with pytest.raises(ConfigError, match="latent-replay layer"):
        c.latent(images)
    np.testing.assert_array_equal(c.logits(images), Model.load(path, backend="c").logits(images))  # logits: whole


def restamp(data: bytearray) -> bytearray:
    """Both CRCs of a container recomputed (docs/model-format.md): only its structure is then wrong."""
    struct.pack_into("<I", data, 44, zlib.crc32(bytes(data[64:])))
    struct.pack_into("<I", data, 60, zlib.crc32(bytes(data[:60])))
    return data


def entry_offset(data: bytes, name: str) -> int:
    count = struct.unpack_from("<I", data, 24)[0]
    for i in range(count):
        at = 64 + 64 * i
        name_at, n = struct.unpack_from("<II", data, at)
        if bytes(data[name_at:name_at + n]).decode() == name:
            return at
    raise KeyError(name)


def test_bad_blobs_are_refused_with_an_error_naming_them(exported):
    _, path, _ = exported
    blob = path.read_bytes()
    rng = np.random.default_rng(11)
    cases = {"empty": b"", "magic only": blob[:8], "header only": blob[:64],
             "random": rng.integers(0, 256, len(blob), dtype=np.uint8).tobytes()}
    for cut in (1, 63, 65, len(blob) // 2, len(blob) - 1):
        cases[f"truncated to {cut}"] = blob[:cut]
    for k, pos in enumerate(rng.choice(len(blob), 40, replace=False)):
        data = bytearray(blob)
        data[pos] ^= 1 << int(rng.integers(0, 8))
        cases[f"bit flipped at {pos}"] = bytes(data)
    # structure wrong, CRCs right: the checks behind the checksums
    graph = entry_offset(blob, "graph")
    for what, offset, value in [("graph dtype", 8, 1), ("graph rows", 16, 999), ("graph offset misaligned", 40, 3),
                                ("graph offset past the end", 40, 1 << 40), ("tensor count", -24, 1 << 20)]:
        data = bytearray(blob)
        at = graph + offset if offset >= 0 else -offset
        fmt = "<Q" if offset == 40 else "<I"
        struct.pack_into(fmt, data, at, value)
        cases[what] = bytes(restamp(data))
    gdata = np.frombuffer(blob, np.uint8)  # an index in the graph pointing at a tensor that does not exist
    g_at = struct.unpack_from("<Q", blob, graph + 40)[0]
    data = bytearray(gdata.tobytes())
    struct.pack_into("<i", data, g_at + 4 * 8, 10_000)  # row 0, column 8 (the stem's weights)
    cases["graph index outside the table"] = bytes(restamp(data))
    data = bytearray(blob)
    struct.pack_into("<i", data, g_at + 4 * (20 + 1), 7)  # row 1's input channels
    cases["graph channels inconsistent"] = bytes(restamp(data))
    for what, bad in cases.items():
        with pytest.raises(ModelFileError, match="model.bnn") as info:
            CModel(bad, str(path))
        assert "\n" not in str(info.value), what


def test_a_version_2_file_from_the_python_writer_and_a_legacy_file_give_the_same_network(exported, tmp_path):
    """The kernels' weight layout is version 2's; a bnncl 0.1 file (npz, (Cout, kh, kw, words) weights) is read
    into it (the Python runtime; the C runtime reads version 2 files only)."""
    model, path, images = exported
    meta, arrays = mf.read_model_file(path)
    old = {k: (np.ascontiguousarray(np.transpose(v, (3, 0, 1, 2))) if k.endswith(("conv.weight", "shortcut.weight"))
               and v.ndim == 4 and v.dtype == np.uint64 else v) for k, v in arrays.items()
           if k not in ("graph", "input")}
    body = {k: v for k, v in meta.items() if k not in ("sha256", "meta_sha256")}
    body["version"] = 1
    body["sha256"] = mf.checksum(old)
    body["meta_sha256"] = mf.meta_checksum(body)
    import io
    import json

    buf = io.BytesIO()
    np.savez(buf, __meta__=np.frombuffer(json.dumps(body).encode(), np.uint8), **old)
    (tmp_path / "v1.bnn").write_bytes(buf.getvalue())
    legacy = Model.load(tmp_path / "v1.bnn")
    np.testing.assert_array_equal(legacy.logits(images), model.logits(images))
    with pytest.raises(ModelFileError, match="v1.bnn"):
        Model.load(tmp_path / "v1.bnn", backend="c")
