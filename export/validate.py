"""Fidelity of one variant: run it through the runtime and compare with the PyTorch reference."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import time

from edgembed.runtime.cpu import cpu_model
from edgembed.runtime.embedder import Embedder
from edgembed.runtime.evaluate import evaluate_embedder
from edgembed.runtime.manifest import Fidelity, Manifest, Speed, Variant


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of `a` with the same row of `b`."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(axis=1)


def measure_variant(directory: Path, manifest: Manifest, variant: Variant, backend: str, texts: list[str],
                    reference: np.ndarray, threshold: float) -> tuple[Fidelity, Speed]:
    """Embed `texts` exactly as a user would (same runtime code): cosine to `reference`, then throughput."""
    trial = Manifest(**{**manifest.__dict__, "variants": [variant]})
    embedder = Embedder.from_manifest(directory, trial, variant=variant.dtype, backend=backend)
    vectors = embedder.encode(texts, batch_size=8, normalize=True, prompt="")
    cosines = cosine_rows(vectors, reference)
    low = float(cosines.min())
    fidelity = Fidelity(cosine_min=round(low, 7), cosine_mean=round(float(cosines.mean()), 7), texts=len(texts),
                        reference="pytorch fp32, transformers AutoModel", threshold=threshold, passed=low >= threshold)
    start = time.perf_counter()
    embedder.encode(texts, batch_size=8, prompt="")  # second pass: warm caches, steady-state speed
    rate = len(texts) / (time.perf_counter() - start)
    return fidelity, Speed(texts_per_second=round(rate, 2), threads=None, cpu=cpu_model())


def evaluate_variant(directory: Path, manifest: Manifest, variant: Variant, backend: str, queries: list[str],
                     documents: list[str], reference_queries: np.ndarray,
                     reference_documents: np.ndarray) -> dict[str, float | int | str]:
    """The `edgembed eval` figures of one variant, against PyTorch, for the manifest."""
    trial = Manifest(**{**manifest.__dict__, "variants": [variant]})
    embedder = Embedder.from_manifest(directory, trial, variant=variant.dtype, backend=backend)
    figures = evaluate_embedder(embedder, queries, documents, reference_queries, reference_documents,
                                "pytorch fp32, transformers AutoModel")
    return {"cosine_mean": figures.cosine_mean, "cosine_min": figures.cosine_min, "cosine_p1": figures.cosine_p1,
            "top10_overlap": figures.top10_overlap, "queries": len(queries), "documents": len(documents),
            "reference": figures.reference}
