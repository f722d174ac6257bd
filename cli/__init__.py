"""edgembed: export ModernBERT embedding models to ONNX and OpenVINO, and run them without PyTorch.

Packages: edgembed.export (checkpoint -> validated variants + manifest.json), edgembed.runtime (manifest.json ->
Embedder), edgembed.evaluation, edgembed.serve, edgembed.jobs; edgembed.cli is the `edgembed` command and
edgembed.commands its `embed` and `verify` commands and the load options every command shares.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgembed")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
