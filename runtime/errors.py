"""Every error edgembed raises, in one place.

Messages name the bad value, the valid options and the fix.
"""
from __future__ import annotations

from collections.abc import Iterable


class EdgembedError(Exception):
    """Base class of all edgembed errors."""


class ModelFileError(EdgembedError):
    """A file of an exported model is missing, unreadable or corrupt."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: {problem}")


class ManifestError(ModelFileError):
    """manifest.json is missing, not JSON, or lacks a required field."""


class UnknownChoiceError(EdgembedError, ValueError):
    """A name (variant, backend, prompt, pooling mode...) is not one of the options."""

    def __init__(self, kind: str, value: object, options: Iterable[str], hint: str = "") -> None:
        self.kind = kind
        self.value = value
        self.options = sorted(options)
        listed = ", ".join(repr(o) for o in self.options) or "(none)"
        message = f"unknown {kind} {value!r}; available: {listed}"
        super().__init__(message + (f". {hint}" if hint else ""))


class BackendUnavailableError(EdgembedError, ImportError):
    """The Python package behind a backend is not installed."""

    def __init__(self, backend: str, module: str, extra: str) -> None:
        self.backend = backend
        super().__init__(
            f"backend {backend!r} needs the {module!r} package, which is not installed; "
            f'install it with: pip install "edgembed[{extra}]"'
        )


class InputTooLongError(EdgembedError, ValueError):
    """A text has more tokens than max_length and truncation was turned off."""

    def __init__(self, index: int, tokens: int, max_length: int) -> None:
        self.index = index
        self.tokens = tokens
        self.max_length = max_length
        super().__init__(
            f"text at index {index} has {tokens} tokens, more than max_length={max_length}; "
            "shorten it, or call encode(..., truncate=True) to cut it"
        )


class TextFileError(EdgembedError, ValueError):
    """A file of texts given by the user (calibration, evaluation) cannot be used."""


class ExportError(EdgembedError):
    """The exporter could not produce a variant."""


class ExportDependencyError(ExportError, ImportError):
    """A package the exporter needs is missing."""

    def __init__(self, module: str) -> None:
        super().__init__(
            f"the exporter needs the {module!r} package, which is not installed; "
            'install it with: pip install "edgembed[export]" torch==2.13.0'
        )


class UnsupportedModelError(ExportError):
    """The source checkpoint is something the exporter cannot handle."""


class FidelityError(ExportError):
    """A variant's embeddings differ from the PyTorch reference more than allowed."""

    def __init__(self, variant: str, figure: str, value: float, threshold: float) -> None:
        self.variant = variant
        self.figure = figure
        self.value = value
        self.threshold = threshold
        super().__init__(
            f"variant {variant}: {figure} {value:.6f} is below the threshold {threshold}; "
            "rerun with --allow-low-fidelity to keep it (it is then marked in manifest.json)"
        )


def check_positive_int(name: str, value: object) -> None:
    """Raise ValueError unless `value` is an int (not a bool) of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
