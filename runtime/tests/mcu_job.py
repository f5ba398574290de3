"""The Cortex-M firmware's test, host side (runtime/mcu/firmware.c under qemu-system-arm).

    mcu_job.py prepare OUT MODEL STREAM [JOB OPTIONS]      the job (OUT/job.txt) and the arena and state flash the
                                                          firmware needs (OUT/arena.mk)
    mcu_job.py check OUT MODEL STREAM [JOB OPTIONS]        the firmware's outputs (and OUT/run.log) against the host
    mcu_job.py bench OUT MODEL STREAM [--settings test|demo] [--replay-size N] [--max-patterns N] [--predict K]
                                                          [--fill N]
                                                          the jobs of `make mcu-memory` and `make icount-cortex-m`
    mcu_job.py bench-check DIR                              their outputs (DIR: a board's directory) against the host
    mcu_job.py memory-report DIR...                         `make mcu-memory`'s tables

The job, on the model file MODEL and the IDX stream STREAM (runtime/examples/make_stream.py's layout: the tests' tiny
stream, or tests/make_demo_arch_model.py's Fashion-MNIST one): load from the flash, which holds no state yet (the
firmware says so and starts from the model file), predict the test images with the model's head, learn experience 0
and 1 saving the state to flash after each (the second replays from the memory the first filled), load the state
from the flash again, predict the test images again, dump the state's flash. JOB OPTIONS, the same for prepare and
check: --settings test (the default: AR1*, 1-bit replay, the class-balanced update, 8/16 bits, 2 epochs, 8 new + 8
replayed per step, --replay-size slots, 200 by default) or demo (the demo's device settings, bnn_learn_defaults:
AR1*, 4 epochs, 50 new + 128 replayed, 1,500 1-bit slots, 8/16 bits, lr 0.01, seed 0), --replay-size N and --epochs
E to change those, --max-patterns N (the largest experience the firmware's arena is sized for; default: the
stream's largest; the demo's is 12,000). prepare also writes OUT/arena.mk: ARENA_BYTES (the host's 64-bit
bnn_learner_arena_size; the firmware's own 32-bit figure, which it prints, is smaller) and STATE_FLASH_BYTES (the
state's two slots, rounded up to 4 KB).

The check, against the host's C library (bnncl.device.clearner.CLearner learning the same experiences with the same
options) and the Python device learner (the independent oracle): the firmware's log (OUT/run.log) says the first load
found no state and the second loaded the state of 2 experiences, and its report of each experience (patterns, steps,
replayed per step: more than 0 for the second) is the host's; the predictions before and after learning equal the
host's, and the newest complete slot of the dumped flash is the host's state blob byte for byte (its learned head,
consolidated rows, replay memory, generators: bnncl.device.clearner.parse_state), the Python learner's in every
field; and the job finished (the firmware's last line, its stack's peak).

bench writes, for the settings "test" (the job above's: AR1*, 2 epochs, 8 new + 8 replayed per step, 200 slots) or
"demo" (the demo's device settings, bnn_learn_defaults: AR1*, 4 epochs, 50 new + 128 replayed, 1,500 1-bit slots,
8/16 bits, lr 0.01, seed 0), into OUT: the model's copy (model.bnn, what is linked), arena.mk (ARENA_BYTES, the
host's figure; STATE_FLASH_BYTES, the two slots rounded up to 4 KB), data/ (the first N test images for N = 1, 2,
1 + K; the step's experience: the first batch_size images of experience 1; fill-eE.bin: the state's flash region, two
slots, after the host's C learner learned the first --fill images of experience 0 with E epochs, E = 1, 2 and the
settings' own), expected/ (the host's predictions and states after each job) and jobs/ (@OUT@: the board's
directory):

    options.txt         the options alone (the firmware prints its arena by buffer)
    predict-N.txt       the options, predict N test images (the model's own head)
    loaded.txt          the options, load the fill state (fill-e<epochs>), dump the flash
    base.txt            the options, load the fill state, save it, dump the flash
    learn-eE.txt        the options with E epochs, load the fill state (fill-eE), learn the step's experience (one
                        step per epoch, the memory full), save, dump the flash
    learner.txt         the options, load, learn the step's experience, save, predict 1 + K images

bench-check: each job's outputs found in DIR (predictions, dumped flash) equal the host's, byte for byte.
memory-report: flash and SRAM per firmware from DIR/size.txt (arm-none-eabi-size -A), DIR/firmware.map, DIR/link.txt
(the budget link's output), the runs' logs (DIR/run-*.log: the arena by buffer, the stack's peak).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import re
import shutil
import struct
import sys
from pathlib import Path

import numpy as np

from bnncl.core.options import LearnOptions
from bnncl.device import Learner
from bnncl.device.clearner import (
    SLOT_HEADER_BYTES,
    CLearner,
    FileStorage,
    Memory,
    _lib,
    arena_by_buffer,
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


# what the firmware prints (firmware.c): its loads and its report of each experience
NO_STATE_LINE = "load: no saved state in flash, starting from the model file"
LOADED_LINE = "loaded the state from flash: {} experiences"
LEARNED_LINE = ("learned experience {experience}: {patterns} patterns, {steps} steps, {replayed_per_step} replayed "
                "per step")


def job_options(settings: str, replay_size: int | None, epochs: int | None) -> LearnOptions:
    o = settings_options(settings, replay_size)
    return o if epochs is None else dataclasses.replace(o, epochs=epochs)


def job_max_patterns(stream: Path, max_patterns: int | None) -> int:
    """The arena's max_patterns: the given one (at least the stream's largest experience) or the largest."""
    largest = max(len(read_idx(stream / f"exp{k}-labels.idx")) for k in range(EXPERIENCES))
    if max_patterns is not None and max_patterns < largest:
        raise SystemExit(f"mcu_job: {stream}: an experience of {largest} images, more than --max-patterns "
                         f"{max_patterns}")
    return largest if max_patterns is None else max_patterns


def prepare(out: Path, model: Path, stream: Path, o: LearnOptions, max_patterns: int | None) -> int:
    out.mkdir(parents=True, exist_ok=True)
    max_patterns = job_max_patterns(stream, max_patterns)
    lines = [job_options_line(o, max_patterns), "load", f"predict {stream}/test-images.idx {out}/before.bin"]
    for k in range(EXPERIENCES):
        lines += [f"learn {stream}/exp{k}-images.idx {stream}/exp{k}-labels.idx", "save"]
    lines += ["load", f"predict {stream}/test-images.idx {out}/after.bin", f"dump {out}/flash.bin"]
    (out / "job.txt").write_text("\n".join(lines) + "\n")
    memory = arena_by_buffer(model, o, max_patterns)
    state_flash = -(-2 * RawLearner(model, o, max_patterns).slot_bytes // 4096) * 4096
    (out / "arena.mk").write_text(f"ARENA_BYTES := {memory['total']}\nSTATE_FLASH_BYTES := {state_flash}\n")
    print(f"{out}/job.txt: {o.strategy}, {o.epochs} epochs, {o.batch_size} new + {o.replay_batch} replayed per step, "
          f"{o.replay_size} {o.replay_storage} slots, q_f {o.q_f} / q_b {o.q_b}, max_patterns {max_patterns}; the "
          f"host's arena {memory['total']} B, the state's flash {state_flash} B")
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


def check(out: Path, model: Path, stream: Path, o: LearnOptions, max_patterns: int | None) -> int:
    log = [line.rstrip() for line in (out / "run.log").read_text(errors="replace").splitlines()]
    blob = newest_payload(out / "flash.bin")
    host = CLearner(model, o, None, max_patterns=job_max_patterns(stream, max_patterns))
    py = Learner.open(model, None, o)
    test = images(stream / "test-images.idx")
    before = np.fromfile(out / "before.bin", "<i4")
    failures = []
    if not np.array_equal(before, host.predict(test)):
        failures.append("the predictions before learning are not the host's")
    reports = []
    for k in range(EXPERIENCES):
        x, y = images(stream / f"exp{k}-images.idx"), read_idx(stream / f"exp{k}-labels.idx").astype(np.int64)
        reports.append(host.learn(x, y))
        py.learn(x, y)
    if o.strategy == "ar1" and not reports[-1]["replayed_per_step"]:
        failures.append(f"experience {EXPERIENCES - 1} replays nothing on the host: the job does not test replay")
    want = [NO_STATE_LINE, *(LEARNED_LINE.format(**r) for r in reports), LOADED_LINE.format(EXPERIENCES)]
    said = [line for line in log if line.startswith(("load", "learned"))]
    if said != want:
        failures.append("the firmware's loads and reports are not the expected ones:\n      said: "
                        + "\n            ".join(said) + "\n      want: " + "\n            ".join(want))
    after = np.fromfile(out / "after.bin", "<i4")
    if not np.array_equal(after, host.predict(test)):
        failures.append("the predictions after learning are not the host's")
    if blob != host.state_blob():
        failures.append("the state blob is not the host C learner's")
    diff = state_differences(parse_state(blob), python_learner_state(py))
    if diff:
        failures.append(f"the state differs from the Python device learner's: {', '.join(diff)}")
    peak = next((m for m in map(re.compile(r"stack peak (\d+) of (\d+) B").fullmatch, log) if m), None)
    if peak is None:
        failures.append("the firmware did not report its stack's peak (its job did not finish)")
    for f in failures:
        print(f"FAIL {out}: {f}")
    if failures:
        return 1
    state = parse_state(blob)
    print(f"   {out}: {len(test)} predictions before and after learning = the host's; experience 0 and 1 "
          f"({reports[0]['patterns']} and {reports[1]['patterns']} images, {reports[1]['replayed_per_step']} replayed "
          f"per step) reported as on the host, the first load found no state, the second the saved one; the state "
          f"after {state['experiences']} experiences ({len(blob)} B, {state['replay.size']} replay slots) = the host "
          "C learner's byte for byte and the Python device learner's in every field")
    return 0


# ---- the measurements' jobs (make mcu-memory, make icount-cortex-m) -----------------------------------------------

SETTINGS = ("test", "demo")
FILL_EPOCHS = (1, 2, 4)  # the learn jobs' epochs (with the settings' own): steps = epochs (one step per epoch)


def settings_options(settings: str, replay_size: int | None = None) -> LearnOptions:
    """The test job's options, or the demo's device settings (LearnOptions' defaults = bnn_learn_defaults)."""
    o = options(200) if settings == "test" else LearnOptions(strategy="ar1", lr_layer="head", q_f=8, q_b=16)
    return o if replay_size is None else dataclasses.replace(o, replay_size=replay_size)


def write_idx(path: Path, x: np.ndarray) -> None:
    x = np.ascontiguousarray(x, np.uint8)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    path.write_bytes(struct.pack(">HBB", 0, 8, x.ndim) + struct.pack(f">{x.ndim}I", *x.shape) + x.tobytes())


class RawLearner:
    """A C learner opened as the firmware opens one (no user bytes): its slot size and its save into a flash image."""

    def __init__(self, model: Path, o: LearnOptions, max_patterns: int):
        lib, err = _lib(), Error()
        blob = model.read_bytes()
        self._blob = np.frombuffer(blob + b"\0" * (-len(blob) % 8), np.uint64).copy()
        self._c = c_options(o, max_patterns, 0)
        memory = Memory()
        if lib.bnn_learner_arena_size(self._blob.ctypes.data, len(blob), ctypes.byref(self._c), ctypes.byref(memory),
                                      ctypes.byref(err)):
            raise SystemExit(f"mcu_job: {model}: {err.message.decode()}")
        self._arena = np.zeros(memory.total, np.uint8)
        self.handle = ctypes.c_void_p()
        if lib.bnn_learner_init(self._blob.ctypes.data, len(blob), ctypes.byref(self._c), self._arena.ctypes.data,
                                self._arena.nbytes, ctypes.byref(self.handle), ctypes.byref(err)):
            raise SystemExit(f"mcu_job: {model}: {err.message.decode()}")
        self.slot_bytes = SLOT_HEADER_BYTES + lib.bnn_learner_state_bytes(self.handle)

    def flash_image(self, state: bytes, path: Path) -> None:
        """The firmware's flash region after its save of `state`: two slots, never written bytes zero (QEMU's)."""
        lib, err = _lib(), Error()
        raw = np.frombuffer(state, np.uint8).copy()
        if lib.bnn_learner_deserialize(self.handle, raw.ctypes.data, raw.nbytes, None, 0, None, ctypes.byref(err)):
            raise SystemExit(f"mcu_job: the host's state: {err.message.decode()}")
        path.unlink(missing_ok=True)
        storage = FileStorage(path, self.slot_bytes, create=True)
        try:
            status = lib.bnn_learner_save(self.handle, ctypes.byref(storage.struct), None, 0, ctypes.byref(err))
        finally:
            storage.close()
        if status:
            raise SystemExit(f"mcu_job: {path}: {err.message.decode()}")
        with path.open("r+b") as f:
            f.truncate(2 * self.slot_bytes)


def bench(out: Path, model: Path, stream: Path, settings: str, replay_size: int | None, max_patterns: int | None,
          k: int, fill: int) -> int:
    for sub in ("data", "expected", "jobs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, out / "model.bnn")
    model = out / "model.bnn"
    o = settings_options(settings, replay_size)
    if max_patterns is None:
        max_patterns = 12000 if settings == "demo" else max(len(read_idx(stream / f"exp{j}-labels.idx"))
                                                           for j in range(EXPERIENCES))
    step = o.batch_size
    if step > max_patterns:
        raise SystemExit(f"mcu_job: the step's {step} images exceed max_patterns {max_patterns}")
    memory = arena_by_buffer(model, o, max_patterns)
    raw = RawLearner(model, o, max_patterns)
    state_flash = -(-2 * raw.slot_bytes // 4096) * 4096
    (out / "arena.mk").write_text(f"ARENA_BYTES := {memory['total']}\nSTATE_FLASH_BYTES := {state_flash}\n")
    test = images(stream / "test-images.idx")
    counts = (1, 2, 1 + k)
    if len(test) < 1 + k:
        raise SystemExit(f"mcu_job: {stream}: {len(test)} test images, the predict jobs need {1 + k}")
    for n in counts:
        write_idx(out / "data" / f"test-{n}.idx", test[:n])
    x1, y1 = images(stream / "exp1-images.idx"), read_idx(stream / "exp1-labels.idx")
    write_idx(out / "data" / "step-images.idx", x1[:step])
    write_idx(out / "data" / "step-labels.idx", y1[:step])
    x0, y0 = images(stream / "exp0-images.idx")[:fill], read_idx(stream / "exp0-labels.idx")[:fill].astype(np.int64)
    fresh = CLearner(model, o, None, max_patterns=max_patterns)
    for n in counts:
        fresh.predict(test[:n]).astype("<i4").tofile(out / "expected" / f"predict-{n}.bin")
    epochs = sorted(set(FILL_EPOCHS) | {o.epochs})
    d = out / "data"
    for e in epochs:
        oe = dataclasses.replace(o, epochs=e)
        host = CLearner(model, oe, None, max_patterns=max(max_patterns, len(x0)))
        host.learn(x0, y0)
        filled = host.state_blob()
        RawLearner(model, oe, max_patterns).flash_image(filled, d / f"fill-e{e}.bin")
        (out / "expected" / f"state-fill-e{e}.bin").write_bytes(filled)
        host.learn(x1[:step], y1[:step].astype(np.int64))
        (out / "expected" / f"state-e{e}.bin").write_bytes(host.state_blob())
        if e == o.epochs:
            host.predict(test[:1 + k]).astype("<i4").tofile(out / "expected" / "learner-predict.bin")
    line = job_options_line(o, max_patterns)
    learn = f"learn {d}/step-images.idx {d}/step-labels.idx"
    jobs = {"options": [line], "loaded": [line, "load", "dump @OUT@/loaded-flash.bin"],
            "base": [line, "load", "save", "dump @OUT@/base-flash.bin"],
            "learner": [line, "load", learn, "save", f"predict {d}/test-{1 + k}.idx @OUT@/learner-predict.bin"]}
    for n in counts:
        jobs[f"predict-{n}"] = [line, f"predict {d}/test-{n}.idx @OUT@/predict-{n}.bin"]
    for e in epochs:
        jobs[f"learn-e{e}"] = [job_options_line(dataclasses.replace(o, epochs=e), max_patterns), "load", learn, "save",
                               f"dump @OUT@/learn-e{e}-flash.bin"]
    for name, lines in jobs.items():
        (out / "jobs" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    # what each job loads into the flash region before it starts (the runner's -device loader)
    loads = {"loaded": o.epochs, "base": o.epochs, "learner": o.epochs, **{f"learn-e{e}": e for e in epochs}}
    (out / "jobs" / "flash.txt").write_text("".join(f"{j} {d}/fill-e{e}.bin\n" for j, e in loads.items()))
    fields = {"settings": settings, "model": str(model), "replay_size": o.replay_size, "epochs": o.epochs,
              "batch_size": o.batch_size, "replay_batch": o.replay_batch, "max_patterns": max_patterns,
              "fill": len(x0), "k": k, "slot_bytes": raw.slot_bytes, "state_flash": state_flash,
              "host_arena": memory["total"]}
    (out / "bench.txt").write_text("".join(f"{key} {v}\n" for key, v in fields.items()))
    print(f"   {out}: {settings} settings ({o.replay_size} slots, {o.batch_size} new + {o.replay_batch} replayed, "
          f"{o.epochs} epochs, max_patterns {max_patterns}), fill {len(x0)} images of experience 0 (epochs "
          f"{', '.join(map(str, epochs))}), host arena {memory['total']} B, state slots 2 x {raw.slot_bytes} B")
    return 0


def bench_fields(out: Path) -> dict:
    return dict(line.split(" ", 1) for line in (out / "bench.txt").read_text().splitlines())


def bench_check(board: Path) -> int:
    """Every job's outputs in the board's directory equal the host's (predictions; the dumped flash's newest state)."""
    out = board.parent
    failures, checked = [], []
    for got in sorted(board.glob("*predict*.bin")):
        want = out / "expected" / got.name
        if got.read_bytes() != want.read_bytes():
            failures.append(f"{got.name}: not the host's predictions")
        checked.append(got.stem)
    for got in sorted(board.glob("*-flash.bin")):
        job = got.name[:-len("-flash.bin")]
        want = (out / "expected" / f"state-fill-e{bench_fields(out)['epochs']}.bin" if job in ("loaded", "base")
                else out / "expected" / f"state-{job[len('learn-'):]}.bin")
        if newest_payload(got) != want.read_bytes():
            failures.append(f"{got.name}: the state is not the host's ({want.name})")
        checked.append(job)
    for f in failures:
        print(f"FAIL {board}: {f}")
    if not checked:
        print(f"FAIL {board}: no output to check")
        return 1
    if not failures:
        print(f"   {board}: {', '.join(checked)}: the predictions and states = the host's")
    return 1 if failures else 0


# -- memory-report ----------------------------------------------------------------------------------------------

def size_sections(path: Path) -> dict:
    """arm-none-eabi-size -A: section -> (size, address)."""
    out = {}
    for line in path.read_text().splitlines():
        f = line.split()
        if len(f) == 3 and f[0].startswith(".") and f[1].isdigit():
            out[f[0]] = (int(f[1]), int(f[2]))
    return out


def map_code(path: Path) -> dict:
    """The linker map's .text input sections by part: bytes of code per object (runtime/src files by name, the
    firmware, newlib's libraries)."""
    parts: dict[str, int] = {}
    lines = path.read_text().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("Linker script and memory map"))
    except StopIteration:
        return parts
    pending = None
    for line in lines[start:]:
        f = line.split()
        if pending is not None and len(f) == 3 and f[0].startswith("0x"):
            f = [pending] + f
        pending = None
        if len(f) == 1 and (f[0].startswith(".text") or f[0].startswith(".rodata")):
            pending = f[0]
            continue
        if len(f) == 4 and f[0].startswith((".text", ".rodata")) and f[1].startswith("0x") and f[2].startswith("0x"):
            size = int(f[2], 16)
            if not size or int(f[1], 16) == 0:
                continue
            kind = "code" if f[0].startswith(".text") else "rodata"
            parts[f"{kind}:{part_of(f[3])}"] = parts.get(f"{kind}:{part_of(f[3])}", 0) + size
    return parts


def part_of(obj: str) -> str:
    m = re.search(r"/([A-Za-z0-9_]+)\.a\(", obj)
    if m:
        return m.group(1)
    name = Path(obj).stem
    return {"kernels_portable": "kernels", "bnn_model": "model", "bnn_learner": "learner", "bnn_common": "runtime",
            "bnn_rng": "runtime", "bnn_store": "runtime", "firmware": "firmware", "startup": "firmware",
            "model_blob": "model file"}.get(name, name)


ARENA_LINE = re.compile(r"arena (\d+) B: model (\d+), minibatch (\d+), head_step (\d+), replay (\d+), state (\d+), "
                        r"indices (\d+) \(static (\d+)\)")
BUFFERS = ("model", "minibatch", "head_step", "replay", "state", "indices")


def run_log(path: Path) -> dict:
    text = path.read_text() if path.exists() else ""
    r: dict = {"ok": "stack peak" in text and "error" not in text}
    m = ARENA_LINE.search(text)
    if m:
        r["arena"] = dict(zip(("total",) + BUFFERS + ("static",), map(int, m.groups())))
    m = re.search(r"stack peak (\d+) of (\d+) B", text)
    if m:
        r["stack_peak"], r["stack"] = int(m.group(1)), int(m.group(2))
    m = re.search(r"heap (\d+) of (\d+) B", text)
    if m:
        r["heap_used"], r["heap"] = int(m.group(1)), int(m.group(2))
    return r


def n(v: int) -> str:
    return f"{v:,}"


RUNTIME_PARTS = ("kernels", "model", "learner", "runtime")
LIBRARY_PARTS = ("libc_nano", "librdimon_nano", "libm", "libgcc")


def memory_report(boards: list[Path]) -> int:
    """Markdown tables: flash, SRAM, the arena by buffer."""
    rows = []
    for board in boards:
        out = board.parent
        b = bench_fields(out)
        runs = {what: run_log(board / f"run-{what}.log") for what in ("inference", "learner")}
        for what, r in runs.items():  # the firmware prints its heap's and its stack's peaks (startup.c measures both)
            if not r["ok"] or "arena" not in r or "heap_used" not in r:
                print(f"FAIL {board}: the {what} job did not complete")
                return 1
        link = (board / "link.txt").read_text().strip().splitlines()
        rows.append({"label": f"{out.name}/{board.name}", "board": board, "bench": b,
                     "sec": size_sections(board / "size.txt"), "code": map_code(board / "firmware.map"),
                     "model_bytes": (out / "model.bnn").stat().st_size, "link": link, "runs": runs})

    def sec(r, name):
        return r["sec"].get(name, (0, 0))[0]

    print("Flash (bytes; code: .vectors, .text, .ARM.exidx; its parts from the map; the state: two slots in a region "
          "rounded up to 4 KB)")
    print()
    print("| firmware | link | code | of it the runtime (kernels, model, learner, rng/store) | newlib-nano, libm, "
          "libgcc | firmware | model file | other rodata | .data | state: 2 slots (region) | total | of 1 MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        code = sec(r, ".vectors") + sec(r, ".text") + sec(r, ".ARM.exidx")
        c = r["code"]
        part = {k[5:]: v for k, v in c.items() if k.startswith("code:")}
        rt = " + ".join(n(part.get(k, 0)) for k in RUNTIME_PARTS)
        libs = " + ".join(n(part.get(k, 0)) for k in LIBRARY_PARTS)
        rodata = sec(r, ".rodata") - r["model_bytes"]
        slots, region = 2 * int(r["bench"]["slot_bytes"]), int(r["bench"]["state_flash"])
        total = code + sec(r, ".rodata") + sec(r, ".data") + region
        print(f"| {r['label']} | {r['link'][0]} | {n(code)} | {rt} | {libs} | {n(part.get('firmware', 0))} | "
              f"{n(r['model_bytes'])} | {n(rodata)} | {n(sec(r, '.data'))} | {n(slots)} ({n(region)}) | {n(total)} | "
              f"{total / 2**20:.1%} |")
    print()
    print("SRAM (bytes; the arena: the firmware's own 32-bit bnn_learner_arena_size, linked at that size; the stack's "
          "painted peak and the heap's high-water mark of the inference job, options + predict, and of the learner "
          "job, options + load + learn + save + predict; needed: the arena or its model buffer alone, the other .bss "
          "and .data, the heap used, the stack's peak)")
    print()
    print("| firmware | arena | of it the model's (inference) | other .bss | .data | heap used inf. / learner "
          "(reserved) | stack peak inf. / learner (reserved) | linked | of 256 KB | needed, inference | needed, "
          "learner |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        a = r["runs"]["learner"]["arena"]
        inf, lrn = r["runs"]["inference"], r["runs"]["learner"]
        hi, hl = r["runs"]["inference"], r["runs"]["learner"]
        other = sec(r, ".bss") - a["static"]
        linked = sec(r, ".data") + sec(r, ".bss") + sec(r, ".heap") + sec(r, ".stack")
        base = other + sec(r, ".data")
        need_inf = a["model"] + base + hi["heap_used"] + inf["stack_peak"]
        need_lrn = a["total"] + base + hl["heap_used"] + lrn["stack_peak"]
        print(f"| {r['label']} | {n(a['total'])} | {n(a['model'])} | {n(other)} | {n(sec(r, '.data'))} | "
              f"{n(hi['heap_used'])} / {n(hl['heap_used'])} ({n(hi['heap'])}) | {n(inf['stack_peak'])} / "
              f"{n(lrn['stack_peak'])} ({n(inf['stack'])}) | {n(linked)} | {linked / 2**18:.1%} | {n(need_inf)} | "
              f"{n(need_lrn)} |")
        if a["static"] != a["total"]:
            print(f"FAIL {r['label']}: the arena is linked at {a['static']} B, the firmware's figure is {a['total']}")
            return 1
    print()
    print("The arena by buffer (bytes; the firmware's 32-bit figures, the same on the M7 and the M4F; beside them "
          "the host's 64-bit ones)")
    print()
    configs = []
    for r in rows:
        if r["label"].split("/")[0] not in [c["label"].split("/")[0] for c in configs]:
            configs.append(r)
    head = " | ".join(f"{c['label'].split('/')[0]} ({c['bench']['replay_size']} slots, max_patterns "
                      f"{c['bench']['max_patterns']}) | host" for c in configs)
    print(f"| buffer | {head} |")
    print("|---|" + "---:|---:|" * len(configs))
    host = []
    for c in configs:
        o = settings_options(c["bench"]["settings"], int(c["bench"]["replay_size"]))
        host.append(arena_by_buffer(c["board"].parent / "model.bnn", o, int(c["bench"]["max_patterns"])))
    for buf in BUFFERS + ("total",):
        cells = " | ".join(f"{n(c['runs']['learner']['arena'][buf])} | {n(h[buf])}" for c, h in zip(configs, host))
        print(f"| {buf} | {cells} |")
    for r in rows:
        for line in r["link"][1:]:
            print(f"{r['label']}, mcu/mps2.ld: {line}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("prepare", "check", "bench", "bench-check", "memory-report"))
    p.add_argument("paths", type=Path, nargs="+", metavar="PATH",
                   help="OUT MODEL STREAM (prepare, check, bench); DIR... (bench-check, memory-report)")
    p.add_argument("--settings", choices=SETTINGS, default="test", help="the test job's or the demo's options")
    p.add_argument("--replay-size", type=int, default=None, help="replay slots (default: the settings' own, 200 for "
                   "test)")
    p.add_argument("--epochs", type=int, default=None, help="prepare, check: epochs (default: the settings' own)")
    p.add_argument("--max-patterns", type=int, default=None, help="the largest experience the arena is sized for "
                   "(default: the stream's, for bench with demo 12,000)")
    p.add_argument("--predict", type=int, default=5, metavar="K", help="bench: predict jobs of 1, 2 and 1 + K images")
    p.add_argument("--fill", type=int, default=2000, help="bench: images of experience 0 the fill state learns")
    a = p.parse_args(argv)
    if a.command in ("bench-check", "memory-report"):
        if a.command == "bench-check":
            return max(bench_check(d) for d in a.paths)
        return memory_report(a.paths)
    if len(a.paths) != 3:
        p.error(f"{a.command} OUT MODEL STREAM")
    out, model, stream = a.paths
    if a.command == "bench":
        return bench(out, model, stream, a.settings, a.replay_size, a.max_patterns, a.predict, a.fill)
    o = job_options(a.settings, a.replay_size, a.epochs)
    return (prepare if a.command == "prepare" else check)(out, model, stream, o, a.max_patterns)


if __name__ == "__main__":
    sys.exit(main())
