"""Which variant and backend to load: an explicit request, the default, or `auto`, all from one rank table
(preference.py).

- Both named: exactly that pair.
- One or both left out (None): the first pair of the order for this CPU that is exported, installed, passed
  its validation and was shown faithful on this class of CPU (falling back to the first exported one).
- "auto" for either: the same candidates, restricted to a recorded cosine to PyTorch of at least
  `min_cosine`; the fastest measured at export on this CPU model wins when every candidate was measured
  there, else the order decides. With onnxruntime-gpu and a CUDA device, fp16 on CUDA.

"Shown on this class of CPU": the variant is portable (its numbers do not depend on the int8 path), or its
fidelity was measured on a CPU of the same int8 family (runtime/cpu.py). A variant that was not is taken
only when nothing else is installed, and `describe()` says so.
"""
from __future__ import annotations

from dataclasses import dataclass

from .backends import BACKENDS, backends_for_format, installed_backends
from .cpu import INT8_PATHS, Int8Path, cpu_model
from .defaults import AUTO_MIN_COSINE
from .errors import MissingDependencyError, NoVariantError, UnknownChoiceError
from .manifest import Manifest, Variant
from .preference import ranks_for

CUDA_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


@dataclass(frozen=True)
class Selection:
    """The variant to load, on which backend, with which providers, and why."""

    variant: Variant
    backend: str
    providers: tuple[str, ...] | None
    reason: str


def shown_on(variant: Variant, path: Int8Path) -> bool:
    """True when the variant's fidelity holds on a CPU with this int8 path."""
    if variant.portable:
        return True
    measured = variant.fidelity.int8_path if variant.fidelity else None
    return measured in INT8_PATHS and INT8_PATHS[measured].family == path.family


def select(manifest: Manifest, *, variant: str | None, backend: str | None, installed: list[str],
           int8_path: Int8Path, cuda: bool = False, min_cosine: float = AUTO_MIN_COSINE) -> Selection:
    """Resolve the request against the manifest (see the module docstring)."""
    exported = exported_pairs(manifest)
    _check_names(manifest, variant, backend, exported)
    auto = "auto" in (variant, backend)
    if auto and cuda and backend in ("auto", "onnxruntime") and variant in ("auto", "fp16"):
        gpu = manifest.find("onnx", "fp16")
        if gpu is not None and _faithful(gpu, min_cosine):
            return Selection(gpu, "onnxruntime", CUDA_PROVIDERS,
                             "a CUDA GPU and onnxruntime-gpu are present: fp16 on CUDAExecutionProvider")
    wanted = [(d, b, v) for d, b, v in _ordered(exported, int8_path)
              if variant in (None, "auto", d) and backend in (None, "auto", b)]
    usable = [(d, b, v) for d, b, v in wanted if b in installed]
    if not usable:
        raise _nothing_installed(variant, backend, wanted, installed)
    if variant not in (None, "auto") and backend not in (None, "auto"):
        return Selection(usable[0][2], usable[0][1], None, "requested")
    if auto:
        return _auto(usable, wanted, int8_path, min_cosine)
    good = [c for c in usable if c[2].fidelity is None or c[2].fidelity.passed]
    shown = [c for c in good if shown_on(c[2], int8_path)]
    dtype, name, found = (shown or good or usable)[0]
    if shown:
        reason = "default: first installed variant in edgembed's order for this CPU"
    else:
        reason = (f"default: no installed variant was shown faithful on this CPU's int8 path "
                  f"({int8_path.description}); took the first in edgembed's order")
    return Selection(found, name, None, reason)


def _auto(usable: list[tuple[str, str, Variant]], wanted: list[tuple[str, str, Variant]], int8_path: Int8Path,
          min_cosine: float) -> Selection:
    faithful = [c for c in usable if _faithful(c[2], min_cosine)]
    if not faithful:
        elsewhere = sorted({BACKENDS[b].extra for _, b, v in wanted if _faithful(v, min_cosine)} - {
            BACKENDS[b].extra for _, b, _ in usable})
        fix = (f'run pip install "edgembed[{elsewhere[0]}]" for a faithful variant, or ' if elsewhere else "")
        raise NoVariantError(
            f"auto found no installed variant with a recorded cosine to PyTorch of at least {min_cosine} "
            f"(installed: {_describe(usable)}); {fix}pick variant and backend by hand, or pass a lower "
            "auto_min_cosine (CLI: --auto-min-cosine)")
    shown = [c for c in faithful if shown_on(c[2], int8_path)]
    candidates = shown or faithful
    note = "" if shown else (f"; no faithful variant was shown on this CPU's int8 path ({int8_path.description}), "
                             "so its fidelity here is unproven")
    here = cpu_model()
    measured = [c for c in candidates if c[2].speed is not None and c[2].speed.cpu == here]
    if len(measured) == len(candidates):
        dtype, name, found = max(measured, key=lambda c: c[2].speed.texts_per_second)  # type: ignore[union-attr]
        reason = (f"auto: fastest measured on this CPU at export ({found.speed.texts_per_second:.1f} texts/s), "  # type: ignore[union-attr]
                  f"cosine min {found.fidelity.cosine_min:.4f} >= {min_cosine}{note}")  # type: ignore[union-attr]
    else:
        dtype, name, found = candidates[0]
        reason = (f"auto: first faithful installed variant in edgembed's order for this CPU (no export-time "
                  f"speed figures from this CPU); cosine min {found.fidelity.cosine_min:.4f} >= {min_cosine}{note}")  # type: ignore[union-attr]
    return Selection(found, name, None, reason)


def exported_pairs(manifest: Manifest) -> list[tuple[str, str, Variant]]:
    """Every (dtype, backend) pair the manifest's variants give, in the manifest's order; when a backend runs
    several formats of one dtype, the file of the format it prefers."""
    chosen: dict[tuple[str, str], Variant] = {}
    for variant in manifest.variants:
        for spec in backends_for_format(variant.format):
            held = chosen.get((variant.dtype, spec.name))
            if held is None or spec.formats.index(variant.format) < spec.formats.index(held.format):
                chosen[(variant.dtype, spec.name)] = variant
    return [(dtype, name, variant) for (dtype, name), variant in chosen.items()]


def runnable_variants(manifest: Manifest) -> list[tuple[str, str]]:
    """The (variant, backend) pairs of an export whose engine is installed here, in the manifest's order."""
    installed = installed_backends()
    return [(dtype, name) for dtype, name, _ in exported_pairs(manifest) if name in installed]


def _ordered(exported: list[tuple[str, str, Variant]], int8_path: Int8Path) -> list[tuple[str, str, Variant]]:
    """Exported pairs in the order for this CPU; pairs the order does not list come last, as exported."""
    ranks = ranks_for(int8_path.family)
    return sorted(exported, key=lambda item: ranks.get((item[0], item[1]), float("inf")))


def _check_names(manifest: Manifest, variant: str | None, backend: str | None,
                 exported: list[tuple[str, str, Variant]]) -> None:
    if backend not in (None, "auto") and backend not in BACKENDS:
        raise UnknownChoiceError("backend", backend, [*BACKENDS, "auto"])
    if variant in (None, "auto"):
        if not exported:
            raise NoVariantError("manifest.json lists no variant a backend can run; re-export the model")
        return
    dtypes = {d for d, _, _ in exported}
    if variant not in dtypes:
        raise UnknownChoiceError("variant", variant, [*sorted(dtypes), "auto"],
                                 "export it with 'edgembed export MODEL -o OUT --quantize " + str(variant) + "'")
    if backend not in (None, "auto") and not any(d == variant and b == backend for d, b, _ in exported):
        others = sorted(f"{d} ({b})" for d, b, _ in exported if b != backend)
        on_backend = sorted(d for d, b, _ in exported if b == backend)
        raise UnknownChoiceError(f"variant for backend {backend!r}", variant, on_backend,
                                 f"other backends have: {', '.join(others)}" if others else "")


def _nothing_installed(variant: str | None, backend: str | None, wanted: list[tuple[str, str, Variant]],
                       installed: list[str]) -> Exception:
    missing = [b for b in dict.fromkeys(b for _, b, _ in wanted) if b not in installed]
    if not missing:
        return NoVariantError(f"no exported variant matches variant={variant!r}, backend={backend!r}")
    spec = BACKENDS[missing[0]]
    return MissingDependencyError(spec.module, spec.extra)


def _faithful(variant: Variant, min_cosine: float) -> bool:
    return variant.fidelity is not None and variant.fidelity.passed and variant.fidelity.cosine_min >= min_cosine


def _describe(candidates: list[tuple[str, str, Variant]]) -> str:
    parts = []
    for dtype, name, found in candidates:
        fidelity = found.fidelity
        figure = f"cosine min {fidelity.cosine_min:.4f}" if fidelity else "no recorded fidelity"
        parts.append(f"{dtype} on {name} ({figure})")
    return ", ".join(parts)
