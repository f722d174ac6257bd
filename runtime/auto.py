"""`variant="auto"` / `backend="auto"`: the fastest installed variant whose recorded fidelity is good enough."""
from __future__ import annotations

from dataclasses import dataclass

from .cpu import cpu_model
from .errors import EdgembedError
from .manifest import BACKEND_FORMATS, Manifest, Variant

# Minimum recorded cosine to the PyTorch reference that `auto` accepts.
AUTO_MIN_COSINE = 0.99
# Without speed figures from this CPU: int8 first (static before weights-only), then OpenVINO before
# ONNX Runtime, fp16 last on ONNX Runtime (it runs fp16 through casts on CPU). q4 saves disk, not time.
STATIC_ORDER = [("q8-static", "openvino"), ("q8", "openvino"), ("q8", "onnxruntime"), ("fp32", "openvino"),
                ("fp16", "openvino"), ("q4", "openvino"), ("fp32", "onnxruntime"), ("q4", "onnxruntime"),
                ("fp16", "onnxruntime")]


@dataclass(frozen=True)
class Choice:
    """What auto picked and why."""

    variant: str
    backend: str
    providers: tuple[str, ...] | None
    reason: str


def choose(manifest: Manifest, variant: str | None, backend: str | None, installed: list[str],
           cuda_available: bool, min_cosine: float = AUTO_MIN_COSINE) -> Choice:
    """Resolve "auto" in either argument; the other one, if given, is kept as a constraint."""
    if cuda_available and backend in ("auto", "onnxruntime") and variant in ("auto", "fp16"):
        gpu = manifest.find("onnx", "fp16")
        if gpu is not None and _faithful(gpu, min_cosine):
            return Choice("fp16", "onnxruntime", ("CUDAExecutionProvider", "CPUExecutionProvider"),
                          "a CUDA GPU and onnxruntime-gpu are present: fp16 on CUDAExecutionProvider")
    candidates = []
    for dtype, name in STATIC_ORDER:
        found = manifest.find(BACKEND_FORMATS[name], dtype)
        if found is None or name not in installed or variant not in ("auto", dtype) or backend not in ("auto", name):
            continue
        if _faithful(found, min_cosine):
            candidates.append((dtype, name, found))
    if not candidates:
        raise EdgembedError(
            f"auto found no variant with recorded cosine >= {min_cosine} among the installed backends "
            f"{installed or '(none)'}; pick variant and backend by hand, or install "
            '"edgembed[onnx]" or "edgembed[openvino]"')
    here = cpu_model()
    measured = [c for c in candidates if c[2].speed is not None and c[2].speed.cpu == here]
    if len(measured) == len(candidates):
        dtype, name, found = max(measured, key=lambda c: c[2].speed.texts_per_second)  # type: ignore[union-attr]
        reason = (f"fastest measured on this CPU at export ({found.speed.texts_per_second:.1f} texts/s), "  # type: ignore[union-attr]
                  f"cosine min {found.fidelity.cosine_min:.4f} >= {min_cosine}")  # type: ignore[union-attr]
    else:
        dtype, name, found = candidates[0]
        reason = (f"first in edgembed's CPU preference order among installed, faithful variants "
                  f"(no export-time speed figures from this CPU); cosine min "
                  f"{found.fidelity.cosine_min if found.fidelity else float('nan'):.4f} >= {min_cosine}")
    return Choice(dtype, name, None, reason)


def _faithful(variant: Variant, min_cosine: float) -> bool:
    return variant.fidelity is not None and variant.fidelity.passed and variant.fidelity.cosine_min >= min_cosine
