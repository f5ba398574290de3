"""The package's one build step beyond pure Python: the C runtime (runtime/), compiled with the system C compiler into
``bnncl/device/_bnn*.so``, a plain shared library (no Python C API in it) that ``bnncl.device.cruntime`` loads with
ctypes. ``pip install -e .`` and ``make setup`` both run it.

The popcount inner loop is chosen for the CPU that builds (AVX-512 VPOPCNTDQ, AVX2, NEON, else portable C);
``BNNCL_SIMD=portable|avx2|avx512|neon`` overrides it. Only the SIMD file gets that instruction set's flags: every
other file is the same portable C on every machine, compiled without fused multiply-add (``-ffp-contract=off``), so
its float results are the same bit for bit everywhere (runtime/README.md).
"""

import os
import platform
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

RUNTIME = Path("runtime")
COMMON = ["-std=c11", "-O2", "-ffp-contract=off", "-fPIC"]
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
    """Each source with its own flags (the SIMD file alone with its ISA's), linked into one shared library."""

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
            flags = COMMON + (isa if src.name == simd_file else [])
            objects += self.compiler.compile([str(src)], output_dir=str(tmp), macros=macros,
                                             include_dirs=[str(RUNTIME / "include")], extra_postargs=flags)
        out.parent.mkdir(parents=True, exist_ok=True)
        self.compiler.link_shared_object(objects, str(out), extra_postargs=["-lm"])


setup(ext_modules=[Extension("bnncl.device._bnn", sources=[])], cmdclass={"build_ext": BuildRuntime})
