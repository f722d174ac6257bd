"""The int8 path comes from CPUID (numpy) and, for AMX and AVX-VNNI, from /proc/cpuinfo when both agree."""
from __future__ import annotations

import pytest

from edgembed.runtime import cpu

HASWELL = {"AVX2": True, "FMA3": True}
SAPPHIRE_RAPIDS = {"AVX2": True, "FMA3": True, "AVX512F": True, "AVX512BW": True, "AVX512VNNI": True}
ALDER_LAKE_FLAGS = "fpu sse4_2 avx avx2 fma avx_vnni"
SAPPHIRE_RAPIDS_FLAGS = "fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni avx_vnni amx_tile amx_int8"


def _path(monkeypatch, features: dict[str, bool], flags: str) -> str:
    monkeypatch.setattr(cpu, "_numpy_cpu_features", lambda: features)
    monkeypatch.setattr(cpu, "_proc_flags", lambda: frozenset(flags.split()))
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
