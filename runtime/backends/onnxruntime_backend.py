"""ONNX Runtime backend."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidTypeError, MissingDependencyError, ModelFileError
from ..manifest import Variant
from ..memory import trim_heap
from . import BACKENDS, LARGE_RUN_TOKENS, BackendOptions, first_line, own_options

# ONNX type strings as ONNX Runtime reports them.
_ORT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}
CPU_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    """ONNX Runtime's own settings: its execution providers, by preference (onnxruntime-gpu adds CUDA's)."""

    providers: tuple[str, ...] = (CPU_PROVIDER,)

    @property
    def on_cpu(self) -> bool:
        return all(name == CPU_PROVIDER for name in self.providers)


class OnnxRuntimeBackend:
    """Runs an .onnx file with an InferenceSession (safe to call from several threads)."""

    name = "onnxruntime"

    @classmethod
    def options_for(cls, variant: Variant, *, providers: Sequence[str] | None = None) -> OnnxRuntimeOptions:
        if providers is None:
            return OnnxRuntimeOptions()
        if isinstance(providers, str) or not all(isinstance(name, str) for name in providers):
            raise InvalidTypeError("providers", providers, "a list of ONNX Runtime execution provider names",
                                   'for example providers=["CUDAExecutionProvider", "CPUExecutionProvider"]')
        return OnnxRuntimeOptions(providers=tuple(providers) or (CPU_PROVIDER,))

    def __init__(self, path: Path, output: str, options: BackendOptions) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependencyError("onnxruntime", BACKENDS[self.name].extra) from None
        own = own_options(options, OnnxRuntimeOptions, self.name)
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if options.threads:  # each concurrent run() gets its share of the threads
            session_options.intra_op_num_threads = max(1, options.threads // options.streams)
            session_options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(path), sess_options=session_options,
                                                 providers=list(own.providers))
        except Exception as exc:  # ORT raises several private exception types
            raise ModelFileError(path, f"onnxruntime cannot load it ({first_line(exc)}); "
                                       "re-export or re-copy it") from None
        self.inputs = {i.name: np.dtype(_ORT_TYPES.get(i.type, np.int64)) for i in self._session.get_inputs()}
        outputs = {o.name: o for o in self._session.get_outputs()}
        if output not in outputs:
            raise ModelFileError(path, f"graph has no output {output!r}; its outputs are {sorted(outputs)}")
        width = outputs[output].shape[-1] if outputs[output].shape else None
        self.output_width = width if isinstance(width, int) else None
        self._output = output
        # After a large batch the CPU arena keeps its high-water mark for good; shrinking it at the end of that
        # run gives the memory back (ORT's run option; the arena stays on for the speed of small runs).
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        trim_heap()  # loading parses the whole file and frees it: glibc would keep those pages

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        ids = feeds["input_ids"]
        large = ids.size > LARGE_RUN_TOKENS
        states = self._session.run([self._output], feeds, self._shrink if large else None)[0]
        if large:
            trim_heap()
        return states

    def close(self) -> None:
        """Drop the session; a call still running keeps it until it returns."""
        self._session = None

