"""The fixed int8/uint8 output ranges of a model, measured at export on the calibration texts."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from edgembed.evaluation.domains import calibration_texts
from edgembed.runtime import DimensionRanges, Embedder, EmbeddingRanges, Manifest, Variant, embedding_ranges

from .variants import Recipe

FLOAT_DTYPES = ("fp32", "fp16")
# Each component's [min, max] is widened by this share of its span on both sides (within [-1, 1] for normalized
# vectors): text unlike the calibration texts lands outside their min/max, and a clipped component costs more
# than a coarser step (docs/vectors.md, "Ranges for text nobody calibrated on").
RANGE_MARGIN = 0.2

BUILT_IN_SOURCE = "built-in calibration set (edgembed.evaluation.domains.calibration_set; manifest: calibration)"
USER_SOURCE = "texts given with --calibration-data"


def measure_ranges(embedder: Embedder, texts: Sequence[str], *, variant: str, source: str = BUILT_IN_SOURCE,
                   dims: Sequence[int] = ()) -> EmbeddingRanges:
    """Per-component min/max of `texts`' embeddings, widened by RANGE_MARGIN, at the full size and every dim of
    `dims`, with the model's own normalization; `variant` names the exported variant `embedder` runs (e.g.
    onnx/fp32). The texts are embedded as documents and, when the model has a query prompt, as queries too, so
    the ranges hold both."""
    encoders = {"document": embedder.encode_document}
    if "query" in embedder.manifest.prompts:
        encoders["query"] = embedder.encode_query
    pooled = np.concatenate([encode(list(texts), normalize=False) for encode in encoders.values()])
    normalize = embedder.manifest.normalize
    entries = []
    for dim in sorted({embedder.dimension, *dims}, reverse=True):
        bounds = widened(embedding_ranges(embedder.postprocess(pooled, dim=dim, normalize=normalize)), RANGE_MARGIN,
                         normalize)
        entries.append(DimensionRanges(dim=dim, normalize=normalize, min=bounds[0].tolist(), max=bounds[1].tolist()))
    return EmbeddingRanges(variant=variant, texts=len(texts), source=source, prompts=list(encoders), ranges=entries,
                           margin=RANGE_MARGIN)


def widened(bounds: np.ndarray, margin: float, normalized: bool) -> np.ndarray:
    """`bounds` (2, dim) moved apart by `margin` x (max - min) on each side; within [-1, 1] when `normalized`."""
    span = bounds[1] - bounds[0]
    low, high = bounds[0] - margin * span, bounds[1] + margin * span
    if normalized:
        low, high = np.maximum(low, -1.0), np.minimum(high, 1.0)
    return np.stack([low, high]).astype(np.float32)


def ranges_recipe(recipes: Sequence[Recipe]) -> Recipe | None:
    """The variant to measure on: fp32, else the first float one (fp16), else the first exported."""
    for dtype in FLOAT_DTYPES:
        for recipe in recipes:
            if recipe.dtype == dtype:
                return recipe
    return recipes[0] if recipes else None


def record_ranges(embedder: Embedder, manifest: Manifest, variant: Variant, texts: Sequence[str] | None,
                  progress: Callable[[str], None]) -> EmbeddingRanges:
    """Measure the ranges with the just-validated `variant`, loaded as `embedder` (its session is reused)."""
    given = texts is not None
    texts = list(texts) if given else calibration_texts()
    ranges = measure_ranges(embedder, texts, variant=variant.name,
                            source=USER_SOURCE if given else BUILT_IN_SOURCE, dims=manifest.matryoshka_dims)
    progress(f"      int8/uint8 output ranges measured with {variant.name} on {len(texts)} texts "
             f"(dims {', '.join(str(r.dim) for r in ranges.ranges)})")
    return ranges
