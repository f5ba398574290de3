"""``tools/cpu_target.py``: which second CPU target ``make test`` compiles for, and the environment it sets."""

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("cpu_target", Path(__file__).parents[1] / "tools" / "cpu_target.py")
cpu_target = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cpu_target)

AVX512 = {"sse4_2", "popcnt", "avx", "avx2", "fma", "avx512f", "avx512bw"}
AVX2 = {"sse4_2", "popcnt", "avx", "avx2", "fma"}


@pytest.mark.parametrize("machine, flags, target", [("x86_64", AVX512, "x86-64-v3"), ("x86_64", AVX2, "x86-64-v2"),
                                                    ("x86_64", {"sse2"}, None), ("aarch64", AVX512, None)])
def test_the_other_target_is_one_the_host_can_run_with_another_vector_width(monkeypatch, machine, flags, target):
    monkeypatch.setattr(cpu_target.platform, "machine", lambda: machine)
    assert cpu_target.other_target(flags) == target


@pytest.mark.parametrize("target", sorted(cpu_target.TARGETS))
def test_the_environment_names_one_instruction_set_for_every_library(target):
    from numpy._core._multiarray_umath import __cpu_dispatch__

    env = cpu_target.environment(target)
    assert env["NUMBA_CPU_NAME"] == target
    features = env["NUMBA_CPU_FEATURES"].split(",")
    assert "+sse4.2" in features and "+popcnt" in features and not any("avx512" in f for f in features)
    assert ("+avx2" in features) == (target == "x86-64-v3")
    assert env["NUMBA_CACHE_DIR"].endswith(f"numba-cache-{target}")  # never the host target's cache
    disabled = env["NPY_DISABLE_CPU_FEATURES"].split()
    assert set(disabled) <= set(__cpu_dispatch__)  # only names this NumPy knows (others make it warn)
    assert not any(k.startswith("AVX512") or k == "X86_V4" for k in __cpu_dispatch__ if k not in disabled)
    assert env["ATEN_CPU_CAPABILITY"] == {"x86-64-v3": "avx2", "x86-64-v2": "default"}[target]
