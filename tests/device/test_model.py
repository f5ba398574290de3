"""The device runtime's model (:mod:`bnncl.device.model`): ``Model.load`` of an exported file, the consistency checks
of its metadata against its arrays, ``cut`` (the latent-replay layer moved and back), the checks of images and
labels (on models of several shapes), and running the network in batches.

Oracles: the file's own metadata (read with ``read_model_file``) and the torch model's configuration; the uncut
network (the logits bit for bit, wherever it is cut); the exact (float64) product of the head with the features,
which every batching of ``logits`` stays within float32 rounding of (only the head's BLAS product may sum in another
order for another batch size: docs in :mod:`bnncl.device.ops`); the error type and message. Export against torch:
tests/test_export.py; the file format: test_modelfile.py."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest

from bnncl.checkpoint import save_checkpoint
from bnncl.core.errors import ConfigError, DataError, ModelFileError
from bnncl.device import Model, cruntime
from bnncl.device.kernels import _native
from bnncl.device.modelfile import read_model_file
from bnncl.device.ops import Activation, Binarize, Block, FoldedStem, GlobalPool, Head
from bnncl.export import export_checkpoint
from bnncl.models import BackboneConfig
from fixtures import EXPORT_CONFIGS, exported_randomized, float32_sum_bound, randomized

# 8x8 grey images, 5 classes; a binarize layer before block2 (the LR layer the export records), block3 above it
CONFIG = BackboneConfig(input_shape=(8, 8, 1), num_classes=5, stem_channels=5, stages=((5, 1, 1), (15, 2, 2)),
                        binary_boundary="block2", name="tiny")
NAMES = ["stem", "block1", "binarize", "block2", "block3", "pool", "head"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_kernel_thread):
    yield


@pytest.fixture(scope="module")
def tiny_exported(tmp_path_factory):
    """The tiny model exported: (path of the model file, what export returned)."""
    d = tmp_path_factory.mktemp("model")
    save_checkpoint(d / "tiny.pt", randomized(CONFIG, 1))
    return d / "tiny.bnn", export_checkpoint(d / "tiny.pt", d / "tiny.bnn")


@pytest.fixture
def model(tiny_exported):
    """The tiny model, loaded afresh (``cut`` changes it)."""
    return Model.load(tiny_exported[0])


@pytest.fixture(scope="module", params=sorted(EXPORT_CONFIGS))
def exported(request, tmp_path_factory):
    """Models of other shapes (RGB, odd widths, strided stems: ``EXPORT_CONFIGS``), exported."""
    return exported_randomized(request.param, tmp_path_factory.mktemp(request.param))


def images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)


# -- Model.load -----------------------------------------------------------------------------------------------------

def test_load_reads_the_exported_file(tiny_exported):
    path, recorded = tiny_exported
    meta, _ = read_model_file(path)
    for given in (path, str(path)):
        model = Model.load(given)
        assert model.path == str(path)
        assert model.input_shape == CONFIG.input_shape == tuple(meta["input_shape"])
        assert model.num_classes == CONFIG.num_classes == len(model.class_names)
        assert model.class_names == meta["class_names"]
        assert model.lr_layer == recorded["lr_layer"] == meta["lr_layer"] == "block2"
        assert [op.name for op in model.ops] == [layer["name"] for layer in meta["layers"]] == NAMES
        assert [type(op) for op in model.ops] == [FoldedStem, Block, Binarize, Block, Block, GlobalPool, Head]
        assert [op.name for op in model.frozen_ops] == recorded["frozen"] == ["stem", "block1", "binarize"]
        assert [op.name for op in model.trainable_ops] == recorded["trainable"]
        assert [op.name for op in model.binary_layers()] == ["block1", "block2", "block3"]
        assert model.train_arrays and all(k.startswith("train.") for k in model.train_arrays)
        assert any(k.startswith("train.block2.") for k in model.train_arrays)
    assert model.describe() == ("tiny: input 8x8x1, 5 classes; frozen [stem, block1, binarize] -> LR layer -> "
                                "trainable [block2, block3, pool, head]")


def test_load_links_the_ops(model):
    """Each op's fused threshold is the next op's input threshold, and it keeps its real output only if the next op
    reads it (``link``: test_ops.py)."""
    for op, nxt in zip(model.ops, model.ops[1:]):
        assert op.out_threshold is nxt.in_threshold, op.name
        assert op.keep_real == nxt.needs_real_input, op.name
    assert [op.name for op in model.ops if op.out_threshold is not None] == ["stem", "block1", "block2"]
    assert model.ops[-1].keep_real


def test_load_refuses_anything_but_a_path():
    for bad in (None, 3, b"tiny.bnn", ["tiny.bnn"]):
        with pytest.raises(ConfigError, match="Model.load takes the path of a model file, not "):
            Model.load(bad)


def _inconsistent(tiny_exported, edit):
    meta, arrays = read_model_file(tiny_exported[0])
    meta, arrays = copy.deepcopy(meta), dict(arrays)
    edit(meta, arrays)
    return meta, arrays


@pytest.mark.parametrize("case,edit,message", [
    ("class names", lambda m, a: m.update(class_names=m["class_names"][:-1]),
     r"\(4 class names for a head of 5 rows\)"),
    ("lr layer", lambda m, a: m.update(lr_layer="block99"), "latent-replay layer 'block99' is not one of its layers"),
    ("stem channels", lambda m, a: m.update(input_shape=[8, 8, 3]), "input_shape has 3 channels, the stem takes 1"),
    ("input shape", lambda m, a: m.update(input_shape=[8, 8]), "input_shape \\[8, 8\\] is not three positive whole"),
    ("class names type", lambda m, a: m.update(class_names="01234"), "class_names is not a list of names"),
    ("layers", lambda m, a: m.update(layers=[{"kind": "head"}]), "layers is not a list of layers with a kind and a"),
    ("an array missing", lambda m, a: a.pop("block3.mult"), "layer table does not match the arrays \\(KeyError"),
    ("a layer kind", lambda m, a: m["layers"][5].update(kind="pool3d"), "unknown layer kind 'pool3d' in pool"),
    ("no head last", lambda m, a: m.update(layers=m["layers"][:-1]), "class names for a head of no rows"),
])
def test_metadata_inconsistent_with_the_arrays_is_refused_naming_the_file(tiny_exported, case, edit, message):
    meta, arrays = _inconsistent(tiny_exported, edit)
    with pytest.raises(ModelFileError, match=message) as e:
        Model(meta, arrays, "edited.bnn")
    assert str(e.value).startswith("edited.bnn: "), str(e.value)
    Model(*read_model_file(tiny_exported[0]), "intact.bnn")  # the same file unedited loads


# -- cut ------------------------------------------------------------------------------------------------------------

def test_cut_anywhere_gives_the_same_network_and_cuts_back(model):
    x = images(9)
    ref = {b: model.logits(x, b) for b in ("packed", "float")}
    frozen, trainable = list(model.frozen_ops), list(model.trainable_ops)
    for k, name in enumerate(NAMES[1:], start=1):
        model.cut(name)
        assert model.lr_layer == name
        assert model.frozen_ops == model.ops[:k] and model.trainable_ops == model.ops[k:]
        for backend, logits in ref.items():
            np.testing.assert_array_equal(model.logits(x, backend), logits, err_msg=f"cut at {name} ({backend})")
    latent = model.latent(x)  # cut at the head: the features, the pool's output
    assert latent.real.shape == (9, 15) and latent.bits is None
    np.testing.assert_array_equal(model.logits_from_latent(latent), ref["packed"])
    model.cut("block2")
    assert model.frozen_ops == frozen and model.trainable_ops == trainable
    assert model.latent(x).real is None and model.latent(x).bits.dtype == np.uint64  # binary at block2: bits only


@pytest.mark.parametrize("where", ["stem", "block7", "Block2", ""])
def test_cut_refuses_a_layer_it_cannot_cut_at_naming_the_file(model, where):
    before = (model.lr_layer, list(model.frozen_ops))
    with pytest.raises(ConfigError, match=f"^{model.path}: no layer '{where}' to put the latent-replay layer at "
                                          r"\(valid: block1, binarize, block2, block3, pool, head\)$"):
        model.cut(where)
    assert (model.lr_layer, list(model.frozen_ops)) == before


# -- check_images, check_labels -------------------------------------------------------------------------------------

def test_check_images_takes_uint8_of_the_input_shape_and_adds_a_grey_channel(model):
    x = images(4)
    assert model.check_images(x) is x
    np.testing.assert_array_equal(model.check_images(x[..., 0]), x)  # (N, H, W) for one channel
    assert model.check_images(x[:0]).shape == (0, 8, 8, 1)


@pytest.mark.parametrize("bad,message", [
    (images(3)[:, :7], r"images of shape \(3, 7, 8, 1\) do not fit the model's input \(N, 8, 8, 1\)"),
    (np.repeat(images(3), 3, axis=-1), r"images of shape \(3, 8, 8, 3\) do not fit"),
    (images(3)[0], r"do not fit the model's input \(N, 8, 8, 1\)"),  # one image without its batch axis
    (images(1)[0, ..., 0], r"images of shape \(8, 8\) do not fit"),
    (images(3).astype(np.float32), "images must be uint8 pixels \\(0-255\\), got float32"),
    (images(3).astype(np.int64).tolist(), "images must be uint8 pixels \\(0-255\\), got int64"),
])
def test_check_images_refusals(model, bad, message):
    with pytest.raises(DataError, match=message):
        model.check_images(bad)
    with pytest.raises(DataError, match=message):  # and everything that runs the network checks them
        model.predict(bad)


def test_device_refuses_bad_images(exported):
    _, device, images = exported
    with pytest.raises(DataError, match="uint8"):
        device.predict(images.astype(np.float32))
    with pytest.raises(DataError, match="do not fit"):
        device.predict(images[:, :-1])


def test_check_labels_returns_int64_labels_of_the_heads_classes(model):
    got = model.check_labels(np.array([0, 4, 2], np.int8), 3)
    assert got.dtype == np.int64 and got.tolist() == [0, 4, 2]
    assert model.check_labels([1, 1], 2).tolist() == [1, 1]


@pytest.mark.parametrize("labels,n,message", [
    (np.array([0, 1]), 3, r"labels of shape \(2,\) for 3 images \(expected \(3,\)\)"),
    (np.array([[0], [1]]), 2, r"labels of shape \(2, 1\) for 2 images"),
    (np.array([0.0, 1.0]), 2, "labels must be integers, got float64"),
    (np.array([0, 5, 1]), 3, r"label 5 is outside the head's 5 classes \(0-4\)"),
    (np.array([-1, 0]), 2, r"label -1 is outside the head's 5 classes \(0-4\)"),
])
def test_check_labels_refusals(model, labels, n, message):
    with pytest.raises(DataError, match=message):
        model.check_labels(labels, n)


# -- running the network --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["packed", "float"])
def test_logits_in_batches_equal_one_call(model, backend):
    """The features are the same bit for bit however the images are batched; the logits are within float32 rounding
    of the exact product of those features with the head, for every batch size, and the predictions are the same."""
    x = images(23, seed=3)
    model.cut("head")
    features = model.latent(x, backend).real
    model.cut("block2")
    w = model.ops[-1].weight.astype(np.float64)
    exact = features.astype(np.float64) @ w.T
    bound = float32_sum_bound(np.abs(features.astype(np.float64)) @ np.abs(w).T, w.shape[1])
    one_call = model.logits(x, backend)
    top2 = np.sort(exact, axis=1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0] > 4 * bound.max()).all()  # no near-tie: the predictions are well defined
    for batch_size in (1, 2, 7, 22, 23, 100, np.int64(5)):
        got = model.logits(x, backend, batch_size=batch_size)
        assert got.dtype == np.float32 and got.shape == (23, 5)
        assert (np.abs(got - exact) <= bound).all(), f"batch size {batch_size}"
        np.testing.assert_array_equal(model.predict(x, backend, batch_size), exact.argmax(1))
    assert (np.abs(one_call - exact) <= bound).all()
    empty = model.logits(x[:0], backend)
    assert empty.shape == (0, 5) and empty.dtype == np.float32


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, "4", None])
def test_logits_refuses_a_batch_size_that_is_not_a_whole_number_of_images(model, batch_size):
    with pytest.raises(ConfigError, match="batch_size must be a whole number of images, at least 1"):
        model.logits(images(2), batch_size=batch_size)


def test_an_unknown_backend_is_refused_before_anything_runs(model):
    """The ops take any name but "packed" for the float backend (test_ops.py); the model refuses the name."""
    x = images(2)
    for run in (lambda: model.logits(x, "gpu"), lambda: model.predict(x, "Packed"), lambda: model.latent(x, "gpu"),
                lambda: model.logits_from_latent(Activation(5, None, None), "fp16")):
        with pytest.raises(ConfigError, match=r"unknown backend '\w+' \(valid: packed, float, c\)"):
            run()


def test_timings_and_peak_count_every_op_that_ran(model):
    x = images(6)
    timings, peak = {}, [0]
    model.latent(x, timings=timings, peak=peak)
    assert sorted(timings) == sorted(["stem", "block1", "binarize"]) and all(t >= 0 for t in timings.values())
    # the stem's input and output are both real: at least 6 images of 8x8x(1 + 5) float32
    assert peak[0] >= 6 * 8 * 8 * (1 + 5) * 4
    timings = {}
    model.logits(x, timings=timings)
    assert sorted(timings) == sorted(NAMES)


def test_the_packed_backend_split_over_threads_gives_every_image_what_it_gets_alone(exported, monkeypatch):
    """Every kernel call split over three threads (however small: MIN_NS_PER_THREAD 0) gives the latents and logits
    of one thread, and of each image run alone, bit for bit."""
    _, model, x = exported
    latent, logits = model.latent(x, "packed"), model.logits(x, "packed")
    alone = [model.latent(x[i:i + 1], "packed") for i in range(len(x))]
    before = cruntime.get_num_threads()
    monkeypatch.setattr(_native, "MIN_NS_PER_THREAD", 0)
    cruntime.set_num_threads(3)
    try:
        split_latent, split_logits = model.latent(x, "packed"), model.logits(x, "packed")
    finally:
        cruntime.set_num_threads(before)
    for part in ("real", "bits"):
        ours = getattr(split_latent, part)
        assert (ours is None) == (getattr(latent, part) is None)
        if ours is not None:
            np.testing.assert_array_equal(ours, getattr(latent, part))
            np.testing.assert_array_equal(ours, np.concatenate([getattr(a, part) for a in alone]))
    np.testing.assert_array_equal(split_logits, logits)


# -- what inference imports -----------------------------------------------------------------------------------------

def test_packed_inference_does_not_import_numba(exported, tmp_path):
    """numba compiles the learner's integer kernels only: loading a model and running it on the packed backend (the
    C kernels, the binary 1x1 shortcut of "odd" included) imports NumPy and the C library, never numba. In a fresh
    process, which gives what this one gives."""
    _, model, x = exported
    np.save(tmp_path / "x.npy", x)
    code = ("import sys\n"
            "import numpy as np\n"
            "from bnncl.device import Model\n"
            f"m = Model.load({model.path!r})\n"
            f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
            "print(','.join(map(str, m.predict(x, 'packed'))))\n"
            "m.latent(x, 'packed')\n"
            "assert 'numba' not in sys.modules, 'numba was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ",".join(map(str, model.predict(x, "packed")))
