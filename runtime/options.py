"""The options of loading a model and of encoding texts, as frozen values checked when they are made.

What depends on the model (max_length against its positions, dim against its dimension, a prompt name, the
int8 ranges, the chunk overlap against max_length) is checked where the model is known: the load, and
Embedder.check (encode_plan.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from . import defaults
from .errors import (
    InvalidArgumentError,
    InvalidTypeError,
    check_bool,
    check_int_range,
    check_optional_str,
    check_positive_int,
)
from .precision import RANGED_PRECISIONS, check_precision

VERIFY_MODES = ("size", "sha256", "none")


@dataclass(frozen=True)
class LoadOptions:
    """What Embedder.load takes besides the directory (its docstring says what each does)."""

    variant: str | None = None
    backend: str | None = None
    max_length: int | None = None
    threads: int | None = None
    streams: int | None = None
    providers: Sequence[str] | None = None
    auto_min_cosine: float = defaults.AUTO_MIN_COSINE
    verify: str = defaults.VERIFY
    latency_copy: bool = False

    def __post_init__(self) -> None:
        check_optional_str("variant", self.variant)
        check_optional_str("backend", self.backend)
        if self.threads is not None:
            check_int_range("threads", self.threads, 1, None, "leave it out to use the physical cores")
        if self.streams is not None:
            check_positive_int("streams", self.streams, "1 runs one batch at a time")
        if self.providers is not None:
            # a tuple, so the value stays frozen whatever sequence the caller passed
            object.__setattr__(self, "providers", _strings("providers", self.providers) or None)
        cosine = self.auto_min_cosine
        if isinstance(cosine, bool) or not isinstance(cosine, (int, float)) or not 0.0 <= cosine <= 1.0:
            raise InvalidArgumentError("auto_min_cosine", cosine, "a number from 0 to 1")
        if self.verify not in VERIFY_MODES:
            raise InvalidArgumentError("verify", self.verify, " or ".join(repr(m) for m in VERIFY_MODES))
        check_bool("latency_copy", self.latency_copy)


@dataclass(frozen=True)
class EncodeOptions:
    """What Embedder.encode takes besides the texts (its docstring says what each does)."""

    batch_size: int = defaults.BATCH_SIZE
    prompt_name: str | None = None
    prompt: str | None = None
    normalize: bool | None = None
    dim: int | None = None
    truncate: bool = True
    max_batch_tokens: int = defaults.MAX_BATCH_TOKENS
    chunking: bool = False
    chunk_overlap: int | None = None
    precision: str = defaults.PRECISION
    # An array has no truth value, so == and hash() leave it out; the other fields decide them.
    ranges: np.ndarray | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        check_positive_int("batch_size", self.batch_size)
        check_optional_str("prompt_name", self.prompt_name)
        check_optional_str("prompt", self.prompt)
        check_bool("normalize", self.normalize, allow_none=True)
        check_bool("truncate", self.truncate)
        check_positive_int("max_batch_tokens", self.max_batch_tokens)
        check_bool("chunking", self.chunking)
        if check_precision(self.precision) not in RANGED_PRECISIONS and self.ranges is not None:
            raise InvalidArgumentError("ranges", "(an array)", f"None with precision={self.precision!r}",
                                       "ranges apply to int8 and uint8 only")


def _strings(name: str, values: object) -> tuple[str, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise InvalidTypeError(name, values, "a list of strings or None")
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise InvalidTypeError(f"{name}[{index}]", value, "str")
    return tuple(values)
