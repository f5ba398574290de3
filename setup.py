"""The package's one build step beyond pure Python: the C runtime (runtime/), compiled with the system C compiler into
``bnncl/device/_bnn*.so``, a plain shared library (no Python C API in it) that ``bnncl.device.cruntime`` loads with
ctypes. ``pip install -e .`` and ``make setup`` both run it.

The popcount inner loop is chosen for the CPU that builds (AVX-512 VPOPCNTDQ, AVX2, NEON, else portable C);
``BNNCL_SIMD=portable|avx2|avx512|neon`` overrides it. Every file is compiled for that instruction set at -O3, so the
float kernels vectorize across channels; each value's operations stay in their fixed order (no fused multiply-add:
``-ffp-contract=off``; no -ffast-math), so the float results are the same bit for bit on every build
(runtime/README.md; tests/device/test_cruntime.py holds this build to the Python runtime).
"""

import os
import platform
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

RUNTIME = Path("runtime")
COMMON = ["-std=c11", "-O3", "-ffp-contract=off", "-fPIC"]
PATHS = {  # path -> (define, SIMD file, its ISA flags, the /proc/cpuinfo flags it needs)
    "avx512": ("BNN_USE_AVX512", "kernels_avx512.c", ["-mavx512f", "-mavx512vpopcntdq", "-mpopcnt"],
               {"avx512f", "avx512_vpopcntdq"}),
    "avx2": ("BNN_USE_AVX2", "kernels_avx2.c", ["-mavx2", "-mpopcnt"], {"avx2"}),
    "neon": ("BNN_USE_NEON", "kernels_neon.c", [], set()),
}


def simd_path() -> str:
    chosen = os.environ.get("BNNCL_SIMD")
    if chosen:
        if chosen != "portable" and chosen not in PATHS:
            raise SystemExit(f"BNNCL_SIMD={chosen!r}: give portable, {', '.join(PATHS)}")
        return chosen
    if platform.machine() in ("aarch64", "arm64"):
        return "neon"
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "portable"
    flags = set(flags.split(":", 1)[1].split())
    return next((p for p in ("avx512", "avx2") if PATHS[p][3] <= flags), "portable")


class BuildRuntime(build_ext):
    """The portable sources and the path's SIMD file, for the path's instruction set, linked into one shared
    library."""

    def build_extension(self, ext):
        path = simd_path()
        define, simd_file, isa, _ = PATHS.get(path, (None, None, [], set()))
        macros = [(define, "1")] if define else []
        out = Path(self.get_ext_fullpath(ext.name))
        tmp = Path(self.build_temp) / path
        objects = []
        for src in sorted((RUNTIME / "src").glob("*.c")):
            if src.name.startswith("kernels_") and src.name not in ("kernels_portable.c", simd_file):
                continue
            flags = COMMON + isa
            objects += self.compiler.compile([str(src)], output_dir=str(tmp), macros=macros,
                                             include_dirs=[str(RUNTIME / "include")], extra_postargs=flags)
        out.parent.mkdir(parents=True, exist_ok=True)
        self.compiler.link_shared_object(objects, str(out), extra_postargs=["-lm"])


setup(ext_modules=[Extension("bnncl.device._bnn", sources=[])], cmdclass={"build_ext": BuildRuntime})
