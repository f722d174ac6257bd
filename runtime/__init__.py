"""edgembed runtime: embed texts with an exported model, without PyTorch.

    from edgembed.runtime import Embedder
    model = Embedder.load("out", variant="q8")
    vectors = model.encode_query(["how do I bake bread?"])
"""
from .embedder import Embedder
from .errors import (
    BackendUnavailableError,
    EdgembedError,
    InputTooLongError,
    ManifestError,
    ModelFileError,
    UnknownChoiceError,
)
from .manifest import Manifest

__all__ = [
    "BackendUnavailableError",
    "EdgembedError",
    "Embedder",
    "InputTooLongError",
    "Manifest",
    "ManifestError",
    "ModelFileError",
    "UnknownChoiceError",
]
