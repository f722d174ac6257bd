"""Fidelity of one variant: run it through the runtime and compare with the PyTorch reference."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgembed.runtime.cpu import cpu_model
from edgembed.runtime.embedder import Embedder
from edgembed.runtime.evaluate import cosine_per_row, evaluate_embedder
from edgembed.runtime.manifest import Fidelity, Manifest, Speed, Variant

REFERENCE = "pytorch fp32, transformers AutoModel"


def load_variant(directory: Path, manifest: Manifest, variant: Variant, backend: str) -> Embedder:
    """The variant as a user would load it (same runtime code), from the manifest being built."""
    trial = Manifest(**{**manifest.__dict__, "variants": [variant]})
    return Embedder.from_manifest(directory, trial, variant=variant.dtype, backend=backend)


def measure_variant(embedder: Embedder, texts: list[str], reference: np.ndarray,
                    threshold: float) -> tuple[Fidelity, Speed]:
    """Cosine to `reference` on `texts`, then throughput on a second, warm pass."""
    vectors = embedder.encode(texts, batch_size=8, normalize=True, prompt="")
    cosines = cosine_per_row(vectors, reference)
    low = float(cosines.min())
    fidelity = Fidelity(cosine_min=round(low, 7), cosine_mean=round(float(cosines.mean()), 7), texts=len(texts),
                        reference=REFERENCE, threshold=threshold, passed=low >= threshold)
    start = time.perf_counter()
    embedder.encode(texts, batch_size=8, prompt="")
    rate = len(texts) / (time.perf_counter() - start)
    return fidelity, Speed(texts_per_second=round(rate, 2), threads=None, cpu=cpu_model())


def evaluate_variant(embedder: Embedder, queries: list[str], documents: list[str], reference_queries: np.ndarray,
                     reference_documents: np.ndarray) -> dict[str, float | int | str]:
    """The `edgembed eval` figures of one variant, against PyTorch, for the manifest."""
    figures = evaluate_embedder(embedder, queries, documents, reference_queries, reference_documents, REFERENCE)
    return {"cosine_mean": figures.cosine_mean, "cosine_min": figures.cosine_min, "cosine_p1": figures.cosine_p1,
            "top10_overlap": figures.top10_overlap, "queries": len(queries), "documents": len(documents),
            "reference": figures.reference}
