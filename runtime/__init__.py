"""edgembed runtime: embed texts with an exported model, without PyTorch.

    from edgembed.runtime import Embedder
    model = Embedder.load("out", variant="q8")
    vectors = model.encode_query(["how do I bake bread?"])
"""
from .cpu import Int8Path, int8_path
from .embedder import EncodeStats, Embedder
from .errors import (
    BackendUnavailableError,
    ChecksumError,
    EdgembedError,
    InputTooLongError,
    InvalidArgumentError,
    InvalidTypeError,
    ManifestError,
    ModelFileError,
    NoVariantError,
    UnknownChoiceError,
    UsageError,
)
from .loading import verify_files
from .manifest import Fidelity, Manifest, Speed, Variant
from .tokenization import TokenizedTexts

__all__ = [
    "BackendUnavailableError",
    "ChecksumError",
    "EdgembedError",
    "Embedder",
    "EncodeStats",
    "Fidelity",
    "InputTooLongError",
    "Int8Path",
    "InvalidArgumentError",
    "InvalidTypeError",
    "Manifest",
    "ManifestError",
    "ModelFileError",
    "NoVariantError",
    "Speed",
    "TokenizedTexts",
    "UnknownChoiceError",
    "UsageError",
    "Variant",
    "int8_path",
    "verify_files",
]
