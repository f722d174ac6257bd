"""Similarity functions with sentence-transformers' names."""
from __future__ import annotations

import numpy as np

from .errors import UnknownChoiceError


def _as_matrix(x: np.ndarray) -> np.ndarray:
    array = np.asarray(x, dtype=np.float32)
    return array[None, :] if array.ndim == 1 else array


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def similarity_matrix(a: np.ndarray, b: np.ndarray, function: str = "cosine") -> np.ndarray:
    """Scores of every row of `a` against every row of `b`, shape (len(a), len(b))."""
    left, right = _as_matrix(a), _as_matrix(b)
    if function == "cosine":
        return _unit(left) @ _unit(right).T
    if function == "dot":
        return left @ right.T
    if function == "euclidean":
        return -np.linalg.norm(left[:, None, :] - right[None, :, :], axis=-1)
    if function == "manhattan":
        return -np.abs(left[:, None, :] - right[None, :, :]).sum(axis=-1)
    raise UnknownChoiceError("similarity function", function, ["cosine", "dot", "euclidean", "manhattan"])
