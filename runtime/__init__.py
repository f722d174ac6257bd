"""edgembed runtime: embed texts with an exported model, without PyTorch.

    from edgembed.runtime import Embedder
    model = Embedder.load("out", variant="q8")
    vectors = model.encode_query(["how do I bake bread?"])
"""
from . import defaults
from .cpu import Int8Path, int8_path
from .embedder import Embedder, EncodeStats
from .encode_plan import EncodePlan
from .errors import (
    ChecksumError,
    ClosedError,
    EdgembedError,
    InputTooLongError,
    InvalidArgumentError,
    InvalidTypeError,
    ManifestError,
    MissingDependencyError,
    MissingRangesError,
    ModelFileError,
    NoVariantError,
    UnknownChoiceError,
    UsageError,
    check_positive_int,
)
from .loading import verify_files
from .manifest import DimensionRanges, EmbeddingRanges, Fidelity, Manifest, Speed, Variant
from .options import EncodeOptions, LoadOptions
from .pooling import normalize
from .precision import PRECISIONS, code_bytes, dequantize, embedding_ranges, quantize
from .search import Hits, hamming_distances, search
from .selection import runnable_variants
from .tokenization import TokenizedTexts

__all__ = [
    "PRECISIONS",
    "ChecksumError",
    "ClosedError",
    "DimensionRanges",
    "EdgembedError",
    "EmbeddingRanges",
    "Embedder",
    "defaults",
    "EncodeOptions",
    "EncodePlan",
    "EncodeStats",
    "Fidelity",
    "Hits",
    "InputTooLongError",
    "Int8Path",
    "InvalidArgumentError",
    "InvalidTypeError",
    "Manifest",
    "LoadOptions",
    "ManifestError",
    "MissingDependencyError",
    "MissingRangesError",
    "ModelFileError",
    "NoVariantError",
    "Speed",
    "TokenizedTexts",
    "UnknownChoiceError",
    "UsageError",
    "Variant",
    "check_positive_int",
    "code_bytes",
    "dequantize",
    "embedding_ranges",
    "hamming_distances",
    "int8_path",
    "normalize",
    "quantize",
    "runnable_variants",
    "search",
    "verify_files",
]
