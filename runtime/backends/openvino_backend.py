"""OpenVINO backend."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, ModelFileError
from . import BACKENDS, BackendOptions, first_line


class OpenVinoBackend:
    """Runs an OpenVINO IR (.xml + .bin) on the CPU, one InferRequest per thread."""

    name = "openvino"

    def __init__(self, path: Path, output: str, options: BackendOptions) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise BackendUnavailableError(self.name, "openvino", BACKENDS[self.name].extra) from None
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
            raise ModelFileError(path, f"openvino cannot load it ({first_line(exc)}); re-export or re-copy it") from None
        self.inputs = {port.get_any_name(): np.dtype(port.get_element_type().to_dtype()) for port in self._compiled.inputs}
        ports = {name: port for port in self._compiled.outputs for name in port.get_names()}
        if output not in ports:
            raise ModelFileError(path, f"graph has no output {output!r}; its outputs are {sorted(ports)}")
        shape = ports[output].get_partial_shape()
        last = shape[shape.rank.get_length() - 1] if shape.rank.is_static and shape.rank.get_length() else None
        self.output_width = last.get_length() if last is not None and last.is_static else None
        self._output = self._compiled.output(output)
        self._local = threading.local()

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        return request.infer(feeds)[self._output]

