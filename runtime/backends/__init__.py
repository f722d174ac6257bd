"""Backends run an exported graph and nothing else. BACKENDS is the one table of them: adding an engine is one
row here plus its module with a class that follows `Backend` (and its ranks in runtime/preference.py)."""
from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from ..errors import InvalidTypeError, ModelFileError, UnknownChoiceError
from ..manifest import Variant
from ..tokenization import Batch

OptionsType = TypeVar("OptionsType")


class EngineOptions(Protocol):
    """An engine's own options (OnnxRuntimeOptions, OpenVinoOptions...), built by its class's `options_for`."""

    @property
    def on_cpu(self) -> bool: ...  # False when it runs on another device, where one stream is the default


@dataclass(frozen=True)
class BackendOptions:
    """Settings every backend applies when it compiles a graph, and the engine's own.

    `streams`: how many callers will run the graph at the same time; the `threads` are shared among them.
    `engine`: the engine's own options (see `engine_options`); None gives the engine's defaults.
    """

    threads: int | None = None
    streams: int = 1
    engine: EngineOptions | None = None


class Backend(Protocol):
    """A compiled graph: feeds in, token states (batch, seq, hidden) out; `run` may be called from several
    threads at once (up to `BackendOptions.streams` of them run in parallel).

    `inputs`: the graph's declared inputs and their types; `output_width`: the declared last dimension of the
    output (None when the graph leaves it dynamic). `options_for` builds the engine's own options for a variant
    from the load settings its BackendSpec names. `close()` releases the engine's memory (a run in progress
    finishes first); `run` is not called after it.
    """

    name: str
    inputs: dict[str, np.dtype]
    output_width: int | None

    @classmethod
    def options_for(cls, variant: Variant, **settings: Any) -> EngineOptions: ...

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray: ...

    def close(self) -> None: ...


Compile = Callable[[str, Path, str, BackendOptions], Backend]


@dataclass(frozen=True)
class BackendSpec:
    """One engine: the file formats it runs (the one it prefers first), the package it needs, the pip extra that
    installs it, its class, and the load settings that are its own (Embedder.load's `providers`...)."""

    name: str
    formats: tuple[str, ...]
    module: str
    extra: str
    implementation: str  # "module:Class", imported only when the backend is used
    settings: tuple[str, ...] = ()


BACKENDS = {spec.name: spec for spec in (
    BackendSpec("onnxruntime", ("onnx",), "onnxruntime", "onnx", "onnxruntime_backend:OnnxRuntimeBackend",
                settings=("providers",)),
    BackendSpec("openvino", ("openvino",), "openvino", "openvino", "openvino_backend:OpenVinoBackend"),
)}
FEEDABLE_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Padded tokens of a run above which the engine gives back the memory the run grew (docs/memory.md).
LARGE_RUN_TOKENS = 4096


def backends_for_format(fmt: str) -> list[BackendSpec]:
    """The backends that run files of this format: those that prefer it first, then in table order."""
    running = [spec for spec in BACKENDS.values() if fmt in spec.formats]
    return sorted(running, key=lambda spec: spec.formats.index(fmt))


def compile_graph(name: str, path: Path, output: str, options: BackendOptions) -> Backend:
    """Compile the graph at `path` with the backend called `name` (the default `Compile`)."""
    return _backend_class(name)(path, output, options)


def engine_options(name: str, variant: Variant, settings: Mapping[str, object]) -> EngineOptions:
    """The options of backend `name` for `variant`, from the load settings that are its own; a setting that is
    another engine's is left to it (None means not given)."""
    backend = _backend_class(name)
    known = {key for spec in BACKENDS.values() for key in spec.settings}
    unknown = [key for key in settings if key not in known]
    if unknown:
        raise UnknownChoiceError("engine setting", unknown[0], known)
    own = {key: value for key, value in settings.items() if key in BACKENDS[name].settings and value is not None}
    return backend.options_for(variant, **own)


def own_options(options: BackendOptions, kind: type[OptionsType], backend: str) -> OptionsType:
    """A backend's own part of `options`: its defaults when there is none; another engine's options are refused."""
    if options.engine is None:
        return kind()
    if not isinstance(options.engine, kind):
        raise InvalidTypeError("BackendOptions.engine", options.engine, f"{kind.__name__} for backend {backend!r}",
                               f"build it with engine_options({backend!r}, variant, settings)")
    return options.engine


def _backend_class(name: str) -> Any:  # the class the table names: built with (path, output, options)
    if name not in BACKENDS:
        raise UnknownChoiceError("backend", name, BACKENDS)
    module_name, class_name = BACKENDS[name].implementation.split(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name)


def build_feeds(declared: dict[str, np.dtype], batch: Batch) -> dict[str, np.ndarray]:
    """Exactly the inputs a graph declares, in the types it declares."""
    feeds = {}
    for name, dtype in declared.items():
        if name == "input_ids":
            value = batch.input_ids
        elif name == "attention_mask":
            value = batch.attention_mask
        elif name == "token_type_ids":
            value = np.zeros_like(batch.input_ids)
        else:
            raise ValueError(f"graph declares input {name!r}, which edgembed cannot fill")
        feeds[name] = value.astype(dtype, copy=False)
    return feeds


def check_graph(backend: Backend, path: Path, hidden_size: int) -> None:
    """The graph must take only inputs edgembed fills and put out `hidden_size` values per token."""
    unknown = [name for name in backend.inputs if name not in FEEDABLE_INPUTS]
    if unknown:
        raise ModelFileError(path, f"the graph declares inputs {unknown} that edgembed cannot fill (it fills "
                                   f"{list(FEEDABLE_INPUTS)}); export the model with 'edgembed export'")
    if "input_ids" not in backend.inputs:
        raise ModelFileError(path, f"the graph has no input_ids input (it declares {list(backend.inputs)})")
    if backend.output_width is not None and backend.output_width != hidden_size:
        raise ModelFileError(path, f"the graph puts out {backend.output_width} values per token but manifest.json "
                                   f"says hidden_size {hidden_size}; the manifest belongs to another export")


def first_line(exc: BaseException) -> str:
    """An engine's exception as one short line (they can be pages long)."""
    # OpenVINO's messages open with "Exception from <file>:<line>:" lines that say nothing to a user.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    telling = [line for line in lines if not line.startswith("Exception from ")]
    return (telling or lines or [type(exc).__name__])[0][:300]


def installed_backends() -> list[str]:
    """Backends whose package can be imported, in table order."""
    return [spec.name for spec in BACKENDS.values() if importlib.util.find_spec(spec.module) is not None]


def cuda_available() -> bool:
    """True when onnxruntime-gpu is installed and offers the CUDA execution provider."""
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
