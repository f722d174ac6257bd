"""Every error the runtime raises, in one place.

Messages name the bad value, the valid options and the fix. Errors about arguments are also the matching
builtin (ValueError, TypeError), so `except ValueError` keeps working for callers who expect it.
"""
from __future__ import annotations

import reprlib
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
        shown = bounded_repr(value)
        super().__init__(f"{name}={shown} is not valid: expected {valid}" + (f"; {fix}" if fix else ""))


class InvalidTypeError(UsageError, TypeError):
    """An argument has the wrong type."""

    def __init__(self, name: str, value: object, expected: str, fix: str = "") -> None:
        self.name = name
        self.value = value
        super().__init__(f"{name} is {type(value).__name__} ({bounded_repr(value)}), expected {expected}"
                         + (f"; {fix}" if fix else ""))


class UnknownChoiceError(UsageError, ValueError):
    """A name (variant, backend, prompt, pooling mode...) is not one of the options."""

    def __init__(self, kind: str, value: object, options: Iterable[str], hint: str = "") -> None:
        self.kind = kind
        self.value = value
        self.options = sorted(options)
        listed = ", ".join(repr(o) for o in self.options) or "(none)"
        message = f"unknown {kind} {bounded_repr(value)}; available: {listed}"
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


class MissingDependencyError(EdgembedError, ImportError):
    """A package behind an optional part of edgembed (an engine, the exporter, the server, Ray) is not installed.

    `install` replaces the pip line when the extra alone is not the right command (the exporter pins torch's CPU
    build).
    """

    def __init__(self, module: str, extra: str, *, install: str | None = None) -> None:
        self.module = module
        self.extra = extra
        self.install = install or f'pip install "edgembed[{extra}]"'
        super().__init__(f"the {module!r} package is not installed; install the {extra!r} extra: {self.install}",
                         name=module)


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

    def __init__(self, index: int, tokens: int, max_length: int, *, characters: int | None = None,
                 characters_read: int | None = None) -> None:
        self.index = index
        self.tokens = tokens  # counted in the characters read: a lower bound when only the start was read
        self.max_length = max_length
        self.characters = characters
        self.characters_read = characters_read
        super().__init__(f"text at index {index} {self.size_phrase}; shorten it, or call encode(..., "
                         "truncate=True) to cut it")

    @property
    def exact(self) -> bool:
        return self.characters_read is None or self.characters_read >= (self.characters or 0)

    @property
    def size_phrase(self) -> str:
        """How long the text is, in the words this error can vouch for."""
        if self.exact:
            return f"has {self.tokens} tokens, more than max_length={self.max_length}"
        if self.tokens > self.max_length:
            return (f"has more than max_length={self.max_length} tokens ({self.tokens} in its first "
                    f"{self.characters_read} characters)")
        read = self.characters_read or 0  # set whenever the count is not exact
        return (f"has {self.characters} characters, more than the {read} that are read of one "
                f"text (max_length={self.max_length} x {read // self.max_length})")


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


def bounded_repr(value: object, limit: int = 80) -> str:
    """repr() cut to `limit` characters, safe on any value: a caller's deeply nested list or a 50 MB string is
    never formatted whole (repr() of deep nesting raises RecursionError)."""
    text = _REPR.repr(value)
    if isinstance(value, (str, bytes)) and len(value) > _REPR.maxstring:
        return f"{text[:limit]}... ({len(value)} characters)"
    return text if len(text) <= limit else f"{text[:limit]}..."


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 3, 60, 60, 6, 4
