"""Pooling, Matryoshka truncation and L2 normalization, all in float32."""
from __future__ import annotations

import numpy as np

from .errors import UnknownChoiceError

_EPSILON = 1e-12


def pool(hidden: np.ndarray, attention_mask: np.ndarray, mode: str) -> np.ndarray:
    """Pool token states (batch, seq, hidden) into one vector per text."""
    hidden = hidden.astype(np.float32, copy=False)
    mask = attention_mask.astype(np.float32)[:, :, None]
    if mode == "mean":
        summed = np.einsum("bsh,bs->bh", hidden, mask[:, :, 0])
        counts = np.maximum(mask.sum(axis=1), 1.0)
        return summed / counts
    if mode == "cls":
        return hidden[:, 0, :].copy()
    if mode == "max":
        masked = np.where(mask > 0, hidden, np.float32(-np.inf))
        pooled = masked.max(axis=1)
        return np.where(np.isfinite(pooled), pooled, np.float32(0.0))
    raise UnknownChoiceError("pooling mode", mode, ["mean", "cls", "max"])


def combine_windows(vectors: np.ndarray, owners: np.ndarray, token_counts: np.ndarray, mode: str,
                    count: int) -> np.ndarray:
    """Pool the windows of chunked texts into one vector per text (before truncation and normalization).

    mean: average of the windows' mean vectors weighted by their token counts (overlapping tokens count in
    both windows); cls: average of the windows' [CLS] vectors; max: element-wise max over the windows.
    """
    if mode == "max":
        combined = np.full((count, vectors.shape[1]), -np.inf, dtype=np.float32)
        np.maximum.at(combined, owners, vectors)
        return combined
    weights = token_counts if mode == "mean" else np.ones(len(owners), np.float32)
    combined = np.zeros((count, vectors.shape[1]), dtype=np.float32)
    np.add.at(combined, owners, vectors * weights[:, None])
    totals = np.zeros(count, dtype=np.float32)
    np.add.at(totals, owners, weights)
    return combined / np.maximum(totals, _EPSILON)[:, None]


def truncate_dim(vectors: np.ndarray, dim: int | None) -> np.ndarray:
    """Keep the first `dim` components (Matryoshka); None keeps all."""
    if dim is None:
        return vectors
    return np.ascontiguousarray(vectors[:, :dim])


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Scale every row to unit L2 norm; an all-zero row stays zero instead of NaN."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, _EPSILON)
