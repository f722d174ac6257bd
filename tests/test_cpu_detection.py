"""The int8 path comes from CPUID (numpy) and, for AMX and AVX-VNNI, from the OS's flags when both agree; the OS's
flags alone when numpy's private detection is gone."""
from __future__ import annotations

import importlib

import pytest

from edgembed.runtime import cpu

HASWELL = {"AVX2": True, "FMA3": True}
SAPPHIRE_RAPIDS = {"AVX2": True, "FMA3": True, "AVX512F": True, "AVX512BW": True, "AVX512VNNI": True}
ALDER_LAKE_FLAGS = "fpu sse4_2 avx avx2 fma avx_vnni"
SAPPHIRE_RAPIDS_FLAGS = "fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni avx_vnni amx_tile amx_int8"


def _path(monkeypatch, features: dict[str, bool], flags: str) -> str:
    monkeypatch.setattr(cpu, "_numpy_cpu_features", lambda: features)
    monkeypatch.setattr(cpu, "_os_cpu_flags", lambda: frozenset(flags.split()))
    monkeypatch.delenv("EDGEMBED_INT8_PATH", raising=False)
    cpu.int8_path.cache_clear()
    try:
        return cpu.int8_path().name
    finally:
        cpu.int8_path.cache_clear()


@pytest.mark.parametrize(("features", "flags", "expected"), [
    (SAPPHIRE_RAPIDS, SAPPHIRE_RAPIDS_FLAGS, "amx"),
    (HASWELL, ALDER_LAKE_FLAGS, "avx_vnni"),
    (HASWELL, "fpu sse4_2 avx avx2 fma", "avx2"),
])
def test_cpuid_and_proc_flags_of_one_cpu_give_its_path(monkeypatch, features, flags, expected):
    assert _path(monkeypatch, features, flags) == expected


def test_an_emulated_cpu_is_not_given_the_hosts_vnni(monkeypatch):
    """qemu-x86_64 -cpu Haswell on an AMX host: CPUID says AVX2 only, /proc/cpuinfo is still the host's."""
    assert _path(monkeypatch, HASWELL, SAPPHIRE_RAPIDS_FLAGS) == "avx2"


def test_without_numpys_private_detection_this_cpu_keeps_its_path(monkeypatch):
    """numpy's __cpu_features__ is private: with it gone, the OS's flags give this machine the same int8 path."""
    monkeypatch.delenv("EDGEMBED_INT8_PATH", raising=False)
    cpu.int8_path.cache_clear()
    with_numpy = cpu.int8_path()
    for name in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):  # numpy 2, numpy 1
        try:
            monkeypatch.delattr(importlib.import_module(name), "__cpu_features__", raising=False)
        except ImportError:
            continue
    cpu.int8_path.cache_clear()
    try:
        assert cpu._numpy_cpu_features() == {}
        assert cpu.int8_path() == with_numpy
        assert with_numpy.name != "unknown"  # the comparison says nothing on a CPU neither route knows
    finally:
        cpu.int8_path.cache_clear()


# `sysctl machdep.cpu hw.optional` on an Apple M2 and on a Cascade Lake Mac Pro (shortened).
APPLE_M2_SYSCTL = """machdep.cpu.brand_string: Apple M2
hw.optional.AdvSIMD: 1
hw.optional.arm.FEAT_DotProd: 1
hw.optional.arm.FEAT_I8MM: 1
hw.optional.arm.FEAT_BF16: 1
"""
INTEL_MAC_SYSCTL = """machdep.cpu.brand_string: Intel(R) Xeon(R) W-3245 CPU @ 3.20GHz
machdep.cpu.features: FPU VME SSE SSE2 SSE3 SSSE3 FMA SSE4.1 SSE4.2 AVX1.0
machdep.cpu.leaf7_features: BMI1 AVX2 BMI2 AVX512F AVX512DQ AVX512CD AVX512BW AVX512VL AVX512VNNI
hw.optional.arm.FEAT_I8MM: 0
"""


@pytest.mark.parametrize(("sysctl", "expected"), [(APPLE_M2_SYSCTL, "arm_i8mm"),
                                                  (INTEL_MAC_SYSCTL, "avx512_vnni")])
def test_macos_flags_give_the_path_without_numpys_detection(monkeypatch, sysctl, expected):
    assert _path(monkeypatch, {}, " ".join(cpu._flags_from_sysctl(sysctl))) == expected
