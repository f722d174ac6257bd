"""What this machine offers: its CPU model, its cores, and the int8 path its instruction set gives the engines."""
from __future__ import annotations

import functools
import importlib
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidArgumentError


@dataclass(frozen=True)
class Int8Path:
    """How int8 products are computed on a class of CPU.

    `family` groups the paths whose int8 dot products give the same integers: "vnni" (AMX, AVX-512 VNNI,
    AVX-VNNI: exact 32-bit sums), "no-vnni" (pairs of u8 x s8 products summed in saturating 16-bit lanes,
    see docs/q8-on-every-cpu.md), "arm" (widening products, exact).
    """

    name: str
    description: str
    family: str


INT8_PATHS = {path.name: path for path in (
    Int8Path("amx", "AMX (Advanced Matrix Extensions) with AVX-512 VNNI", "vnni"),
    Int8Path("avx512_vnni", "AVX-512 VNNI", "vnni"),
    Int8Path("avx_vnni", "AVX-VNNI (256-bit)", "vnni"),
    Int8Path("avx512bw", "AVX-512 without VNNI (16-bit pair sums)", "no-vnni"),
    Int8Path("avx2", "AVX2 without VNNI (16-bit pair sums)", "no-vnni"),
    Int8Path("sse", "SSE4 or older", "no-vnni"),
    Int8Path("arm_i8mm", "ARM int8 matrix multiply (i8mm)", "arm"),
    Int8Path("arm_dotprod", "ARM dot product (sdot/udot)", "arm"),
    Int8Path("arm_neon", "ARM NEON without dot product", "arm"),
    Int8Path("unknown", "unknown CPU", "unknown"),
)}


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's marketing name (Linux), else the platform's processor string."""
    for line in _cpuinfo_lines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def int8_path() -> Int8Path:
    """The int8 path of this CPU, from the instruction sets the CPU reports to this process.

    CPUID comes through numpy's own runtime detection, so an emulated CPU (qemu-x86_64 -cpu Haswell) is seen
    as what it emulates; AMX and AVX-VNNI, which numpy does not report, come from the OS's flags
    (/proc/cpuinfo, sysctl on macOS) when they agree with CPUID (under qemu-user they are the host's). numpy's
    detection is a private attribute: without it the OS's flags answer alone (and cannot see through qemu-user).
    The environment variable EDGEMBED_INT8_PATH (one of INT8_PATHS) overrides the detection.
    """
    forced = os.environ.get("EDGEMBED_INT8_PATH")
    if forced:
        if forced not in INT8_PATHS:
            raise InvalidArgumentError("EDGEMBED_INT8_PATH", forced, " or ".join(INT8_PATHS))
        return INT8_PATHS[forced]
    flags = _os_cpu_flags()
    features = _numpy_cpu_features() or _features_from_flags(flags)
    if not _flags_match_cpuid(flags, features):
        flags = frozenset()
    if features.get("AVX512VNNI"):
        return INT8_PATHS["amx" if "amx_int8" in flags else "avx512_vnni"]
    if features.get("AVX2"):
        if "avx_vnni" in flags:
            return INT8_PATHS["avx_vnni"]
        return INT8_PATHS["avx512bw" if features.get("AVX512BW") else "avx2"]
    if features.get("ASIMD") or platform.machine().lower() in ("aarch64", "arm64"):
        if "i8mm" in flags:
            return INT8_PATHS["arm_i8mm"]
        return INT8_PATHS["arm_dotprod" if features.get("ASIMDDP") or "asimddp" in flags else "arm_neon"]
    if features.get("SSE41") or features.get("SSE2"):
        return INT8_PATHS["sse"]
    return INT8_PATHS["unknown"]


@functools.lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores this process may use: distinct (package, core) pairs in /proc/cpuinfo among the CPUs in
    its affinity mask; os.cpu_count() where that cannot be read."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        cores, processor, package = set(), None, "0"
        for line in _cpuinfo_lines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "processor":
                processor, package = int(value), "0"
            elif key == "physical id":
                package = value
            elif key == "core id" and (allowed is None or processor in allowed):
                cores.add((package, value))
        if cores:
            return len(cores)
    except ValueError:
        pass
    return len(allowed) if allowed else (os.cpu_count() or 1)


def _numpy_cpu_features() -> dict[str, bool]:
    """numpy's CPUID features (a private attribute: {} if a numpy release drops it)."""
    for name in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):  # numpy 2, numpy 1.x
        try:
            return dict(importlib.import_module(name).__cpu_features__)
        except (ImportError, AttributeError):
            continue
    return {}


# Instruction sets both numpy (CPUID) and /proc/cpuinfo report, to check that the two describe the same CPU.
SHARED_FLAGS = {"avx2": "AVX2", "avx512f": "AVX512F", "avx512bw": "AVX512BW", "avx512_vnni": "AVX512VNNI",
                "fma": "FMA3"}
# Every /proc/cpuinfo flag int8_path reads through numpy's name for it, for when numpy's detection is gone.
FLAG_FEATURES = {**SHARED_FLAGS, "sse2": "SSE2", "sse4_1": "SSE41", "asimd": "ASIMD", "asimddp": "ASIMDDP"}
# macOS: sysctl names that read 1 when the CPU has the instruction set of this /proc/cpuinfo flag (Apple chips)...
SYSCTL_FLAGS = {"hw.optional.AdvSIMD": "asimd", "hw.optional.arm.FEAT_DotProd": "asimddp",
                "hw.optional.arm.FEAT_I8MM": "i8mm"}
# ... and the lists of instruction sets of Intel Macs ("SSE4.1 AVX1.0 AVX2 AVX512F AVX512VNNI ...").
SYSCTL_LISTS = ("machdep.cpu.features", "machdep.cpu.leaf7_features")
SYSCTL_RENAMED = {"avx1_0": "avx", "avx512vnni": "avx512_vnni"}


def _features_from_flags(flags: frozenset[str]) -> dict[str, bool]:
    return {feature: True for flag, feature in FLAG_FEATURES.items() if flag in flags}


def _flags_match_cpuid(flags: frozenset[str], features: dict[str, bool]) -> bool:
    """False when /proc/cpuinfo describes another CPU than the one running this process: under qemu-user
    (-cpu Haswell) it is the host's, whose avx_vnni or amx the emulated CPU does not have."""
    if not flags or "AVX2" not in features:  # not x86, or numpy without CPUID: nothing to compare
        return True
    return all((flag in flags) == bool(features.get(feature)) for flag, feature in SHARED_FLAGS.items())


def _os_cpu_flags() -> frozenset[str]:
    """The CPU's instruction sets as the OS reports them, named as /proc/cpuinfo names them (empty if unknown)."""
    for line in _cpuinfo_lines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    if sys.platform == "darwin":
        return _flags_from_sysctl(_sysctl_text())
    return frozenset()


def _flags_from_sysctl(text: str) -> frozenset[str]:
    """/proc/cpuinfo-style flags from `sysctl machdep.cpu hw.optional` output ("name: value" lines)."""
    flags = set()
    for line in text.splitlines():
        name, _, value = (part.strip() for part in line.partition(":"))
        if name in SYSCTL_LISTS:
            for feature in value.split():
                flag = feature.lower().replace(".", "_")
                flags.add(SYSCTL_RENAMED.get(flag, flag))
        elif name in SYSCTL_FLAGS and value == "1":
            flags.add(SYSCTL_FLAGS[name])
    return frozenset(flags)


def _sysctl_text() -> str:
    try:  # names a Mac lacks are reported on stderr; the others still print
        return subprocess.run(["sysctl", "machdep.cpu", "hw.optional"], capture_output=True, text=True,
                              timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.lru_cache(maxsize=1)
def _cpuinfo_lines() -> tuple[str, ...]:
    try:
        return tuple(Path("/proc/cpuinfo").read_text().splitlines())
    except OSError:
        return ()
