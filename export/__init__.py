"""edgembed exporter: checkpoint → validated ONNX and OpenVINO variants + manifest.json.

Needs the `export` extra (torch, transformers, optimum-onnx, onnx, openvino, nncf).
"""
from .pipeline import DEFAULT_MIN_COSINE, DTYPES, FORMATS, ExportRequest, run_export

__all__ = ["DEFAULT_MIN_COSINE", "DTYPES", "FORMATS", "ExportRequest", "run_export"]
