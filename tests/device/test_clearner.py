"""The C learner (runtime/include/bnn_learner.h through :mod:`bnncl.device.clearner`) against the Python device
learner (:class:`bnncl.device.Learner`, LR layer ``head``), the independent oracle: both draw from the same PCG32
generators and compute the float steps in the same order, so after every experience every consolidated row (bit for
bit), count, replay slot, label, the replay scale's float64 sums and the three generators' states are equal, on any
CPU (neither side's float steps depend on SIMD: the C library is built with -ffp-contract=off, NumPy's part uses no
exp or sum of its own choosing).

Also: ``exp_fixed`` against math.exp; the state file (resume, the older slot after a damaged newest one, refusals that
leave the file as it is); bad input refused before anything changes; ``Learner.open(runtime="c")``; the head path
without numba. ``bnncl device learn --runtime c``: tests/cli/test_device.py.
"""

from __future__ import annotations

import ctypes
import math
import subprocess
import sys

import numpy as np
import pytest
from device.test_learner import CLASSES, experiences, models, options  # noqa: F401  (models: the fixture)

from bnncl.core.errors import ConfigError, DataError, LearnerStateError
from bnncl.core.functional import exp_fixed, softmax_fixed
from bnncl.device import Learner
from bnncl.device.clearner import (
    Arrays,
    CLearner,
    Experience,
    Report,
    _lib,
    parse_state,
    python_learner_state,
    state_differences,
)
from bnncl.device.cruntime import Error, address

VARIANTS = {
    "ar1 balanced fixed": {},
    "cwr": dict(strategy="cwr"),
    "ar1 update": dict(replay_update="ar1"),
    "proportional mix": dict(replay_mix="proportional"),
    "stochastic rounding": dict(q_rounding="stochastic"),
    "float32 replay": dict(replay_storage="float32"),
    "4/6 bits, 2 epochs": dict(q_f=4, q_b=6, epochs=2),
    "16/16 bits (int64 sums)": dict(q_f=16, q_b=16),  # n 2^32 >= 2^31: the C products' int64 path
}


def assert_equal_states(c: dict, py: dict, where: str) -> None:
    """Every field of the two states, bit for bit (state_differences; checked below to see a one-bit change)."""
    diff = state_differences(c, py)
    assert not diff, f"{where}: {', '.join(diff)} differ"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_c_learner_equals_the_python_device_learner_after_every_experience(models, variant):  # noqa: F811
    opts = options(**VARIANTS[variant])
    py, c = Learner.open(models["a"], None, opts), CLearner.open(models["a"], None, opts)
    stream = experiences(n=30)
    changed = 0
    for k, (x, y) in enumerate(stream):
        before = c.state_arrays()["cw"].copy()
        py_entry, c_entry = py.learn(x, y), c.learn(x, y)
        state = c.state_arrays()
        assert state["experiences"] == k + 1 == py.experiences
        assert_equal_states(state, python_learner_state(py), f"{variant}, after experience {k}")
        changed += not np.array_equal(before, state["cw"])
        for key in ("patterns", "replayed_per_step", "steps"):
            assert c_entry[key] == py_entry[key], key
        # the loss: the same steps, its sums in double on the C side and float32 in NumPy
        assert c_entry["mean_loss"] == pytest.approx(py_entry["mean_loss"], rel=1e-5)
    assert changed == len(stream), "an experience changed nothing: the comparison would be vacuous"
    # the comparison sees one bit anywhere: a consolidated row's last bit, a replay slot's bit, a generator
    py_state = python_learner_state(py)
    for key, flip in (("cw", lambda s: s["cw"].view(np.uint32).__setitem__((0, 0), s["cw"].view(np.uint32)[0, 0] ^ 1)),
                      ("replay.data", lambda s: s["replay.data"].__setitem__((0, 0), s["replay.data"][0, 0] ^ 1))):
        if key not in py_state:
            continue
        mutated = {**state, key: state[key].copy()}
        flip(mutated)
        assert state_differences(mutated, py_state), f"a flipped bit of {key} went unseen"
    mutated = {**state, "rng": {**state["rng"], "replay": {**state["rng"]["replay"], "state": "0" * 16}}}
    assert state_differences(mutated, py_state) == ["generator replay"]
    if py.memory is not None:
        assert py.memory.size > 0
    # prediction: the C head sums in its fixed order, NumPy's in BLAS's; both within float32 rounding of float64
    x = np.concatenate([e[0] for e in stream])
    features = py.latents(x).astype(np.float64)
    exact = features @ py.cwr.cw.astype(np.float64).T
    bound = 2 * features.shape[1] * 2.0 ** -24 * (np.abs(features) @ np.abs(py.cwr.cw.astype(np.float64)).T)
    assert (np.abs(c.logits(x) - exact) <= bound).all()
    top2 = np.sort(exact, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * bound.max(axis=1)
    assert clear.mean() > 0.9
    assert np.array_equal(c.predict(x)[clear], py.predict(x)[clear])


def test_exp_fixed_against_math_exp():
    """exp_fixed within one float32 rounding of exp (math.exp in float64 as the oracle) over the softmax's domain;
    softmax_fixed's rows sum to 1 within float32 rounding."""
    x = np.concatenate([np.linspace(-110, 0, 200001, dtype=np.float32), np.float32([-0.0, -1e-30, 0.5, 88.0])])
    ours = exp_fixed(x).astype(np.float64)
    exact = np.array([math.exp(float(v)) for v in x])
    # half a float32 ulp of the exact value, plus the 1e-13 relative error before the rounding (subnormals: 2^-150)
    tol = np.maximum(np.spacing(exact.astype(np.float32)).astype(np.float64) / 2, 2.0 ** -150) + 1e-13 * exact
    assert (np.abs(ours - exact) <= tol).all()
    z = np.random.default_rng(0).standard_normal((50, 10)).astype(np.float32) * 5
    p = softmax_fixed(z)
    assert p.dtype == np.float32 and (np.abs(p.sum(axis=1) - 1) <= 12 * 2.0 ** -24).all()


# -- state -----------------------------------------------------------------------------------------------------


def test_resume_equals_an_uninterrupted_run_and_a_damaged_newest_slot_falls_back(models, tmp_path):  # noqa: F811
    opts = options()
    stream = experiences(n=30)
    whole = CLearner.open(models["a"], None, opts)
    blobs = []
    for x, y in stream:
        whole.learn(x, y)
        blobs.append(whole.state_blob())
    state = tmp_path / "s.bnls"
    first = Learner.open(models["a"], state, opts, runtime="c")
    assert isinstance(first, CLearner)
    for x, y in stream[:2]:
        first.learn(x, y)
    first.annotate(accuracy=0.5)
    resumed = Learner.open(models["a"], state, None, runtime="c")  # its own options, from the file
    assert resumed.options == first.options and resumed.experiences == 2 and resumed.log[-1]["accuracy"] == 0.5
    assert resumed.state_blob() == blobs[1]
    resumed.learn(*stream[2])
    assert resumed.state_blob() == blobs[2]
    # damage the newest slot's payload: the older slot (the experience before) loads
    data = bytearray(state.read_bytes())
    slots = [i for i in range(0, len(data) - 8, 4) if data[i:i + 8] == b"BNNSLOT1"]
    newest = max(slots, key=lambda i: int.from_bytes(data[i + 8:i + 16], "little"))
    data[newest + 32 + 200] ^= 0xFF
    state.write_bytes(bytes(data))
    older = CLearner.open(models["a"], state, opts)
    assert older.experiences == 2 and older.state_blob() == blobs[1]


def test_state_refusals_leave_the_file_as_it_is(models, tmp_path):  # noqa: F811
    opts = options()
    x, y = experiences(n=30)[0]
    c_state, py_state = tmp_path / "c.bnls", tmp_path / "py.bnst"
    CLearner.open(models["a"], c_state, opts).learn(x, y)
    Learner.open(models["a"], py_state, opts).learn(x, y)
    cases = [
        (lambda: CLearner.open(models["a"], py_state, opts), LearnerStateError, "not a state of the C learner"),
        (lambda: Learner.open(models["a"], c_state, opts), LearnerStateError, "a state of the C learner"),
        (lambda: CLearner.open(models["b"], c_state, opts), LearnerStateError, "another model"),
        (lambda: CLearner.open(models["a"], c_state, options(epochs=3)), ConfigError, r"epochs 1 \(state\) vs 3"),
    ]
    for open_, error, message in cases:
        before = {p: p.read_bytes() for p in (c_state, py_state)}
        with pytest.raises(error, match=message):
            open_()
        assert {p: p.read_bytes() for p in (c_state, py_state)} == before
    # a C learner's state saved without this wrapper's log (as another program, runtime/examples/learn_stream, saves)
    bare = tmp_path / "bare.bnls"
    other = CLearner.open(models["a"], bare, opts)
    other.learn(x, y)
    storage, err = other._storage(create=True), Error()
    assert _lib().bnn_learner_save(other._handle, ctypes.byref(storage.struct), None, 0, ctypes.byref(err)) == 0
    storage.close()
    kept = bare.read_bytes()
    with pytest.raises(LearnerStateError, match="without the log this wrapper keeps"):
        CLearner.open(models["a"], bare, opts)
    assert bare.read_bytes() == kept
    damaged = tmp_path / "damaged.bnls"
    damaged.write_bytes(b"BNNSLOT1" + bytes(100))
    with pytest.raises(LearnerStateError, match="no complete learner state"):
        CLearner.open(models["a"], damaged, opts)
    assert damaged.read_bytes() == b"BNNSLOT1" + bytes(100)


def test_what_the_c_learner_does_not_run_is_refused(models):  # noqa: F811
    with pytest.raises(ConfigError, match="fp32 learner is the Python learner's"):
        CLearner.open(models["a"], None, options(bits=32))
    with pytest.raises(ConfigError, match="at most 16 bits"):
        CLearner.open(models["a"], None, options(q_f=8, q_b=20))
    with pytest.raises(ConfigError, match="trains the head"):
        CLearner.open(models["a"], None, options(lr_layer="block2"))
    with pytest.raises(ConfigError, match="no backend or frozen_chunk"):
        Learner.open(models["a"], None, options(), frozen_chunk=4, runtime="c")


# -- bad input -----------------------------------------------------------------------------------------------------


def test_bad_experiences_are_refused_before_anything_changes(models):  # noqa: F811
    c = CLearner.open(models["a"], None, options())
    x, y = experiences(n=30)[0]
    c.learn(x, y)
    before = c.state_blob()
    with pytest.raises(DataError):
        c.learn(x, np.full(len(x), CLASSES))  # the wrapper's check (the Python learner's)
    with pytest.raises(DataError, match="empty"):
        c.learn(x[:0], y[:0])
    # the C library's own checks, past the wrapper: a label outside the classes anywhere in the experience
    labels = np.ascontiguousarray(y, np.int32)
    labels[-1] = CLASSES
    images = np.ascontiguousarray(x)
    arrays = Arrays(address(images), address(labels), int(np.prod(images.shape[1:])))
    exp = Experience(ctypes.cast(ctypes.pointer(arrays), ctypes.c_void_p), len(images),
                     ctypes.cast(_lib().bnn_arrays_read, ctypes.c_void_p))
    err = Error()
    status = _lib().bnn_learner_learn(c._handle, ctypes.byref(exp), ctypes.byref(Report()), ctypes.byref(err))
    assert status == 1 and f"label {CLASSES} is not a class of the model" in err.message.decode()
    # more images than the arena was sized for: the library refuses; the wrapper grows its arena and learns the same
    small = CLearner(models["a"], options(), None, max_patterns=10)
    status = _lib().bnn_learner_learn(small._handle, ctypes.byref(exp), ctypes.byref(Report()), ctypes.byref(err))
    assert status == 1 and "at most 10 (max_patterns)" in err.message.decode()
    assert small.experiences == 0
    small.learn(x, y)
    assert small.state_blob() == before and small._c_opts.max_patterns >= len(x) > 10  # set up again, for len(x)
    assert c.state_blob() == before and parse_state(before)["experiences"] == 1


# -- interfaces ----------------------------------------------------------------------------------------------------


def test_the_head_path_never_imports_numba(models, tmp_path):  # noqa: F811
    """Both learners of the head (Python at 8/16 bits, and C) learn without numba: the device install is NumPy and
    the C library."""
    code = f"""
import sys
from bnncl.device import Learner
from device.test_learner import experiences, options
x, y = experiences(n=20)[0]
for runtime in ("python", "c"):
    Learner.open({str(models["a"])!r}, None, options(), runtime=runtime).learn(x, y)
assert "numba" not in sys.modules, "numba was imported"
print("ok")
"""
    import os
    tests = os.path.dirname(os.path.dirname(__file__))
    env = {**os.environ, "PYTHONPATH": tests}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


READ_IMAGE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                              ctypes.POINTER(ctypes.c_uint32))


@pytest.mark.parametrize("fault", ["read fails", "labels change"])
def test_a_failing_image_source_leaves_the_learner_as_it_was(models, fault):  # noqa: F811
    """An image source that fails midway (at every 7th call from some point on, through training and the memory's
    update) or whose labels change between readings: an error, and the learner's state as before the experience."""
    c = CLearner.open(models["a"], None, options())
    stream = experiences(n=30)
    c.learn(*stream[0])
    before = c.state_blob()
    x, y = stream[1]
    images = np.ascontiguousarray(x)
    calls, flaky = [0], np.random.default_rng(0)
    for fail_after in (5, 40, 95, 125, 10_000):  # the label pass, a step, the update's label pass, its reads
        calls[0] = 0

        def read(ctx, index, image, label, fail_after=fail_after):
            calls[0] += 1
            if fault == "read fails" and calls[0] > fail_after and calls[0] % 7 == 0:
                return 1
            # labels change: a label-only reading after the first pass gives any class (the training's readings,
            # with the image, the true one): the memory update's two passes over the labels disagree
            label[0] = int(y[index]) if fault == "read fails" or image or calls[0] <= len(y) else \
                int(flaky.integers(CLASSES))
            if image:
                ctypes.memmove(image, images[index].ctypes.data, images[index].nbytes)
            return 0

        callback = READ_IMAGE(read)
        exp = Experience(None, len(images), ctypes.cast(callback, ctypes.c_void_p))
        err = Error()
        status = _lib().bnn_learner_learn(c._handle, ctypes.byref(exp), ctypes.byref(Report()), ctypes.byref(err))
        if fault == "read fails" and fail_after >= calls[0]:
            assert status == 0  # it never failed: the experience was learned (the last case)
            break
        assert status != 0, fail_after
        assert "the image source" in err.message.decode()
        if fault == "labels change":
            assert "another label on a second reading" in err.message.decode()
        assert c.state_blob() == before, f"{fault} after {fail_after} calls changed the state"
        if fault == "labels change":
            break
