"""ONNX Runtime backend."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, ModelFileError
from . import BACKENDS, BackendOptions, first_line

# ONNX type strings as ONNX Runtime reports them.
_ORT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}


class OnnxRuntimeBackend:
    """Runs an .onnx file with an InferenceSession (safe to call from several threads)."""

    name = "onnxruntime"

    def __init__(self, path: Path, output: str, options: BackendOptions) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailableError(self.name, "onnxruntime", BACKENDS[self.name].extra) from None
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if options.threads:  # each concurrent run() gets its share of the threads
            session_options.intra_op_num_threads = max(1, options.threads // options.streams)
            session_options.inter_op_num_threads = 1
        providers = list(options.providers) if options.providers else ["CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(str(path), sess_options=session_options, providers=providers)
        except Exception as exc:  # ORT raises several private exception types
            raise ModelFileError(path, f"onnxruntime cannot load it ({first_line(exc)}); re-export or re-copy it") from None
        self.inputs = {i.name: np.dtype(_ORT_TYPES.get(i.type, np.int64)) for i in self._session.get_inputs()}
        outputs = {o.name: o for o in self._session.get_outputs()}
        if output not in outputs:
            raise ModelFileError(path, f"graph has no output {output!r}; its outputs are {sorted(outputs)}")
        width = outputs[output].shape[-1] if outputs[output].shape else None
        self.output_width = width if isinstance(width, int) else None
        self._output = output

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._session.run([self._output], feeds)[0]

