"""The C learner (runtime/include/bnn_learner.h) from Python: ``Learner.open(..., runtime="c")`` and
``bnncl device learn --runtime c``.

The same learning as :class:`bnncl.device.Learner` with the head as the trainable part (LR layer ``head``), bit for
bit (tests/device/test_clearner.py), computed by the C library in one arena: the frozen part, the integer step at
``q_f``/``q_b``, CWR*, the replay memory. Only the integer step runs there (``q_f``, ``q_b`` at most 16); the fp32
learner and the blocks' back-propagation (work B) are the Python learner's.

State: one file of two slots (runtime/include/bnn_store.h), each the C learner's state blob (docs/learner-state.md)
with this wrapper's log of the experiences (JSON) in its user bytes: a save goes to the slot that does not hold the
newest state, so a power cut at any byte leaves the last complete state loadable, and that slot is the previous
generation (no ``.prev`` file). A file that is not such a state (the Python learner's, another model's, other
settings') is refused with an error naming it, and left as it is.
"""

from __future__ import annotations

import ctypes
import json
import os
import time
import zlib
from pathlib import Path

import numpy as np

from bnncl import __version__
from bnncl.core.affine import FLOAT_BITS
from bnncl.core.errors import ConfigError, DataError, LearnerStateError, OutputError
from bnncl.core.options import LearnOptions
from bnncl.core.protocol import DEVICE_STRATEGIES
from bnncl.device.cruntime import Error, address, library
from bnncl.device.integer_step import quantized_bytes
from bnncl.device.model import Model

SLOT_HEADER_BYTES = 32
USER_BYTES = 1 << 20  # room for the log in a saved state (about 1,000 experiences of 10 classes)
STATE_HEADER = 192
NUMERIC = 9  # BNN_ERR_NUMERIC
STRATEGIES = {"cwr": 0, "ar1": 1}
STORAGES = {"bits": 0, "float32": 1}
UPDATES = {"balanced": 0, "ar1": 1}
MIXES = {"fixed": 0, "proportional": 1}
ROUNDINGS = {"nearest": 0, "stochastic": 1}


class COptions(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in ("strategy", "epochs", "batch_size", "replay_size",
                                                     "replay_storage", "replay_update", "replay_mix",
                                                     "replay_batch", "q_f", "q_b", "rounding")] + \
               [("lr", ctypes.c_double), ("seed", ctypes.c_int64), ("max_patterns", ctypes.c_uint32),
                ("user_bytes", ctypes.c_uint32)]


class Memory(ctypes.Structure):
    NAMES = ("model", "minibatch", "head_step", "replay", "state", "indices", "total")
    _fields_ = [(name, ctypes.c_size_t) for name in NAMES]


class Experience(ctypes.Structure):
    _fields_ = [("ctx", ctypes.c_void_p), ("count", ctypes.c_size_t), ("read", ctypes.c_void_p)]


class Arrays(ctypes.Structure):
    _fields_ = [("images", ctypes.c_void_p), ("labels", ctypes.c_void_p), ("image_bytes", ctypes.c_size_t)]


class Report(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in ("experience", "patterns", "replayed_per_step", "steps")] + \
               [("mean_loss", ctypes.c_double)]


READ = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_size_t, ctypes.c_void_p,
                        ctypes.c_size_t)
FLUSH = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint)


class Storage(ctypes.Structure):
    _fields_ = [("ctx", ctypes.c_void_p), ("slot_bytes", ctypes.c_size_t), ("read", READ), ("write", READ),
                ("flush", FLUSH)]


def _lib():
    lib = library()
    if not getattr(lib, "_learner_declared", False):
        p, size, err = ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(Error)
        lib.bnn_learner_arena_size.argtypes = [p, size, ctypes.POINTER(COptions), ctypes.POINTER(Memory), err]
        lib.bnn_learner_init.argtypes = [p, size, ctypes.POINTER(COptions), p, size, ctypes.POINTER(p), err]
        lib.bnn_learner_learn.argtypes = [p, ctypes.POINTER(Experience), ctypes.POINTER(Report), err]
        lib.bnn_learner_predict.argtypes = [p, p, size, p, err]
        lib.bnn_learner_logits.argtypes = [p, p, size, p, err]
        lib.bnn_learner_state_bytes.argtypes = [p]
        lib.bnn_learner_state_bytes.restype = size
        lib.bnn_learner_serialize.argtypes = [p, p, size, p, size, ctypes.POINTER(size), err]
        lib.bnn_learner_deserialize.argtypes = [p, p, size, p, size, ctypes.POINTER(size), err]
        lib.bnn_learner_state_options.argtypes = [p, size, ctypes.POINTER(COptions), err]
        lib.bnn_learner_save.argtypes = [p, ctypes.POINTER(Storage), p, size, err]
        lib.bnn_learner_load.argtypes = [p, ctypes.POINTER(Storage), p, size, ctypes.POINTER(size), err]
        lib.bnn_state_load.argtypes = [ctypes.POINTER(Storage), p, size, ctypes.POINTER(size),
                                       ctypes.POINTER(ctypes.c_uint64), err]
        lib.bnn_learner_experiences.argtypes = [p]
        lib.bnn_learner_experiences.restype = ctypes.c_uint32
        for f in (lib.bnn_learner_arena_size, lib.bnn_learner_init, lib.bnn_learner_learn, lib.bnn_learner_predict,
                  lib.bnn_learner_logits, lib.bnn_learner_serialize, lib.bnn_learner_deserialize,
                  lib.bnn_learner_state_options, lib.bnn_learner_save, lib.bnn_learner_load, lib.bnn_state_load):
            f.restype = ctypes.c_int
        lib._learner_declared = True
    return lib


def c_options(options: LearnOptions, max_patterns: int, user_bytes: int = USER_BYTES) -> COptions:
    """The C learner's options for ``options`` (a ConfigError for what it does not run)."""
    if options.strategy not in DEVICE_STRATEGIES:
        raise ConfigError(f"the device learner runs {' or '.join(DEVICE_STRATEGIES)}, not {options.strategy!r}")
    if options.lr_layer not in (None, "head"):  # None: the head, the one part the C learner trains
        raise ConfigError("the C learner trains the head (--lr-layer head); back-propagation through blocks (work B) "
                          "is the Python learner's (--runtime python)")
    if max(options.q_f, options.q_b) >= FLOAT_BITS or options.q_b > 16:
        raise ConfigError(f"the C learner runs the integer step with q_f and q_b at most 16 bits, not "
                          f"{options.q_f}/{options.q_b} (the fp32 learner is the Python learner's: --runtime python)")
    if options.q_ranges != "dynamic":
        raise ConfigError("the device learner uses dynamic quantizer ranges")
    if not -2 ** 63 <= options.seed < 2 ** 63:
        raise ConfigError(f"the C learner's seed is a 64-bit integer, not {options.seed}")
    return COptions(STRATEGIES[options.strategy], options.epochs, options.batch_size, options.replay_size,
                    STORAGES[options.replay_storage], UPDATES[options.replay_update], MIXES[options.replay_mix],
                    options.replay_batch, options.q_f, options.q_b, ROUNDINGS[options.q_rounding], options.lr,
                    options.seed, max_patterns, user_bytes)


def learn_options_of(c: COptions, base: LearnOptions | None = None) -> LearnOptions:
    def key(table, v):
        return next(k for k, x in table.items() if x == v)

    return LearnOptions(strategy=key(STRATEGIES, c.strategy), lr_layer="head", epochs=c.epochs, lr=c.lr,
                        batch_size=c.batch_size, replay_size=c.replay_size,
                        replay_storage=key(STORAGES, c.replay_storage), replay_update=key(UPDATES, c.replay_update),
                        replay_mix=key(MIXES, c.replay_mix), replay_batch=c.replay_batch, q_f=c.q_f, q_b=c.q_b,
                        q_rounding=key(ROUNDINGS, c.rounding), seed=c.seed)


def arena_by_buffer(model_path, options: LearnOptions, max_patterns: int = 12000, user_bytes: int = 0) -> dict:
    """The C learner's arena for ``model_path`` and ``options`` by buffer (bytes), as bnn_learner_arena_size computes
    it, without setting a learner up."""
    blob = Path(model_path).read_bytes()
    aligned = np.frombuffer(blob + b"\0" * (-len(blob) % 8), np.uint64).copy()
    opts, memory, err = c_options(options, max_patterns, user_bytes), Memory(), Error()
    CLearner._check(_lib().bnn_learner_arena_size(aligned.ctypes.data, len(blob), ctypes.byref(opts),
                                                  ctypes.byref(memory), ctypes.byref(err)), err, model_path)
    return {name: int(getattr(memory, name)) for name in Memory.NAMES}


class FileStorage:
    """Two slots in one file (slot s at s * slot_bytes), for bnn_store.h: pread/pwrite, fsync as its flush; bytes
    never written read as zeros (an erased flash)."""

    def __init__(self, path: Path, slot_bytes: int, create: bool):
        self.path = path
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        self.fd = os.open(path, flags, 0o644)
        self.failed: OSError | None = None

        def read(ctx, slot, offset, dst, n):
            try:
                data = os.pread(self.fd, n, slot * slot_bytes + offset)
                ctypes.memmove(dst, data + b"\0" * (n - len(data)), n)
                return 0
            except OSError as e:
                self.failed = e
                return 1

        def write(ctx, slot, offset, src, n):
            try:
                os.pwrite(self.fd, ctypes.string_at(src, n), slot * slot_bytes + offset)
                return 0
            except OSError as e:
                self.failed = e
                return 1

        def flush(ctx, slot):
            try:
                os.fsync(self.fd)
                return 0
            except OSError as e:
                self.failed = e
                return 1

        self._callbacks = (READ(read), READ(write), FLUSH(flush))  # kept alive as long as the storage
        self.struct = Storage(None, slot_bytes, *self._callbacks)

    def close(self) -> None:
        os.close(self.fd)


def is_c_state(path: Path) -> bool:
    """Whether ``path`` is a C learner's state file (its first slot's magic), not the Python learner's container."""
    with open(path, "rb") as f:
        return f.read(8) == b"BNNSLOT1"


class CLearner:
    """The C learner on a model file; the interface :func:`bnncl.device.experiment.run_device_experiment` uses (the
    Python learner's: ``learn``, ``annotate``, ``predict``, ``log``, ``experiences``, ``nbytes``...)."""

    backend = "c"
    frozen_chunk = None

    def __init__(self, model_path, options: LearnOptions, state_path=None, max_patterns: int = 12000):
        self.model = Model.load(model_path)  # the metadata and the input checks (NumPy; the C library runs it)
        self.model.cut("head")
        self._c_opts = c_options(options, max_patterns)
        self.options = LearnOptions.from_dict({**options.to_dict(), "lr_layer": "head"})
        blob = Path(model_path).read_bytes()
        self._blob = np.frombuffer(blob + b"\0" * (-len(blob) % 8), np.uint64).copy()
        self._size = len(blob)
        self._setup()
        self.num_classes, self.features = self.model.trainable_ops[-1].weight.shape
        self.latent_shape = (self.features,)
        self.state_path = Path(state_path) if state_path is not None else None
        self.log: list[dict] = []
        self.step_seconds: list[float] = []
        self.slot_bytes = SLOT_HEADER_BYTES + _lib().bnn_learner_state_bytes(self._handle)

    def _setup(self) -> None:
        """A learner in a new arena sized for the options (max_patterns included)."""
        lib, err = _lib(), Error()
        self.memory = Memory()
        self._check(lib.bnn_learner_arena_size(self._blob.ctypes.data, self._size, ctypes.byref(self._c_opts),
                                               ctypes.byref(self.memory), ctypes.byref(err)), err, self.model.path)
        self._arena = np.zeros(self.memory.total, np.uint8)
        self._handle = ctypes.c_void_p()
        self._check(lib.bnn_learner_init(self._blob.ctypes.data, self._size, ctypes.byref(self._c_opts),
                                         self._arena.ctypes.data, self._arena.nbytes, ctypes.byref(self._handle),
                                         ctypes.byref(err)), err, self.model.path)

    def _grow(self, patterns: int) -> None:
        """A larger arena for an experience of more images than it was sized for (a host's memory is not fixed;
        max_patterns sizes index buffers only, nothing the learning depends on): the state carried over."""
        blob = np.frombuffer(self.state_blob(), np.uint8).copy()
        self._c_opts.max_patterns = patterns
        self._setup()
        err = Error()
        self._check(_lib().bnn_learner_deserialize(self._handle, blob.ctypes.data, blob.nbytes, None, 0, None,
                                                   ctypes.byref(err)), err, "the C learner")

    @staticmethod
    def _check(status: int, err: Error, where) -> None:
        if status:
            message = f"{where}: {err.message.decode(errors='replace')}"
            if status == 8:
                raise LearnerStateError(message)
            if status == NUMERIC:
                raise ArithmeticError(message)
            raise ConfigError(message)

    # -- opening ------------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, model_path, state_path=None, options: LearnOptions | None = None,
             max_patterns: int = 12000) -> "CLearner":
        """As :meth:`bnncl.device.Learner.open`: resumed from ``state_path`` when it exists (its options must match
        ``options``; without, the state's own are used)."""
        state_path = Path(state_path) if state_path is not None else None
        if state_path is not None and state_path.exists():
            if not is_c_state(state_path):
                raise LearnerStateError(f"{state_path}: not a state of the C learner (a Python learner's state, or "
                                        "another file): give another --state, or --runtime python for a Python "
                                        "learner's state (the file is left as it is)")
            saved = cls._saved_options(state_path)
            if options is not None:
                wanted = LearnOptions.from_dict({**options.to_dict(), "lr_layer": "head"})
                if wanted != saved:
                    diff = [f"{k} {v!r} (state) vs {wanted.to_dict()[k]!r}" for k, v in saved.to_dict().items()
                            if wanted.to_dict()[k] != v]
                    raise ConfigError(f"{state_path}: the saved learner has other settings: {'; '.join(diff)} "
                                      "(give another --state to start afresh)")
            learner = cls(model_path, saved, state_path, max_patterns)
            learner._load()
            return learner
        return cls(model_path, options or LearnOptions(strategy="ar1", lr_layer="head", q_f=8, q_b=16), state_path,
                   max_patterns)

    @staticmethod
    def _saved_options(path: Path) -> LearnOptions:
        """The options of a complete slot of the file (any: both slots are one learner's). A file does not record
        its slot size, which follows from the options: the slots' headers are found by their magic and CRC."""
        data = path.read_bytes()
        i = -1
        while (i := data.find(b"BNNSLOT1", i + 1)) >= 0:
            if zlib.crc32(data[i:i + 28]) != int.from_bytes(data[i + 28:i + 32], "little"):
                continue
            size = int.from_bytes(data[i + 16:i + 24], "little")
            payload = data[i + SLOT_HEADER_BYTES:i + SLOT_HEADER_BYTES + size]
            if len(payload) != size or zlib.crc32(payload) != int.from_bytes(data[i + 24:i + 28], "little"):
                continue
            c, err = COptions(), Error()
            buf = np.frombuffer(payload, np.uint8).copy()
            if _lib().bnn_learner_state_options(buf.ctypes.data, buf.nbytes, ctypes.byref(c), ctypes.byref(err)):
                raise LearnerStateError(f"{path}: {err.message.decode(errors='replace')} (the file is left as it is)")
            try:
                return learn_options_of(c)
            except (StopIteration, ConfigError) as e:
                raise LearnerStateError(f"{path}: corrupt learner settings ({e})") from None
        raise LearnerStateError(f"{path}: no complete learner state in it (damaged; the file is left as it is)")

    def _storage(self, create: bool) -> FileStorage:
        try:
            if create:
                self.state_path.parent.mkdir(parents=True, exist_ok=True)
            return FileStorage(self.state_path, self.slot_bytes, create)
        except OSError as e:
            raise OutputError(f"{self.state_path}: {e.strerror or e}") from None

    def _load(self) -> None:
        lib, err, n = _lib(), Error(), ctypes.c_size_t()
        user = np.zeros(USER_BYTES, np.uint8)
        st = self._storage(create=False)
        try:
            status = lib.bnn_learner_load(self._handle, ctypes.byref(st.struct), user.ctypes.data, user.nbytes,
                                          ctypes.byref(n), ctypes.byref(err))
        finally:
            st.close()
        self._check(status, err, f"{self.state_path} (the file is left as it is)")
        if n.value == 0:
            raise LearnerStateError(f"{self.state_path}: a C learner's state without the log this wrapper keeps in "
                                    "it (written by another program, e.g. runtime/examples/learn_stream, whose slots "
                                    "are laid out for no user bytes): give another --state (the file is left as it "
                                    "is)")
        try:
            extra = json.loads(user[:n.value].tobytes().decode())
            log = extra["log"]
            if not isinstance(log, list) or len(log) != self.experiences:
                raise ValueError(f"{len(log)} log entries for {self.experiences} experiences")
        except (ValueError, KeyError, TypeError) as e:
            raise LearnerStateError(f"{self.state_path}: corrupt learner log ({e}; the file is left as it is)") \
                from None
        self.log = log

    def save(self) -> None:
        """Write the state to the slot not holding the newest one (power-cut safe)."""
        if self.state_path is None:
            raise ConfigError("no state path to save to")
        user = json.dumps({"bnncl_version": __version__, "model_path": str(self.model.path), "log": self.log},
                          separators=(",", ":")).encode()
        if len(user) > USER_BYTES:
            raise ConfigError(f"{self.state_path}: the learner's log ({len(user)} bytes) outgrew the state's "
                              f"{USER_BYTES} bytes for it")
        lib, err = _lib(), Error()
        st = self._storage(create=True)
        try:
            status = lib.bnn_learner_save(self._handle, ctypes.byref(st.struct), user, len(user), ctypes.byref(err))
        finally:
            st.close()
        if status and st.failed is not None:
            raise OutputError(f"{self.state_path}: {st.failed.strerror or st.failed}")
        self._check(status, err, self.state_path)

    # -- learning -------------------------------------------------------------------------------------------------

    @property
    def experiences(self) -> int:
        return int(_lib().bnn_learner_experiences(self._handle))

    def check_experience(self, images, labels) -> tuple[np.ndarray, np.ndarray]:
        images = self.model.check_images(images)
        if len(images) == 0:
            raise DataError("an empty experience (0 images): nothing to learn")
        return images, self.model.check_labels(labels, len(images))

    def learn(self, images, labels) -> dict:
        """Consume one experience; persist the state (with a state path). A failure leaves the learner as it was."""
        images, labels = self.check_experience(images, labels)
        if len(images) > self._c_opts.max_patterns:
            self._grow(len(images))
        images = np.ascontiguousarray(images, np.uint8)
        labels32 = np.ascontiguousarray(labels, np.int32)
        arrays = Arrays(address(images), address(labels32), int(np.prod(images.shape[1:])))
        read = ctypes.cast(_lib().bnn_arrays_read, ctypes.c_void_p)
        exp = Experience(ctypes.cast(ctypes.pointer(arrays), ctypes.c_void_p), len(images), read)
        report, err = Report(), Error()
        t0 = time.perf_counter()
        status = _lib().bnn_learner_learn(self._handle, ctypes.byref(exp), ctypes.byref(report), ctypes.byref(err))
        seconds = time.perf_counter() - t0
        self._check(status, err, "the C learner")
        if report.steps:
            self.step_seconds.extend([seconds / report.steps] * report.steps)  # the C call times the whole
        entry = {"experience": int(report.experience), "patterns": int(report.patterns),
                 "replayed_per_step": int(report.replayed_per_step), "steps": int(report.steps),
                 "mean_loss": float(report.mean_loss), "seconds": seconds}
        self.log.append(entry)
        if self.state_path is not None:
            self.save()
        return entry

    def annotate(self, **entries) -> None:
        if not self.log:
            raise ValueError("no experience to annotate yet")
        self.log[-1].update(entries)
        if self.state_path is not None:
            self.save()

    def logits(self, images) -> np.ndarray:
        images = np.ascontiguousarray(self.model.check_images(images), np.uint8)
        out = np.empty((len(images), self.num_classes), np.float32)
        if len(images):
            err = Error()
            self._check(_lib().bnn_learner_logits(self._handle, address(images), len(images), out.ctypes.data,
                                                  ctypes.byref(err)), err, "the C learner")
        return out

    def predict(self, images, batch_size: int | None = None) -> np.ndarray:
        images = np.ascontiguousarray(self.model.check_images(images), np.uint8)
        out = np.empty(len(images), np.int32)
        if len(images):
            err = Error()
            self._check(_lib().bnn_learner_predict(self._handle, address(images), len(images), out.ctypes.data,
                                                   ctypes.byref(err)), err, "the C learner")
        return out.astype(np.int64)

    # -- what it holds ------------------------------------------------------------------------------------------

    def nbytes(self) -> dict:
        """The learning state's buffers at their stored precision under the Python learner's keys (what
        ``result.json`` and the report show), and the arena by buffer (``arena_*``, bnn_learner_arena_size: what
        the C learner really holds, alignment and work buffers included)."""
        c, f, o = self.num_classes, self.features, self.options
        out = {"trainable_head": quantized_bytes(c * f, o.q_b), "consolidated_rows": 4 * c * f + 4 * c}
        if o.strategy == "ar1":
            row = -(-f // 8) if o.replay_storage == "bits" else 4 * f
            out["replay_patterns"] = o.replay_size * row
            out["replay_labels_and_scales"] = 2 * o.replay_size + (12 * f if o.replay_storage == "bits" else 0)
            out["replay_memory"] = out["replay_patterns"] + out["replay_labels_and_scales"]
        out.update({f"arena_{k}": int(getattr(self.memory, k)) for k in Memory.NAMES})
        return out

    def state_blob(self) -> bytes:
        """The state blob as bnn_learner_save would write it (no user bytes)."""
        lib, err, n = _lib(), Error(), ctypes.c_size_t()
        buf = np.zeros(lib.bnn_learner_state_bytes(self._handle), np.uint8)
        self._check(lib.bnn_learner_serialize(self._handle, None, 0, buf.ctypes.data, buf.nbytes, ctypes.byref(n),
                                              ctypes.byref(err)), err, "the C learner")
        return buf[:n.value].tobytes()

    def state_arrays(self) -> dict:
        """The state blob parsed (docs/learner-state.md): consolidated rows and counts, replay memory, generators."""
        return parse_state(self.state_blob())


def python_learner_state(py) -> dict:
    """A Python device learner's state (:class:`bnncl.device.Learner`, the head) under :func:`parse_state`'s keys."""
    out = {"experiences": py.experiences, "cw": py.cwr.cw, "past": py.cwr.past,
           "rng": {"shuffle": py.shuffle_rng.state, "replay": py.replay_rng.state, "quantizer": py.quant_rng.state},
           "replay.size": 0}
    if py.memory is not None:
        m = py.memory
        out.update({"replay.data": m.data[:m.size].view(np.uint8).reshape(m.size, -1),
                    "replay.labels": m.labels[:m.size], "replay.abs_sum": m._abs_sum, "replay.offset": m.offset,
                    "replay.size": m.size, "replay.updates": m.updates, "replay.abs_count": m._abs_count})
    return out


def state_differences(c: dict, py: dict) -> list[str]:
    """What differs between the C learner's state (:func:`parse_state`) and a Python learner's
    (:func:`python_learner_state`), bit for bit: every consolidated row, count, replay slot and label, the decode
    scale's sums and offsets, the generators. Empty: the two are equal."""
    diff = [k for k in ("experiences", "replay.size") if c[k] != py[k]]
    if c["cw"].shape != py["cw"].shape or c["cw"].tobytes() != np.ascontiguousarray(py["cw"], "<f4").tobytes():
        diff.append("consolidated rows")
    if not np.array_equal(c["past"], py["past"]):
        diff.append("consolidated counts")
    diff += [f"generator {k}" for k in ("shuffle", "replay", "quantizer") if c["rng"][k] != py["rng"][k]]
    if "replay.data" in py:
        diff += [k for k in ("replay.updates", "replay.abs_count") if c[k] != py[k]]
        for key, dtype in (("replay.data", np.uint8), ("replay.labels", "<i2"), ("replay.abs_sum", "<f8"),
                           ("replay.offset", "<f4")):
            if c[key].shape != py[key].shape or c[key].tobytes() != np.ascontiguousarray(py[key], dtype).tobytes():
                diff.append(key)
    return diff


def parse_state(b: bytes) -> dict:
    """A C learner state blob's fields (little-endian, docs/learner-state.md) as NumPy arrays and ints."""
    u32 = np.frombuffer(b, "<u4", 48, 0)
    classes, features = int(u32[9]), int(u32[10])
    mem_size, updates = int(u32[28]), int(u32[29])
    abs_count = int(np.frombuffer(b, "<u8", 1, 120)[0])
    rng = np.frombuffer(b, "<u8", 6, 128)
    row_bytes = int(np.frombuffer(b, "<u4", 1, 180)[0])
    user_len = int(np.frombuffer(b, "<u4", 1, 176)[0])
    at = STATE_HEADER
    cw = np.frombuffer(b, "<f4", classes * features, at).reshape(classes, features)
    at += 4 * classes * features
    past = np.frombuffer(b, "<i4", classes, at)
    at += 4 * classes
    data = np.frombuffer(b, np.uint8, mem_size * row_bytes, at).reshape(mem_size, row_bytes)
    at += mem_size * row_bytes
    labels = np.frombuffer(b, "<i2", mem_size, at)
    at += 2 * mem_size
    abs_sum = np.frombuffer(b, "<f8", features, at)
    at += 8 * features
    offset = np.frombuffer(b, "<f4", features, at)
    return {"experiences": int(u32[11]), "cw": cw, "past": past, "replay.data": data, "replay.labels": labels,
            "replay.abs_sum": abs_sum, "replay.offset": offset, "replay.size": mem_size, "replay.updates": updates,
            "replay.abs_count": abs_count, "user_bytes": user_len,
            "rng": {name: {"generator": "pcg32", "state": f"{int(rng[2 * i]):016x}",
                           "inc": f"{int(rng[2 * i + 1]):016x}"}
                    for i, name in enumerate(("shuffle", "replay", "quantizer"))}}
