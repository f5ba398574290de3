"""What the benchmarks share: the machine description every benchmark prints beside its figures and stores in its
JSON, the timing of interleaved implementations, the Markdown tables they print, the JSON file they write, and the
demo's device learning options."""

import json
import math
import os
import platform
import sys
import time
from pathlib import Path

# The SIMD features this project's kernels care about, per architecture: (the /proc/cpuinfo name, LLVM's name).
SIMD = {
    "x86_64": [("sse4_2", "sse4.2"), ("popcnt", "popcnt"), ("avx2", "avx2"), ("fma", "fma"), ("avx512f", "avx512f"),
               ("avx512bw", "avx512bw"), ("avx512vl", "avx512vl"), ("avx512_vpopcntdq", "avx512vpopcntdq"),
               ("avx512_bitalg", "avx512bitalg"), ("avx512_vnni", "avx512vnni")],
    "aarch64": [("asimd", "neon"), ("asimddp", "dotprod"), ("sve", "sve")],
}
# What the x86-64 psABI levels imply among those, for a NUMBA_CPU_NAME whose features NUMBA_CPU_FEATURES leaves out.
LEVELS = {"generic": (), "x86-64": (), "x86-64-v2": ("sse4.2", "popcnt"),
          "x86-64-v3": ("sse4.2", "popcnt", "avx2", "fma"),
          "x86-64-v4": ("sse4.2", "popcnt", "avx2", "fma", "avx512f", "avx512bw", "avx512vl")}
NUMPY_SIMD = ("AVX2", "AVX512F", "AVX512_SKX", "AVX512_ICL", "ASIMD")
ENV = ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "NPY_DISABLE_CPU_FEATURES", "NPY_ENABLE_CPU_FEATURES",
       "ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE", "ATEN_CPU_CAPABILITY")


def _cpuinfo(key: str) -> str | None:
    """The first value of ``key`` in /proc/cpuinfo (None where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == key:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    return _cpuinfo("model name") or platform.processor() or "unknown"


def _numba_target(arch: str) -> dict:
    """The CPU numba compiles for (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES if set, else the host's, as numba's codegen
    picks them) and which of the relevant features that target enables (None: implied by a CPU name we cannot
    resolve)."""
    try:
        import llvmlite.binding as llvm
        import numba
        from numba.core.codegen import get_host_cpu_features
    except ImportError:
        return {}
    name = numba.config.CPU_NAME or llvm.get_host_cpu_name()
    given = numba.config.CPU_FEATURES
    flags = dict((f[1:], f[0] == "+") for f in (get_host_cpu_features() if given is None else given).split(",") if f)
    implied = () if given is None else LEVELS.get(name)  # the host's features string is complete
    features = {f: flags.get(f, None if implied is None else f in implied) for _, f in SIMD.get(arch, [])}
    return {"version": numba.__version__, "cpu_name": name, "features": features,
            "from_env": numba.config.CPU_NAME is not None or given is not None}


def _numpy_simd() -> dict:
    import numpy as np

    try:
        from numpy._core import _multiarray_umath as umath
    except ImportError:  # numpy < 2
        from numpy.core import _multiarray_umath as umath
    have = umath.__cpu_features__  # NPY_DISABLE_CPU_FEATURES turns the features it disables off here
    return {"version": np.__version__, "simd": [k for k in NUMPY_SIMD if have.get(k)],
            "dispatch": [k for k in umath.__cpu_dispatch__ if have.get(k)]}  # the targets its loops may dispatch to


def _torch() -> dict | None:
    """torch's version, threads and ATen CPU capability, if the benchmark imported torch (a device benchmark that runs
    without torch is not made to import it)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        capability = None
    return {"version": torch.__version__, "threads": torch.get_num_threads(), "aten_capability": capability}


def machine_info() -> dict:
    """The machine a benchmark ran on: CPU model, architecture, cores, the relevant SIMD features of the CPU, of numba's
    compile target, of numpy's dispatch and torch's ATen capability, and the environment variables that change them."""
    arch = platform.machine()
    present = set((_cpuinfo("flags") or _cpuinfo("Features") or "").split())
    return {"cpu": cpu_name(), "arch": arch, "cores": os.cpu_count(),
            "cpu_simd": [f for f, _ in SIMD.get(arch, []) if f in present],
            "numba": _numba_target(arch), "numpy": _numpy_simd(), "torch": _torch(),
            "env": {k: os.environ[k] for k in ENV if k in os.environ}}


def describe_machine(info: dict | None = None) -> str:
    """``info`` (default: this machine's machine_info()) on one line."""
    m = info or machine_info()
    parts = [f"{m['cpu']}, {m['arch']}, {m['cores']} cores ({' '.join(m['cpu_simd']) or 'no listed SIMD flags'})"]
    if m["numba"]:
        n = m["numba"]
        if all(v is None for v in n["features"].values()):
            feats = f"the features {n['cpu_name']} implies"
        else:  # ?: implied by the CPU name, not resolved here
            feats = " ".join(("+" if v else "-" if v is not None else "?") + f for f, v in n["features"].items())
        via = "+".join(k for k in ENV[:2] if k in m["env"])
        parts.append(f"numba target {n['cpu_name']}{f' via {via}' if via else ''} ({feats})")
    parts.append(f"numpy SIMD {' '.join(m['numpy']['simd']) or 'baseline only'}")
    if m["torch"]:
        t = m["torch"]
        parts.append(f"torch {t['version']} ATen {t['aten_capability']}, {t['threads']} threads")
    env = [f"{k}={v}" for k, v in m["env"].items() if k not in ENV[:2]]  # numba's: shown with its target
    return "; ".join(parts + ([" ".join(env)] if env else []))


def table(header: list[str], rows: list[list], align: str | None = None) -> None:
    """Print a Markdown table (first column left-aligned, the others right-aligned unless ``align`` says "l"/"r"
    per column), then a blank line."""
    align = align or "l" + "r" * (len(header) - 1)
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if a == "l" else "---:" for a in align) + "|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    print()


def kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB"


def write_json(path: str | os.PathLike, result: dict) -> Path:
    """Write ``result`` as indented JSON to ``path`` (its folder made if missing; atomically, so an interrupted
    benchmark never leaves half a file); returns the path."""
    from bnncl.core.atomic import atomic_write_text

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    return out


def demo_options(config: str, bits: int, strategy: str = "ar1"):
    """The demo's learning options of ``config``: the device's (``bits`` 8: 8/16 at the head, 8/16/8 for multi, 1-bit
    replay) or the fp32 learner's (``bits`` 32: every bit width at 32, float32 replay). One epoch (only the fills and
    the learn() checks go through whole experiences)."""
    from bnncl.core.options import LearnOptions

    lr_layer = "head" if config == "head" else None  # None: the model file's LR layer
    if bits == 8:
        return LearnOptions(strategy=strategy, lr_layer=lr_layer, q_f=8, q_b=16, q_bin=8 if config == "multi" else 32,
                            replay_storage="bits", epochs=1)
    return LearnOptions(strategy=strategy, lr_layer=lr_layer, q_f=32, q_b=32, q_bin=32, replay_storage="float32",
                        epochs=1)


# -- timing --------------------------------------------------------------------------------------------------------

perf = time.perf_counter


def reps_for(fn, seconds: float, min_reps: int = 3, max_reps: int = 20000) -> int:
    """How many calls of ``fn`` (already warm) take about ``seconds``, from the fastest of three."""
    dt = math.inf
    for _ in range(3):  # the first call after another implementation ran can be slow (the other's threads still spin)
        t0 = perf()
        fn()
        dt = min(dt, perf() - t0)
    return int(min(max_reps, max(min_reps, seconds / max(dt, 1e-7))))


def time_calls(fn, seconds: float) -> list[float]:
    """Per-call times of ``fn`` repeated for about ``seconds`` (fn is already warm)."""
    times = []
    for _ in range(reps_for(fn, seconds)):
        t0 = perf()
        fn()
        times.append(perf() - t0)
    return times


def compare(fns: dict, seconds: float, rounds: int) -> dict:
    """Interleaved rounds (each implementation ``seconds / rounds`` per round): min per-call time and call count."""
    for fn in fns.values():  # warm-up: numba compiles or loads its cache, torch allocates
        fn()
        fn()
    best, calls = {k: math.inf for k in fns}, {k: 0 for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time_calls(fn, seconds / rounds)
            best[k], calls[k] = min(best[k], min(t)), calls[k] + len(t)
    return {k: {"seconds": best[k], "calls": calls[k]} for k in fns}


# -- models --------------------------------------------------------------------------------------------------------

def random_checkpoint(path, binary_boundary: str | None = None) -> None:
    """The fmnist backbone (``binary_boundary``: e.g. the demo's block5), seed 0, with random BN statistics, shifts and
    scales so that nothing is trivially degenerate (speed does not depend on the weights), saved as a checkpoint."""
    import torch
    from torch import nn

    from bnncl.checkpoint import save_checkpoint
    from bnncl.layers import LearnableBias, LearnableScale
    from bnncl.models import build_model, preset_config

    torch.manual_seed(0)
    model = build_model(preset_config("fmnist", 10, binary_boundary=binary_boundary))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
            elif isinstance(m, LearnableBias):
                m.bias.normal_(0.0, 0.1)
            elif isinstance(m, LearnableScale):
                m.scale.uniform_(0.5, 1.5)
    model.eval()
    save_checkpoint(path, model)


def child_json(code: str, cfg: dict) -> dict:
    """Run ``code`` in a fresh interpreter with ``cfg`` as JSON in argv[1]; its last stdout line, parsed (a process of
    its own, for peak-RSS figures the parent's imports do not pollute)."""
    import subprocess

    proc = subprocess.run([sys.executable, "-c", code, json.dumps(cfg)], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"RSS subprocess ({cfg['kind']}) failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
