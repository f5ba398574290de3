"""Run a command as if on another x86-64 CPU: the device side's tests (``make test`` runs them again this way after
the suite), or a benchmark (the AVX2-only tables of BENCHMARKS.md).

A result that is bit-identical on the host but not on a CPU with other vector widths (a float sum whose order
depends on the SIMD path) would pass on the machine that wrote it and fail on the next. So the device tests run
again with every library that picks its code by CPU told to pick another one:

* numba compiles for ``x86-64-v3`` (AVX2 and FMA, no AVX-512) when the host has AVX-512, else for ``x86-64-v2``
  (SSE4.2: 128-bit vectors), with the exact feature list of that level and a cache directory of its own (code
  compiled for one target is never loaded for the other);
* NumPy's dispatch leaves out the same instruction sets (``NPY_DISABLE_CPU_FEATURES``), torch's ATen and oneDNN
  too (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``; torch is the oracle of some device tests and the baseline
  of the benchmarks), and OpenBLAS takes its Haswell (AVX2) kernels (``OPENBLAS_CORETYPE``) for x86-64-v3;
* the C runtime, which runs the device's inference kernels, is built again for the target (setup.py with
  ``BNNCL_SIMD``: the AVX2 path, every file at -mavx2, for x86-64-v3; the portable path, SSE2, for x86-64-v2) into
  a directory of its own, and loaded from there (``BNNCL_LIBRARY``).

This is the host's microarchitecture running another instruction set, not another CPU: caches, ports and clock stay
the host's. Elsewhere than x86-64 (an ARM host) there is no second target to compile for here: the script says so and
exits 0.

    python tools/cpu_target.py                                  # python -m pytest -q tests/device, for the target
    python tools/cpu_target.py --target x86-64-v3 python benchmarks/inference.py --json runs/bench/inference-v3.json
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# LLVM's feature lists of the x86-64 psABI levels (what a CPU of that level has, nothing more)
V2 = "+64bit,+cmov,+cx16,+cx8,+fxsr,+mmx,+popcnt,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3"
V3 = V2 + ",+avx,+avx2,+bmi,+bmi2,+f16c,+fma,+lzcnt,+movbe,+xsave"
AVX512 = ("X86_V4", "AVX512F", "AVX512CD", "AVX512_KNL", "AVX512_KNM", "AVX512_SKX", "AVX512_CLX", "AVX512_CNL",
          "AVX512_ICL", "AVX512_SPR")
# target: (LLVM features, NumPy dispatch targets to leave out (names of numpy 2.x: those this NumPy knows are used),
# ATen's capability, oneDNN's ISA, OpenBLAS's core type or None for its own choice)
TARGETS = {
    "x86-64-v3": (V3, AVX512, "avx2", "AVX2", "Haswell"),
    "x86-64-v2": (V2, ("X86_V3", "AVX", "F16C", "FMA3", "AVX2") + AVX512, "default", "SSE41", "Nehalem"),
}
C_PATHS = {"x86-64-v3": "avx2", "x86-64-v2": "portable"}  # the C runtime's path (setup.py's BNNCL_SIMD) per target


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def other_target(flags: set[str]) -> str | None:
    """The target to test besides the host: without AVX-512 if the host has it, else without AVX (None: not x86-64,
    or a CPU below x86-64-v2)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    if "avx512f" in flags:
        return "x86-64-v3"
    return "x86-64-v2" if {"sse4_2", "popcnt"} <= flags else None


def environment(target: str) -> dict[str, str]:
    from numpy._core._multiarray_umath import __cpu_dispatch__  # what this NumPy can dispatch to

    features, numpy_off, aten, onednn, openblas = TARGETS[target]
    env = dict(os.environ)
    env.update(NUMBA_CPU_NAME=target, NUMBA_CPU_FEATURES=features, ATEN_CPU_CAPABILITY=aten,
               ONEDNN_MAX_CPU_ISA=onednn, OPENBLAS_CORETYPE=openblas,
               NUMBA_CACHE_DIR=str(Path(sys.prefix) / f"numba-cache-{target}"),
               NPY_DISABLE_CPU_FEATURES=" ".join(k for k in numpy_off if k in __cpu_dispatch__))
    return env


def c_library(target: str) -> Path:
    """The C runtime built for ``target`` (setup.py build_ext into a directory of its own under the venv)."""
    out = Path(sys.prefix) / f"bnn-{target}"
    env = dict(os.environ, BNNCL_SIMD=C_PATHS[target])
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(out), "--build-temp",
                    str(out / "tmp")], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return next(out.glob("bnncl/device/_bnn*.so"))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=sorted(TARGETS),
                        help="default: x86-64-v3 on a host with AVX-512, else x86-64-v2")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="what to run (default: python -m pytest -q tests/device)")
    args = parser.parse_args(argv)
    target = args.target or other_target(cpu_flags())
    if target is None:
        print(f"other CPU target: none on {platform.machine()} (the device tests ran on the host's target only)")
        return 0
    env = environment(target)
    env["BNNCL_LIBRARY"] = str(c_library(target))
    print(f"as {target}: numba features {env['NUMBA_CPU_FEATURES']}; NumPy without "
          f"{env['NPY_DISABLE_CPU_FEATURES'] or 'nothing'}; ATen {env['ATEN_CPU_CAPABILITY']}; oneDNN "
          f"{env['ONEDNN_MAX_CPU_ISA']}; OpenBLAS {env['OPENBLAS_CORETYPE']}; the C runtime's {C_PATHS[target]} "
          f"path ({env['BNNCL_LIBRARY']})", flush=True)
    command = args.command or [sys.executable, "-m", "pytest", "-q", "tests/device"]
    return subprocess.call(command, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
