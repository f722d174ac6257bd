"""Which (dtype, engine) pair edgembed prefers on this CPU: one rank per pair, lowest first, and the few ranks
an int8 family (runtime/cpu.py) changes. The default and `auto` in selection.py read the order from here.

Adding a dtype or an engine is one RANKS row; an override only where a family was measured to differ.
"""
from __future__ import annotations

from collections.abc import Mapping

# Measured speed-ups over PyTorch (ModernBERT-base shape, 2 threads; docs/speed.md) on VNNI hosts: both q8s lead.
# Ranks leave gaps so a new row fits between two others without renumbering.
RANKS: Mapping[tuple[str, str], int] = {
    ("q8", "onnxruntime"): 10,
    ("q8", "openvino"): 20,
    ("q8-static", "openvino"): 30,
    ("fp32", "onnxruntime"): 40,
    ("fp32", "openvino"): 50,
    ("fp16", "openvino"): 60,
    ("fp16", "onnxruntime"): 70,
    ("q4", "openvino"): 80,
    ("q4", "onnxruntime"): 90,
}
# On AVX2-only hosts the OpenVINO int8 IRs run no faster than its float IRs, so they go behind them.
_WITHOUT_VNNI = {("q8", "openvino"): 62, ("q8-static", "openvino"): 64, ("q4", "openvino"): 95}
# Families not named here (vnni, unknown and any new one) take RANKS as they are.
FAMILY_RANKS: Mapping[str, Mapping[tuple[str, str], int]] = {
    "no-vnni": _WITHOUT_VNNI,
    "arm": _WITHOUT_VNNI,  # not measured on its own: ARM keeps the order of x86 CPUs without VNNI
}


def ranks_for(family: str) -> dict[tuple[str, str], int]:
    """Every ranked (dtype, engine) pair and its rank on a CPU of this int8 family."""
    return {**RANKS, **FAMILY_RANKS.get(family, {})}


def preference_order(family: str) -> list[tuple[str, str]]:
    """Every ranked (dtype, engine) pair, best first, on a CPU of this int8 family."""
    ranks = ranks_for(family)
    return sorted(ranks, key=ranks.__getitem__)
