"""Embedding one shard's texts, in chunks of about CHUNK_CHARACTERS characters: the same grouping on one box and
on Ray, so both give the same vectors (q8 vectors depend on which texts share a batch)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from edgembed.runtime.precision import CODE_DTYPES, code_width

# Characters per tokenize/embed call. The runtime sorts a call's texts by length before batching, so larger calls
# pad less and leave a stream idle at their end less often; tokenized text holds about 200 bytes per token, so
# this keeps a call's tokens near 100 MB. Progress moves per batch, whatever the chunk.
CHUNK_CHARACTERS = 2_000_000


@dataclass(frozen=True)
class EmbedSettings:
    """The encode options a job passes through. The first seven decide the vectors; the last two only the speed
    (and, for q8, which texts share a batch)."""

    prompt_name: str | None = None
    prompt: str | None = None
    dim: int | None = None
    normalize: bool | None = None
    chunking: bool = False
    chunk_overlap: int | None = None
    precision: str = "float32"
    batch_size: int = 32
    max_batch_tokens: int = 16384

    def vector_options(self) -> dict[str, object]:
        options = asdict(self)
        del options["batch_size"], options["max_batch_tokens"]
        return options


@dataclass
class ShardVectors:
    vectors: np.ndarray
    tokens: int
    truncated: int


def embed_texts(model, texts: list[str], settings: EmbedSettings,
                on_chunk: Callable[[int, int], None] | None = None) -> ShardVectors:
    """Vectors of `texts` in order; `on_chunk(texts, tokens)` as they are embedded (for progress)."""
    parts, tokens, truncated = [], 0, 0
    for start, stop in chunk_bounds(texts):
        chunk = texts[start:stop]
        if settings.chunking:
            before = model.stats.tokens  # chunked texts are never cut; the runtime counts their window tokens
            vectors = model.encode(chunk, batch_size=settings.batch_size, prompt_name=settings.prompt_name,
                                   prompt=settings.prompt, normalize=settings.normalize, dim=settings.dim,
                                   max_batch_tokens=settings.max_batch_tokens, chunking=True,
                                   chunk_overlap=settings.chunk_overlap, precision=settings.precision)
            count, cut = model.stats.tokens - before, 0
            if on_chunk is not None:
                on_chunk(len(chunk), count)
        else:
            tokenized = model.tokenize(chunk, prompt_name=settings.prompt_name, prompt=settings.prompt)
            vectors = model.embed(tokenized, batch_size=settings.batch_size,
                                  max_batch_tokens=settings.max_batch_tokens, normalize=settings.normalize,
                                  dim=settings.dim, precision=settings.precision, on_batch=on_chunk)
            count, cut = tokenized.token_count, tokenized.truncated_count
        parts.append(vectors)
        tokens += count
        truncated += cut
    if not parts:
        width = code_width(settings.precision, settings.dim or model.dimension)
        parts.append(np.zeros((0, width), CODE_DTYPES[settings.precision]))
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
