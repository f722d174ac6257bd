"""manifest.json: the one contract between the exporter and the runtime."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ManifestError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
POOLING_MODES = ("mean", "cls", "max")
# A graph's external weights: GRAPH.onnx_data beside GRAPH.onnx (optimum's and transformers.js' name).
EXTERNAL_DATA_SUFFIX = "_data"


@dataclass
class FileEntry:
    """One file of a variant, relative to the model directory."""

    path: str
    sha256: str
    bytes: int


@dataclass
class Fidelity:
    """How close a variant's embeddings are to a reference, and on which CPU that was measured.

    Used for the export's validation against PyTorch (with `threshold` and `passed`), for its retrieval check
    on the evaluation corpus (with `top10_overlap`) and for `edgembed eval`'s rows.
    """

    cosine_min: float
    cosine_mean: float
    texts: int
    reference: str
    threshold: float | None = None
    passed: bool = True
    cosine_p1: float | None = None
    top10_overlap: float | None = None
    int8_path: str | None = None  # runtime.cpu.Int8Path.name of the CPU that measured it


@dataclass
class Speed:
    """Throughput measured at export on the validation texts (a hint for `auto`, not a benchmark)."""

    texts_per_second: float
    cpu: str


@dataclass
class Variant:
    """One exported graph: a file format at a precision.

    `portable`: its numbers do not depend on the CPU's int8 path (float variants, and int8 recipes whose integer
    products are exact on every kernel), so its fidelity holds on any CPU. `alternates`: for an int8 family
    (runtime/cpu.py), another of its files computing the same numbers with that family's exact kernels.
    """

    format: str
    dtype: str
    files: list[FileEntry]
    output: str = "last_hidden_state"
    precision_hint: str | None = None
    quantization: str | None = None
    portable: bool = False
    alternates: dict[str, str] = field(default_factory=dict)
    fidelity: Fidelity | None = None
    evaluation: Fidelity | None = None  # the retrieval check: each figure at its worst over the domains
    evaluation_domains: dict[str, Fidelity] = field(default_factory=dict)  # the same check, per domain
    speed: Speed | None = None

    @property
    def name(self) -> str:
        return f"{self.format}/{self.dtype}"

    @property
    def model_file(self) -> str:
        """The file the backend loads (.onnx or .xml) unless an alternate suits the CPU."""
        return self.files[0].path

    def file_for(self, family: str) -> str:
        """The graph to load on a CPU of this int8 family."""
        return self.alternates.get(family, self.model_file)


@dataclass
class DimensionRanges:
    """Per-component min and max of the embeddings at one size and normalization: int8/uint8 output's ranges."""

    dim: int
    normalize: bool
    min: list[float]
    max: list[float]


@dataclass
class EmbeddingRanges:
    """The fixed int8/uint8 ranges of a model, measured at export (see runtime/precision.py).

    `variant`: the exported variant that embedded the texts (e.g. onnx/fp32); `texts`: how many; `source`: which
    texts; `prompts`: the prompt names they were embedded with; `margin`: how far the measured min/max were
    widened. One entry of `ranges` per Matryoshka dim.
    """

    variant: str
    texts: int
    source: str
    prompts: list[str] = field(default_factory=list)
    ranges: list[DimensionRanges] = field(default_factory=list)
    margin: float = 0.0  # share of each component's span added on both sides of the measured min/max

    def find(self, dim: int, normalize: bool) -> DimensionRanges | None:
        for entry in self.ranges:
            if entry.dim == dim and entry.normalize == normalize:
                return entry
        return None


@dataclass
class Manifest:
    """Everything the runtime needs to know about an exported model."""

    source: dict[str, str | None]
    architecture: str
    model_type: str
    hidden_size: int
    max_length: int
    max_position_embeddings: int
    pad_token_id: int
    pooling: str = "mean"
    normalize: bool = True
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str = "cosine"
    matryoshka_dims: list[int] = field(default_factory=list)
    tokenizer_file: str = "tokenizer.json"
    attention: str = "standard"  # "efficient": sliding-window layers block-local, global layers fused
    variants: list[Variant] = field(default_factory=list)
    embedding_ranges: EmbeddingRanges | None = None  # optional: exports before it have none
    # Which texts calibrated the calibrated variants and the ranges: the built-in set (its domains, counts and
    # sources) or the user's --calibration-data. Exports before it have none.
    calibration: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION
    edgembed_version: str = ""

    @property
    def model_id(self) -> str:
        """The checkpoint this export came from (hub id or local path)."""
        return str(self.source.get("model") or "")

    def find(self, fmt: str, dtype: str) -> Variant | None:
        """The variant of this format and dtype, if exported."""
        for variant in self.variants:
            if variant.format == fmt and variant.dtype == dtype:
                return variant
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, directory: Path) -> Path:
        path = Path(directory) / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = MANIFEST_NAME) -> Manifest:
        """Fields this version does not know are ignored, so newer exporters can add optional ones."""
        if not isinstance(data, dict):
            raise ManifestError(origin, "top level must be a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ManifestError(
                origin, f"format_version {version!r} is not supported (this edgembed reads {FORMAT_VERSION}); "
                "re-export the model with this edgembed version"
            )
        try:
            variants = data.get("variants", [])
            if not isinstance(variants, list):
                raise TypeError("variants must be a list")
            manifest = _build(cls, data, variants=[_variant_from_dict(v) for v in variants],
                              embedding_ranges=_ranges_from_dict(data.get("embedding_ranges")))
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise ManifestError(origin, f"missing or malformed field ({exc}); re-export the model") from None
        _check_values(manifest, origin)
        return manifest

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError(path, "not found; is this a directory written by 'edgembed export'?")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(path, f"cannot be read as JSON ({exc})") from None
        return cls.from_dict(data, origin=str(path))


def _build(kind, data: dict[str, Any], **given: Any):
    """kind(**known fields of data, **given); unknown keys are dropped, missing required ones raise TypeError."""
    if not isinstance(data, dict):
        raise TypeError(f"{kind.__name__} must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(kind)}
    return kind(**{k: v for k, v in data.items() if k in names and k not in given}, **given)


def _variant_from_dict(data: dict[str, Any]) -> Variant:
    if not isinstance(data, dict):
        raise TypeError(f"a variant must be a JSON object, got {type(data).__name__}")
    files = [_build(FileEntry, f) for f in data["files"]]
    if not files:
        raise ValueError(f"variant {data.get('format')}/{data.get('dtype')} lists no files")
    fidelity = _build(Fidelity, data["fidelity"]) if data.get("fidelity") else None
    evaluation = data.get("evaluation")
    # Exports before the unified Fidelity stored retrieval figures without a `texts` count.
    if isinstance(evaluation, dict) and "texts" not in evaluation:
        evaluation = {**evaluation, "texts": int(evaluation.get("queries", 0)) + int(evaluation.get("documents", 0))}
    speed = _build(Speed, data["speed"]) if data.get("speed") else None
    domains = data.get("evaluation_domains") or {}
    if not isinstance(domains, dict):
        raise TypeError("evaluation_domains must be an object of domain names to figures")
    return _build(Variant, data, files=files, fidelity=fidelity,
                  evaluation=_build(Fidelity, evaluation) if evaluation else None, speed=speed,
                  evaluation_domains={name: _build(Fidelity, figures) for name, figures in domains.items()})


def _ranges_from_dict(data: Any) -> EmbeddingRanges | None:
    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("ranges", []), list):
        raise TypeError("embedding_ranges must be an object with a list of ranges")
    return _build(EmbeddingRanges, data, ranges=[_build(DimensionRanges, r) for r in data.get("ranges", [])])


def _check_ranges(ranges: EmbeddingRanges, hidden_size: int, origin: str) -> None:
    for entry in ranges.ranges:
        dim = entry.dim
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= hidden_size:
            raise ManifestError(origin, f"embedding_ranges: dim {dim!r} is not from 1 to hidden_size {hidden_size}")
        if not isinstance(entry.normalize, bool):
            raise ManifestError(origin, f"embedding_ranges: normalize {entry.normalize!r} of dim {dim} is not a bool")
        bounds = (entry.min, entry.max)
        if not all(isinstance(b, list) and len(b) == dim for b in bounds):
            raise ManifestError(origin, f"embedding_ranges: dim {dim} needs {dim} min and {dim} max values")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   for b in bounds for v in b):
            raise ManifestError(origin, f"embedding_ranges: dim {dim} has a value that is not a finite number")
        if any(low > high for low, high in zip(*bounds)):
            raise ManifestError(origin, f"embedding_ranges: dim {dim} has a min above its max")


def _check_values(manifest: Manifest, origin: str) -> None:
    if manifest.pooling not in POOLING_MODES:
        raise ManifestError(origin, f"pooling {manifest.pooling!r} is not one of {POOLING_MODES}")
    if isinstance(manifest.pad_token_id, bool) or not isinstance(manifest.pad_token_id, int):
        raise ManifestError(origin, f"pad_token_id must be an integer, got {manifest.pad_token_id!r}")
    for name in ("hidden_size", "max_length", "max_position_embeddings"):
        value = getattr(manifest, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ManifestError(origin, f"{name} must be a positive integer, got {value!r}")
    if manifest.max_length > manifest.max_position_embeddings:
        raise ManifestError(origin, f"max_length {manifest.max_length} exceeds max_position_embeddings "
                                    f"{manifest.max_position_embeddings}")
    if manifest.calibration is not None and not isinstance(manifest.calibration, dict):
        raise ManifestError(origin, f"calibration must be an object, got {manifest.calibration!r}")
    if manifest.embedding_ranges is not None:
        _check_ranges(manifest.embedding_ranges, manifest.hidden_size, origin)
    if not isinstance(manifest.tokenizer_file, str) or not manifest.tokenizer_file:
        raise ManifestError(origin, f"tokenizer_file must be a relative path, got {manifest.tokenizer_file!r}")
    for variant in manifest.variants:
        for entry in variant.files:
            if not isinstance(entry.path, str) or isinstance(entry.bytes, bool) or not isinstance(entry.bytes, int):
                raise ManifestError(origin, f"variant {variant.name} has a malformed file entry {entry!r}")
        listed = {entry.path for entry in variant.files}
        if not isinstance(variant.alternates, dict) or not set(variant.alternates.values()) <= listed:
            raise ManifestError(origin, f"variant {variant.name}: alternates {variant.alternates!r} must name files "
                                        "the variant lists")
