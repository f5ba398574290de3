"""Learning benchmark: the on-device learner (integer learning step, 1-bit replay) against its fp32 baselines, on the
demo model (runs/demo/model.bnn) and the demo stream (configs/demo.toml, Fashion-MNIST), in two configurations:

* head: the LR layer at the head (work A): the head alone trains, integer step at q_f=8 / q_b=16 (``HeadPart``);
* multi: the LR layer left at its default, the model file's (block5 for the demo model: block5, block6, the pool and
  the head train; work B), q_f=8 / q_b=16 / q_bin=8: ``BlocksPart``, the hand-written quantized back-propagation with
  integer quantizers, binary conv forward by XNOR-popcount and backward by integer GEMM. Its fp32 learner is the same
  back-propagation with float32 ``Bits()`` and ``NumpyConv`` (im2col + BLAS).

Everything is measured in one run on one machine, and every ratio compares figures of that run:

1. Latency of one learning step: ``batch_size`` (50) new images through the frozen part, ``replay_batch`` (128)
   patterns sampled and decoded from the replay memory, one SGD step of the trainable part. Four implementations
   (and an extra):

   * device: ``bnncl.device.Learner`` at 8/16 (head) or 8/16/8 (multi), 1-bit replay, packed backend (bit-packed
     XNOR-popcount frozen part);
   * fp32 NumPy: the same learner with every bit width at 32, float32 replay, backend "float" (float32 NumPy
     everywhere: the method's baseline "fp32 NumPy step", the denominator of the bar);
   * fp32 step on the packed frozen part: the fp32 learner with backend "packed" (the like-for-like comparison: the
     same frozen kernels as the device learner, so only the training step's arithmetic and the replay's storage
     differ);
   * torch fp32: the simulation (``bnncl.simulation.strategy.build_strategy``, ar1, the same LR layer) on the
     checkpoint: frozen forward of the 50 images, replay sample, the autograd SGD step and ``clip_latent_weights`` of
     ``Strategy.step``;
   * (extra) the device learner with numba on 1 thread: the same learner, ``numba.set_num_threads(1)`` during its
     steps (on a busy machine a parallel region waits until all its threads get a core).

   Each replay memory is filled first by learning a subset of experience 0 (1 epoch); then every implementation runs
   the same random minibatches of experience 1, interleaved step by step (the machine is shared: all see the same
   load). A step is timed in three parts (frozen part / replay sample + decode / training step); medians and minima
   in ms, and the sum of the parts' minima (the floor a busy machine disturbs least). Learner.learn's own
   step_seconds on a further experience check that the timed replica of its loop is faithful. The bar: device step
   <= 1.2x the fp32 NumPy step.
2. Memory: ``Learner.nbytes()`` by buffer, device vs fp32 (float backend, float32 replay): ar1 and cwr (head), ar1
   (multi); then (head) the peak RSS of fresh processes that load the model and learn (ru_maxrss of each; the child
   forks before its imports, since ru_maxrss survives exec and would report this process's peak), beside the RSS of
   a process that only imports numpy + numba + bnncl.device.

Usage: .venv/bin/python benchmarks/learning.py [--config head|multi|both] [--json runs/bench/learning.json] [--quick]
       [--steps N] [--fill N] [--multi-steps N] [--multi-fill N]
       [--model runs/demo/model.bnn] [--checkpoint runs/demo/pretrain/model.pt] [--stream-config configs/demo.toml]
The model and checkpoint come from ``make demo``. Default run (both configurations): about 4 minutes on 2 cores
with a load average of 7-8 (head about 2, multi about 2); --quick: a smoke run (about 1.5 minutes).
Threads: torch and numba keep their defaults (reported at the top).
"""

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import torch

from bnncl.checkpoint import load_model
from bnncl.core.errors import BnnclError
from bnncl.core.options import LearnOptions
from bnncl.data.scenarios import Experience
from bnncl.device import Learner
from bnncl.simulation import experiment
from bnncl.simulation.strategy import build_strategy
from common import child_json, describe_machine, kib, machine_info, table, write_json
from common import demo_options as options

perf = time.perf_counter
BAR = 1.2  # device step / fp32 NumPy step
PARTS = ("frozen", "replay", "step", "total")
# Learner.nbytes() rows of each configuration's memory table (every buffer; learning_state is a subtotal: the
# trainable buffers, the consolidated rows and the replay memory)
BUFFERS = {
    "head": ("frozen_weights", "trainable_state", "consolidated_rows", "replay_patterns", "replay_labels_and_scales",
             "peak_activations", "learning_state", "total"),
    "multi": ("frozen_weights", "trainable_binary_latent_weights", "trainable_batchnorm_fp32",
              "trainable_other_vectors", "trainable_head", "consolidated_rows", "replay_patterns",
              "replay_labels_and_scales", "peak_activations", "learning_state", "total"),
}


@dataclasses.dataclass
class Setting:
    """One configuration of the benchmark and how long it runs."""

    name: str  # "head" | "multi"
    steps: int  # timed steps per implementation
    warmup: int  # untimed steps first, per implementation
    fill: int  # images of experience 0 learned (1 epoch) to fill the replay memories
    check: int  # images of the learn() check

    @property
    def bits(self) -> str:
        return "8/16" if self.name == "head" else "8/16/8"


def torch_options(config: str) -> LearnOptions:
    """The simulation's fp32 ar1 at the same LR layer (autograd step; the simulation's 1-bit replay)."""
    return LearnOptions(strategy="ar1", lr_layer="head" if config == "head" else None, epochs=1)


# -- the step implementations ---------------------------------------------------------------------------------------
# One class over the experience protocol (bnncl.core.protocol), which the device learner and the simulation's
# strategy both implement: fill(x, y) learns the first experience; begin(y) is begin_experience (cur counts, CWR* rows
# into the head, the replay mix); step(x, y) runs one step of the protocol's loop and returns its parts' seconds.

class ProtocolStep:
    """``learner``: a device ``Learner`` or a simulation ``Strategy``; ``fill(x, y)``: how it learns the first
    experience. ``threads``: numba's thread count during the step (None: the default); ``shared``: the learner is
    another ProtocolStep's (same memory and trainable part, so fill and the learn() check are that one's)."""

    def __init__(self, label, learner, fill, threads: int | None = None, shared: bool = False):
        self.label, self.learner, self._fill, self.threads, self.shared = label, learner, fill, threads, shared
        self.memory = learner.memory
        self.device = isinstance(learner, Learner)

    def fill(self, x, y):
        if not self.shared:
            self._fill(x, y)

    def begin(self, y):
        self.plan = self.learner.begin_experience(y)

    def step(self, x, y):
        if self.threads is None:
            return self._step(x, y)
        default = numba.get_num_threads()
        numba.set_num_threads(self.threads)
        try:
            return self._step(x, y)
        finally:
            numba.set_num_threads(default)

    def _step(self, x, y):  # one pass of run_experience's loop, with timers between its parts
        L = self.learner
        t0 = perf()
        h = L.latents(x)
        t1 = perf()
        h, y = L.join(h, y, *L.replayed(self.plan))
        t2 = perf()
        L.step(h, y)
        t3 = perf()
        return t1 - t0, t2 - t1, t3 - t2


def device_step(label, learner: Learner, threads: int | None = None, shared: bool = False) -> ProtocolStep:
    return ProtocolStep(label, learner, learner.learn, threads, shared)


def torch_step(label, checkpoint, like, opts: LearnOptions) -> ProtocolStep:
    """The simulation's ar1, fp32 autograd. Its own loop takes the latents of a whole experience at once; here the 50
    new images go through the frozen part every step, as on the device. ``like``: a LabelledArrays whose class names
    the experiences take."""
    model, _ = load_model(checkpoint)
    strategy = build_strategy(model, opts)
    return ProtocolStep(label, strategy, lambda x, y: strategy.train_experience(
        Experience(0, dataclasses.replace(like, x=x, y=y, name="fill"))))


def implementations(s: Setting, args, like) -> dict:
    def device(bits, backend):
        return Learner.open(args.model, options=options(s.name, bits), backend=backend)

    impls = {
        "device": device_step(f"device {s.bits} (packed, 1-bit replay)", device(8, None)),
        "np32": device_step("fp32 NumPy (float backend, float32 replay)", device(32, "float")),
        "np32packed": device_step("fp32 step on the packed frozen part (float32 replay)", device(32, "packed")),
        "torch": torch_step("torch fp32 simulation (autograd, 1-bit replay)", args.checkpoint, like,
                           torch_options(s.name)),
    }
    lr_layer = impls["device"].learner.model.lr_layer
    assert impls["torch"].learner.lr_layer == lr_layer, \
        f"the simulation's LR layer {impls['torch'].learner.lr_layer} is not the device's {lr_layer}"
    if numba.get_num_threads() > 1:  # extra: the same device learner with numba on one thread
        impls["device_1t"] = device_step(f"device {s.bits}, numba on 1 thread (same learner)",
                                        impls["device"].learner, threads=1, shared=True)
    return impls


# -- 1. step latency ---------------------------------------------------------------------------------------------------

def measure_steps(s: Setting, impls: dict, x0, y0, exp1) -> dict:
    """Fill the replay memories, time ``s.steps`` interleaved steps of every implementation, then run learn() on a
    further experience; the JSON record of it all (``stats``: median and min of each part, per implementation)."""
    setup = {}
    for k, impl in impls.items():
        t0 = perf()
        impl.fill(x0, y0)
        setup[k] = perf() - t0  # numba loads its cache (or compiles) on the first learner's fill
    opts = impls["device"].learner.options
    batch, n_replay = opts.batch_size, opts.replay_batch
    for impl in impls.values():
        impl.begin(exp1.y)
        assert len(impl.memory) >= n_replay, f"{impl.label}: only {len(impl.memory)} patterns in the replay memory"

    rng = np.random.default_rng(0)
    batches = [rng.choice(len(exp1.y), batch, replace=False) for _ in range(s.warmup + s.steps)]
    times = {k: [] for k in impls}
    for impl in impls.values():  # warm-up, once per implementation
        for idx in batches[:s.warmup]:
            impl.step(exp1.x[idx], exp1.y[idx])
    keys = list(impls)
    for i, idx in enumerate(batches[s.warmup:]):  # interleaved step by step, the order rotating: all see the same load
        for k in keys[i % len(keys):] + keys[:i % len(keys)]:
            f, rp, st = impls[k].step(exp1.x[idx], exp1.y[idx])
            times[k].append((f, rp, st, f + rp + st))
    stats = {}
    for k, t in times.items():
        a = np.array(t)
        stats[k] = {p: {"median": float(np.median(a[:, i])), "min": float(a[:, i].min())} for i, p in enumerate(PARTS)}
        stats[k]["parts_min_sum"] = sum(stats[k][p]["min"] for p in PARTS[:-1])  # a floor a busy machine disturbs least
        stats[k]["steps"] = len(a)

    # learn() itself on a fresh experience: its own step_seconds, a check that the replica above is faithful
    for k, impl in impls.items():
        if impl.device and not impl.shared:
            L = impl.learner
            before = len(L.step_seconds)
            L.learn(exp1.x[-s.check:], exp1.y[-s.check:])
            stats[k]["learn_check_median"] = float(np.median(L.step_seconds[before:]))
            stats[k]["learn_check_min"] = float(np.min(L.step_seconds[before:]))
            stats[k]["learn_check_steps"] = len(L.step_seconds) - before
    return {"batch_size": batch, "replay_batch": n_replay, "fill_images": len(y0), "warmup": s.warmup,
            "check_images": s.check, "setup_seconds": setup,
            "impls": {k: {"label": impls[k].label, **stats[k]} for k in impls},
            "per_step_ms": {k: [[round(v * 1e3, 4) for v in row] for row in t] for k, t in times.items()}}


def ratio(stats: dict, a: str, b: str, part: str = "total") -> dict:
    """``a``'s time over ``b``'s: of the medians, of the minima and (whole step) of the sums of the parts' minima."""
    r = {"median": stats[a][part]["median"] / stats[b][part]["median"],
         "min": stats[a][part]["min"] / stats[b][part]["min"]}
    if part == "total":
        r["parts_min_sum"] = stats[a]["parts_min_sum"] / stats[b]["parts_min_sum"]
    return r


def show(r: dict, bold: bool = False) -> str:
    med = f"**{r['median']:.2f}x**" if bold else f"{r['median']:.2f}x"
    return f"{med} (median), {r['min']:.2f}x (min)" + \
        (f", {r['parts_min_sum']:.2f}x (sums of the parts' minima)" if "parts_min_sum" in r else "")


def verdict(r: dict) -> dict:
    return {stat: v <= BAR for stat, v in r.items()}


def show_verdict(bar: dict) -> str:
    names = {"median": "median", "min": "min", "parts_min_sum": "sums of minima"}
    return ", ".join(f"{names[stat]} {'met' if ok else 'NOT met'}" for stat, ok in bar.items())


def ms(s: float) -> str:
    return f"{s * 1e3:.2f}"


def print_latency(s: Setting, impls: dict, lat: dict, trained: str) -> dict:
    """The tables and ratio lines of section 1; returns the ratios."""
    stats, batch, n_replay = lat["impls"], lat["batch_size"], lat["replay_batch"]
    print(f"### 1. One learning step: {batch} new images through the frozen part + {n_replay} replayed + one SGD step "
          f"of the trainable part ({trained})\n")
    print(f"{stats['device']['steps']} timed steps each (after {s.warmup} warm-up), the same random minibatches of "
          f"experience 1 for all, interleaved step by step (the order rotating). ms per step, median / min.\n")
    rows = []
    for k, impl in impls.items():
        st = stats[k]
        check = f"{ms(st['learn_check_median'])} / {ms(st['learn_check_min'])} ({st['learn_check_steps']} steps)" \
            if "learn_check_median" in st else "– (the learner above)" if impl.device else \
            "– (its loop precomputes the latents)"
        rows.append([impl.label, ms(st["total"]["median"]), ms(st["total"]["min"]),
                     f"{st['total']['median'] / stats['np32']['total']['median']:.2f}x",
                     f"{st['total']['min'] / stats['np32']['total']['min']:.2f}x", check])
    table(["implementation", "median ms", "min ms", "÷ fp32 NumPy (median)", "÷ fp32 NumPy (min)",
           "learn()'s own step_seconds, median / min ms (check)"], rows)

    print("Where the time goes (ms, median / min of each part; the medians of the parts need not add up to the "
          "median step):\n")
    labels = {"frozen": f"frozen part ({batch} images)", "replay": f"replay sample + decode ({n_replay})",
              "step": f"training step ({trained})", "total": "**whole step**"}
    rows = [[labels[p]] + [f"{ms(stats[k][p]['median'])} / {ms(stats[k][p]['min'])}" for k in impls] for p in PARTS]
    rows.append(["sum of the parts' minima"] + [ms(stats[k]["parts_min_sum"]) for k in impls])
    table(["part"] + [impls[k].label for k in impls], rows)

    ratios = {"device_over_fp32_numpy": ratio(stats, "device", "np32"),
              "device_over_fp32_packed": ratio(stats, "device", "np32packed"),
              "step_integer_over_fp32": ratio(stats, "device", "np32", "step"),
              "frozen_packed_over_float": ratio(stats, "device", "np32", "frozen"),
              "device_over_torch": ratio(stats, "device", "torch")}
    if "device_1t" in impls:
        ratios["device_1_thread_over_fp32_numpy"] = ratio(stats, "device_1t", "np32")
    ratios["bar"], ratios["bar_met"] = BAR, verdict(ratios["device_over_fp32_numpy"])
    dev = f"device {s.bits}"
    print(f"- **the method's bar**: {dev} learner ÷ fp32 NumPy learner (float backend: float frozen part, float32 "
          f"step, float32 replay), whole step: {show(ratios['device_over_fp32_numpy'], True)}; bar <= {BAR}x: "
          f"{show_verdict(ratios['bar_met'])}")
    print(f"- like-for-like (not the bar): {dev} ÷ the fp32 learner on the packed frozen part (the same frozen "
          f"kernels on both sides; what differs is the step's arithmetic, integer vs float32, and the replay, 1-bit vs "
          f"float32), whole step: {show(ratios['device_over_fp32_packed'])}")
    print(f"- the training step alone, integer {s.bits} ÷ float32 (the device's step part ÷ the fp32 NumPy "
          f"learner's): {show(ratios['step_integer_over_fp32'])}")
    print(f"- the frozen part alone (packed ÷ float NumPy): {show(ratios['frozen_packed_over_float'])}")
    print(f"- {dev} ÷ torch fp32 simulation step: {show(ratios['device_over_torch'])}")
    if "device_1t" in impls:
        print(f"- {dev} with numba on 1 thread ÷ fp32 NumPy learner: "
              f"{show(ratios['device_1_thread_over_fp32_numpy'])}")
    print(f"- set-up (learning the {lat['fill_images']} images that fill the memory, 1 epoch): "
          + ", ".join(f"{impls[k].label} {lat['setup_seconds'][k]:.1f} s" for k in impls
                      if not getattr(impls[k], "shared", False)) + "\n")
    return ratios


# -- 2. memory ---------------------------------------------------------------------------------------------------------

def memory_tables(s: Setting, learners: dict) -> dict:
    """``Learner.nbytes()`` of ``learners`` ({(strategy, bits): learner}) by buffer, device vs fp32, per strategy."""
    nbytes = {f"{strategy}/{bits}": L.nbytes() for (strategy, bits), L in learners.items()}
    replay_ratio = nbytes["ar1/32"]["replay_patterns"] / nbytes["ar1/8"]["replay_patterns"]
    features = int(np.prod(learners[("ar1", 8)].latent_shape))
    assert features % 8 == 0 and replay_ratio == 32.0, f"replay patterns: fp32 / 1-bit = {replay_ratio} (not 32)"
    replay_size = learners[("ar1", 8)].options.replay_size
    for strategy in sorted({st for st, _ in learners}):
        ours, fp32 = nbytes[f"{strategy}/8"], nbytes[f"{strategy}/32"]
        rows = []
        for b in BUFFERS[s.name]:
            if b not in ours:
                continue
            name = f"**{b}**" if b == "total" else b
            rows.append([name, f"{ours[b]:,}", kib(ours[b]), f"{fp32[b]:,}", kib(fp32[b]), f"{fp32[b] / ours[b]:.2f}x"])
        replay = strategy == "ar1"
        print(f"{strategy}: `Learner.nbytes()` after learning ({s.bits}: packed backend"
              + (f", 1-bit replay, {replay_size} patterns (its capacity)" if replay else ", no replay")
              + "; fp32: float backend" + (", float32 replay" if replay else "") + ")\n")
        table(["buffer", f"{s.bits} bytes", s.bits, "fp32 bytes", "fp32", f"fp32 ÷ {s.bits}"], rows)
    L = learners[("ar1", 8)]
    shape = "×".join(map(str, L.latent_shape))
    print(f"Replay patterns: {features} features per pattern ({shape}, a multiple of 8): fp32 ÷ 1-bit = "
          f"{replay_ratio:.2f}x. learning_state = the trainable buffers + consolidated_rows + the replay memory; "
          "total = frozen_weights + learning_state + peak_activations. peak_activations = the frozen part's largest op "
          "(input + output) in a step plus "
          + ("one step's head operands (batch of new + replayed patterns)." if s.name == "head" else
             "the arrays one step of the blocks keeps for its backward pass (BlocksPart.peak_step_bytes, batch of new "
             "+ replayed patterns).") + "\n")
    return {"nbytes": nbytes, "replay_ratio": replay_ratio, "features": features}


# RSS of fresh processes.
# ru_maxrss survives exec: a child started from this (large) process would report this process's peak. So the child
# forks first, before any import, and the grandchild (a fresh ru_maxrss, no exec) does the work. VmHWM, the
# high-water RSS of the grandchild's own address space, is read too, as a cross-check.
CHILD = r"""
import os, sys
pid = os.fork()
if pid:
    sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
try:
    import json, resource, time
    cfg = json.loads(sys.argv[1])
    maxrss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    hwm = lambda: next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
    t0 = time.perf_counter()
    import numpy as np
    if cfg["kind"] == "torch":
        import torch
        import bnncl.device
        from bnncl.checkpoint import load_model
        from bnncl.data.arrays import LabelledArrays
        from bnncl.data.scenarios import Experience
        from bnncl.core.options import LearnOptions
        from bnncl.simulation.strategy import build_strategy
    else:
        import numba
        import bnncl.device
        from bnncl.device import Learner
        from bnncl.core.options import LearnOptions
    out = {"after_import": maxrss(), "torch_imported": "torch" in sys.modules}
    if cfg["kind"] != "baseline":
        exps = [(np.load(x), np.load(y)) for x, y in cfg["experiences"]]
        if cfg["kind"] == "torch":
            model, _ = load_model(cfg["checkpoint"])
            learner = build_strategy(model, LearnOptions(**cfg["options"]))
            names = tuple(str(i) for i in range(model.config.num_classes))
            for i, (x, y) in enumerate(exps):
                learner.train_experience(Experience(i, LabelledArrays(x, y, names, f"exp{i}")))
        elif cfg["kind"] == "infer":
            bnncl.device.Model.load(cfg["model"]).predict(exps[0][0][:50], cfg["backend"], 50)
        else:
            learner = Learner.open(cfg["model"], options=LearnOptions(**cfg["options"]), backend=cfg["backend"])
            for x, y in exps:
                learner.learn(x, y)
            out["nbytes_total"] = learner.nbytes()["total"]
    out.update(peak=maxrss(), vmhwm=hwm(), seconds=time.perf_counter() - t0)
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


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def rss_table(args, experiences: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Peak RSS of fresh processes that learn ``experiences`` (head configuration), beside the runtimes alone."""
    tmp = Path(tempfile.mkdtemp(prefix="bnncl-learning-"))
    files = []
    for i, (x, y) in enumerate(experiences):
        np.save(tmp / f"exp{i}_x.npy", x)
        np.save(tmp / f"exp{i}_y.npy", y)
        files.append([str(tmp / f"exp{i}_x.npy"), str(tmp / f"exp{i}_y.npy")])
    children = [
        ("baseline: import numpy + numba + bnncl.device", {"kind": "baseline"}),
        ("packed runtime alone: load the model, predict 50 images", {"kind": "infer", "backend": "packed"}),
        ("float runtime alone: load the model, predict 50 images", {"kind": "infer", "backend": "float"}),
        ("ar1 8/16 (packed, 1-bit replay)", {"kind": "device", "options": options("head", 8).to_dict(),
                                             "backend": None}),
        ("ar1 fp32 (float, float32 replay)", {"kind": "device", "options": options("head", 32).to_dict(),
                                              "backend": "float"}),
        ("cwr 8/16 (packed)", {"kind": "device", "options": options("head", 8, "cwr").to_dict(), "backend": None}),
        ("cwr fp32 (float)", {"kind": "device", "options": options("head", 32, "cwr").to_dict(), "backend": "float"}),
        ("torch fp32 simulation, ar1 (1-bit replay)", {"kind": "torch", "checkpoint": args.checkpoint,
                                                       "options": torch_options("head").to_dict()}),
    ]
    try:
        rss = [{"process": label, **child_rss({**c, "model": args.model, "experiences": files})}
               for label, c in children]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    (n0, n1), base = [len(y) for _, y in experiences], rss[0]["peak"]
    print(f"Peak RSS (ru_maxrss) of fresh processes: each learner loads the model and learns {n0} images of "
          f"experience 0, then {n1} of experience 1 (with replay), 1 epoch each. 'above baseline' = peak - the "
          "baseline process's peak; it includes what numba maps to run its compiled kernels (loaded from its cache on "
          "the first call) and the libraries' work buffers (the 'runtime alone' rows), not only the learner's "
          "buffers.\n")
    rows = []
    for r in rss:
        own = "–" if r is rss[0] else f"{mib(r['peak'] - base)}"
        rows.append([r["process"], mib(r["after_import"]), mib(r["peak"]), own, mib(r["vmhwm"]),
                     kib(r["nbytes_total"]) if "nbytes_total" in r else "–", "yes" if r["torch_imported"] else "no",
                     f"{r['seconds']:.1f}"])
    table(["process", "RSS after imports", "peak RSS", "above baseline", "VmHWM (check)", "nbytes() total",
           "torch imported", "s"], rows)
    return {"experiences": [n0, n1], "children": rss}


# -- one configuration -------------------------------------------------------------------------------------------------

def run_config(s: Setting, args, exp0, exp1, quick: bool) -> dict:
    t0 = perf()
    x0, y0 = exp0.x[:s.fill], exp0.y[:s.fill]
    impls = implementations(s, args, exp0)
    device = impls["device"].learner
    trained = ", ".join(op.name for op in device.model.trainable_ops)
    if s.name == "head":
        print(f"## Head only (LR layer head, work A): the head trains, integer step at {s.bits}\n")
    else:
        print(f"## Multi-layer (LR layer {device.model.lr_layer}, work B): {trained} train, integer step at "
              f"{s.bits} (q_f/q_b/q_bin)\n")
    print(f"Replay memories filled by learning {s.fill} images of experience 0 (classes {sorted(set(y0.tolist()))}, "
          f"1 epoch); replayed patterns: {'×'.join(map(str, device.latent_shape))} activations at the LR layer.\n")
    out = {"options": {"device": device.options.to_dict(), "fp32": impls["np32"].learner.options.to_dict(),
                       "torch": impls["torch"].learner.options.to_dict()},
           "bits": s.bits, "lr_layer": device.model.lr_layer, "trained": trained,
           "latent_shape": list(device.latent_shape)}

    out["latency"] = measure_steps(s, impls, x0, y0, exp1)
    out["latency"]["ratios"] = print_latency(s, impls, out["latency"], trained)
    out["seconds_latency"] = perf() - t0

    print("### 2. Memory\n")
    learners = {("ar1", 8): device, ("ar1", 32): impls["np32"].learner}
    if s.name == "head":  # cwr (head only): no replay memory; a small experience so a step has run
        small = 200 if quick else 500
        for bits, backend in ((8, None), (32, "float")):
            L = Learner.open(args.model, options=options("head", bits, "cwr"), backend=backend)
            L.learn(x0[:small], y0[:small])
            learners[("cwr", bits)] = L
    out.update(memory_tables(s, learners))
    if s.name == "head":
        n0, n1 = (500, 100) if quick else (1600, 250)  # images of experiences 0 and 1 the RSS children learn
        out["rss"] = rss_table(args, [(exp0.x[:n0], exp0.y[:n0]), (exp1.x[:n1], exp1.y[:n1])])
    out["seconds"] = perf() - t0
    return out


def summary(configs: dict) -> None:
    print("## Summary (ratios of this run's step times)\n")
    for name, c in configs.items():
        r, bits = c["latency"]["ratios"], c["bits"]
        what = "head only" if name == "head" else f"multi-layer ({c['trained']})"
        print(f"- {what}, **the method's bar** (device {bits} learner ÷ fp32 NumPy learner, <= {BAR}x): "
              f"{show(r['device_over_fp32_numpy'])}: {show_verdict(r['bar_met'])}")
        print(f"- {what}, like-for-like (not the bar; the frozen part packed on both sides): "
              f"{show(r['device_over_fp32_packed'])}")
        print(f"- {what}, the training step alone (integer {bits} ÷ float32): {show(r['step_integer_over_fp32'])}")
    print()


def missing(what: str) -> None:
    print(f"{what} is missing. It comes from the demo run; make it with\n\n    make demo\n\n(pretrains the backbone "
          "into runs/demo/pretrain/model.pt and exports runs/demo/model.bnn; with the checkpoint already there, "
          "`.venv/bin/python -m bnncl.cli export runs/demo/pretrain/model.pt --out runs/demo/model.bnn` is enough).",
          file=sys.stderr)
    sys.exit(1)


# -- main -------------------------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=("head", "multi", "both"), default="both",
                    help="which configuration to measure (default both)")
    ap.add_argument("--model", default="runs/demo/model.bnn")
    ap.add_argument("--checkpoint", default="runs/demo/pretrain/model.pt")
    ap.add_argument("--stream-config", default="configs/demo.toml", help="the stream's config (TOML)")
    ap.add_argument("--json", metavar="PATH", help="also write every figure (and the per-step times) as JSON")
    ap.add_argument("--quick", action="store_true", help="a smoke run: fewer steps, smaller experiences")
    ap.add_argument("--steps", type=int, help="head: timed steps per implementation (default 150, --quick 20)")
    ap.add_argument("--fill", type=int, help="head: images of experience 0 learned first (default 2000, --quick 500)")
    ap.add_argument("--multi-steps", type=int, help="multi: timed steps per implementation (default 30, --quick 5)")
    ap.add_argument("--multi-fill", type=int, help="multi: images of experience 0 learned first (default 600, "
                                                   "--quick 300)")
    args = ap.parse_args()
    for path in (args.model, args.checkpoint):
        if not Path(path).is_file():
            missing(path)
    q = args.quick
    settings = {"head": Setting("head", args.steps or (20 if q else 150), 3 if q else 10,
                                args.fill or (500 if q else 2000), 200 if q else 500),
                "multi": Setting("multi", args.multi_steps or (5 if q else 30), 1 if q else 3,
                                 args.multi_fill or (300 if q else 600), 200 if q else 300)}
    if args.config != "both":
        settings = {args.config: settings[args.config]}

    t_start = perf()
    git = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    result = {"quick": q, "machine": machine_info(), "git": git or None, "torch_threads": torch.get_num_threads(),
              "numba_threads": numba.get_num_threads(), "model": args.model, "checkpoint": args.checkpoint,
              "stream_config": args.stream_config, "load_average_start": os.getloadavg(),  # the machine is shared
              "settings": {k: dataclasses.asdict(s) for k, s in settings.items()}}
    print("# On-device learning benchmark\n")
    print(f"machine: {describe_machine(result['machine'])}; numba {numba.__version__}, "
          f"{result['numba_threads']} threads "
          f"(torch.get_num_threads() = {result['torch_threads']}, both left at their defaults); source {git}\n")

    try:
        cfg = experiment.validate(experiment.load_config(args.stream_config))
        stream, _ = experiment.build_stream(cfg)
    except BnnclError as e:
        print(f"cannot build the demo stream: {e}\n(`make data` installs Fashion-MNIST)", file=sys.stderr)
        sys.exit(1)
    exp0, exp1 = stream.experiences[0].data, stream.experiences[1].data
    print(f"stream: {stream.describe()}; the replay memories are filled from experience 0, the steps run on "
          f"experience 1 (classes {stream.experiences[1].classes})\n")

    result["configs"] = {}
    for name, s in settings.items():
        result["configs"][name] = run_config(s, args, exp0, exp1, q)
        result["numba_threading_layer"] = numba.threading_layer()
    summary(result["configs"])

    result["total_seconds"] = perf() - t_start
    result["load_average_end"] = os.getloadavg()
    print(f"total {result['total_seconds']:.0f} s ("
          + ", ".join(f"{k} {c['seconds']:.0f} s, of which step latency {c['seconds_latency']:.0f} s"
                      for k, c in result["configs"].items())
          + f"); load average (1, 5, 15 min) at the start {', '.join(f'{v:.1f}' for v in result['load_average_start'])}"
          f", at the end {', '.join(f'{v:.1f}' for v in result['load_average_end'])}")
    if args.json:
        print(f"saved {write_json(args.json, result)}")


if __name__ == "__main__":
    main()
