"""OpenVINO backend."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, ModelFileError
from . import BACKEND_EXTRAS, BackendOptions


class OpenVinoBackend:
    """Runs an OpenVINO IR (.xml + .bin) on the CPU, one InferRequest per thread."""

    name = "openvino"

    def __init__(self, path: Path, output: str, options: BackendOptions) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise BackendUnavailableError(self.name, "openvino", BACKEND_EXTRAS[self.name]) from None
        config: dict[str, str] = {}
        if options.precision_hint:
            # Without it, CPUs with bf16 or AMX silently run an f32 model in bf16.
            config["INFERENCE_PRECISION_HINT"] = options.precision_hint
        if options.threads:
            config["INFERENCE_NUM_THREADS"] = str(options.threads)
        if options.streams > 1:  # one stream per concurrent caller, each with its share of the threads
            config["NUM_STREAMS"] = str(options.streams)
        try:
            core = ov.Core()
            self._compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with long texts
            raise ModelFileError(path, f"openvino cannot load it ({exc})") from None
        self.inputs = {port.get_any_name(): np.dtype(port.get_element_type().to_dtype()) for port in self._compiled.inputs}
        names = [name for port in self._compiled.outputs for name in port.get_names()]
        if output not in names:
            raise ModelFileError(path, f"graph has no output {output!r}; its outputs are {names}")
        self._output = self._compiled.output(output)
        self._local = threading.local()

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        return request.infer(feeds)[self._output]
