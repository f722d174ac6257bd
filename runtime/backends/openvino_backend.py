"""OpenVINO backend."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MissingDependencyError, ModelFileError
from ..manifest import Variant
from ..memory import drop_file_pages, trim_heap
from . import BACKENDS, BackendOptions, first_line, own_options

# The CPU plugin compiles kernels and keeps buffers for every input shape it meets; rounding the length up
# bounds the shapes of a server's traffic. Steps of 32 keep fewer shapes than steps of 8 at the same speed
# (docs/memory.md).
LENGTH_STEPS = ((2048, 32),)  # (up to this length, round up to a multiple of this)
LONG_STEP = 128
# The plugin keeps a run's buffers per shape, and batches bring a new shape almost every call: give them back after
# every run beyond one short text (its memory and speed: docs/memory.md). Short single texts keep theirs.
RELEASE_ABOVE_TOKENS = LENGTH_STEPS[0][1]


def bucket_length(length: int) -> int:
    """The padded length a run of `length` tokens is given."""
    step = next((step for limit, step in LENGTH_STEPS if length <= limit), LONG_STEP)
    return -(-length // step) * step


@dataclass(frozen=True)
class OpenVinoOptions:
    """OpenVINO's own settings: the INFERENCE_PRECISION_HINT the variant's manifest entry records."""

    precision_hint: str | None = None

    @property
    def on_cpu(self) -> bool:
        return True  # the CPU device is the only one edgembed compiles for


class OpenVinoBackend:
    """Runs an OpenVINO IR (.xml + .bin) on the CPU: one compiled model, an InferRequest per concurrent caller."""

    name = "openvino"

    @classmethod
    def options_for(cls, variant: Variant) -> OpenVinoOptions:
        return OpenVinoOptions(precision_hint=variant.precision_hint)

    def __init__(self, path: Path, output: str, options: BackendOptions) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise MissingDependencyError("openvino", BACKENDS[self.name].extra) from None
        own = own_options(options, OpenVinoOptions, self.name)
        config: dict[str, str] = {}
        if own.precision_hint:
            # Without it, CPUs with bf16 or AMX silently run an f32 model in bf16.
            config["INFERENCE_PRECISION_HINT"] = own.precision_hint
        if options.threads:
            config["INFERENCE_NUM_THREADS"] = str(options.threads)
        if options.streams > 1:  # one stream per concurrent caller, each with its share of the threads
            config["NUM_STREAMS"] = str(options.streams)
        try:
            core = ov.Core()
            self._compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with long texts
            raise ModelFileError(path, f"openvino cannot load it ({first_line(exc)}); "
                                       "re-export or re-copy it") from None
        self.inputs = {port.get_any_name(): np.dtype(port.get_element_type().to_dtype())
                       for port in self._compiled.inputs}
        ports = {name: port for port in self._compiled.outputs for name in port.get_names()}
        if output not in ports:
            raise ModelFileError(path, f"graph has no output {output!r}; its outputs are {sorted(ports)}")
        shape = ports[output].get_partial_shape()
        last = shape[shape.rank.get_length() - 1] if shape.rank.is_static and shape.rank.get_length() else None
        self.output_width = last.get_length() if last is not None and last.is_static else None
        self._output = self._compiled.output(output)
        self._idle: list = []  # InferRequests not in use: as many exist as callers ever ran at once
        self._running = 0
        self._lock = threading.Lock()
        self._weights = path.with_suffix(".bin")
        self._release_weight_pages()

    def _release_weight_pages(self) -> None:
        """The first inference copies the weights into the plugin's own layout; the mapped .bin pages it read
        stay resident (clean file pages) though only the word-embedding rows are read again. Drop them."""
        if "input_ids" not in self.inputs:
            return  # check_graph reports it
        feeds = {name: np.zeros((1, bucket_length(1)), dtype) for name, dtype in self.inputs.items()}
        feeds["input_ids"][:] = 1
        if "attention_mask" in feeds:
            feeds["attention_mask"][:] = 1
        self.run(feeds)
        drop_file_pages(self._weights)
        trim_heap()

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        rows, length = feeds["input_ids"].shape
        padded = bucket_length(length)
        if padded != length:  # zeros: attention_mask 0 keeps the extra positions out of every real token
            feeds = {name: np.pad(value, ((0, 0), (0, padded - length))) for name, value in feeds.items()}
        compiled = self._compiled
        with self._lock:
            request = self._idle.pop() if self._idle else None
            self._running += 1
        try:
            if request is None:
                request = compiled.create_infer_request()
            states = request.infer(feeds)[self._output]
        finally:
            with self._lock:
                self._running -= 1
                if request is not None:
                    self._idle.append(request)
                # Give the run's buffers back when nothing else runs (release_memory must not overlap an
                # inference, and no run starts while the lock is held).
                if rows * padded > RELEASE_ABOVE_TOKENS and self._running == 0 and self._compiled is not None:
                    self._compiled.release_memory()
                    trim_heap()
        return states[:, :length]

    def close(self) -> None:
        """Drop the compiled model and its requests; a call still running keeps them until it returns."""
        with self._lock:
            self._idle.clear()
            self._compiled = None
