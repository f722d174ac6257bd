"""Every error the runtime raises, in one place.

Messages name the bad value, the valid options and the fix. Errors about arguments are also the matching
builtin (ValueError, TypeError), so `except ValueError` keeps working for callers who expect it.
"""
from __future__ import annotations

from collections.abc import Iterable


class EdgembedError(Exception):
    """Base class of all edgembed errors."""


class UsageError(EdgembedError):
    """The caller passed a bad argument or option (the CLI exits with 2 for these)."""


class InvalidArgumentError(UsageError, ValueError):
    """An argument has a value outside its valid range."""

    def __init__(self, name: str, value: object, valid: str, fix: str = "") -> None:
        self.name = name
        self.value = value
        shown = _shorten(repr(value))
        super().__init__(f"{name}={shown} is not valid: expected {valid}" + (f"; {fix}" if fix else ""))


class InvalidTypeError(UsageError, TypeError):
    """An argument has the wrong type."""

    def __init__(self, name: str, value: object, expected: str, fix: str = "") -> None:
        self.name = name
        self.value = value
        super().__init__(f"{name} is {type(value).__name__} ({_shorten(repr(value))}), expected {expected}"
                         + (f"; {fix}" if fix else ""))


class UnknownChoiceError(UsageError, ValueError):
    """A name (variant, backend, prompt, pooling mode...) is not one of the options."""

    def __init__(self, kind: str, value: object, options: Iterable[str], hint: str = "") -> None:
        self.kind = kind
        self.value = value
        self.options = sorted(options)
        listed = ", ".join(repr(o) for o in self.options) or "(none)"
        message = f"unknown {kind} {_shorten(repr(value))}; available: {listed}"
        super().__init__(message + (f". {hint}" if hint else ""))


class ModelFileError(EdgembedError):
    """A file of an exported model is missing, unreadable, corrupt or outside the model directory."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: {problem}")


class ManifestError(ModelFileError):
    """manifest.json is missing, not JSON, lacks a required field, or disagrees with the files."""


class ChecksumError(ModelFileError):
    """A model file's sha256 differs from the one manifest.json records."""


class BackendUnavailableError(EdgembedError, ImportError):
    """The Python package behind a backend is not installed."""

    def __init__(self, backend: str, module: str, extra: str) -> None:
        self.backend = backend
        super().__init__(
            f"backend {backend!r} needs the {module!r} package, which is not installed; "
            f'install it with: pip install "edgembed[{extra}]"'
        )


class NoVariantError(EdgembedError):
    """No exported variant satisfies the request (for example `auto` with nothing faithful installed)."""


class ClosedError(EdgembedError, RuntimeError):
    """An Embedder was used after close() (or after its `with` block ended)."""

    def __init__(self, directory: object) -> None:
        self.directory = str(directory)
        super().__init__(f"this Embedder of {self.directory} was closed (close() or the end of its `with` block) "
                         "and holds no model any more; load it again with Embedder.load(...)")


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


class MissingRangesError(UsageError, ValueError):
    """int8/uint8 output was asked for at a dim or normalization the export measured no ranges for."""


def check_positive_int(name: str, value: object, fix: str = "") -> int:
    """`value` if it is an int (not a bool) of at least 1, else InvalidTypeError / InvalidArgumentError."""
    return check_int_range(name, value, 1, None, fix)


def check_int_range(name: str, value: object, low: int, high: int | None, fix: str = "") -> int:
    """`value` if it is an int (not a bool) within [low, high] (no upper bound when high is None)."""
    valid = f"an integer from {low} to {high}" if high is not None else f"an integer of at least {low}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(name, value, valid, fix)
    if value < low or (high is not None and value > high):
        raise InvalidArgumentError(name, value, valid, fix)
    return value


def check_bool(name: str, value: object, allow_none: bool = False) -> bool | None:
    """`value` if it is True or False (or None when allowed); "yes", 1 and other truthy values are refused."""
    if value is None and allow_none:
        return None
    if not isinstance(value, bool):
        raise InvalidTypeError(name, value, "True or False" + (" or None" if allow_none else ""))
    return value


def check_optional_str(name: str, value: object) -> str | None:
    """`value` if it is a string or None."""
    if value is not None and not isinstance(value, str):
        raise InvalidTypeError(name, value, "a string or None")
    return value


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
