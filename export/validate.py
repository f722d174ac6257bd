"""Fidelity of one variant: run it through the runtime and compare with the PyTorch reference."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgembed.runtime.embedder import Embedder
from edgembed.runtime.manifest import Fidelity, Manifest, Variant


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of `a` with the same row of `b`."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(axis=1)


def check_fidelity(directory: Path, manifest: Manifest, variant: Variant, backend: str, texts: list[str],
                   reference: np.ndarray, threshold: float) -> Fidelity:
    """Embed `texts` exactly as a user would (same runtime code) and measure cosine to `reference`."""
    trial = Manifest(**{**manifest.__dict__, "variants": [variant]})
    embedder = Embedder.from_manifest(directory, trial, variant=variant.dtype, backend=backend)
    vectors = embedder.encode(texts, batch_size=8, normalize=True, prompt="")
    cosines = cosine_rows(vectors, reference)
    low = float(cosines.min())
    return Fidelity(cosine_min=round(low, 7), cosine_mean=round(float(cosines.mean()), 7), texts=len(texts),
                    reference="pytorch fp32, transformers AutoModel", threshold=threshold, passed=low >= threshold)
