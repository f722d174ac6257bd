"""Backends run an exported graph and nothing else; they are chosen by name."""
from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import UnknownChoiceError
from ..tokenization import Batch


@dataclass(frozen=True)
class BackendOptions:
    """Settings a backend applies when it compiles a graph.

    `streams`: how many callers will run the graph at the same time; the `threads` are shared among them.
    """

    threads: int | None = None
    streams: int = 1
    precision_hint: str | None = None
    providers: tuple[str, ...] | None = None


class Backend(Protocol):
    """A compiled graph: feeds in, token states (batch, seq, hidden) out."""

    name: str
    inputs: dict[str, np.dtype]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray: ...


def _load_onnxruntime(path: Path, output: str, options: BackendOptions) -> Backend:
    from .onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(path, output, options)


def _load_openvino(path: Path, output: str, options: BackendOptions) -> Backend:
    from .openvino_backend import OpenVinoBackend

    return OpenVinoBackend(path, output, options)


BACKENDS: dict[str, Callable[[Path, str, BackendOptions], Backend]] = {
    "onnxruntime": _load_onnxruntime,
    "openvino": _load_openvino,
}
# The module each backend imports, to tell what is installed without importing it, and its pip extra.
BACKEND_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
BACKEND_EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino"}
FEEDABLE_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def build_feeds(declared: dict[str, np.dtype], batch: Batch) -> dict[str, np.ndarray]:
    """Exactly the inputs a graph declares, in the types it declares; ValueError for one edgembed cannot fill."""
    feeds = {}
    for name, dtype in declared.items():
        if name == "input_ids":
            value = batch.input_ids
        elif name == "attention_mask":
            value = batch.attention_mask
        elif name == "token_type_ids":
            value = np.zeros_like(batch.input_ids)
        else:
            raise ValueError(f"graph declares input {name!r}, which edgembed cannot fill (it fills "
                             f"{list(FEEDABLE_INPUTS)})")
        feeds[name] = value.astype(dtype, copy=False)
    return feeds


def installed_backends() -> list[str]:
    """Backends whose package can be imported, in preference order."""
    return [name for name, module in BACKEND_MODULES.items() if importlib.util.find_spec(module) is not None]


def cuda_available() -> bool:
    """True when onnxruntime-gpu is installed and offers the CUDA execution provider."""
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def load_backend(name: str, path: Path, output: str, options: BackendOptions) -> Backend:
    """Compile the graph at `path` with the backend called `name`."""
    if name not in BACKENDS:
        raise UnknownChoiceError("backend", name, BACKENDS)
    return BACKENDS[name](path, output, options)
