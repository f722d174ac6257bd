"""Embedding one shard's texts, in chunks of about CHUNK_CHARACTERS characters: the same grouping on one box and
on Ray, so both give the same vectors (q8 vectors depend on which texts share a batch)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgembed.runtime import EncodeOptions, EncodePlan
from edgembed.runtime.precision import CODE_DTYPES, code_width

# Characters per tokenize/embed call. The runtime sorts a call's texts by length before batching, so larger calls
# pad less and leave a stream idle at their end less often; tokenized text holds about 200 bytes per token, so
# this keeps a call's tokens near 100 MB. Progress moves per batch, whatever the chunk.
CHUNK_CHARACTERS = 2_000_000


# The encode options that decide a job's vectors; the batch sizes decide only the speed (and, for q8, which texts
# share a batch), and truncation only whether a long text stops the job.
VECTOR_FIELDS = ("prompt_name", "prompt", "dim", "normalize", "chunking", "chunk_overlap", "precision")


def vector_options(options: EncodeOptions) -> dict[str, object]:
    """The options of VECTOR_FIELDS by name, as a job records them to recognise itself."""
    return {name: getattr(options, name) for name in VECTOR_FIELDS}


@dataclass
class ShardVectors:
    vectors: np.ndarray
    tokens: int
    truncated: int


def embed_texts(model, texts: list[str], plan: EncodePlan,
                on_chunk: Callable[[int, int], None] | None = None) -> ShardVectors:
    """Vectors of `texts` in order, with the options `plan` holds (model.check made it);
    `on_chunk(texts, tokens)` as they are embedded (for progress)."""
    parts, tokens, truncated = [], 0, 0
    for start, stop in chunk_bounds(texts):
        chunk = texts[start:stop]
        if plan.options.chunking:
            before = model.stats.tokens  # chunked texts are never cut; the runtime counts their window tokens
            vectors = model.encode_with(chunk, plan)
            count, cut = model.stats.tokens - before, 0
            if on_chunk is not None:
                on_chunk(len(chunk), count)
        else:
            tokenized = model.tokenize_with(chunk, plan)
            vectors = model.embed_with(tokenized, plan, on_batch=on_chunk)
            count, cut = tokenized.token_count, tokenized.truncated_count
        parts.append(vectors)
        tokens += count
        truncated += cut
    if not parts:
        precision = plan.options.precision
        parts.append(np.zeros((0, code_width(precision, plan.dimension)), CODE_DTYPES[precision]))
    return ShardVectors(np.concatenate(parts), tokens, truncated)


def chunk_bounds(texts: list[str]) -> list[tuple[int, int]]:
    """(start, stop) of each tokenize/embed call: consecutive rows, about CHUNK_CHARACTERS characters each."""
    bounds, start, size = [], 0, 0
    for index, text in enumerate(texts):
        size += len(text) + 1
        if size >= CHUNK_CHARACTERS:
            bounds.append((start, index + 1))
            start, size = index + 1, 0
    if start < len(texts):
        bounds.append((start, len(texts)))
    return bounds
