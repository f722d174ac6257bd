"""EncodeOptions checked against one model, with what they come to there (Embedder.check makes these)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import defaults
from .errors import InvalidTypeError, UnknownChoiceError, check_int_range
from .manifest import Manifest
from .options import EncodeOptions
from .precision import RANGED_PRECISIONS, check_ranges, manifest_ranges


@dataclass(frozen=True, eq=False)
class EncodePlan:
    """The options of one call and what they resolve to on the model that checked them."""

    options: EncodeOptions
    prefix: str  # the prompt's text, put before every text
    normalize: bool  # the options' normalize, or the model's when it is None
    dimension: int  # components of a vector before any packing into codes
    ranges: np.ndarray | None  # the int8/uint8 codes' fixed ranges; None for the other precisions
    chunk_overlap: int  # tokens neighbouring windows share when chunking


def plan_encode(options: EncodeOptions, manifest: Manifest, *, max_length: int,
                on_untrained_dim: Callable[[int], None]) -> EncodePlan:
    """Every check of `options` that needs the model; the errors name the value and what this model allows.
    `on_untrained_dim(dim)` hears of a dim the model was not trained for, before any later error."""
    if not isinstance(options, EncodeOptions):
        raise InvalidTypeError("options", options, "an EncodeOptions")
    dimension = manifest.hidden_size
    if options.dim is not None:
        trained = manifest.matryoshka_dims
        dimension = check_int_range("dim", options.dim, 1, manifest.hidden_size,
                                    f"this model was trained for {trained}" if trained else "")
        if dimension not in trained and dimension != manifest.hidden_size:
            on_untrained_dim(dimension)
    normalize = manifest.normalize if options.normalize is None else options.normalize
    overlap = max_length // defaults.CHUNK_OVERLAP_FRACTION
    if options.chunking and options.chunk_overlap is not None:  # without chunking it has no meaning to check
        overlap = check_int_range("chunk_overlap", options.chunk_overlap, 0, max_length // 2,
                                  "at most half of max_length")
    return EncodePlan(options, _prefix(options, manifest), normalize, dimension,
                      _ranges(options, manifest, dimension, normalize), overlap)


def _prefix(options: EncodeOptions, manifest: Manifest) -> str:
    if options.prompt is not None:
        return options.prompt
    name = options.prompt_name if options.prompt_name is not None else manifest.default_prompt_name
    if name is None:
        return ""
    if name not in manifest.prompts:
        raise UnknownChoiceError("prompt name", name, manifest.prompts,
                                 "prompts are set at export with --prompt NAME=TEXT")
    return manifest.prompts[name]


def _ranges(options: EncodeOptions, manifest: Manifest, dimension: int, normalize: bool) -> np.ndarray | None:
    if options.precision not in RANGED_PRECISIONS:
        return None
    if options.ranges is not None:
        return check_ranges(options.ranges, dimension)
    return manifest_ranges(manifest, options.precision, dimension, normalize)
