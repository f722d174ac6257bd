"""manifest.json: the one contract between the exporter and the runtime."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ManifestError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
POOLING_MODES = ("mean", "cls", "max")
# Which file format each backend runs.
BACKEND_FORMATS = {"onnxruntime": "onnx", "openvino": "openvino"}


@dataclass
class FileEntry:
    """One file of a variant, relative to the model directory."""

    path: str
    sha256: str
    bytes: int


@dataclass
class Fidelity:
    """How close a variant's embeddings are to the PyTorch reference."""

    cosine_min: float
    cosine_mean: float
    texts: int
    reference: str
    threshold: float
    passed: bool


@dataclass
class Speed:
    """Throughput measured at export on the validation texts (a hint for `auto`, not a benchmark)."""

    texts_per_second: float
    threads: int | None
    cpu: str


@dataclass
class Variant:
    """One exported graph: a file format at a precision."""

    format: str
    dtype: str
    files: list[FileEntry]
    inputs: list[str]
    output: str = "last_hidden_state"
    precision_hint: str | None = None
    quantization: str | None = None
    fidelity: Fidelity | None = None
    speed: Speed | None = None
    # Retrieval figures on the evaluation corpus (cosine mean/min/p1, top10_overlap, sizes, reference).
    evaluation: dict[str, float | int | str] | None = None

    @property
    def name(self) -> str:
        return f"{self.format}/{self.dtype}"

    @property
    def model_file(self) -> str:
        """The file the backend loads (.onnx or .xml)."""
        return self.files[0].path


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
    format_version: int = FORMAT_VERSION
    edgembed_version: str = ""

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
    def from_dict(cls, data: dict[str, Any], origin: str = MANIFEST_NAME) -> "Manifest":
        if not isinstance(data, dict):
            raise ManifestError(origin, "top level must be a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ManifestError(
                origin, f"format_version {version!r} is not supported (this edgembed reads {FORMAT_VERSION}); "
                "re-export the model with this edgembed version"
            )
        try:
            variants = [_variant_from_dict(v) for v in data.get("variants", [])]
            fields = {k: v for k, v in data.items() if k != "variants"}
            manifest = cls(**fields, variants=variants)
        except (TypeError, KeyError) as exc:
            raise ManifestError(origin, f"missing or unexpected field ({exc})") from None
        if manifest.pooling not in POOLING_MODES:
            raise ManifestError(origin, f"pooling {manifest.pooling!r} is not one of {POOLING_MODES}")
        return manifest

    @classmethod
    def read(cls, directory: Path) -> "Manifest":
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError(path, "not found; is this a directory written by 'edgembed export'?")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(path, f"cannot be read as JSON ({exc})") from None
        return cls.from_dict(data, origin=str(path))


def _variant_from_dict(data: dict[str, Any]) -> Variant:
    files = [FileEntry(**f) for f in data["files"]]
    fidelity = Fidelity(**data["fidelity"]) if data.get("fidelity") else None
    speed = Speed(**data["speed"]) if data.get("speed") else None
    fields = {k: v for k, v in data.items() if k not in ("files", "fidelity", "speed")}
    return Variant(**fields, files=files, fidelity=fidelity, speed=speed)
