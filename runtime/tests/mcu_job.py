"""The Cortex-M firmware's test, host side (runtime/mcu/firmware.c under qemu-system-arm).

    mcu_job.py prepare OUT MODEL STREAM [--replay-size N]   the job (OUT/job.txt) and the arena the firmware needs
                                                          (OUT/arena.mk: ARENA_BYTES = ...)
    mcu_job.py check OUT MODEL STREAM                       the firmware's outputs against the host

The job, on the model file MODEL and the IDX stream STREAM (runtime/examples/make_stream.py's layout; the tests' tiny
stream): predict the test images with the model's head, learn experience 0 and 1 (AR1*, 1-bit replay, the
class-balanced update, 8/16 bits) saving the state to flash after each, predict the test images again, dump the
state's flash. The check, against the host's C library (bnncl.device.clearner.CLearner learning the same experiences
with the same options) and the Python device learner (the independent oracle): the predictions before and after
learning equal the host's, and the newest complete slot of the dumped flash is the host's state blob byte for byte
(its learned head, consolidated rows, replay memory, generators: bnncl.device.clearner.parse_state), the Python
learner's in every field.
"""

from __future__ import annotations

import argparse
import ctypes
import struct
import sys
from pathlib import Path

import numpy as np

from bnncl.core.options import LearnOptions
from bnncl.device import Learner
from bnncl.device.clearner import (
    CLearner,
    COptions,
    FileStorage,
    Memory,
    _lib,
    c_options,
    parse_state,
    python_learner_state,
    state_differences,
)
from bnncl.device.cruntime import Error

EXPERIENCES = 2


def options(replay_size: int) -> LearnOptions:
    return LearnOptions(strategy="ar1", lr_layer="head", epochs=2, batch_size=8, replay_size=replay_size,
                        replay_batch=8, lr=0.05, q_f=8, q_b=16, seed=3)


def read_idx(path: Path) -> np.ndarray:
    data = path.read_bytes()
    dims = data[3]
    shape = struct.unpack(f">{dims}I", data[4:4 + 4 * dims])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def images(path: Path) -> np.ndarray:
    x = read_idx(path)
    return x[..., None] if x.ndim == 3 else x


def job_options_line(o: LearnOptions, max_patterns: int) -> str:
    c = c_options(o, max_patterns, 0)
    lr_bits = struct.unpack("<Q", struct.pack("<d", o.lr))[0]
    fields = [c.strategy, c.epochs, c.batch_size, c.replay_size, c.replay_storage, c.replay_update, c.replay_mix,
              c.replay_batch, c.q_f, c.q_b, c.rounding]
    return "options " + " ".join(map(str, fields)) + f" {lr_bits:016x} {o.seed} {max_patterns}"


def arena_bytes(model: Path, o: LearnOptions, max_patterns: int) -> Memory:
    blob = model.read_bytes()
    aligned = np.frombuffer(blob + b"\0" * (-len(blob) % 8), np.uint64).copy()
    c, memory, err = c_options(o, max_patterns, 0), Memory(), Error()
    if _lib().bnn_learner_arena_size(aligned.ctypes.data, len(blob), ctypes.byref(c), ctypes.byref(memory),
                                     ctypes.byref(err)):
        raise SystemExit(f"mcu_job: {model}: {err.message.decode()}")
    return memory


def prepare(out: Path, model: Path, stream: Path, replay_size: int) -> int:
    out.mkdir(parents=True, exist_ok=True)
    o = options(replay_size)
    sizes = [len(read_idx(stream / f"exp{k}-labels.idx")) for k in range(EXPERIENCES)]
    lines = [job_options_line(o, max(sizes)), f"predict {stream}/test-images.idx {out}/before.bin"]
    for k in range(EXPERIENCES):
        lines += [f"learn {stream}/exp{k}-images.idx {stream}/exp{k}-labels.idx", "save"]
    lines += [f"predict {stream}/test-images.idx {out}/after.bin", f"dump {out}/flash.bin"]
    (out / "job.txt").write_text("\n".join(lines) + "\n")
    memory = arena_bytes(model, o, max(sizes))
    (out / "arena.mk").write_text(f"ARENA_BYTES := {memory.total}\n")
    return 0


def newest_payload(flash: Path) -> bytes:
    """The newest complete slot's payload of the dumped region (two slots of half its size), by bnn_state_load."""
    slot_bytes = flash.stat().st_size // 2
    storage, err, size = FileStorage(flash, slot_bytes, create=False), Error(), ctypes.c_size_t()
    buf = np.zeros(slot_bytes, np.uint8)
    lib = _lib()
    try:
        status = lib.bnn_state_load(ctypes.byref(storage.struct), buf.ctypes.data, buf.nbytes, ctypes.byref(size),
                                    None, ctypes.byref(err))
    finally:
        storage.close()
    if status:
        raise SystemExit(f"FAIL {flash}: no complete state in the firmware's flash ({err.message.decode()})")
    return buf[:size.value].tobytes()


def check(out: Path, model: Path, stream: Path) -> int:
    blob = newest_payload(out / "flash.bin")
    c = COptions()
    err = Error()
    raw = np.frombuffer(blob, np.uint8).copy()
    if _lib().bnn_learner_state_options(raw.ctypes.data, raw.nbytes, ctypes.byref(c), ctypes.byref(err)):
        raise SystemExit(f"FAIL: the firmware's state: {err.message.decode()}")
    o = options(int(c.replay_size))
    host, py = CLearner(model, o, None, max_patterns=64), Learner.open(model, None, o)
    test = images(stream / "test-images.idx")
    before = np.fromfile(out / "before.bin", "<i4")
    failures = []
    if not np.array_equal(before, host.predict(test)):
        failures.append("the predictions before learning are not the host's")
    for k in range(EXPERIENCES):
        x, y = images(stream / f"exp{k}-images.idx"), read_idx(stream / f"exp{k}-labels.idx").astype(np.int64)
        host.learn(x, y)
        py.learn(x, y)
    after = np.fromfile(out / "after.bin", "<i4")
    if not np.array_equal(after, host.predict(test)):
        failures.append("the predictions after learning are not the host's")
    if blob != host.state_blob():
        failures.append("the state blob is not the host C learner's")
    diff = state_differences(parse_state(blob), python_learner_state(py))
    if diff:
        failures.append(f"the state differs from the Python device learner's: {', '.join(diff)}")
    for f in failures:
        print(f"FAIL {out}: {f}")
    if failures:
        return 1
    state = parse_state(blob)
    print(f"   {out}: {len(test)} predictions before and after learning = the host's; the state after "
          f"{state['experiences']} experiences ({len(blob)} B, {state['replay.size']} replay slots) = the host C "
          "learner's byte for byte and the Python device learner's in every field")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("prepare", "check"))
    p.add_argument("out", type=Path)
    p.add_argument("model", type=Path)
    p.add_argument("stream", type=Path)
    p.add_argument("--replay-size", type=int, default=200)
    a = p.parse_args(argv)
    if a.command == "prepare":
        return prepare(a.out, a.model, a.stream, a.replay_size)
    return check(a.out, a.model, a.stream)


if __name__ == "__main__":
    sys.exit(main())
