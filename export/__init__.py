"""edgembed exporter: checkpoint -> validated ONNX and OpenVINO variants + manifest.json.

Needs the `export` extra (torch, transformers, optimum-onnx, onnx, openvino, nncf).
"""
from edgembed.runtime.errors import MissingDependencyError

from .errors import ExportError, FidelityError, UnsupportedModelError
from .pipeline import ExportRequest, run_export
from .variants import DEFAULT_MIN_COSINE, DTYPES, FORMATS, RECIPES, Recipe

__all__ = ["DEFAULT_MIN_COSINE", "DTYPES", "FORMATS", "RECIPES", "ExportError", "ExportRequest", "FidelityError",
           "MissingDependencyError", "Recipe", "UnsupportedModelError", "run_export"]
