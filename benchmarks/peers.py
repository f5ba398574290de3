"""The device runtime against the runtimes an embedded engineer would compare it with, in one run, on one CPU.

Runtimes (the demo's default 28x28 backbone, preset "fmnist" with its binary boundary at block5 as configs/demo.toml
trains and exports it; random weights, seed 0: speed does not depend on the weight values):

- bnncl's device runtime in Python, the packed backend (``Model.load(path).latent(images, backend="packed")`` for the
  frozen part, ``.logits(images, backend="packed")`` for the whole network): the ops in Python, each kernel the C
  runtime's (numba's until bnncl 0.2's retirement of the numba inference kernels; BENCHMARKS.md keeps the last run
  with them);
- bnncl's C runtime, ``Model.load(path, backend="c")`` ("not built" when the library is not; threads by
  ``cruntime.set_num_threads``);
- torch fp32 eager on the same binary network (``bnncl.models.build_model``, or ``--checkpoint``), as inference.py;
- TensorFlow Lite fp32 with its default delegate XNNPack, on the float twin of the architecture (every binary conv a
  float conv: the network a user would deploy instead of a BNN), built in Keras, converted with TFLiteConverter;
- onnxruntime fp32 (CPU execution provider) on the same float twin, exported from Keras with tf2onnx;
- Larq Compute Engine on the same binary architecture (larq ``QuantConv2D`` with ``ste_sign`` input and kernel
  quantizers, +1 padding, the same shifts, BN, RPReLU as shift + PReLU + shift), converted with
  ``larq_compute_engine.convert_keras_model`` and run with LCE's own interpreter, with its default options and with
  ``use_indirect_bgemm=True``.

The frozen part is everything below the latent-replay layer (stem, block1-block4 and the binarize layer: its output
is the 7x7x64 signs the demo's replay memory stores); the whole network runs to the logits (N, 10). Every runtime's
output shape is checked. Cases: batch 1 and 64, one thread and all threads. The peers run in a worker process
(benchmarks/peers_worker.py) of their own virtual environment, .venv-peers (Python 3.11; created and installed here
when missing, pinned in PEERS_PACKAGES; TF_USE_LEGACY_KERAS=1 for larq's Keras 2 API). Per case, every runtime is
timed in the same interleaved rounds, this process's runtimes and the worker's taking turns (the other side idle);
a figure is the best round's minimum per-call time (benchmarks/common.py's compare), every call including the
uint8 -> [-1, 1] input normalization. Ratios are against TFLite-XNNPack in the same run. The CPU time other
processes take while each case is timed (/proc/stat less this process and the worker) is printed beside the figures:
on a shared machine the multi-threaded figures are the first to suffer.

Usage: python benchmarks/peers.py [--out runs/bench/peers.json] [--quick] [--checkpoint CKPT] [--seconds S]
       [--rounds R]
The first run creates .venv-peers (about a minute) and converts the peers' models (about a minute, then cached in
.venv-peers/model-cache); --quick is a smoke run of a few seconds after that.
"""

import argparse
import atexit
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import torch

from bnncl.checkpoint import load_model
from bnncl.data.idx import load_idx_dataset
from bnncl.device import Model, cruntime
from bnncl.export import export_checkpoint
from bnncl.models.backbone import normalize_tensor
from common import compare, describe_machine, machine_info, random_checkpoint, table, write_json

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "peers_worker.py"
PEERS_VENV = ROOT / ".venv-peers"
PEERS_PYTHON = "python3.11"
# Exact versions that work together on Python 3.11: TensorFlow 2.16 is the version LCE 0.16.0 was built and tested
# against (its requirements.txt: tensorflow 2.16.1, tf-keras 2.16.0, keras 3.3.3, larq 0.13.3, numpy 1.26.4);
# onnxruntime 1.32 needs protobuf >= 4.25.8, TensorFlow 2.16 < 5; onnx 1.17 is the newest that imports with
# TensorFlow 2.16's ml-dtypes 0.3 (onnx 1.19 needs ml_dtypes.float4_e2m1fn).
PEERS_PACKAGES = ("tensorflow-cpu==2.16.1", "keras==3.3.3", "larq==0.13.3", "larq-compute-engine==0.16.0",
                  "onnxruntime==1.32.0", "tf2onnx==1.17.0", "onnx==1.17.0", "numpy==1.26.4", "protobuf==4.25.9")
# tf-keras 2.16.0 declares a dependency on "tensorflow", which would install the full tensorflow wheel beside
# tensorflow-cpu (the same modules twice): installed without its dependencies, tensorflow-cpu provides them.
PEERS_NO_DEPS = ("tf-keras==2.16.0",)
MARKER = PEERS_VENV / "bnncl-peers.json"  # what the last successful installation installed
PREFIX = "@@peers"

PARTS = ("frozen", "whole")
BATCHES = (1, 64)
RUNTIMES = ("packed", "c", "torch", "tflite", "onnxruntime", "lce", "lce_indirect")
LOCAL = ("packed", "c", "torch")
BASE = "tflite"
LABELS = {"packed": "bnncl device, packed: Python ops on the C kernels (binary)",
          "c": "bnncl device, C runtime (binary)",
          "torch": "torch fp32 eager (binary net)", "tflite": "TFLite fp32 + XNNPack (float twin)",
          "onnxruntime": "onnxruntime fp32 (float twin)", "lce": "LCE, default options (binary) [1]",
          "lce_indirect": "LCE, use_indirect_bgemm (binary) [1]"}
LCE_NOTE = ("[1] Larq Compute Engine's x86-64 build runs its reference kernels; its optimized kernels are ARM-only. "
            "LCE's documentation (its Interpreter's docstring) says LCE is optimized for ARM v8 (such as a Raspberry "
            "Pi or Android phones) and that on any other architecture (e.g. x86) the interpreter falls back on the "
            "reference kernels: correct outputs, not optimized for speed in any way. In its source, the binary GEMM "
            "has hand-written kernels for Arm32/Aarch64 only and a portable C++ kernel for everything else "
            "(core/bgemm/kernels.h); use_indirect_bgemm selects the indirect BGEMM, whose only non-Aarch64 "
            "micro-kernel is a portable 4x2 C++ one (core/indirect_bgemm/).")


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".strip().rstrip(":")


# -- the peers' virtual environment ---------------------------------------------------------------------------------

def ensure_peers_venv(log: Path) -> tuple[Path | None, str | None, dict]:
    """.venv-peers's python, created and installed if missing or installed with other pins; (python, error that
    stops every peer, {package: error} of packages that could not be installed)."""
    py = PEERS_VENV / "bin" / "python"
    want = {"packages": list(PEERS_PACKAGES), "no_deps": list(PEERS_NO_DEPS), "python": PEERS_PYTHON}
    if py.is_file() and MARKER.is_file():
        try:
            if json.loads(MARKER.read_text()) == want:
                return py, None, {}
        except ValueError:
            pass
    with open(log, "a") as out:
        def run(cmd) -> bool:
            out.write(f"$ {' '.join(map(str, cmd))}\n")
            out.flush()
            return subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode == 0

        if not py.is_file():
            base = shutil.which(PEERS_PYTHON)
            if base is None:
                return None, f"{PEERS_PYTHON} not found (the peers' venv needs it)", {}
            print(f"creating {PEERS_VENV.name} ({PEERS_PYTHON} -m venv) and installing {', '.join(PEERS_PACKAGES)} "
                  f"and, without dependencies, {', '.join(PEERS_NO_DEPS)}; log {log}", flush=True)
            if not run([base, "-m", "venv", PEERS_VENV]):
                return None, f"{PEERS_PYTHON} -m venv {PEERS_VENV} failed (log {log})", {}
        else:
            print(f"installing the pinned peers into {PEERS_VENV.name}; log {log}", flush=True)
        pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
        failed = {}
        if not run(pip + list(PEERS_PACKAGES)):
            # one at a time, every pin as a constraint, so that one package that cannot be installed stops only
            # the peers that need it
            constraints = log.parent / "peers-constraints.txt"
            constraints.write_text("\n".join(PEERS_PACKAGES + PEERS_NO_DEPS) + "\n")
            for p in PEERS_PACKAGES:
                if not run(pip + ["-c", constraints, p]):
                    failed[p] = f"pip install {p} failed (log {log})"
        for p in PEERS_NO_DEPS:
            if not run(pip + ["--no-deps", p]):
                failed[p] = f"pip install --no-deps {p} failed (log {log})"
    if not failed:
        MARKER.write_text(json.dumps(want))
    return py, None, failed


class Worker:
    """benchmarks/peers_worker.py in .venv-peers: specs and timings through files in ``tmp``."""

    def __init__(self, py: Path, tmp: Path):
        self.tmp, self.n = tmp, 0
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(TF_USE_LEGACY_KERAS="1", PYTHONNOUSERSITE="1")
        self.log = tmp / "worker.log"
        self.proc = subprocess.Popen([str(py), str(WORKER), str(tmp)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(self.log, "w"), text=True, env=env, cwd=ROOT)
        self._wait("ready")
        self.setup = json.loads((tmp / "setup.json").read_text())

    def _wait(self, what: str) -> str:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                tail = self.log.read_text().strip().splitlines()[-1:] if self.log.is_file() else []
                raise RuntimeError(f"the peers' worker exited ({self.proc.wait()}) waiting for {what!r}"
                                   + (f": {tail[0]}" if tail else ""))
            if line.startswith(f"{PREFIX} {what}"):
                return line.split()[-1]

    def round(self, part: str, batch: int, threads: int, seconds: float) -> dict:
        self.n += 1
        out = f"round-{self.n:04d}.json"
        cmd = {"cmd": "round", "case": {"part": part, "batch": batch, "threads": threads}, "seconds": seconds,
               "out": out}
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        self._wait("done")
        return json.loads((self.tmp / out).read_text())

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()


# -- the machine's other load -----------------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def cpu_counters(pids) -> dict:
    """Busy and stolen CPU seconds of the whole machine (/proc/stat) and the CPU seconds of this process and ``pids``
    (all their threads): the difference between the first and the rest is what other processes took."""
    try:
        v = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        busy, steal = (v[0] + v[1] + v[2] + v[5] + v[6]) / TICK, v[7] / TICK
    except (OSError, ValueError, IndexError):
        return {}
    t = os.times()
    own = t.user + t.system
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            own += (int(f[11]) + int(f[12])) / TICK
        except (OSError, ValueError, IndexError):
            pass
    return {"busy": busy, "steal": steal, "own": own, "wall": time.perf_counter()}


def other_load(before: dict, after: dict) -> dict:
    """Cores' worth of CPU that other processes used (and the hypervisor stole) between two cpu_counters()."""
    if not before or not after:
        return {}
    wall = after["wall"] - before["wall"]
    other = (after["busy"] - before["busy"]) - (after["own"] - before["own"])
    return {"other_cores": max(0.0, other) / wall, "steal_cores": (after["steal"] - before["steal"]) / wall,
            "wall_seconds": wall}


# -- bnncl's side ------------------------------------------------------------------------------------------------

def expected_shapes(arch: dict, lr_layer: str) -> dict:
    """(H, W, C) of the frozen part's output (the input of ``lr_layer``) and (classes,) of the logits."""
    h, w, _ = arch["input_shape"]
    s = arch["stem_stride"]
    h, w, c = -(-h // s), -(-w // s), arch["stem_channels"]
    k = 0
    for channels, blocks, stride in arch["stages"]:
        for i in range(blocks):
            k += 1
            if f"block{k}" == lr_layer:
                return {"frozen": [h, w, c], "whole": [arch["num_classes"]]}
            st = stride if i == 0 else 1
            h, w, c = -(-h // st), -(-w // st), channels
    raise ValueError(f"latent-replay layer {lr_layer!r} is not a block")


def load_c_runtime(path: Path):
    """bnncl's C runtime, if this bnncl has one: (model, None), else (None, why)."""
    try:
        return Model.load(path, backend="c"), None
    except Exception as e:  # noqa: BLE001 - not built yet (Model.load has no backend argument), or failing
        return None, f'Model.load(path, backend="c"): {one_line(e)}'


def c_build_path() -> str | None:
    """The popcount path the C runtime was built with."""
    try:
        return cruntime.build_path()
    except Exception:  # noqa: BLE001 - not built: said where it is loaded
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None,
                    help="a bnncl checkpoint for bnncl and torch (default: random weights; the peers always are)")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    ap.add_argument("--quick", action="store_true", help="one short round per case (a smoke run)")
    ap.add_argument("--seconds", type=float, default=None,
                    help="seconds per runtime and case, split over the rounds (default 2; --quick 0.05)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="interleaved rounds per case (default 10, more on a busy machine; --quick 1)")
    args = ap.parse_args()

    seconds, rounds = (0.05, 1) if args.quick else (2.0, 10)  # per runtime and case, in interleaved rounds
    seconds, rounds = args.seconds or seconds, args.rounds or rounds
    if seconds <= 0 or rounds < 1:
        ap.error("--seconds must be positive and --rounds at least 1")
    threads_list = sorted({1, os.cpu_count() or 1})
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bnncl-peers-"))
    atexit.register(shutil.rmtree, tmp, True)

    # -- bnncl and torch ---------------------------------------------------------------------------------------
    ckpt = Path(args.checkpoint) if args.checkpoint else tmp / "random.pt"
    if not args.checkpoint:
        random_checkpoint(ckpt, "block5")
    model_file = tmp / "model.bnn"
    export_checkpoint(ckpt, model_file)
    m = Model.load(model_file)
    model, _ = load_model(ckpt)
    model.eval()
    frozen_torch, _ = model.split(m.lr_layer)
    arch = model.config.to_dict()
    expect = expected_shapes(arch, m.lr_layer)
    c_model, c_error = load_c_runtime(model_file)
    try:
        images = load_idx_dataset(args.data, "test").x[:max(BATCHES)]
        image_source = f"the first {max(BATCHES)} Fashion-MNIST test images ({args.data})"
    except Exception as e:  # noqa: BLE001 - any missing/corrupt data: random pixels time the same
        images = np.random.default_rng(0).integers(0, 256, (max(BATCHES), *m.input_shape), dtype=np.uint8)
        image_source = f"random uint8 images (Fashion-MNIST not readable: {one_line(e)})"
    images = np.ascontiguousarray(images.reshape(len(images), *m.input_shape))

    def torch_call(net, x):
        with torch.inference_mode():
            return net(normalize_tensor(torch.from_numpy(x)))

    local_fns = {"packed": {"frozen": lambda x: m.latent(x, "packed"),
                            "whole": lambda x: m.logits(x, "packed", batch_size=len(x))},
                 "torch": {"frozen": lambda x: torch_call(frozen_torch, x), "whole": lambda x: torch_call(model, x)}}
    if c_model is not None:
        local_fns["c"] = {"frozen": lambda x: c_model.latent(x), "whole": lambda x: c_model.logits(x)}

    # shapes and agreement of this side (bnncl against torch: the same weights)
    checks, errors = {}, {}
    x64 = images[:max(BATCHES)]
    ref_logits = torch_call(model, x64).numpy()
    ref_latent = torch_call(frozen_torch, x64).permute(0, 2, 3, 1).numpy()
    for k, fns in local_fns.items():
        try:
            lat, logits = fns["frozen"](x64), np.asarray(fns["whole"](x64))
            if hasattr(lat, "signs"):  # an Activation: the signs where the LR layer is binary (the demo's), else real
                lat_pm1 = lat.signs() if lat.bits is not None else lat.real
            else:
                lat_pm1 = np.asarray(lat)
            if k == "torch":
                lat_pm1 = lat_pm1.transpose(0, 2, 3, 1)  # NCHW -> NHWC
            got = {"frozen": list(lat_pm1.shape), "whole": list(logits.shape)}
            if k == "packed" and lat.bits is not None:
                got["frozen_packed_bits"] = [*lat.bits.shape, str(lat.bits.dtype)]
            checks[k] = {"shapes": got, "max_abs_logits_vs_torch": float(np.abs(logits - ref_logits).max()),
                         "argmax_agreement_vs_torch": float((logits.argmax(1) == ref_logits.argmax(1)).mean()),
                         "latent_max_abs_vs_torch": float(np.abs(lat_pm1 - ref_latent).max()),
                         "latent_agreement_vs_torch": float((lat_pm1 == ref_latent).mean())}
            for part in PARTS:
                if got[part] != [len(x64), *expect[part]]:
                    raise ValueError(f"{part}: output shape {got[part]}, expected {[len(x64), *expect[part]]}")
        except Exception as e:  # noqa: BLE001
            errors[k] = one_line(e)
            local_fns.pop(k)
    if c_model is None:
        errors["c"] = "not built"

    phases = {"bnncl_setup": time.perf_counter() - t_start}

    # -- the peers -------------------------------------------------------------------------------------------------
    worker, install_failed, peers_error = None, {}, None
    py, venv_error, install_failed = ensure_peers_venv(tmp / "peers-install.log")
    if venv_error:
        peers_error = venv_error
    else:
        np.save(tmp / "images.npy", images)
        spec = {"architecture": arch, "lr_layer": m.lr_layer, "batches": list(BATCHES), "threads": threads_list,
                "expect": expect, "images": str(tmp / "images.npy"), "cache": str(PEERS_VENV / "model-cache")}
        (tmp / "spec.json").write_text(json.dumps(spec, indent=1))
        try:
            worker = Worker(py, tmp)
            atexit.register(worker.close)
        except Exception as e:  # noqa: BLE001
            peers_error = one_line(e)
    peers = ("tflite", "onnxruntime", "lce", "lce_indirect")
    setup = worker.setup if worker else {"versions": {}, "errors": {}}
    for p in peers:
        if peers_error:
            errors[p] = peers_error
        elif p in setup["errors"]:
            errors[p] = setup["errors"][p]
    if install_failed:
        for p in peers:
            if p in errors:
                errors[p] += f" (not installed: {', '.join(install_failed)})"
    xnnpack_log = []
    if worker:
        xnnpack_log = sorted({ln.strip() for ln in worker.log.read_text().splitlines() if "XNNPACK" in ln})

    phases["peers_setup"] = time.perf_counter() - t_start - phases["bnncl_setup"]

    # -- timing: per case, interleaved rounds, this side's runtimes and the worker's taking turns ---------------------
    speed, load = {}, {}
    pids = [worker.proc.pid] if worker else []
    for part in PARTS:
        for batch in BATCHES:
            for threads in threads_list:
                x = images[:batch]
                fns = {k: (lambda f=f[part], x=x: f(x)) for k, f in local_fns.items()}
                best, calls = {}, {}
                before = cpu_counters(pids)

                def add(res):
                    for k, v in res.items():
                        if "error" in v:
                            errors[k] = f"failed while timed: {v['error']}"
                            continue
                        best[k] = min(best.get(k, float("inf")), v["seconds"])
                        calls[k] = calls.get(k, 0) + v["calls"]

                for r in range(rounds):
                    sides = ["local", "worker"] if r % 2 == 0 else ["worker", "local"]
                    for side in sides:
                        if side == "local":
                            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
                            torch.set_num_threads(threads)
                            cruntime.set_num_threads(threads)
                            for k in [k for k in fns if k not in errors]:
                                try:
                                    add(compare({k: fns[k]}, seconds / rounds, 1))
                                except Exception as e:  # noqa: BLE001 - reported in its rows, the others go on
                                    add({k: {"error": one_line(e)}})
                        elif worker is not None:
                            try:
                                add(worker.round(part, batch, threads, seconds / rounds))
                            except Exception as e:  # noqa: BLE001 - the worker died: its peers stop here
                                for p in peers:
                                    errors.setdefault(p, f"failed while timed: {one_line(e)}")
                                worker = None
                speed[f"{part}/{batch}/{threads}"] = {k: {"seconds": best[k], "calls": calls[k]} for k in best
                                                      if k not in errors}
                load[f"{part}/{batch}/{threads}"] = other_load(before, cpu_counters(pids))
    if worker:
        worker.close()
    numba.set_num_threads(min(max(threads_list), numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(max(threads_list))

    # -- output ----------------------------------------------------------------------------------------------------
    machine = machine_info()
    v = setup.get("versions", {})
    versions = {"bnncl_numba": numba.__version__, "numpy": np.__version__, "torch": torch.__version__,
                "peers": v}
    result = {"quick": args.quick, "machine": machine, "versions": versions, "checkpoint": args.checkpoint,
              "random_weights": not args.checkpoint, "images": image_source, "model": m.describe(),
              "lr_layer": m.lr_layer, "expected_shapes": expect, "threads": threads_list,
              "seconds_per_case": seconds, "rounds": rounds, "speed": speed, "other_load": load, "errors": errors,
              "local_checks": checks,
              "c_runtime": c_error or "loaded", "peers_setup": setup, "peers_install_failed": install_failed,
              "xnnpack_log": xnnpack_log, "labels": LABELS}

    print(f"machine: {describe_machine(machine)}; numba {numba.__version__} (threading layer "
          f"{numba.threading_layer()}), numpy {np.__version__}{'; QUICK run (few repeats)' if args.quick else ''}")
    if v:
        print("peers (.venv-peers, Python {python}): tensorflow-cpu {tensorflow-cpu} (tf_keras {tf-keras}), larq "
              "{larq}, larq-compute-engine {larq-compute-engine}, onnxruntime {onnxruntime}, tf2onnx {tf2onnx}, onnx "
              "{onnx}, numpy {numpy}".format(**{k: v.get(k) for k in ("python", "tensorflow-cpu", "tf-keras", "larq",
                                                                       "larq-compute-engine", "onnxruntime", "tf2onnx",
                                                                       "onnx", "numpy")}))
    print(f"model: {m.describe()}; "
          + ("random weights (seed 0), speed does not depend on them" if not args.checkpoint
             else f"checkpoint {args.checkpoint} (the peers: random weights)"))
    print(f"images: {image_source}; {rounds} interleaved rounds, ~{seconds:g} s per runtime and case; "
          f"threads {' and '.join(map(str, threads_list))}")
    c_path = c_build_path() if c_model is not None else None
    result["c_build_path"] = c_path
    print("bnncl C runtime: " + (f"not built ({c_error})" if c_model is None else "loaded with "
                                 'Model.load(path, backend="c")' + (f", built for {c_path}" if c_path else "")
                                 + "; threads by cruntime.set_num_threads (a batch split over models on the "
                                 "same bytes)"))
    print(f"XNNPack: {'; '.join(xnnpack_log) or 'no XNNPACK line in the worker log'}"
          + (f"; delegate over the whole graph in {sum(r.get('xnnpack_whole_graph', False) for r in tfl)} of "
             f"{len(tfl)} TFLite interpreters" if (tfl := [r for k, r in setup.get("runners", {}).items()
                                                           if k.startswith("tflite/")]) else ""))
    print(f"output shapes: frozen part (N, {', '.join(map(str, expect['frozen']))}), logits (N, "
          f"{expect['whole'][0]}): "
          + ("all runtimes that ran match" if not any("shape" in e for e in errors.values()) else "MISMATCH, see rows")
          + f"; bnncl packed vs torch (same weights): logits max |diff| "
          f"{checks.get('packed', {}).get('max_abs_logits_vs_torch', float('nan')):.2e}, latent signs agree "
          f"{checks.get('packed', {}).get('latent_agreement_vs_torch', float('nan')):.2%}")
    ops = setup.get("ops", {})
    for kind, label in (("tflite", "TFLite float twin"), ("onnx", "ONNX float twin"), ("lce", "LCE binary")):
        whole = ops.get(kind, {}).get(f"whole/{max(BATCHES)}")
        if whole:
            print(f"{label} ops (whole network): " + ", ".join(f"{k} {n}" for k, n in whole.items()))
    agree = setup.get("agreement", {})
    if agree:
        worst = {}
        for k, a in agree.items():
            p, part = k.split("/")[:2]
            worst[(p, part)] = max(worst.get((p, part), 0.0), a["max_abs_vs_keras"])
        print("peers vs their Keras model (max |diff|): " + ", ".join(
            f"{p} {part} {w:.1e}" for (p, part), w in sorted(worst.items())))
    print()

    rows = []
    for part in PARTS:
        what = f"frozen (stem..{m.frozen_ops[-1].name})" if part == "frozen" else "whole (logits)"
        for batch in BATCHES:
            for threads in threads_list:
                res = speed[f"{part}/{batch}/{threads}"]
                base = res.get(BASE, {}).get("seconds")
                for k in RUNTIMES:
                    if k in res:
                        t = res[k]["seconds"]
                        ratio = f"{base / t:.2f}x" if base else "–"
                        rows.append([what, batch, threads, LABELS[k], f"{t / batch * 1e3:.4f}", f"{batch / t:,.0f}",
                                     ratio, res[k]["calls"]])
                    else:
                        why = errors.get(k, "did not run")
                        rows.append([what, batch, threads, LABELS[k], why if k == "c" else f"not run: {why}", "–",
                                     "–", 0])
    table(["part", "batch", "threads", "runtime", "ms / image", "images/s", "speedup vs TFLite-XNNPack", "calls"],
          rows, "lrrlrrrr")
    print(LCE_NOTE)
    print("Speedup vs TFLite-XNNPack: TFLite's time / this runtime's time in the same case (above 1: faster than "
          "TFLite). TFLite and onnxruntime run the float twin (float convs, no signs), bnncl, torch and LCE the "
          "binary network.\n")

    # at a glance: ms per image, one column per case
    cases = [(p, b, t) for p in PARTS for b in BATCHES for t in threads_list]
    glance = []
    for k in RUNTIMES:
        row = [LABELS[k]]
        for p, b, t in cases:
            r = speed[f"{p}/{b}/{t}"].get(k)
            row.append(f"{r['seconds'] / b * 1e3:.4f}" if r else "not built" if k == "c" else "–")
        glance.append(row)
    if any(load.values()):
        glance.append(["(other processes' CPU while timed, cores)"]
                      + [f"{load[f'{p}/{b}/{t}'].get('other_cores', float('nan')):.2f}" for p, b, t in cases])
    if any(load.values()):
        worst = max(load, key=lambda k: load[k].get("other_cores", 0.0))
        mean = sum(v.get("other_cores", 0.0) * v.get("wall_seconds", 0.0) for v in load.values()) / max(
            1e-9, sum(v.get("wall_seconds", 0.0) for v in load.values()))
        busy = load[worst].get("other_cores", 0.0)
        print(f"other processes on the machine while timing: {mean:.2f} cores on average, at most {busy:.2f} "
              f"({worst.replace('/', ' batch ', 1).replace('/', ', threads ')}); hypervisor steal "
              f"{max(v.get('steal_cores', 0.0) for v in load.values()):.2f} cores at most"
              + (" -- the machine was NOT idle: multi-threaded figures suffer most" if busy > 0.1 else "") + "\n")
    print("ms per image at a glance:\n")
    table(["runtime"] + [f"{p} b{b} t{t}" for p, b, t in cases], glance)
    result["total_seconds"] = time.perf_counter() - t_start
    phases["timing"] = result["total_seconds"] - phases["bnncl_setup"] - phases["peers_setup"]
    result["phases_seconds"] = phases
    print(f"total {result['total_seconds']:.0f} s: bnncl and torch set-up {phases['bnncl_setup']:.0f} s, the peers' "
          f"venv check and worker start (imports, conversions unless cached) {phases['peers_setup']:.0f} s, timing "
          f"{phases['timing']:.0f} s")
    if args.out:
        print(f"saved {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
