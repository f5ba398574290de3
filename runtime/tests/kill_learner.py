"""The C learner's example program (examples/learn_stream.c) tested from outside, as a user runs it: its state against
two oracles, its refusals of bad input, and SIGKILLs of a real learning run. Run with the project's venv from
runtime/ (the Makefile's test-learner and test-learner-kill do)::

    python tests/kill_learner.py fixture DIR              the tiny model and the streams (below)
    python tests/kill_learner.py oracle DIR BLOB [OPTIONS]  BLOB (learn_stream --print-state after DIR/stream with
                                                          learn_stream's OPTIONS) against the oracles
    python tests/kill_learner.py bad DIR BINARY           bad input: one-line errors, files left as they were
    python tests/kill_learner.py kill DIR BINARY [KILLS] [SEED]   SIGKILL at random moments, at least KILLS times

fixture: ``DIR/tiny.bnn``, a tiny backbone (8x8 grey images, 10 classes, 32 features at the head; the config of
tests/device/test_learner.py) with every per-channel vector and BN statistic random (tests/fixtures.py's
``randomized``), saved (``bnncl.checkpoint.save_checkpoint``) and exported with its LR layer at the head
(``bnncl.export.export_checkpoint(..., lr_layer="head")``); ``DIR/stream``: 3 experiences of 40 images revisiting
classes (0,1,2 / 2,3,4 / 0,4,5) and 60 test images; ``DIR/long``: KILL_EXPERIENCES experiences of 40 images for the
kill test (examples/make_stream.py --synthetic writes both).

oracle: the blob must be byte for byte the state blob the Python wrapper of the same C library computes on the same
stream (``bnncl.device.clearner.CLearner(...).learn`` per experience, ``state_blob()``), and every array of it
(parsed by ``parse_state``) equal to the Python device learner's (``bnncl.device.Learner``, LR layer head: the
independent oracle): the consolidated rows bit for bit, the counts, the replay slots, labels, the decode scale's
float64 sums, the offsets, the counters and the three generators; the options in its header are the ones asked for.

bad: each bad input (a truncated IDX file, trailing bytes, a wrong magic, a wrong image size, a label outside the
classes, labels that do not match the images, the model or a data file as STATE, a state of other settings, a file
that is not a state, both slots damaged, more experiences consumed than given, bad options, a damaged model) is
refused with one line on stderr and a nonzero status, no crash, sanitizer report or signal, and leaves every file
as it was (bytes) with none added. A damaged newest slot (payload or header) is not an error: the older slot loads
(bnn_store.h), --print-state gives the state before, and the run resumes from it to the same final state.

kill: learn_stream on DIR/long is killed with SIGKILL at a random moment (seeded; the delay uniform over the whole
uninterrupted run: loading, learning, saving), restarted, killed again..., until it finishes; then a new round, until
KILLS kills have landed. After every kill the state file loads (--print-state), and its blob is the uninterrupted
run's after the same number of experiences, byte for byte, never older than the last save the program reported
done; at the end of every round the final state is the uninterrupted run's. learn_stream --verbose marks each
learning and save, so a kill is placed in loading, learning or saving.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))  # tests/fixtures.py
sys.path.insert(0, str(HERE.parent / "examples"))  # make_stream.py

TINY = dict(input_shape=(8, 8, 1), num_classes=10, stem_channels=8, stages=((16, 1, 1), (32, 1, 2)), name="tiny")
CLASS_SETS = "0,1,2/2,3,4/0,4,5"
KILL_EXPERIENCES = 16
KILL_OPTIONS = ["--epochs", "2", "--batch-size", "8", "--replay-size", "60", "--replay-batch", "8", "--lr", "0.05",
                "--seed", "11"]


def stream_files(d: Path) -> list[str]:
    """learn_stream's experience arguments for a stream directory (exp0-images.idx exp0-labels.idx ...)."""
    k, out = 0, []
    while (d / f"exp{k}-images.idx").exists():
        out += [str(d / f"exp{k}-images.idx"), str(d / f"exp{k}-labels.idx")]
        k += 1
    return out


# -- fixture ------------------------------------------------------------------------------------------------------

def fixture(out: Path) -> int:
    import make_stream
    import torch

    from bnncl.checkpoint import save_checkpoint
    from bnncl.export import export_checkpoint
    from bnncl.models import BackboneConfig
    from fixtures import randomized

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(Path(tmp) / "tiny.pt", randomized(BackboneConfig(**TINY), seed=1))
        export_checkpoint(Path(tmp) / "tiny.pt", out / "tiny.bnn", lr_layer="head")
    sets = "/".join(f"{k % 10},{(k + 3) % 10},{(k + 7) % 10}" for k in range(KILL_EXPERIENCES))
    for name, extra in (("stream", ["--class-sets", CLASS_SETS]), ("long", ["--class-sets", sets, "--test", "0"])):
        with contextlib.redirect_stdout(io.StringIO()) as said:
            status = make_stream.main(["--synthetic", "--out", str(out / name), "--seed", "5", *extra])
        print(f"{out / name}: {said.getvalue().splitlines()[0]}")
        if status:
            return status
    (out / "MANIFEST").write_text("tiny.bnn\nstream\nlong\n")
    return 0


# -- oracle -------------------------------------------------------------------------------------------------------

def parse_flags(flags: list[str]):
    """learn_stream's options as a LearnOptions: bnn_learn_defaults() for the ones not given (LR layer head)."""
    from bnncl.core.options import LearnOptions

    ap = argparse.ArgumentParser(prog="learn_stream options")
    for name, default in (("strategy", "ar1"), ("epochs", 4), ("batch-size", 50), ("replay-size", 1500),
                          ("replay-batch", 128), ("replay-storage", "bits"), ("replay-update", "balanced"),
                          ("replay-mix", "fixed"), ("q-f", 8), ("q-b", 16), ("rounding", "nearest"), ("lr", 0.01),
                          ("seed", 0)):
        ap.add_argument(f"--{name}", type=type(default), default=default)
    a = ap.parse_args(flags)
    return LearnOptions(strategy=a.strategy, lr_layer="head", epochs=a.epochs, lr=a.lr, batch_size=a.batch_size,
                        replay_size=a.replay_size, replay_storage=a.replay_storage, replay_update=a.replay_update,
                        replay_mix=a.replay_mix, replay_batch=a.replay_batch, q_f=a.q_f, q_b=a.q_b,
                        q_rounding=a.rounding, seed=a.seed)


def read_stream(d: Path):
    """The experiences as (NHWC uint8, int64) through bnncl's own IDX reader."""
    from bnncl.data.idx import read_idx

    files = stream_files(d)
    return [(read_idx(files[i])[..., None], read_idx(files[i + 1]).astype(np.int64)) for i in range(0, len(files), 2)]


def python_state(py) -> dict:
    """The Python device learner's state in parse_state's terms."""
    out = {"experiences": py.experiences, "cw": py.cwr.cw, "past": py.cwr.past,
           "rng": {"shuffle": py.shuffle_rng.state, "replay": py.replay_rng.state, "quantizer": py.quant_rng.state}}
    m = py.memory
    if m is None:
        out.update({"replay.size": 0, "replay.updates": 0, "replay.abs_count": 0})
        return out
    out.update({"replay.data": np.ascontiguousarray(m.data[:m.size]).view(np.uint8).reshape(m.size, -1),
                "replay.labels": m.labels[:m.size], "replay.abs_sum": m._abs_sum, "replay.offset": m.offset,
                "replay.size": m.size, "replay.updates": m.updates, "replay.abs_count": m._abs_count})
    return out


def compare(ours: dict, theirs: dict, what: str) -> list[str]:
    """Every field of theirs in ours, exactly (arrays: dtype-independent values and, for floats, their bits)."""
    bad = []
    for key, want in theirs.items():
        got = ours[key]
        if isinstance(want, np.ndarray):
            want = np.ascontiguousarray(want)
            got = np.ascontiguousarray(got)
            same = got.shape == want.shape and np.array_equal(got, want)
            if same and want.dtype.kind == "f":
                same = got.astype(want.dtype.newbyteorder("<")).tobytes() == want.astype(
                    want.dtype.newbyteorder("<")).tobytes()
            if not same:
                diff = "shape" if got.shape != want.shape else f"{int(np.sum(got != want))} of {want.size} differ"
                bad.append(f"{what}: {key} ({diff})")
        elif got != want:
            bad.append(f"{what}: {key} {got!r} vs {want!r}")
    return bad


def oracle(d: Path, blob_path: Path, flags: list[str]) -> int:
    import ctypes

    from bnncl.device import Learner
    from bnncl.device.clearner import CLearner, COptions, _lib, learn_options_of, parse_state
    from bnncl.device.cruntime import Error

    opts = parse_flags(flags)
    blob = blob_path.read_bytes()
    c, err = COptions(), Error()
    buf = np.frombuffer(blob, np.uint8).copy()
    if _lib().bnn_learner_state_options(buf.ctypes.data, buf.nbytes, ctypes.byref(c), ctypes.byref(err)):
        print(f"FAIL {blob_path}: {err.message.decode()}")
        return 1
    if learn_options_of(c) != opts:
        print(f"FAIL {blob_path}: its options {learn_options_of(c)} are not the ones asked for {opts}")
        return 1
    model, stream = d / "tiny.bnn", read_stream(d / "stream")
    t0 = time.perf_counter()
    wrapper = CLearner(model, opts, None)
    for x, y in stream:
        wrapper.learn(x, y)
    t1 = time.perf_counter()
    py = Learner.open(model, None, opts)
    for x, y in stream:
        py.learn(x, y)
    t2 = time.perf_counter()
    ours = parse_state(blob)
    bad = [] if wrapper.state_blob() == blob else ["the blob is not the Python wrapper's (bytes)"]
    bad += compare(ours, parse_state(wrapper.state_blob()), "vs the wrapper")
    bad += compare(ours, python_state(py), "vs the Python device learner")
    if ours["experiences"] != len(stream) or (py.memory is not None and ours["replay.size"] == 0):
        bad.append(f"a vacuous comparison: {ours['experiences']} experiences, {ours['replay.size']} replay slots")
    if bad:
        print("FAIL " + "; ".join(bad))
        return 1
    print(f"   oracle: {blob_path.name} ({len(blob)} B, {opts.strategy}, {opts.replay_storage} replay, "
          f"{opts.replay_update} update, {opts.replay_mix} mix, {opts.q_rounding}, q {opts.q_f}/{opts.q_b}: "
          f"{ours['replay.size']} replay slots) = the Python wrapper's blob byte for byte "
          f"({(t1 - t0) * 1e3:.0f} ms) = the Python device learner's state ({(t2 - t1) * 1e3:.0f} ms)")
    return 0


# -- bad input ----------------------------------------------------------------------------------------------------

def snapshot(d: Path) -> dict:
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


class Bad:
    def __init__(self, binary: str, d: Path):
        self.binary, self.d, self.failures, self.cases = binary, d, [], 0

    def run(self, args, env_extra=None):
        env = {**os.environ, "ASAN_OPTIONS": "abort_on_error=0:exitcode=99", "UBSAN_OPTIONS": "exitcode=98",
               **(env_extra or {})}
        return subprocess.run([self.binary, *map(str, args)], capture_output=True, text=True, env=env, timeout=120)

    def refused(self, what: str, args, expect: str, status: int | None = None) -> None:
        """args must be refused: nonzero status (not a signal, not a sanitizer's), one line on stderr holding
        `expect`, every file of the directory as it was and none added."""
        self.cases += 1
        before = snapshot(self.d)
        r = self.run(args)
        lines = r.stderr.splitlines()
        problems = []
        if r.returncode <= 0 or r.returncode in (98, 99) or (status is not None and r.returncode != status):
            problems.append(f"status {r.returncode}")
        if len(lines) != 1 or not lines[0].startswith("learn_stream: ") or expect not in r.stderr:
            problems.append(f"stderr {r.stderr!r} (expected one line with {expect!r})")
        for bad_word in ("Sanitizer", "runtime error", "Traceback", "Segmentation"):
            if bad_word in r.stderr + r.stdout:
                problems.append(f"{bad_word} in the output")
        after = snapshot(self.d)
        if after.keys() != before.keys():
            problems.append(f"files added or removed: {sorted(map(str, after.keys() ^ before.keys()))}")
        problems += [f"{p} changed" for p in before if p in after and after[p] != before[p]]
        if problems:
            self.failures.append(f"{what}: {'; '.join(problems)}")
        else:
            print(f"   refused ({r.returncode}): {what}: {lines[0]}")

    def ok(self, args) -> subprocess.CompletedProcess:
        r = self.run(args)
        if r.returncode != 0:
            raise SystemExit(f"FAIL {' '.join(map(str, args))}: status {r.returncode}: {r.stderr.strip()}")
        return r


def newest_slot(data: bytes) -> tuple[int, int]:
    """(offset, sequence) of the slot header with the highest sequence (its magic at a 4-byte boundary)."""
    heads = [(i, int.from_bytes(data[i + 8:i + 16], "little")) for i in range(0, len(data) - 32, 4)
             if data[i:i + 8] == b"BNNSLOT1"]
    return max(heads, key=lambda h: h[1])


def bad(d: Path, binary: str) -> int:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=d) as tmp:
        w = Path(tmp)
        shutil.copy(d / "tiny.bnn", w / "tiny.bnn")
        shutil.copytree(d / "stream", w / "s")
        model, files = w / "tiny.bnn", stream_files(w / "s")
        opts = ["--epochs", "1", "--batch-size", "8", "--replay-size", "20", "--replay-batch", "8", "--seed", "2"]
        b = Bad(binary, w)
        # the reference: the state after each experience, and a state file after all three
        ref = []
        for k in (1, 2, 3):
            st = w / f"ref{k}.state"
            b.ok([model, st, *files[:2 * k], *opts, "--print-state", w / f"ref{k}.blob"])
            ref.append((w / f"ref{k}.blob").read_bytes())
            (w / f"ref{k}.blob").unlink()
            if k < 3:
                st.unlink()
        good = w / "ref3.state"
        state = w / "state"

        def variant(name: str, data: bytes) -> Path:
            p = w / "s" / name
            p.write_bytes(data)
            return p

        img1, lab2 = Path(files[2]).read_bytes(), Path(files[5]).read_bytes()
        trunc = variant("trunc-images.idx", img1[:-10])
        b.refused("a truncated images file", [model, state, files[0], files[1], trunc, files[3], *opts],
                  f"{trunc}: truncated", 2)
        shutil.copy(good, state)  # also when resuming: the state file as it was
        b.refused("a truncated images file, resuming", [model, state, *files[:4], trunc, files[5], *opts],
                  f"{trunc}: truncated", 2)
        state.unlink()
        b.refused("trailing bytes", [model, state, variant("long-images.idx", img1 + b"\0" * 3), files[3], *opts],
                  "3 unexpected bytes after", 2)
        b.refused("a truncated header", [model, state, variant("head-images.idx", img1[:9]), files[3], *opts],
                  "truncated", 2)
        b.refused("labels given as images", [model, state, files[1], files[1], *opts], "magic 0x00000801", 2)
        b.refused("images given as labels", [model, state, files[0], files[0], *opts], "magic 0x00000803", 2)
        labels = bytearray(lab2)
        labels[8 + 17] = 10
        badlab = variant("badlab-labels.idx", bytes(labels))
        b.refused("a label outside the classes (in the last experience)", [model, state, *files[:4], files[4], badlab,
                                                                             *opts],
                  "label 10 at index 17 is not a class of the model (10 classes)", 2)
        short = variant("short-labels.idx", b"\0\0\x08\x01" + (39).to_bytes(4, "big") + lab2[8:-1])
        b.refused("fewer labels than images", [model, state, files[0], short, *opts], "39 labels, but", 2)
        nine = variant("nine-images.idx", b"\0\0\x08\x03" + b"".join(v.to_bytes(4, "big") for v in (40, 9, 9))
                       + bytes(40 * 81))
        b.refused("images of another size", [model, state, nine, files[1], *opts], "the model takes 8x8x1", 2)
        rgb = variant("rgb-images.idx", b"\0\0\x08\x04" + b"".join(v.to_bytes(4, "big") for v in (40, 8, 8, 3))
                      + bytes(40 * 192))
        b.refused("images of three channels", [model, state, rgb, files[1], *opts], "8x8x3", 2)
        b.refused("a missing file", [model, state, w / "s" / "nope.idx", files[1], *opts], "No such file", 2)
        b.refused("the model file as STATE", [model, model, *files, *opts], "the model file itself", 2)
        b.refused("the model file as STATE, another path to it", [model, w / "s" / ".." / "tiny.bnn", *files, *opts],
                  "the model file itself", 2)
        os.link(model, w / "hardlink.bnn")
        b.refused("the model file as STATE, a hard link", [model, w / "hardlink.bnn", *files, *opts],
                  "the model file itself", 2)
        (w / "hardlink.bnn").unlink()
        b.refused("a labels file as STATE", [model, files[1], *files, *opts], "an input (a data file)", 2)
        b.refused("--print-state over the model", [model, good, *files, *opts, "--print-state", model],
                  "would overwrite an input", 2)
        b.refused("a state of other settings", [model, good, *files, *opts, "--lr", "0.07"], "lr or seed", 1)
        b.refused("a state of another replay size", [model, good, *files, *opts[:4], "--replay-size", "21",
                                                     *opts[6:]], "replay_size 20 (state) vs 21", 1)
        b.refused("more experiences consumed than given", [model, good, *files[:4], *opts], "consumed 3 experiences",
                  1)
        from bnncl.device.clearner import CLearner

        wrapper_state = w / "wrapper.bnls"  # the Python wrapper's file: the same layout, 1 MiB of user bytes
        x, y = read_stream(w / "s")[0]
        CLearner(model, parse_flags(opts), wrapper_state).learn(x, y)
        b.refused("a state file of the Python wrapper (bnncl.device.clearner)", [model, wrapper_state, *files, *opts],
                  f"{wrapper_state}: ", 1)
        wrapper_state.unlink()
        text = w / "notes.txt"
        text.write_text("not a learner state\n" * 20)
        b.refused("a text file as STATE", [model, text, *files, *opts], "no complete learner state", 1)
        data = bytearray(good.read_bytes())
        for i in range(0, len(data) - 32, 4):
            if data[i:i + 8] == b"BNNSLOT1":
                data[i + 40] ^= 0x01
        both = w / "both.state"
        both.write_bytes(bytes(data))
        b.refused("both slots damaged", [model, both, *files, *opts], "no complete learner state", 1)
        both.unlink()
        b.refused("an unknown option", [model, state, *files, "--epoch", "2"], "unknown option --epoch", 2)
        b.refused("a bad number", [model, state, *files, "--epochs", "two"], "--epochs", 2)
        b.refused("a bad choice", [model, state, *files, "--strategy", "ewc"], "give cwr or ar1", 2)
        b.refused("an odd number of experience files", [model, state, *files[:3]], "without its labels file", 2)
        b.refused("q_f above 16", [model, state, *files, "--q-f", "20", "--q-b", "20"], "q_f 20 / q_b 20", 1)
        b.refused("q_b below q_f", [model, state, *files, "--q-f", "8", "--q-b", "4"], "q_f 8 / q_b 4", 1)
        b.refused("--max-patterns below an experience", [model, state, *files, "--max-patterns", "39"],
                  "40 images; --max-patterns 39", 2)
        damaged = bytearray(model.read_bytes())
        damaged[len(damaged) // 2] ^= 0x10
        dmodel = w / "damaged.bnn"
        dmodel.write_bytes(bytes(damaged))
        b.refused("a damaged model file", [dmodel, state, *files, *opts], "checksum mismatch", 1)
        dmodel.unlink()

        # a damaged newest slot: the older one loads, as bnn_store.h says (not an error)
        for where, off in (("payload", 32 + 100), ("header", 20)):
            b.cases += 1
            data = bytearray(good.read_bytes())
            at, seq = newest_slot(bytes(data))
            data[at + off] ^= 0x04
            dam = w / f"damaged-{where}.state"
            dam.write_bytes(bytes(data))
            before = dam.read_bytes()
            r = b.ok([model, dam, *opts, "--print-state", w / "older.blob"])
            older = (w / "older.blob").read_bytes()
            if older != ref[1] or dam.read_bytes() != before:
                b.failures.append(f"damaged newest slot ({where}): --print-state did not give the state before it "
                                  f"(experience 2 of 3), or changed the file")
            r = b.ok([model, dam, *files, *opts, "--print-state", w / "final.blob"])
            if "resuming after experience 1" not in r.stdout or (w / "final.blob").read_bytes() != ref[2]:
                b.failures.append(f"damaged newest slot ({where}): the run did not resume from the older slot to "
                                  f"the same final state: {r.stdout!r}")
            else:
                print(f"   damaged newest slot ({where}, sequence {seq}): the older slot loads (the state after "
                      f"experience 2 of 3, byte for byte); the run resumes from it to the same final state")
            for p in (dam, w / "older.blob", w / "final.blob"):
                p.unlink()
        # a finished run given again: nothing to learn, the state as it was
        b.cases += 1
        before = good.read_bytes()
        r = b.ok([model, good, *files, *opts])
        if "all 3 experiences learned already" not in r.stdout or good.read_bytes() != before:
            b.failures.append(f"a finished run again: {r.stdout!r}")
        # no state yet: --print-state says so (status 3), writes nothing
        b.cases += 1
        r = b.run([model, w / "none.state", *opts, "--print-state", w / "none.blob"])
        if r.returncode != 3 or (w / "none.blob").exists() or (w / "none.state").exists():
            b.failures.append(f"--print-state without a state: status {r.returncode}, {r.stdout!r}")
    if b.failures:
        for f in b.failures:
            print(f"FAIL {f}")
        return 1
    print(f"   bad input: {b.cases} cases passed ({time.perf_counter() - t0:.1f} s)")
    return 0


# -- SIGKILL ------------------------------------------------------------------------------------------------------

def kill(d: Path, binary: str, kills: int, seed: int) -> int:
    rnd = random.Random(seed)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=d) as tmp:
        w = Path(tmp)
        model, files = d / "tiny.bnn", stream_files(d / "long")
        n = len(files) // 2
        base = [binary, str(model)]

        def run(state, args, **kw):
            return subprocess.run([*base, str(state), *args], capture_output=True, text=True, timeout=120, **kw)

        # the uninterrupted run, timed; and its state after every experience (one experience per run, resumed)
        t0 = time.perf_counter()
        r = run(w / "whole.state", [*files, *KILL_OPTIONS, "--verbose", "--print-state", str(w / "whole.blob")])
        whole_seconds = time.perf_counter() - t0
        if r.returncode:
            print(f"FAIL the uninterrupted run: {r.stderr.strip()}")
            return 1
        whole = (w / "whole.blob").read_bytes()
        saves = [line for line in r.stdout.splitlines() if line.endswith(": saved")]
        reference = {}
        for k in range(1, n + 1):
            r = run(w / "steps.state", [*files[:2 * k], *KILL_OPTIONS, "--print-state", str(w / "step.blob")])
            if r.returncode:
                print(f"FAIL the reference run to experience {k}: {r.stderr.strip()}")
                return 1
            reference[k] = (w / "step.blob").read_bytes()
        if reference[n] != whole or len(saves) != n:
            print("FAIL the run one experience at a time does not end where the uninterrupted run does")
            return 1

        landed = rounds = finished_early = 0
        where = {"loading": 0, "learning": 0, "saving": 0, "after a save": 0}
        saved_unreported = 0
        state = w / "state"
        while landed < kills:
            rounds += 1
            state.unlink(missing_ok=True)
            reported = 0  # experiences whose save the program reported done, this round
            for attempt in range(10 * n + 50):
                delay = rnd.uniform(0.0, whole_seconds)
                p = subprocess.Popen([*base, str(state), *files, *KILL_OPTIONS, "--verbose"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
                time.sleep(delay)
                p.send_signal(signal.SIGKILL)
                out, err = p.communicate()
                if p.returncode == 0:  # it finished before the kill
                    finished_early += 1
                    break
                if p.returncode != -signal.SIGKILL:
                    print(f"FAIL round {rounds}: status {p.returncode}: {err.strip()}")
                    return 1
                landed += 1
                marks = [line for line in out.splitlines() if line.startswith("experience ") and ": " in line
                         and line.split(": ", 1)[1] in ("learning", "saving", "saved")]
                last = marks[-1].split(": ", 1)[1] if marks else None
                where[{None: "loading", "learning": "learning", "saving": "saving", "saved": "after a save"}[last]] += 1
                reported += sum(m.endswith(": saved") for m in marks)
                # the state loads, and is the uninterrupted run's after as many experiences
                c = run(state, [*KILL_OPTIONS, "--print-state", str(w / "now.blob")])
                if c.returncode == 3 and reported == 0:
                    continue
                if c.returncode != 0:
                    print(f"FAIL kill {landed} (round {rounds}): the state does not load: status {c.returncode}: "
                          f"{c.stderr.strip() or c.stdout.strip()}")
                    return 1
                blob = (w / "now.blob").read_bytes()
                k = int.from_bytes(blob[44:48], "little")
                if k not in reference or blob != reference[k]:
                    print(f"FAIL kill {landed} (round {rounds}): the state after {k} experiences is not the "
                          "uninterrupted run's")
                    return 1
                if k < reported:
                    print(f"FAIL kill {landed}: {k} experiences in the state after {reported} saves were reported")
                    return 1
                saved_unreported += k > reported and last == "saving"
                reported = k
            else:
                print(f"FAIL round {rounds}: no end after {10 * n + 50} restarts")
                return 1
            # finished: the final state is the uninterrupted run's
            c = run(state, [*KILL_OPTIONS, "--print-state", str(w / "final.blob")])
            if c.returncode != 0 or (w / "final.blob").read_bytes() != whole:
                print(f"FAIL round {rounds}: the final state is not the uninterrupted run's")
                return 1
    print(f"kill_learner: passed ({landed} SIGKILLs landed in {rounds} runs of {n} experiences, each killed and "
          f"restarted until it finished, {landed + finished_early} starts; delays uniform over the uninterrupted "
          f"run's {whole_seconds * 1e3:.0f} ms, seed {seed}: {where['loading']} while loading, "
          f"{where['learning']} while learning, {where['saving']} during a save ({saved_unreported} of them after "
          f"its header was written: the new state loaded), {where['after a save']} after a save; after every kill "
          f"the state loaded and was the uninterrupted run's after as many experiences, byte for byte, and every "
          f"run ended on its final "
          f"state; {time.perf_counter() - t_start:.1f} s)")
    return 0


def main(argv) -> int:
    if len(argv) < 3:
        print(__doc__.split("\n\n")[1])
        return 2
    cmd, d = argv[1], Path(argv[2])
    if cmd == "fixture":
        return fixture(d)
    if cmd == "oracle":
        return oracle(d, Path(argv[3]), argv[4:])
    if cmd == "bad":
        return bad(d, argv[3])
    if cmd == "kill":
        return kill(d, argv[3], int(argv[4]) if len(argv) > 4 else 60, int(argv[5]) if len(argv) > 5 else 1)
    print(f"unknown command {cmd!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
