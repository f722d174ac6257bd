"""Measure what each variant costs: cosine to a reference, top-10 retrieval overlap, speed and size."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgembed.runtime import Embedder, Fidelity, Manifest, int8_path
from edgembed.runtime.backends import installed_backends
from edgembed.runtime.errors import check_positive_int
from edgembed.runtime.pooling import normalize
from edgembed.runtime.selection import exported_pairs

from .errors import EvaluationError

TOP_K = 10
# Timed passes over the documents per variant. The variants take turns (the order reverses every round) and
# each keeps its best pass, so a slow spell of a shared machine does not land on one variant only.
SPEED_PASSES = 3


@dataclass
class Evaluation:
    """One variant on one backend: its closeness to the reference, its speed and its size."""

    variant: str
    backend: str
    fidelity: Fidelity
    texts_per_second: float
    bytes: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def cosine_per_row(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of `a` with the same row of `b`."""
    return (normalize(a) * normalize(b)).sum(axis=1)


def top_k_overlap(queries: np.ndarray, documents: np.ndarray, reference_queries: np.ndarray,
                  reference_documents: np.ndarray, k: int = TOP_K) -> float:
    """Mean share of each query's k nearest documents (cosine) that the reference also ranks in its k nearest."""
    k = min(k, len(documents))
    mine = np.argsort(-(queries @ documents.T), axis=1)[:, :k]
    theirs = np.argsort(-(reference_queries @ reference_documents.T), axis=1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(mine, theirs)]))


def retrieval_fidelity(query_vectors: np.ndarray, document_vectors: np.ndarray, reference_queries: np.ndarray,
                       reference_documents: np.ndarray, reference: str) -> Fidelity:
    """Cosine figures over queries and documents, and the top-10 overlap of the queries' neighbours."""
    sims = cosine_per_row(np.concatenate([query_vectors, document_vectors]),
                          np.concatenate([reference_queries, reference_documents]))
    overlap = top_k_overlap(query_vectors, document_vectors, reference_queries, reference_documents)
    return Fidelity(cosine_min=round(float(sims.min()), 6), cosine_mean=round(float(sims.mean()), 6),
                    texts=len(sims), reference=reference, cosine_p1=round(float(np.percentile(sims, 1)), 6),
                    top10_overlap=round(overlap, 4), int8_path=int8_path().name)


def evaluate_embedder(embedder: Embedder, queries: list[str], documents: list[str],
                      reference_queries: np.ndarray, reference_documents: np.ndarray, reference: str,
                      batch_size: int = 32) -> Evaluation:
    """Embed queries and documents (no prompts, normalized) and compare with the reference embeddings."""
    document_vectors, rate = _timed_documents(embedder, documents, batch_size)
    query_vectors = embedder.encode(queries, batch_size=batch_size, prompt="", normalize=True)
    fidelity = retrieval_fidelity(query_vectors, document_vectors, reference_queries, reference_documents, reference)
    return Evaluation(variant=embedder.variant, backend=embedder.backend, fidelity=fidelity,
                      texts_per_second=round(rate, 1), bytes=embedder.size_bytes)


def documents_per_second(embedder: Embedder, documents: list[str], batch_size: int = 32) -> float:
    """Texts per second of one timed pass over `documents`, as evaluate_embedder times it."""
    return _timed_documents(embedder, documents, batch_size)[1]


def _timed_documents(embedder: Embedder, documents: list[str], batch_size: int) -> tuple[np.ndarray, float]:
    """The normalized document vectors and texts per second of the pass (after a one-batch warm-up)."""
    embedder.encode(documents[:batch_size], batch_size=batch_size, prompt="")
    start = time.perf_counter()
    vectors = embedder.encode(documents, batch_size=batch_size, prompt="", normalize=True)
    return vectors, len(documents) / (time.perf_counter() - start)


def evaluate_directory(directory: Path, queries: list[str], documents: list[str], *, threads: int | None = None,
                       passes: int = SPEED_PASSES, streams: int | None = None,
                       progress: Callable[[str], None] = print,
                       rate: Callable[[Embedder, list[str]], float] = documents_per_second) -> list[Evaluation]:
    """Every variant x installed backend of an exported directory, against its fp32 variant.

    Speed is the best of `passes` passes over the documents. After the first (the fidelity pass) the variants
    take turns, each loaded again for its pass, so those passes hold one model in memory at a time. `rate`
    times one pass (tests pass a fake one).
    """
    check_positive_int("passes", passes)
    pairs = installed_pairs(directory)
    reference_pair = next(p for p in pairs if p[0] == "fp32")
    reference_model = Embedder.load(directory, variant=reference_pair[0], backend=reference_pair[1],
                                    threads=threads, streams=streams)
    reference_queries = reference_model.encode(queries, prompt="", normalize=True)
    reference_documents = reference_model.encode(documents, prompt="", normalize=True)
    label = f"fp32/{reference_pair[1]}"
    del reference_model
    results = []
    for dtype, backend in pairs:
        progress(f"evaluating {dtype} on {backend}")
        embedder = Embedder.load(directory, variant=dtype, backend=backend, threads=threads, streams=streams)
        results.append(evaluate_embedder(embedder, queries, documents, reference_queries, reference_documents,
                                         label))
        del embedder
    for round_number in range(1, passes):
        progress(f"speed pass {round_number + 1} of {passes}")
        turn = list(zip(pairs, results))
        for (dtype, backend), result in turn[::-1] if round_number % 2 else turn:
            embedder = Embedder.load(directory, variant=dtype, backend=backend, threads=threads, streams=streams)
            result.texts_per_second = max(result.texts_per_second, round(rate(embedder, documents), 1))
            del embedder
    return results


def installed_pairs(directory: Path) -> list[tuple[str, str]]:
    """The (variant, backend) pairs of an export that can run here; EvaluationError without an fp32 one."""
    installed = installed_backends()
    pairs = [(dtype, name) for dtype, name, _ in exported_pairs(Manifest.read(directory)) if name in installed]
    if not any(dtype == "fp32" for dtype, _ in pairs):
        raise EvaluationError(f"{directory} has no fp32 variant on an installed backend to compare with "
                              f"(it has {pairs or 'nothing installed'}); export it with --quantize fp32 ..., or "
                              "install the backend that runs its fp32 files")
    return pairs


def markdown_table(results: list[Evaluation]) -> str:
    """The figures as a Markdown table, speed as a ratio to fp32 on the same backend."""
    fp32 = {r.backend: r.texts_per_second for r in results if r.variant == "fp32"}
    lines = ["| variant | backend | cos mean | cos min | cos p1 | top-10 overlap | texts/s | vs fp32 | MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        f = r.fidelity
        ratio = r.texts_per_second / fp32[r.backend] if r.backend in fp32 else float("nan")
        lines.append(f"| {r.variant} | {r.backend} | {f.cosine_mean:.4f} | {f.cosine_min:.4f} | {f.cosine_p1:.4f} "
                     f"| {f.top10_overlap:.3f} | {r.texts_per_second:.1f} | {ratio:.2f}x | {r.bytes / 1e6:.1f} |")
    return "\n".join(lines)
