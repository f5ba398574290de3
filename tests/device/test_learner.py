"""The on-device learner (:mod:`bnncl.device.learner`), on a model exported with its LR layer at the head (work A;
the blocks above an LR layer, work B: test_trainable.py). Its integer step's pieces (``IntTensor``,
``IntegerHeadStep``, ``float_head_step``): test_integer_step.py; the ``imatmul`` kernel: kernels/test_integer.py.

Oracles:

* CWR*: docs/method.md §3's formulas re-stated here in float64 NumPy, on head rows trained by a re-statement of the
  SGD step with the learner's own shuffle.
* Determinism and resume: the state of an uninterrupted run with the same seed (every array bit for bit, the meta
  data except the wall-clock ``seconds`` of the log).
* Bad input and corrupt state: the error type and message, and the bytes and mtime of the files on disk.
* SIGKILL at random moments (``learner_worker.py`` in a subprocess): the state on disk always loads, and equals the
  in-process reference state ``S_k`` for the number ``k`` of experiences it records.
"""

from __future__ import annotations

import copy
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bnncl.checkpoint import save_checkpoint
from bnncl.core.errors import ConfigError, DataError, LearnerStateError
from bnncl.core.options import LearnOptions
from bnncl.core.rng import Pcg32
from bnncl.device import Learner, modelfile
from bnncl.device.integer_step import IntegerHeadStep
from bnncl.device.learner import STATE_FORMAT, STATE_VERSION
from bnncl.export import export_checkpoint
from bnncl.models import BackboneConfig
from fixtures import F32_UNIT, assert_within_float32, float32_chain_bound, randomized

WORKER = Path(__file__).with_name("learner_worker.py")

# A tiny backbone: 8x8 grey images, 32 features at the head (a multiple of 8: whole bytes of 1-bit replay), 10 classes.
TINY = dict(input_shape=(8, 8, 1), num_classes=10, stem_channels=8, stages=((16, 1, 1), (32, 1, 2)), name="tiny")
CLASSES, FEATURES = 10, 32
# Class-incremental experiences that revisit classes (CWR* merges rows consolidated before).
CLASS_SETS = [(0, 1, 2), (2, 3, 4), (0, 4, 5)]


def tiny_randomized(seed: int):
    """The tiny model with every per-channel vector and BN statistic random."""
    return randomized(BackboneConfig(**TINY), seed)

@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_kernel_thread):  # also the kill test's worker sets one thread
    yield


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two exported tiny models (same architecture, other weights): ``a`` is the one learning, ``b`` another."""
    d = tmp_path_factory.mktemp("models")
    out = {}
    for name, seed in (("a", 1), ("b", 2)):
        save_checkpoint(d / f"{name}.pt", tiny_randomized(seed))
        export_checkpoint(d / f"{name}.pt", d / f"{name}.bnn", lr_layer="head")
        out[name] = d / f"{name}.bnn"
    return out


def options(strategy="ar1", bits=8, **kw) -> LearnOptions:
    """Small settings; ``bits`` 8 is q_f 8 / q_b 16 (packed backend), 32 the fp32 learner (float32 replay)."""
    base = dict(strategy=strategy, lr_layer="head", epochs=1, batch_size=8, replay_size=20, replay_batch=8, lr=0.05,
                q_f=bits, q_b=16 if bits < 32 else 32, replay_storage="bits" if bits < 32 else "float32")
    return LearnOptions(**{**base, **kw})


def experiences(n=12, seed=0, class_sets=CLASS_SETS):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (n, *TINY["input_shape"]), dtype=np.uint8), rng.choice(classes, n))
            for classes in class_sets]


def snapshot(learner: Learner):
    """``learner.state()`` without the wall-clock fields (the log's ``seconds``), as (meta, arrays)."""
    meta, arrays = learner.state()
    meta = copy.deepcopy(meta)
    for entry in meta["log"]:
        entry.pop("seconds")
    return meta, {k: v.copy() for k, v in arrays.items()}


def assert_same_state(ours, theirs, what="state"):
    (m1, a1), (m2, a2) = ours, theirs
    assert m1 == m2, f"{what}: meta differs"
    assert sorted(a1) == sorted(a2), f"{what}: arrays {sorted(a1)} vs {sorted(a2)}"
    for k in a1:
        assert a1[k].dtype == a2[k].dtype and a1[k].shape == a2[k].shape, f"{what}: {k} {a1[k].dtype}{a1[k].shape}"
        np.testing.assert_array_equal(a1[k], a2[k], err_msg=f"{what}: {k}")


def file_id(path: Path):
    """What must not change when a file is left as it is: its bytes and its mtime."""
    return path.read_bytes(), path.stat().st_mtime_ns


# -- 1. the learner -------------------------------------------------------------------------------------------------

CONFIGS = {
    "cwr-8/16": dict(strategy="cwr", bits=8),
    "ar1-8/16": dict(strategy="ar1", bits=8),
    "ar1-8/16-stochastic": dict(strategy="ar1", bits=8, q_rounding="stochastic"),
    "cwr-fp32": dict(strategy="cwr", bits=32),
    "ar1-fp32": dict(strategy="ar1", bits=32),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_same_seed_same_state_and_another_seed_differs(models, config):
    exps = experiences()
    runs = []
    for seed in (0, 0, 5):
        learner = Learner.open(models["a"], None, options(**CONFIGS[config], seed=seed))
        for x, y in exps:
            learner.learn(x, y)
        assert learner.experiences == len(exps) and len(learner.log) == len(exps)
        runs.append(snapshot(learner))
    assert_same_state(runs[0], runs[1], "same seed")
    # the comparison can fail: another seed (other shuffles) ends elsewhere
    assert not np.array_equal(runs[0][1]["cwr.cw"], runs[2][1]["cwr.cw"])


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_resume_from_the_state_file_equals_an_uninterrupted_run(models, config, tmp_path):
    exps, opts, state = experiences(), options(**CONFIGS[config]), tmp_path / "state.bnst"
    whole = Learner.open(models["a"], None, opts)
    for x, y in exps:
        whole.learn(x, y)

    first = Learner.open(models["a"], state, opts)
    for x, y in exps[:2]:
        first.learn(x, y)
    del first
    resumed = Learner.open(models["a"], state)  # a fresh object, settings from the state
    assert resumed.options == opts and resumed.experiences == 2
    resumed.learn(*exps[2])
    assert_same_state(snapshot(resumed), snapshot(whole))
    assert_same_state(snapshot(Learner.open(models["a"], state, opts)), snapshot(whole), "reloaded")


def _sgd64(w, h, y, lr):
    """A plain float64 re-statement of one SGD step of a bias-free linear head under mean cross-entropy."""
    z = h @ w.T
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    return w - lr * (p.T @ h) / len(y)


@pytest.mark.parametrize("bits", [32, 8])
def test_cwr_star_consolidation_matches_a_hand_computed_oracle(models, bits):
    """Two experiences (the second revisits class 2): the head the learner predicts with equals docs/method.md §3's
    consolidation, computed here in float64, of rows trained with the learner's own shuffle from the rows consolidated
    before (fp32: a float64 re-statement of the SGD step; 8/16: the integer step, held equal to the simulation in
    test_integer_step.py).
    Tolerance: float32 rounding through the steps and the consolidation (``float32_chain_bound``: per fp32 step the
    logits' sums over the features, the softmax's over the classes and the gradient's over the minibatch; the
    consolidation's mean over the present classes and its few elementwise operations)."""
    opts = options("cwr", bits, epochs=2)
    learner = Learner.open(models["a"], None, opts)
    shuffle = Pcg32(opts.seed, 0)  # the learner's shuffle generator (offset 0), mirrored
    step = IntegerHeadStep(8, 16, opts.lr, "nearest") if bits < 32 else None
    past = np.zeros(CLASSES, np.int64)
    terms = 0
    for x, y in experiences()[:2]:
        cw = learner.cwr.cw.astype(np.float64)  # consolidated before this experience (checked by the previous one)
        learner.learn(x, y)
        h = learner.latents(x)
        cur = np.bincount(y, minlength=CLASSES)
        present = cur > 0
        w = np.where((present & (past > 0))[:, None], cw, 0.0)  # begin: consolidated rows of present classes, else 0
        w = step.store(w.astype(np.float32)) if step else w
        for _ in range(opts.epochs):
            order = shuffle.permutation(len(y))
            for s in range(0, len(y), opts.batch_size):
                idx = order[s:s + opts.batch_size]
                w = step(w, h[idx], y[idx])[0] if step else _sgd64(w, h[idx].astype(np.float64), y[idx], opts.lr)
        tw = w.value().astype(np.float64) if step else w
        steps = opts.epochs * -(-len(y) // opts.batch_size)
        terms += (0 if step else steps * (h.shape[1] + CLASSES + opts.batch_size + 4)) + int(present.sum()) + 8
        a = tw[present].mean()
        for j in np.flatnonzero(present):
            new = tw[j] - a
            if past[j] == 0:
                cw[j] = new
            else:
                wpast = np.sqrt(past[j] / cur[j])
                cw[j] = (cw[j] * wpast + new) / (wpast + 1)
        past += cur
        got = learner.head_op.weight
        assert_within_float32(got, cw, float32_chain_bound(terms, np.abs(cw).max()), "consolidated rows")
        assert (got[past == 0] == 0).all()
        np.testing.assert_array_equal(learner.cwr.past, past)
        np.testing.assert_array_equal(learner.predict(x), (h @ got.T).argmax(axis=1))
    assert (past > 0).sum() == 5 and past[2] > 0


def test_ar1_counts_replayed_patterns_in_cwr_counts(models):
    """AR1*: ``cur`` counts every pattern used in the experience, new and replayed (the memory before it)."""
    learner = Learner.open(models["a"], None, options("ar1", 8))
    past = np.zeros(CLASSES, np.int64)
    for x, y in experiences():
        past += np.bincount(y, minlength=CLASSES) + learner.memory.class_counts(CLASSES)
        learner.learn(x, y)
        np.testing.assert_array_equal(learner.cwr.past, past)
    assert len(learner.memory) == 20


def test_one_bit_replay_memory(models):
    """The 1-bit memory holds the signs of the very patterns a float32 memory holds (the update rule picks patterns
    by label and random draws only, so both learners, same seed, pick the same ones), 32 times smaller, and decodes
    them as sign * (mean |latent| of the channel over the stored patterns)."""
    bits = Learner.open(models["a"], None, options("ar1", 8))
    floats = Learner.open(models["a"], None, options("ar1", 32))
    x, y = experiences()[0]
    bits.learn(x, y)
    floats.learn(x, y)
    mem = bits.memory
    assert FEATURES % 8 == 0
    assert mem.data.dtype == np.uint8 and mem.data.shape == (20, FEATURES // 8)
    assert bits.nbytes()["replay_patterns"] * 32 == floats.nbytes()["replay_patterns"] == 20 * FEATURES * 4
    assert len(mem) == len(floats.memory) == len(x)  # 12 patterns, room for 20: all of them
    # which image each float32 slot holds (float backend latents), then the same images' packed-backend latents
    h_float = floats.latents(x)
    stored = floats.memory.data[:len(mem)]
    which = np.array([np.abs(h_float - row).sum(axis=1).argmin() for row in stored])
    np.testing.assert_array_equal(stored, h_float[which])
    np.testing.assert_array_equal(floats.memory.labels[:len(mem)], y[which])
    np.testing.assert_array_equal(mem.labels[:len(mem)], y[which])
    h = bits.latents(x)[which]
    np.testing.assert_array_equal(mem.data[:len(mem)], np.packbits(h >= 0, axis=1))
    signs = np.where(h >= 0, 1.0, -1.0)
    # the memory's scale: a float64 sum rounded once to float32 (the oracle: the same mean in float64)
    expected = signs * np.abs(h.astype(np.float64)).mean(axis=0)
    assert_within_float32(mem.decode(np.arange(len(mem))), expected, 2 * F32_UNIT * np.abs(expected), "decoded")


@pytest.mark.parametrize("strategy", ["cwr", "ar1"])
def test_nbytes(models, strategy):
    small = Learner.open(models["a"], None, options(strategy, 8))
    large = Learner.open(models["a"], None, options(strategy, 32))
    x, y = experiences()[0]
    for learner in (small, large):
        learner.learn(x, y)
        nb = learner.nbytes()
        for key, value in nb.items():
            assert type(value) is int and value > 0, f"{key}: {value!r}"
        parts = ["trainable_state", "consolidated_rows", "replay_patterns", "replay_labels_and_scales"]
        assert nb["learning_state"] == sum(nb.get(k, 0) for k in parts)
        assert nb["total"] == nb["frozen_weights"] + nb["learning_state"] + nb["peak_activations"]
        json.dumps(nb)
    assert small.nbytes()["trainable_state"] == CLASSES * FEATURES * 16 // 8 + 8  # q_b 16 bits, plus scale and zero
    assert large.nbytes()["trainable_state"] == CLASSES * FEATURES * 4
    assert small.nbytes()["learning_state"] < large.nbytes()["learning_state"]



@pytest.mark.parametrize("bits", [8, 32])
def test_frozen_chunk_gives_the_same_latents_and_learning_with_a_smaller_peak(models, bits):
    """Fewer images per pass of the frozen part: the latents bit for bit, so the same learned state; the frozen
    part's peak is that of a chunk, not of the minibatch."""
    x, y = experiences(n=23)[0]
    whole = Learner.open(models["a"], None, options("ar1", bits))
    ref = whole.latents(x)
    for chunk in (1, 3, 7, 8, 23, 50):
        np.testing.assert_array_equal(Learner.open(models["a"], None, options("ar1", bits),
                                                   frozen_chunk=chunk).latents(x), ref, err_msg=f"chunk {chunk}")
    one = Learner.open(models["a"], None, options("ar1", bits), frozen_chunk=1)
    assert one.latents(x[:0]).shape == (0, FEATURES)
    peak = [0]
    whole.model.latent(x[:1], whole.backend, peak=peak)  # one image through the frozen part, measured alone
    assert one.frozen_peak_bytes == peak[0]
    assert whole.frozen_peak_bytes >= 7 * one.frozen_peak_bytes  # a minibatch of 8 images against one
    assert one.nbytes()["peak_activations"] < whole.nbytes()["peak_activations"]
    chunked = Learner.open(models["a"], None, options("ar1", bits), frozen_chunk=3)
    for images, labels in experiences():
        whole.learn(images, labels)
        chunked.learn(images, labels)
    assert_same_state(snapshot(chunked), snapshot(whole), "frozen part in chunks of 3")


def test_both_backends_give_every_image_the_same_latent_alone_or_in_a_batch(models):
    """The frozen part computes its float values in one fixed order (no BLAS, no NumPy reduction below the head): the
    packed and the float backend give the same latents bit for bit, and an image's latent does not depend on the
    other images of the call. This holds on every CPU; make test checks it on two targets (tools/cpu_target.py)."""
    x, _ = experiences(n=23)[0]
    packed = Learner.open(models["a"], None, options("ar1", 8))
    floats = Learner.open(models["a"], None, options("ar1", 32))
    assert (packed.backend, floats.backend) == ("packed", "float")
    ref = packed.latents(x)
    assert np.abs(ref).max() > 0
    np.testing.assert_array_equal(floats.latents(x), ref)
    np.testing.assert_array_equal(np.concatenate([floats.latents(x[i:i + 1]) for i in range(len(x))]), ref)
    np.testing.assert_array_equal(np.concatenate([packed.latents(x[i:i + 1]) for i in range(len(x))]), ref)


@pytest.mark.parametrize("chunk", [0, -2, 2.5, True, "4"])
def test_bad_frozen_chunk_is_refused(models, chunk):
    with pytest.raises(ConfigError, match="frozen_chunk"):
        Learner.open(models["a"], None, options("ar1", 8), frozen_chunk=chunk)

# -- 2. bad input and options ---------------------------------------------------------------------------------------

def _bad(x, y):
    n = len(x)
    return {
        "wrong image size": (x[:, :7], y, "do not fit"),
        "wrong channel count": (np.repeat(x, 3, axis=-1), y, "do not fit"),
        "float32 images": (x.astype(np.float32), y, "uint8"),
        "label of a class the head has no row for": (x, np.where(np.arange(n) == 3, 10, y), "10 classes"),
        "negative label": (x, np.where(np.arange(n) == 0, -1, y), "10 classes"),
        "labels of the wrong length": (x, y[:-1], "labels of shape"),
        "2-D labels": (x, y[:, None], "labels of shape"),
        "float labels": (x, y.astype(np.float32), "integers"),
        "empty experience": (x[:0], y[:0], "empty"),
    }


@pytest.fixture(scope="module")
def saved_state(models, tmp_path_factory):
    """An ar1 8/16 learner's state after two experiences (so ``<state>.prev`` exists), and the options."""
    d = tmp_path_factory.mktemp("saved")
    opts = options("ar1", 8)
    learner = Learner.open(models["a"], d / "state.bnst", opts)
    for x, y in experiences()[:2]:
        learner.learn(x, y)
    return d, opts


def copy_state(saved_state, tmp_path):
    d, opts = saved_state
    for name in ("state.bnst", "state.bnst.prev"):
        shutil.copy2(d / name, tmp_path / name)
    return tmp_path / "state.bnst", opts


@pytest.mark.parametrize("case", sorted(_bad(*experiences()[0])))
def test_bad_experience_is_refused_and_nothing_changes(models, saved_state, tmp_path, case):
    state, opts = copy_state(saved_state, tmp_path)
    prev = Path(str(state) + ".prev")
    learner = Learner.open(models["a"], state, opts)
    before, files = snapshot(learner), (file_id(state), file_id(prev))
    images, labels, message = _bad(*experiences()[2])[case]
    with pytest.raises(DataError, match=message):
        learner.learn(images, labels)
    assert (file_id(state), file_id(prev)) == files
    assert_same_state(snapshot(learner), before, "in memory")
    assert sorted(os.listdir(tmp_path)) == ["state.bnst", "state.bnst.prev"]


@pytest.mark.parametrize("change,message", [
    (dict(strategy="naive"), "naive"), (dict(strategy="joint"), "joint"),
    # blocks above the LR layer: the model file (exported with its LR layer at the head) has nothing to train them from
    (dict(lr_layer="block2", q_bin=8), "block2"), (dict(lr_layer="block1", q_bin=8), "block1"),
    (dict(q_ranges="fixed"), "dynamic"), (dict(q_f=8, q_b=32), "32"),
    (dict(replay_size=0), "replay_size"),
])
def test_options_the_device_does_not_run_are_refused(models, tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        Learner.open(models["a"], tmp_path / "state.bnst", options(**{"strategy": "ar1", "bits": 8, **change}))
    assert not os.listdir(tmp_path)


# -- 3. corrupt state -----------------------------------------------------------------------------------------------

def _tensor_spans(data: bytes) -> dict[str, tuple[int, int]]:
    """Every tensor's data ``[start, end)`` in the flat state file, from its tensor table (docs/model-format.md: the
    count at 24, the table's offset at 28; 64-byte entries, name offset and length at 0 and 4, data offset and size
    at 40 and 48)."""
    count, table = struct.unpack_from("<II", data, 24)
    out = {}
    for i in range(count):
        at = table + 64 * i
        name_at, name_len = struct.unpack_from("<II", data, at)
        offset, size = struct.unpack_from("<QQ", data, at + 40)
        out[data[name_at:name_at + name_len].decode()] = (offset, offset + size)
    return out


def _structure_positions(data: bytes) -> list[int]:
    """A byte of every header field, of every field of the first and the last table entry, the first byte and the NUL
    of every name, the metadata's first, middle and last byte, and every byte of padding before the data."""
    count, table, meta_at, meta_size, data_at = struct.unpack_from("<IIIII", data, 24)
    header = [0, 7, 8, 12, 16, 23, 24, 28, 32, 36, 40, 44, 48, 59, 60, 63]
    entries = [table + 64 * i + field for i in (0, count - 1) for field in (0, 4, 8, 12, 16, 36, 40, 48, 56)]
    names = []
    for i in range(count):
        name_at, name_len = struct.unpack_from("<II", data, table + 64 * i)
        names += [name_at, name_at + name_len]
    meta = [meta_at, meta_at + meta_size // 2, meta_at + meta_size - 1]
    return header + entries + names + meta + list(range(meta_at + meta_size, data_at))


def _flip(data: bytes, pos: int, mask: int) -> bytes:
    return data[:pos] + bytes([data[pos] ^ mask]) + data[pos + 1:]


CORRUPTIONS = ["truncated", "byte flipped in the middle of the largest array", "byte flipped in each tensor's data",
               "byte flipped in the header, the table, the names, the metadata and the padding", "garbage", "text",
               "a zip without metadata", "the model file"]


def corrupt(case: str, good: bytes, models, tmp_path) -> list[bytes]:
    """The damaged versions of the state file ``good`` (the flat container) for ``case``."""
    n = len(good)
    assert good.startswith(b"\x89BNNCL\r\n")
    if case == "truncated":
        return [good[:cut] for cut in (0, 1, 30, 63, 64, n // 3, n // 2, n - 23, n - 1)]
    spans = _tensor_spans(good)
    if case == "byte flipped in the middle of the largest array":
        start, end = max(spans.values(), key=lambda span: span[1] - span[0])
        return [_flip(good, (start + end) // 2, 0xFF)]
    if case == "byte flipped in each tensor's data":
        assert len(spans) >= 5
        return [_flip(good, pos, 0x01) for start, end in spans.values() if end > start
                for pos in (start, (start + end) // 2, end - 1)]
    if case == "byte flipped in the header, the table, the names, the metadata and the padding":
        return [_flip(good, pos, 0x20) for pos in _structure_positions(good)]
    if case == "garbage":
        return [np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()]
    if case == "text":
        return [b"not a state\n"]
    if case == "a zip without metadata":
        np.savez(tmp_path / "plain.npz", x=np.zeros(3))
        return [(tmp_path / "plain.npz").read_bytes()]
    return [Path(models["a"]).read_bytes()]


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_corrupt_state_is_refused_naming_the_file_and_left_as_it_is(models, saved_state, tmp_path, case):
    state, opts = copy_state(saved_state, tmp_path)
    prev = Path(str(state) + ".prev")
    for damaged in corrupt(case, state.read_bytes(), models, tmp_path):
        state.write_bytes(damaged)
        files = (file_id(state), file_id(prev))
        for given in (opts, None):
            with pytest.raises(LearnerStateError) as e:
                Learner.open(models["a"], state, given)
            assert str(state) in str(e.value)
            assert str(prev) in str(e.value)  # where the generation before is kept
        assert (file_id(state), file_id(prev)) == files


def test_flipped_bytes_anywhere_are_refused_or_harmless(models, saved_state, tmp_path):
    """A byte flipped anywhere (sampled) is refused, or (zip header fields nobody reads) loads the very same state."""
    state, opts = copy_state(saved_state, tmp_path)
    good = state.read_bytes()
    reference = snapshot(Learner.open(models["a"], state, opts))
    refused = 0
    for pos in np.random.default_rng(1).choice(len(good), 120, replace=False):
        state.write_bytes(good[:pos] + bytes([good[pos] ^ 0xFF]) + good[pos + 1:])
        try:
            loaded = Learner.open(models["a"], state, opts)
        except LearnerStateError:
            refused += 1
            continue
        assert_same_state(snapshot(loaded), reference, f"byte {pos} flipped")
    assert refused > 60


@pytest.mark.parametrize("field", ["experiences", "rng"])
def test_state_metadata_edited_is_refused(models, saved_state, tmp_path, field):
    """The count of experiences or the random state rewritten (valid JSON, a valid container with both CRCs right,
    arrays intact): refused by the metadata's checksum instead of resuming from a state that never was."""
    state, opts = copy_state(saved_state, tmp_path)
    meta, arrays = modelfile.read_container(state, STATE_FORMAT, STATE_VERSION, LearnerStateError, "state")
    assert field in meta
    meta[field] = meta[field] + 1 if field == "experiences" else {**meta[field], "edited": True}
    state.write_bytes(modelfile.pack(2, json.dumps(meta).encode(), arrays))  # kind 2: a learner state
    files = file_id(state)
    with pytest.raises(LearnerStateError, match="metadata was altered") as e:
        Learner.open(models["a"], state, opts)
    assert str(state) in str(e.value)
    assert file_id(state) == files


def test_another_models_state_is_refused(models, tmp_path):
    opts = options("ar1", 8)
    other = Learner.open(models["b"], tmp_path / "b.bnst", opts)
    other.learn(*experiences()[0])
    state = tmp_path / "a.bnst"
    shutil.copy2(tmp_path / "b.bnst", state)
    files = file_id(state)
    with pytest.raises(LearnerStateError, match="another model") as e:
        Learner.open(models["a"], state, opts)
    assert str(state) in str(e.value)
    assert file_id(state) == files


def test_other_settings_are_refused_naming_the_file(models, saved_state, tmp_path):
    state, opts = copy_state(saved_state, tmp_path)
    files = file_id(state)
    for change in (dict(lr=0.1), dict(strategy="cwr"), dict(q_f=32, q_b=32, replay_storage="float32"), dict(seed=1)):
        with pytest.raises(ConfigError, match="other settings") as e:
            Learner.open(models["a"], state, LearnOptions(**{**opts.to_dict(), **change}))
        assert str(state) in str(e.value)
    assert file_id(state) == files


def test_prev_is_the_previous_experience_and_recovers_a_corrupt_state(models, tmp_path):
    exps, opts, state = experiences(), options("ar1", 8), tmp_path / "state.bnst"
    prev = Path(str(state) + ".prev")
    whole = Learner.open(models["a"], None, opts)
    states = [snapshot(whole)]
    for x, y in exps:
        whole.learn(x, y)
        states.append(snapshot(whole))

    learner = Learner.open(models["a"], state, opts)
    learner.learn(*exps[0])
    assert state.exists() and not prev.exists()
    learner.learn(*exps[1])
    assert_same_state(snapshot(Learner.open(models["a"], prev, opts)), states[1], "prev after two saves")
    assert_same_state(snapshot(Learner.open(models["a"], state, opts)), states[2], "state after two saves")
    # the state file is damaged: the previous generation takes over, and the stream continues from it
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(LearnerStateError):
        Learner.open(models["a"], state, opts)
    shutil.copy2(prev, state)
    learner = Learner.open(models["a"], state, opts)
    for x, y in exps[learner.experiences:]:
        learner.learn(x, y)
    assert_same_state(snapshot(learner), states[-1], "recovered from prev")


# -- 4. SIGKILL at random moments -----------------------------------------------------------------------------------

KILL_EXPERIENCES, KILL_IMAGES, MIN_TRIALS = 8, 8, 50


def test_sigkill_at_random_moments_leaves_a_state_that_loads_and_resumes_exactly(models, tmp_path):
    """Chained trials: a worker (``learner_worker.py``, its own process) resumes from whatever the previous kill left
    and is killed with SIGKILL at a random moment of its learning (after it reports ``ready``: the imports are not
    worth killing). After each kill the state file, when there is one, loads and equals the in-process reference S_k
    for the k experiences it records; k never goes back; ``<state>.prev`` is S_(k-1) or S_k (a kill between the two
    renames of a save leaves both the same); and nothing but temporary files (names starting with '.') lies beside
    them. A run that completes restarts the chain from scratch."""
    opts = options("ar1", 8, q_rounding="stochastic")  # stochastic rounding: resuming needs the quantizer's generator
    class_sets = [(2 * k % 10, (2 * k + 1) % 10, (2 * k + 5) % 10) for k in range(KILL_EXPERIENCES)]
    exps = experiences(KILL_IMAGES, seed=7, class_sets=class_sets)
    data = tmp_path / "data.npz"
    np.savez(data, images=np.stack([x for x, _ in exps]), labels=np.stack([y for _, y in exps]))
    ref = Learner.open(models["a"], None, opts)
    states = [snapshot(ref)]
    for x, y in exps:
        ref.learn(x, y)
        states.append(snapshot(ref))

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    state, prev = run_dir / "state.bnst", run_dir / "state.bnst.prev"
    cmd = [sys.executable, str(WORKER), str(models["a"]), str(state), str(data), json.dumps(opts.to_dict())]
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}  # see one_kernel_thread

    def start():
        """The worker, once it is ready to learn; returns (process, experiences it starts from)."""
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if not select.select([proc.stdout], [], [], 60)[0]:
            proc.kill()
            pytest.fail(f"the worker was not ready after 60 s: {proc.communicate()[1]}")
        line = proc.stdout.readline().split()
        if line[:1] != ["ready"]:
            _, err = proc.communicate()
            pytest.fail(f"the worker did not start ({proc.returncode}): {err}")
        return proc, int(line[1])

    def finish(proc):
        _, err = proc.communicate()
        assert proc.returncode in (0, -signal.SIGKILL), f"the worker failed ({proc.returncode}): {err}"
        return proc.returncode

    def clear():
        for p in run_dir.iterdir():
            p.unlink()

    def load(path):
        learner = Learner.open(models["a"], path, opts)
        return learner.experiences, snapshot(learner)

    # Calibration: an uninterrupted run from scratch (it must end at the reference), then one with nothing left.
    proc, k0 = start()
    t0 = time.perf_counter()
    assert proc.stdout.readline().split() == ["done", str(KILL_EXPERIENCES)]
    t_learn = time.perf_counter() - t0  # ready to done: the learning and the saving
    assert finish(proc) == 0 and k0 == 0
    k, got = load(state)
    assert k == KILL_EXPERIENCES
    assert_same_state(got, states[k], "a whole worker run")
    files = file_id(state)
    proc, k0 = start()
    assert finish(proc) == 0 and k0 == KILL_EXPERIENCES
    assert file_id(state) == files, "a worker with nothing left to learn rewrote the state"
    clear()

    rng = np.random.default_rng(12345)
    stats = dict(completed=0, no_state_yet=0, mid_stream=0, resumed_and_progressed=0, temporary_files_left=0)
    k_before, t0 = 0, time.perf_counter()
    for trial in range(MIN_TRIALS):
        proc, k0 = start()
        assert k0 == k_before, f"trial {trial}: the worker resumed from {k0} experiences, the state holds {k_before}"
        time.sleep(rng.uniform(0, 1.1 * t_learn))
        proc.send_signal(signal.SIGKILL)  # nothing happens if it has already exited
        completed = finish(proc) == 0
        stray = [p for p in os.listdir(run_dir) if p not in (state.name, prev.name) and not p.startswith(".")]
        assert not stray, f"trial {trial}: files a reader could take for the state: {stray}"
        stats["temporary_files_left"] += any(p.startswith(".") for p in os.listdir(run_dir))  # killed mid-save
        if not state.exists():
            assert k_before == 0 and not completed, f"trial {trial}: no state after {k_before} experiences"
            assert not prev.exists()
            stats["no_state_yet"] += 1
            continue
        k, got = load(state)
        assert k_before <= k <= KILL_EXPERIENCES, f"trial {trial}: {k} experiences after {k_before}"
        assert_same_state(got, states[k], f"trial {trial}: the state of {k} experiences")
        if k >= 2:
            assert prev.exists(), f"trial {trial}: no {prev.name} after {k} saves"
        if prev.exists():
            j, got_prev = load(prev)
            assert j in (k - 1, k), f"trial {trial}: {prev.name} holds {j} experiences, the state {k}"
            assert_same_state(got_prev, states[j], f"trial {trial}: {prev.name}")
        assert k == KILL_EXPERIENCES or not completed
        stats["mid_stream"] += 0 < k < KILL_EXPERIENCES
        stats["resumed_and_progressed"] += 0 < k_before < k
        if k == KILL_EXPERIENCES:  # done: the next trial starts from scratch
            stats["completed"] += 1
            clear()
            k = 0
        k_before = k
    elapsed = time.perf_counter() - t0
    # the trials must have exercised what they are for (the timing is calibrated so that they do)
    assert stats["mid_stream"] >= 10 and stats["resumed_and_progressed"] >= 5 and stats["completed"] >= 1, \
        f"{stats} over {MIN_TRIALS} trials ({elapsed:.0f} s; the worker learns the whole stream in {t_learn:.3f} s)"


def test_annotating_keeps_prev_at_the_experience_before(models, tmp_path):
    """annotate() rewrites the state of the same experience: .prev stays the state of the experience before."""
    state = tmp_path / "s.bnst"
    learner = Learner.open(models["a"], state, options())
    for x, y in experiences()[:2]:
        learner.learn(x, y)
    learner.annotate(accuracy=0.5)
    prev = Learner.open(models["a"], Path(str(state) + ".prev"))
    assert prev.experiences == 1 and "accuracy" not in prev.log[-1]
    again = Learner.open(models["a"], state)
    assert again.experiences == 2 and again.log[-1]["accuracy"] == 0.5


def test_a_save_after_a_kill_between_the_two_renames_leaves_no_temporary_file(models, tmp_path):
    """Killed after .prev became a second name of the state but before the new state was written: the next save's
    rename of the temporary link onto .prev is a no-op (the same file), and the link must not stay behind."""
    state = tmp_path / "s.bnst"
    learner = Learner.open(models["a"], state, options())
    learner.learn(*experiences()[0])
    prev = Path(str(state) + ".prev")
    os.link(state, prev)  # what the kill left: .prev and the state are one file
    learner.learn(*experiences()[1])
    assert sorted(os.listdir(tmp_path)) == ["s.bnst", "s.bnst.prev"]
    assert Learner.open(models["a"], prev).experiences == 1 and Learner.open(models["a"], state).experiences == 2


def test_api_errors_are_the_librarys_own_one_line_errors(models):
    """The Python API refuses what the CLI refuses, with the same error types (BnnclError) and messages."""
    from bnncl.core.errors import BnnclError
    from bnncl.device import Model

    model = Model.load(models["a"])
    x, _ = experiences()[0]
    cases = [(lambda: model.predict(x, batch_size=0), ConfigError, "batch_size must be a whole number"),
             (lambda: model.predict(x, batch_size=2.5), ConfigError, "batch_size"),
             (lambda: model.predict(x, backend="gpu"), ConfigError, "unknown backend 'gpu' \\(valid: packed, float"),
             (lambda: Model.load(None), ConfigError, "Model.load takes the path of a model file"),
             (lambda: LearnOptions(epochs="2"), ConfigError, "epochs must be a whole number \\(not '2'\\)"),
             (lambda: LearnOptions(replay_size=2.5), ConfigError, "replay_size must be a whole number"),
             (lambda: Learner.open(models["a"], None, options(), frozen_chunk=0), ConfigError, "frozen_chunk")]
    for call, kind, match in cases:
        with pytest.raises(kind, match=match) as info:
            call()
        assert isinstance(info.value, BnnclError) and len(str(info.value).splitlines()) == 1


def test_a_failure_midway_puts_the_learner_back(models, tmp_path, monkeypatch):
    """An error in the middle of an experience (here: NaN reaching a quantizer on the 2nd step) leaves the learner,
    in memory and on disk, as it was before the experience; learning again gives the uninterrupted result."""
    from bnncl.core.affine import NonFiniteError as NFE

    exps = experiences()
    state = tmp_path / "s.bnst"
    learner = Learner.open(models["a"], state, options())
    learner.learn(*exps[0])
    meta_before, arrays_before = snapshot(learner)
    on_disk = state.read_bytes()
    calls = {"n": 0}
    original = learner.part.train_step

    def failing(x, y):
        calls["n"] += 1
        if calls["n"] == 2:
            raise NFE("NaN reached the quantizer at head input")
        return original(x, y)

    monkeypatch.setattr(learner.part, "train_step", failing)
    with pytest.raises(NFE):
        learner.learn(*exps[1])
    meta_after, arrays_after = snapshot(learner)
    assert meta_after == meta_before and arrays_after.keys() == arrays_before.keys()
    for k in arrays_before:
        np.testing.assert_array_equal(arrays_after[k], arrays_before[k], err_msg=k)
    assert state.read_bytes() == on_disk
    monkeypatch.setattr(learner.part, "train_step", original)
    learner.learn(*exps[1])
    reference = Learner.open(models["a"], None, options())
    for x, y in exps[:2]:
        reference.learn(x, y)
    for k, v in snapshot(reference)[1].items():
        np.testing.assert_array_equal(snapshot(learner)[1][k], v, err_msg=k)
