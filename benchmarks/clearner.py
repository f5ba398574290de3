"""The C learner (runtime/include/bnn_learner.h) against the Python device learners: its memory and its speed, on the
demo model (runs/demo/model.bnn) and the demo stream (configs/demo.toml, Fashion-MNIST), the head as the trainable
part (work A), the demo's device settings: AR1* (or CWR*), q_f 8 / q_b 16, 1,500 1-bit replay slots with the
class-balanced update, 50 new + 128 replayed patterns per step, max_patterns 12,000, seed 0, 1 epoch (the fills;
epochs change no figure here but the fills' length).

The C side is runtime/bench/bench_learner.c (built -O3 for this CPU's best path with its ISA flags on every file,
``make -C runtime build/bench-learner/PATH/bench_learner``, which this script runs), reading the experiences from raw
files this script writes (images uint8, labels int32); CLearner (bnncl.device.clearner, the package's C library,
-O3) where said. Everything is measured in one run, and every ratio compares figures of that run:

1. Arena: ``bnn_learner_arena_size`` by buffer (model, minibatch, head_step, replay, state, indices, total) for
   ar1 and cwr, with bnn_learn_defaults (no user bytes) and as CLearner opens it (1 MiB of user bytes for its log),
   beside ``Learner.nbytes()`` of the Python learner of the same settings (after learning the fill).
2. Peak RSS of fresh processes that load the model and learn the same two experiences (1,600 images of experience 0,
   then 250 of experience 1): bench_learner (images read by pread when the learner asks; ru_maxrss from a process
   forked by /bin/sh, so that no larger parent's peak is inherited, and VmHWM), the Python device learner, CLearner
   in Python (each forked before its imports), beside a Python process that only imports what CLearner needs.
3. One learning step, 50 new + 128 replayed, timed by part (frozen part of the 50 new images / replay sample +
   decode (the C learner's: the sample; it decodes the patterns in its head step) / the head's training step), in
   interleaved rounds (each implementation ``--steps`` steps per round, the order rotating; all on the same
   minibatches of experience 1, the memories filled by learning 2,000 images of
   experience 0): bench_learner's replica of bnn_learner_learn's inner loop (``--steps``: its own static functions,
   the images in memory), the Python device learner (``Learner.latents``, ``replayed`` + ``join``,
   ``part.train_step``) and the fp32 NumPy learner (q_f = q_b = 32, float32 replay, float backend). (a) the whole
   step, (b) the head step alone (``part.train_step(x, y)`` on the prepared 178 latents; bench_learner's
   ``head_step`` on them). Per part: the best round's median, and the minimum over all steps; the ratios of both.
   A check: whole experiences through ``learn()`` (CLearner: its seconds / steps, begin and end included; the Python
   learners: their own step_seconds).

Instruction counts (qemu-aarch64, callgrind) are ``make -C runtime icount-learner``'s, which calls ``--export``.

Usage: .venv/bin/python benchmarks/clearner.py [--out runs/bench/clearner.json] [--quick] [--rounds N] [--steps N]
       [--model runs/demo/model.bnn] [--stream-config configs/demo.toml] [--binary PATH]
       .venv/bin/python benchmarks/clearner.py --export DIR   (the raw experience files only, for icount-learner)
The model comes from ``make demo`` (or its pretraining, then ``bnncl export``). About 1 minute on 2 cores.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bnncl.core.errors import BnnclError
from bnncl.device import Learner, cruntime
from bnncl.device.clearner import CLearner, Memory
from bnncl.simulation import experiment
from common import child_json, demo_options, describe_machine, kib, machine_info, table, write_json

perf = time.perf_counter
ROOT = Path(__file__).resolve().parent.parent
PARTS = ("frozen", "replay", "step", "total")
FILL, CHECK = 2000, 500  # images of experience 0 that fill the memories; of experience 1 learned as the check
RSS_IMAGES = (1600, 250)  # images of experiences 0 and 1 the RSS processes learn (as benchmarks/learning.py)
PY_BUFFERS = ("frozen_weights", "trainable_state", "consolidated_rows", "replay_patterns", "replay_labels_and_scales",
              "peak_activations", "learning_state", "total")


def mib(n: float) -> str:
    return f"{n / 2**20:,.2f} MiB"


def ms(s: float) -> str:
    return f"{s * 1e3:.3f}"


# -- the experiences in raw files ---------------------------------------------------------------------------------

def demo_stream(config: str):
    try:
        cfg = experiment.validate(experiment.load_config(config))
        stream, _ = experiment.build_stream(cfg)
    except BnnclError as e:
        print(f"cannot build the demo stream: {e}\n(`make data` installs Fashion-MNIST)", file=sys.stderr)
        sys.exit(1)
    return stream


def minibatches(n_images: int, batch: int, count: int) -> np.ndarray:
    """``count`` minibatches of ``batch`` distinct indices of ``n_images`` (NumPy's generator, seed 0)."""
    rng = np.random.default_rng(0)
    return np.stack([rng.choice(n_images, batch, replace=False) for _ in range(count)]).astype(np.uint32)


def export(stream, out: Path, batches: np.ndarray) -> dict:
    """exp0 and exp1 as raw files (``expK.u8`` images, ``expK.i32`` labels) and the steps' minibatches of exp1
    (``exp1.idx``, uint32)."""
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for i in (0, 1):
        d = stream.experiences[i].data
        np.ascontiguousarray(d.x, np.uint8).tofile(out / f"exp{i}.u8")
        d.y.astype("<i4").tofile(out / f"exp{i}.i32")
        files[i] = f"{out / f'exp{i}.u8'},{out / f'exp{i}.i32'}"
    batches.astype("<u4").tofile(out / "exp1.idx")
    return {"exp0": files[0], "exp1": files[1], "index": str(out / "exp1.idx")}


def build_binary(path_name: str) -> Path:
    target = f"build/bench-learner/{path_name}/bench_learner"
    proc = subprocess.run(["make", "-C", str(ROOT / "runtime"), "--no-print-directory", target],
                          capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"cannot build {target}:\n{proc.stdout}{proc.stderr}")
    return ROOT / "runtime" / target


def c_args(strategy: str = "ar1") -> list[str]:
    return ["--strategy", strategy, "--epochs", "1"]


def run_c(binary: Path, model: str, args: list[str]) -> list[dict]:
    """bench_learner as a grandchild of /bin/sh (a fresh ru_maxrss, not this process's), its JSON lines."""
    proc = subprocess.run(["/bin/sh", "-c", '"$@"; exit $?', "sh", str(binary), model, *args], capture_output=True,
                          text=True)
    if proc.returncode:
        raise RuntimeError(f"{binary.name} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


# -- 1. arena -------------------------------------------------------------------------------------------------------

def memory_section(args, binary, files, x0, y0) -> dict:
    print("### 1. The arena, by buffer\n")
    out = {}
    for strategy in ("ar1", "cwr"):
        c = run_c(binary, args.model, c_args(strategy))[0]
        wrapped = CLearner(args.model, demo_options("head", 8, strategy))
        py = Learner.open(args.model, options=demo_options("head", 8, strategy))
        py.learn(x0[:FILL], y0[:FILL])  # the step's peak activations are measured on a full step... (below)
        if strategy == "ar1":  # a step of new + replayed patterns: the measured peak of a full minibatch
            py.learn(x0[FILL:FILL + 100], y0[FILL:FILL + 100])
        out[strategy] = {"c": c["arena"], "clearner": {k: int(getattr(wrapped.memory, k)) for k in Memory.NAMES},
                         "python": py.nbytes(), "model_bytes": c["model_bytes"]}
    rows = []
    for name in Memory.NAMES:
        label = f"**{name}**" if name == "total" else name
        rows.append([label] + [f"{out[s]['c'][name]:,}" for s in ("ar1", "cwr")]
                    + [f"{out[s]['clearner'][name]:,}" for s in ("ar1", "cwr")])
    print("`bnn_learner_arena_size` (bytes; each buffer rounded up to 64, the total + 64 for any alignment of the "
          "caller's arena). The model file's bytes (weights, read in place) are not in it: "
          f"{out['ar1']['model_bytes']:,} B.\n")
    table(["buffer", "ar1 (bnn_learn_defaults)", "cwr", "ar1, as CLearner opens it (1 MiB user bytes)",
           "cwr, CLearner"], rows)
    rows = []
    for name in PY_BUFFERS:
        label = f"**{name}**" if name == "total" else name
        rows.append([label] + [f"{out[s]['python'][name]:,}" if name in out[s]["python"] else "–"
                               for s in ("ar1", "cwr")])
    print(f"The Python device learner of the same settings (8/16, packed backend, 1-bit replay): `Learner.nbytes()` "
          f"after learning {FILL} images of experience 0 (ar1: then 100 more, so that a full step of 50 + 128 has run "
          "and its peak activations are measured, not estimated):\n")
    table(["buffer", "ar1", "cwr"], rows)
    for s in ("ar1", "cwr"):
        c, py = out[s]["c"]["total"], out[s]["python"]["total"]
        print(f"- {s}: the C learner's arena {c:,} B ({kib(c)}; + the model file {out[s]['model_bytes']:,} B in "
              f"place) against the Python learner's buffers {py:,} B ({kib(py)}): **{py / c:.2f}x** less "
              f"(with the model file: {py / (c + out[s]['model_bytes']):.2f}x)")
    print()
    return out


# -- 2. peak RSS ----------------------------------------------------------------------------------------------------

CHILD = r"""
import os, sys
pid = os.fork()
if pid:
    sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
try:
    import json, resource, time
    cfg = json.loads(sys.argv[1])
    sys.path.insert(0, cfg["benchmarks"])
    maxrss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    hwm = lambda: next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
    t0 = time.perf_counter()
    import numpy as np
    import bnncl.device
    from bnncl.device.clearner import CLearner
    from bnncl.device import Learner
    from common import demo_options
    out = {"after_import": maxrss()}
    if cfg["kind"] != "baseline":
        size = int(np.prod(cfg["shape"]))  # the first n images only
        exps = [(np.fromfile(x, np.uint8, n * size).reshape(n, *cfg["shape"]),
                 np.fromfile(y, "<i4", n).astype(np.int64)) for (x, y), n in zip(cfg["experiences"], cfg["images"])]
        opts = demo_options("head", 8, cfg["strategy"])
        learner = CLearner(cfg["model"], opts) if cfg["kind"] == "clearner" else \
            Learner.open(cfg["model"], options=opts)
        for x, y in exps:
            learner.learn(x, y)
        out["nbytes_total"] = learner.nbytes().get("total", learner.nbytes().get("arena_total"))
    out.update(peak=maxrss(), vmhwm=hwm(), seconds=time.perf_counter() - t0, numba="numba" in sys.modules,
               torch="torch" in sys.modules)
    print(json.dumps(out), flush=True)
    os._exit(0)
except BaseException:
    import traceback
    traceback.print_exc()
    sys.stderr.flush()
    os._exit(1)
"""


def child_rss(cfg: dict) -> dict:
    return child_json(CHILD, cfg)


def rss_section(args, binary, data: Path, shape) -> dict:
    n0, n1 = RSS_IMAGES
    print("### 2. Peak RSS of fresh processes\n")
    learn = ["--learn", f"{data / 'exp0.u8'},{data / 'exp0.i32'},{n0}",
             "--learn", f"{data / 'exp1.u8'},{data / 'exp1.i32'},{n1}"]
    rows, out = [], {"images": [n0, n1], "processes": []}
    for label, extra in (("bench_learner, ar1 (images read by pread)", c_args("ar1")),
                         ("bench_learner, ar1, --in-memory (the experience's images read into memory first)",
                          c_args("ar1") + ["--in-memory"]),
                         ("bench_learner, cwr (pread)", c_args("cwr"))):
        ev = run_c(binary, args.model, extra + learn)
        init, end = ev[0], ev[-1]
        r = {"process": label, "kind": "c", "after_init": init["rss_after_init_kib"] * 1024,
             "before_init": init["rss_before_init_kib"] * 1024, "peak": end["maxrss_kib"] * 1024,
             "vmhwm": end["vmhwm_kib"] * 1024, "arena": init["arena"]["total"],
             "state_crc32": end["state_crc32"]}
        out["processes"].append(r)
        rows.append([label, mib(r["before_init"]) + " / " + mib(r["after_init"]), mib(r["peak"]), mib(r["vmhwm"]),
                     kib(r["arena"]), "–"])
    cfg = {"benchmarks": str(ROOT / "benchmarks"), "model": args.model, "images": [n0, n1], "shape": list(shape),
           "experiences": [[str(data / "exp0.u8"), str(data / "exp0.i32")],
                           [str(data / "exp1.u8"), str(data / "exp1.i32")]]}
    for label, kind, strategy in (("Python: import numpy, bnncl.device, bnncl.device.clearner (baseline)", "baseline",
                                   "ar1"),
                                  ("Python device learner, ar1 8/16 (packed backend)", "python", "ar1"),
                                  ("Python, CLearner, ar1 (the package's C library)", "clearner", "ar1"),
                                  ("Python device learner, cwr 8/16", "python", "cwr"),
                                  ("Python, CLearner, cwr", "clearner", "cwr")):
        r = {"process": label, **child_rss({**cfg, "kind": kind, "strategy": strategy}), "kind": kind}
        out["processes"].append(r)
        rows.append([label, mib(r["after_import"]) + " (after imports)", mib(r["peak"]), mib(r["vmhwm"]),
                     kib(r["nbytes_total"]) if "nbytes_total" in r else "–",
                     ", ".join(k for k in ("numba", "torch") if r[k]) or "neither"])
    print(f"Each process loads the model and learns {n0} images of experience 0, then {n1} of experience 1 (with "
          "replay), 1 epoch each. bench_learner: RSS before bnn_learner_init (the program and the model file's "
          "bytes read) / after it; its ru_maxrss is that of a process /bin/sh forked (a child of this Python process "
          "would inherit its peak through exec), VmHWM its own address space's high-water mark. The Python "
          "processes fork before their imports (learning.py's way).\n")
    table(["process", "RSS at the start", "peak RSS (ru_maxrss)", "VmHWM (check)", "arena / nbytes() total",
           "imported"], rows)
    crcs = {r["state_crc32"] for r in out["processes"][:2]}
    assert len(crcs) == 1, f"bench_learner: pread and in-memory learned different states {crcs}"
    c, base = out["processes"][0], out["processes"][3]
    py, wrapped = out["processes"][4], out["processes"][5]
    out["ratios"] = {"python_over_c": py["peak"] / c["peak"], "clearner_over_c": wrapped["peak"] / c["peak"]}
    print(f"- **peak RSS: the Python device learner {mib(py['peak'])} against bench_learner's {mib(c['peak'])}: "
          f"{out['ratios']['python_over_c']:.1f}x**; CLearner in Python {mib(wrapped['peak'])} "
          f"({out['ratios']['clearner_over_c']:.1f}x; {mib(wrapped['peak'] - base['peak'])} above the baseline "
          f"process's {mib(base['peak'])}; the Python learner {mib(py['peak'] - base['peak'])} above it)\n")
    return out


# -- 3. the learning step -----------------------------------------------------------------------------------------

class PyStep:
    """A Python device learner's step in three timed parts (learning.py's replica of run_experience's loop, with the
    head step as ``part.train_step``)."""

    def __init__(self, label, learner):
        self.label, self.L = label, learner

    def begin(self, y):
        self.plan = self.L.begin_experience(y)

    def steps(self, batches, x, y) -> list[tuple]:
        L, out = self.L, []
        for idx in batches:
            xb, yb = x[idx], y[idx]
            t0 = perf()
            h = L.latents(xb)
            t1 = perf()
            h, yy = L.join(h, yb, *L.replayed(self.plan))
            t2 = perf()
            L.part.train_step(h, yy)
            t3 = perf()
            out.append((t1 - t0, t2 - t1, t3 - t2, t3 - t0))
        return out


class CStep:
    """bench_learner --steps ... - : a process that runs the steps it is asked for, on the same minibatches in the
    same order (the index file), and answers with their per-part times."""

    label = "C learner (bench_learner, -O3)"

    def __init__(self, binary, model, files, fill):
        self.proc = subprocess.Popen([str(binary), model, *c_args("ar1"), "--in-memory", "--learn",
                                      f"{files['exp0']},{fill}", "--steps", f"{files['exp1']},{files['index']},-"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.events = []
        while True:
            ev = self._read()
            if ev["event"] == "steps_begin":
                self.begin_event = ev
                break

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("bench_learner ended early")
        ev = json.loads(line)
        self.events.append(ev)
        return ev

    def begin(self, y):
        pass

    def steps(self, batches, x, y) -> list[tuple]:
        self.proc.stdin.write(f"{len(batches)}\n")
        self.proc.stdin.flush()
        ev = self._read()
        return [tuple(v * 1e-9 for v in row) for row in ev["ns"]]

    def close(self) -> dict:
        self.proc.stdin.close()
        rest = [json.loads(line) for line in self.proc.stdout.read().splitlines() if line.startswith("{")]
        self.proc.wait()
        return rest[-1]


def stats_of(rounds: list[list[tuple]]) -> dict:
    """Per part: the best round's median, the median and minimum over all steps."""
    a = np.array([row for r in rounds for row in r])
    out = {}
    for i, p in enumerate(PARTS):
        out[p] = {"best_round_median": float(min(np.median(np.array(r)[:, i]) for r in rounds)),
                  "median": float(np.median(a[:, i])), "min": float(a[:, i].min())}
    out["steps"] = len(a)
    return out


def step_section(args, binary, files, stream, batches) -> dict:
    exp0, exp1 = stream.experiences[0].data, stream.experiences[1].data
    x0, y0, x1, y1 = exp0.x[:FILL], exp0.y[:FILL], exp1.x, exp1.y
    print("### 3. One learning step: 50 new images through the frozen part + 128 replayed + the head's step\n")
    impls = {"c": CStep(binary, args.model, files, FILL)}
    for key, label, bits, backend in (("py", "Python device learner 8/16 (packed)", 8, None),
                                      ("np32", "fp32 NumPy learner (float backend, float32 replay)", 32, "float")):
        L = Learner.open(args.model, options=demo_options("head", bits), backend=backend)
        L.learn(x0, y0)
        impls[key] = PyStep(label, L)
    for impl in impls.values():
        impl.begin(y1)
    warm, per_round, rounds = args.warmup, args.steps, args.rounds
    times = {k: [] for k in impls}
    for impl in impls.values():
        impl.steps(batches[:warm], x1, y1)
    keys = list(impls)
    for r in range(rounds):
        chunk = batches[warm + r * per_round:warm + (r + 1) * per_round]
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            times[k].append(impls[k].steps(chunk, x1, y1))
    end = impls["c"].close()
    stats = {k: stats_of(t) for k, t in times.items()}

    # the check: whole experiences through learn() (CLearner: the package's library, in this process)
    xc, yc = x1[-CHECK:], y1[-CHECK:]
    check = {}
    for _ in range(3):  # best of three, each a fresh learner: the fill, then the experience timed
        w = CLearner(args.model, demo_options("head", 8))
        w.learn(x0, y0)
        w.learn(xc, yc)
        check.setdefault("clearner", []).append(w.log[-1]["seconds"] / w.log[-1]["steps"])
    # what the end of the experience adds: the memory's update runs the frozen part on the new patterns it takes
    taken = int(np.isin(w.state_arrays()["replay.labels"], np.unique(yc)).sum())
    check_steps = w.log[-1]["steps"]
    for k in ("py", "np32"):
        L = impls[k].L
        before = len(L.step_seconds)
        L.learn(xc, yc)
        s = L.step_seconds[before:]
        check[k] = {"median": float(np.median(s)), "min": float(np.min(s)), "steps": len(s)}
    per_image = stats["c"]["frozen"]["best_round_median"] / 50
    expected = stats["c"]["total"]["best_round_median"] + taken * per_image / check_steps
    check["clearner"] = {"min_of_3": float(min(check["clearner"])), "runs": check["clearner"], "steps": check_steps,
                         "memory_took": taken, "expected_from_replica": expected}

    print(f"{rounds} rounds of {per_round} steps per implementation (after {warm} warm-up), interleaved round by round "
          f"(the order rotating), on the same minibatches of experience 1 in the same order; the memories filled by "
          f"learning {FILL} images of experience 0 (1,500 patterns, 4 classes). ms per step: the best round's median "
          "/ the minimum over all steps.\n")
    labels = {"frozen": "frozen part (50 images)", "replay": "replay sample + decode (128; C: the sample only)",
              "step": "(b) head step alone (178 rows; C: the 128 decoded in it)", "total": "**(a) whole step**"}
    rows = [[labels[p]] + [f"{ms(stats[k][p]['best_round_median'])} / {ms(stats[k][p]['min'])}" for k in impls]
            for p in PARTS]
    table(["part"] + [impls[k].label for k in impls], rows)

    ratios = {}
    for num in ("py", "np32"):
        for p in PARTS:
            ratios[f"{num}_over_c_{p}"] = {s: stats[num][p][s] / stats["c"][p][s] for s in ("best_round_median", "min")}

    def show(key):
        r = ratios[key]
        return f"**{r['best_round_median']:.2f}x** (best round's medians), {r['min']:.2f}x (minima)"

    print(f"- (a) whole step, Python device learner 8/16 ÷ C: {show('py_over_c_total')}")
    print(f"- (a) whole step, fp32 NumPy learner ÷ C: {show('np32_over_c_total')}")
    print(f"- (b) head step alone, Python 8/16 (`part.train_step`) ÷ C (`head_step`): {show('py_over_c_step')}")
    print(f"- (b) head step alone, fp32 NumPy (float32 step) ÷ C (integer 8/16 step): {show('np32_over_c_step')}")
    print(f"- frozen part alone, Python packed backend (the C kernels through ctypes) ÷ C: {show('py_over_c_frozen')}; "
          f"fp32 NumPy ÷ C: {show('np32_over_c_frozen')}")
    print(f"- replay sample + decode, Python 8/16 ÷ C (whose part is the sample only: it reads the patterns in its "
          f"head step): {show('py_over_c_replay')}")
    cc = check["clearner"]
    print(f"- check, whole experiences through learn() ({CHECK} images of experience 1, {cc['steps']} steps, after "
          f"the same fill): CLearner {ms(cc['min_of_3'])} ms per step (its seconds / steps, best of 3; begin and end "
          f"included: the end's memory update takes {cc['memory_took']} new patterns through the frozen part, so the "
          f"replica's figures predict {ms(cc['expected_from_replica'])} ms); the Python learners' own step_seconds "
          f"(median / min): 8/16 {ms(check['py']['median'])} / {ms(check['py']['min'])} ms, fp32 NumPy "
          f"{ms(check['np32']['median'])} / {ms(check['np32']['min'])} ms\n")
    return {"fill_images": FILL, "warmup": warm, "steps_per_round": per_round, "rounds": rounds,
            "c_begin": impls["c"].begin_event, "c_end": end,
            "impls": {k: {"label": impls[k].label, **stats[k]} for k in impls}, "ratios": ratios, "check": check,
            "per_step_ms": {k: [[[round(v * 1e3, 4) for v in row] for row in r] for r in t] for k, t in times.items()}}


# -- main -----------------------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="runs/demo/model.bnn")
    ap.add_argument("--stream-config", default="configs/demo.toml")
    ap.add_argument("--binary", help="bench_learner (default: built for the package library's path, -O3)")
    ap.add_argument("--out", metavar="PATH", help="also write every figure (and the per-step times) as JSON")
    ap.add_argument("--export", metavar="DIR", help="only write the raw experience files into DIR and exit")
    ap.add_argument("--rounds", type=int, help="rounds of steps per implementation (default 10, --quick 3)")
    ap.add_argument("--steps", type=int, help="steps per round and implementation (default 20, --quick 5)")
    ap.add_argument("--quick", action="store_true", help="a smoke run")
    args = ap.parse_args()
    if not Path(args.model).is_file():
        sys.exit(f"{args.model} is missing: make demo (or its pretraining, then `bnncl export "
                 "runs/demo/pretrain/model.pt --out runs/demo/model.bnn`)")
    args.rounds = args.rounds or (3 if args.quick else 10)
    args.steps = args.steps or (5 if args.quick else 20)
    args.warmup = 2 if args.quick else 5
    stream = demo_stream(args.stream_config)
    n1 = len(stream.experiences[1].data.y)
    batches = minibatches(n1, 50, args.warmup + args.rounds * args.steps)
    if args.export:
        files = export(stream, Path(args.export), batches)
        print(f"wrote {args.export}: exp0 ({len(stream.experiences[0].data.y)} images), exp1 ({n1}), "
              f"exp1.idx ({len(batches)} minibatches of 50)")
        return

    t_start = perf()
    path_name = cruntime.build_path()
    binary = Path(args.binary) if args.binary else build_binary(path_name)
    git = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                         cwd=ROOT).stdout.strip()
    result = {"quick": args.quick, "machine": machine_info(), "git": git or None, "model": args.model,
              "stream_config": args.stream_config, "binary": str(binary), "package_library_path": path_name,
              "load_average_start": os.getloadavg()}
    print("# The C learner against the Python device learners\n")
    print(f"machine: {describe_machine(result['machine'])}; source {git}\n")
    print(f"bench_learner: {binary} (gcc -O3, the {path_name} path); CLearner: the package's C library "
          f"({path_name}, -O3); stream: {stream.describe()}\n")
    tmp = Path(tempfile.mkdtemp(prefix="bnncl-clearner-"))
    try:
        files = export(stream, tmp, batches)
        exp0 = stream.experiences[0].data
        result["memory"] = memory_section(args, binary, files, exp0.x, exp0.y)
        result["rss"] = rss_section(args, binary, tmp, exp0.x.shape[1:])
        result["step"] = step_section(args, binary, files, stream, batches)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["total_seconds"] = perf() - t_start
    result["load_average_end"] = os.getloadavg()
    print(f"total {result['total_seconds']:.0f} s; load average (1, 5, 15 min) at the start "
          f"{', '.join(f'{v:.1f}' for v in result['load_average_start'])}, at the end "
          f"{', '.join(f'{v:.1f}' for v in result['load_average_end'])}")
    if args.out:
        print(f"saved {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
