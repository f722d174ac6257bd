"""Compact output precisions: float32 embeddings as int8, uint8, binary or ubinary codes.

The codes follow sentence-transformers' `quantize_embeddings`: binary and ubinary are the bits x > 0 packed
eight to a byte (binary: those bytes - 128 as int8); uint8 = clip(floor((x - min) / step), 0, 255) with
step = (max - min) / 255 per component, int8 = uint8 - 128. Unlike sentence-transformers, the int8/uint8
ranges are never taken from the batch being converted: they are fixed per model (measured at export and
stored in the manifest, see Manifest.embedding_ranges) or given by the caller, so a text's code does not depend
on the texts it was encoded with.
"""
from __future__ import annotations

import numpy as np

from .errors import InvalidArgumentError, InvalidTypeError, MissingRangesError, UnknownChoiceError
from .manifest import Manifest

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
RANGED_PRECISIONS = ("int8", "uint8")
BINARY_PRECISIONS = ("binary", "ubinary")
CODE_DTYPES = {"float32": np.float32, "int8": np.int8, "uint8": np.uint8, "binary": np.int8, "ubinary": np.uint8}
_LEVELS = 255
_INT8_SHIFT = 128


def check_precision(precision: object) -> str:
    """`precision` if it is one of PRECISIONS, else a clear error."""
    if not isinstance(precision, str):
        raise InvalidTypeError("precision", precision, f"one of {', '.join(map(repr, PRECISIONS))}")
    if precision not in PRECISIONS:
        raise UnknownChoiceError("precision", precision, PRECISIONS,
                                 "sentence-transformers' names: float32, int8, uint8, binary, ubinary")
    return precision


def embedding_ranges(vectors: np.ndarray) -> np.ndarray:
    """Per-component [min, max] of `vectors` (n, dim) as a float32 array (2, dim): the `ranges` of quantize()."""
    array = _float_matrix(vectors, "vectors")
    if len(array) == 0:
        raise InvalidArgumentError("vectors", "(0 rows)", "at least one vector to measure ranges on")
    return np.stack([array.min(axis=0), array.max(axis=0)]).astype(np.float32)


def check_ranges(ranges: object, dim: int) -> np.ndarray:
    """`ranges` as a finite float32 array (2, dim) with min <= max, else a clear error."""
    try:
        array = np.asarray(ranges, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidTypeError("ranges", ranges, f"an array of shape (2, {dim}): per-component min and max") from None
    if array.shape != (2, dim):
        raise InvalidArgumentError("ranges", f"(array of shape {array.shape})",
                                   f"shape (2, {dim}): row 0 the per-component min, row 1 the max",
                                   "measure them with edgembed.runtime.embedding_ranges(vectors) on float32 "
                                   "vectors of the same dim and normalization")
    if not np.isfinite(array).all():
        raise InvalidArgumentError("ranges", "(array with NaN or infinity)", "finite numbers")
    if (array[0] > array[1]).any():
        raise InvalidArgumentError("ranges", f"(min > max in {int((array[0] > array[1]).sum())} components)",
                                   "row 0 the min and row 1 the max of each component")
    return array


def quantize(vectors: np.ndarray, precision: str, *, ranges: np.ndarray | None = None) -> np.ndarray:
    """Convert float embeddings (n, dim) to `precision`.

    float32: unchanged (as float32). int8/uint8: needs `ranges` (2, dim), see embedding_ranges(); values
    outside them are clipped to the end codes. binary/ubinary: (n, ceil(dim / 8)) packed sign bits.
    """
    check_precision(precision)
    array = _float_matrix(vectors, "vectors")
    if precision == "float32":
        return array
    if precision in BINARY_PRECISIONS:
        packed = np.packbits(array > 0, axis=-1)
        return packed if precision == "ubinary" else (packed.astype(np.int16) - _INT8_SHIFT).astype(np.int8)
    if ranges is None:
        raise InvalidArgumentError("ranges", None, f"per-component [min, max] (2, {array.shape[1]}) for {precision}",
                                   "an Embedder uses the ranges its export measured; for other vectors pass "
                                   "ranges=embedding_ranges(calibration_vectors)")
    bounds = check_ranges(ranges, array.shape[1])
    levels = np.clip(np.floor((array - bounds[0]) / _steps(bounds)), 0, _LEVELS)
    return levels.astype(np.uint8) if precision == "uint8" else (levels - _INT8_SHIFT).astype(np.int8)


def dequantize(codes: np.ndarray, precision: str, *, ranges: np.ndarray | None = None,
               dim: int | None = None) -> np.ndarray:
    """Float32 vectors that `codes` stand for: the middle of each int8/uint8 step, or +1/-1 per binary bit.

    quantize(dequantize(codes, ...), ...) gives `codes` back. `dim`: the number of bits of binary codes whose
    dim is not a multiple of 8 (default: 8 per byte).
    """
    check_precision(precision)
    array = np.asarray(codes)
    if array.ndim != 2:
        raise InvalidArgumentError("codes", f"(array of shape {array.shape})", "a 2-D array (vectors, columns)")
    if precision == "float32":
        return array.astype(np.float32, copy=False)
    _check_code_dtype(array, precision, "codes")
    if precision in BINARY_PRECISIONS:
        bits = np.unpackbits(as_ubinary(array, precision), axis=-1, count=dim)
        return bits.astype(np.float32) * 2 - 1
    bounds = check_ranges(ranges, array.shape[1])
    levels = array.astype(np.float32) + (_INT8_SHIFT if precision == "int8" else 0)
    return bounds[0] + (levels + np.float32(0.5)) * _steps(bounds)


def as_ubinary(codes: np.ndarray, precision: str) -> np.ndarray:
    """Binary codes as the packed uint8 bytes of ubinary (binary stores them - 128 as int8)."""
    if precision == "ubinary":
        return codes
    return (codes.astype(np.int16) + _INT8_SHIFT).astype(np.uint8)


def code_width(precision: str, dim: int) -> int:
    """Columns of the codes of `dim`-component vectors in `precision` (binary packs 8 components a byte)."""
    check_precision(precision)
    return -(-dim // 8) if precision in BINARY_PRECISIONS else dim


def code_bytes(precision: str, dim: int) -> int:
    """Bytes one vector of `dim` components takes in `precision`."""
    check_precision(precision)
    if precision in BINARY_PRECISIONS:
        return -(-dim // 8)
    return dim * np.dtype(CODE_DTYPES[precision]).itemsize


def _steps(bounds: np.ndarray) -> np.ndarray:
    # Same float32 arithmetic as sentence-transformers, so equal ranges give equal codes; a constant component
    # (min == max) gets step 1, as there.
    steps = (bounds[1] - bounds[0]) / np.float32(_LEVELS)
    return np.where(steps == 0, np.float32(1), steps).astype(np.float32)


def _float_matrix(vectors: object, name: str) -> np.ndarray:
    array = np.asarray(vectors)
    if array.dtype.kind != "f":
        raise InvalidTypeError(name, f"(array of {array.dtype})", "float embeddings",
                               "codes are converted from float vectors; dequantize() turns codes back")
    if array.ndim != 2:
        raise InvalidArgumentError(name, f"(array of shape {array.shape})", "a 2-D array (vectors, dim)")
    return array.astype(np.float32, copy=False)


def _check_code_dtype(array: np.ndarray, precision: str, name: str) -> None:
    expected = np.dtype(CODE_DTYPES[precision])
    if array.dtype != expected:
        raise InvalidTypeError(name, f"(array of {array.dtype})", f"{expected} codes for precision {precision!r}")


def manifest_ranges(manifest: Manifest, precision: str, dim: int, normalize: bool) -> np.ndarray:
    """The export's fixed ranges (2, dim) for vectors of `dim` components and this normalization."""
    stored = manifest.embedding_ranges
    entry = stored.find(dim, normalize) if stored else None
    if entry is not None:
        return np.asarray([entry.min, entry.max], dtype=np.float32)
    wanted = f"precision={precision!r} needs fixed ranges for dim={dim} with normalize={normalize}"
    own = "or pass ranges= yourself: embedding_ranges(vectors) of float32 vectors of that dim and normalization"
    if stored is None or not stored.ranges:
        raise MissingRangesError(f"{wanted}, and this export records none (exported before edgembed measured "
                                 f"them); re-export it with this edgembed, {own}")
    have = ", ".join(f"dim {r.dim} (normalize={r.normalize})" for r in stored.ranges)
    trained = "" if dim in manifest.matryoshka_dims or dim == manifest.hidden_size else (
        f"; add {dim} to --matryoshka-dims at export to measure them")
    raise MissingRangesError(f"{wanted}; this export has them for {have}, measured on {stored.variant} over "
                             f"{stored.texts} texts; use one of those{trained}, {own}")
