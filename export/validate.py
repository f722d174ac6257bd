"""Fidelity of one variant: run it through the runtime and compare with the PyTorch reference."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgembed.evaluation.evaluate import cosine_per_row
from edgembed.runtime import Embedder, Fidelity, LoadOptions, Manifest, Speed, Variant, int8_path
from edgembed.runtime.backends import backends_for_format
from edgembed.runtime.cpu import cpu_model
from edgembed.runtime.tokenization import TextTokenizer

REFERENCE = "pytorch fp32, transformers AutoModel"


def load_variant(directory: Path, manifest: Manifest, variant: Variant) -> Embedder:
    """The variant as a user would load it (same runtime code), from the manifest being built."""
    trial = Manifest(**{**manifest.__dict__, "variants": [variant]})
    engines = backends_for_format(variant.format)  # validated on the engine that prefers its format
    return Embedder.from_manifest(directory, trial,
                                  LoadOptions(variant=variant.dtype, backend=engines[0].name if engines else None))


def token_differences(tokenizer: TextTokenizer, texts: list[str], expected: list[list[int]]) -> list[int]:
    """Positions of the texts the runtime tokenizes differently from `expected` (transformers' ids)."""
    encodings = tokenizer.tokenize(texts).encodings
    return [index for index, (encoding, ids) in enumerate(zip(encodings, expected, strict=True))
            if encoding.ids != list(ids)]


def measure_variant(embedder: Embedder, texts: list[str], reference: np.ndarray,
                    threshold: float) -> tuple[Fidelity, Speed]:
    """Cosine to `reference` on `texts`, then throughput on a second, warm pass."""
    vectors = embedder.encode(texts, batch_size=8, normalize=True, prompt="")
    cosines = cosine_per_row(vectors, reference)
    low = float(cosines.min())
    fidelity = Fidelity(cosine_min=round(low, 7), cosine_mean=round(float(cosines.mean()), 7), texts=len(texts),
                        reference=REFERENCE, threshold=threshold, passed=low >= threshold, int8_path=int8_path().name)
    start = time.perf_counter()
    embedder.encode(texts, batch_size=8, prompt="")
    rate = len(texts) / (time.perf_counter() - start)
    return fidelity, Speed(texts_per_second=round(rate, 2), cpu=cpu_model())
