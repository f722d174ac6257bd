"""Similarity functions with sentence-transformers' names."""
from __future__ import annotations

import numpy as np

from .errors import UnknownChoiceError
from .pooling import normalize


def _as_matrix(x: np.ndarray) -> np.ndarray:
    array = np.asarray(x, dtype=np.float32)
    return array[None, :] if array.ndim == 1 else array


def similarity_matrix(a: np.ndarray, b: np.ndarray, function: str = "cosine") -> np.ndarray:
    """Scores of every row of `a` against every row of `b`, shape (len(a), len(b))."""
    left, right = _as_matrix(a), _as_matrix(b)
    if function == "cosine":
        return normalize(left) @ normalize(right).T
    if function == "dot":
        return left @ right.T
    if function == "euclidean":
        return -np.linalg.norm(left[:, None, :] - right[None, :, :], axis=-1)
    if function == "manhattan":
        return -np.abs(left[:, None, :] - right[None, :, :]).sum(axis=-1)
    raise UnknownChoiceError("similarity function", function, ["cosine", "dot", "euclidean", "manhattan"])
