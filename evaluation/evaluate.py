"""Measure what each variant costs: cosine to a reference, top-10 retrieval overlap, speed and size."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgembed.runtime import (
    Embedder,
    Fidelity,
    Manifest,
    check_positive_int,
    defaults,
    int8_path,
    normalize,
    runnable_variants,
)

from .domains import Suite
from .errors import EvaluationError

TOP_K = 10
# Timed passes over the documents per variant. The variants take turns (the order reverses every round) and
# each keeps its best pass, so a slow spell of a shared machine does not land on one variant only.
SPEED_PASSES = 3
SPEED_DOCUMENTS = 1000  # documents per timed pass, the domains taking turns (about 120 tokens on average)


@dataclass
class Evaluation:
    """One variant on one backend: its closeness to the reference (per domain, and the worst of them), its speed
    and its size."""

    variant: str
    backend: str
    fidelity: Fidelity  # each figure at its worst over the domains
    texts_per_second: float
    bytes: int
    domains: dict[str, Fidelity] = field(default_factory=dict)

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


def worst_of(figures: dict[str, Fidelity]) -> Fidelity:
    """Each figure at its lowest over the domains (the lows may come from different domains); texts: the total."""
    rows = list(figures.values())
    return Fidelity(cosine_min=min(f.cosine_min for f in rows), cosine_mean=min(f.cosine_mean for f in rows),
                    texts=sum(f.texts for f in rows), reference=rows[0].reference,
                    cosine_p1=min(f.cosine_p1 for f in rows), top10_overlap=min(f.top10_overlap for f in rows),
                    int8_path=rows[0].int8_path)


def suite_fidelity(vectors: np.ndarray, reference_vectors: np.ndarray, suite: Suite,
                   reference: str) -> tuple[Fidelity, dict[str, Fidelity]]:
    """Per-domain figures of `vectors` (laid out as suite.flatten()) against the reference, and the worst."""
    figures = {name: retrieval_fidelity(vectors[q], vectors[d], reference_vectors[q], reference_vectors[d], reference)
               for name, (q, d) in suite.spans().items()}
    return worst_of(figures), figures


def encode_suite(embedder: Embedder, suite: Suite, batch_size: int = defaults.BATCH_SIZE) -> np.ndarray:
    """Every text of the suite, as documents and queries are embedded in evaluation: no prompt, normalized."""
    return embedder.encode(suite.flatten(), batch_size=batch_size, prompt="", normalize=True)


def evaluate_embedder(embedder: Embedder, suite: Suite, reference_vectors: np.ndarray, reference: str, *,
                      rate: Callable[[Embedder, list[str]], float] | None = None) -> Evaluation:
    """Embed the suite and compare with the reference embeddings; time one pass over its speed documents."""
    worst, figures = suite_fidelity(encode_suite(embedder, suite), reference_vectors, suite, reference)
    speed = (rate or documents_per_second)(embedder, suite.speed_documents(SPEED_DOCUMENTS))
    return Evaluation(variant=embedder.variant, backend=embedder.backend, fidelity=worst,
                      texts_per_second=round(speed, 1), bytes=embedder.size_bytes, domains=figures)


def documents_per_second(embedder: Embedder, documents: list[str], batch_size: int = defaults.BATCH_SIZE) -> float:
    """Texts per second of one timed pass over `documents` (after a one-batch warm-up)."""
    embedder.encode(documents[:batch_size], batch_size=batch_size, prompt="")
    start = time.perf_counter()
    embedder.encode(documents, batch_size=batch_size, prompt="", normalize=True)
    return len(documents) / (time.perf_counter() - start)


def evaluate_directory(directory: Path, suite: Suite, *, threads: int | None = None,
                       passes: int = SPEED_PASSES, streams: int | None = None,
                       progress: Callable[[str], None] = print,
                       rate: Callable[[Embedder, list[str]], float] = documents_per_second) -> list[Evaluation]:
    """Every variant x installed backend of an exported directory, against its fp32 variant, per domain.

    Speed is the best of `passes` passes over the suite's speed documents. After the first the variants take
    turns, each loaded again for its pass, so those passes hold one model in memory at a time. `rate` times one
    pass (tests pass a fake one).
    """
    check_positive_int("passes", passes)
    pairs = installed_pairs(directory)
    reference_pair = next(p for p in pairs if p[0] == "fp32")
    reference_model = Embedder.load(directory, variant=reference_pair[0], backend=reference_pair[1],
                                    threads=threads, streams=streams)
    reference_vectors = encode_suite(reference_model, suite)
    label = f"fp32/{reference_pair[1]}"
    del reference_model
    speed_texts = suite.speed_documents(SPEED_DOCUMENTS)
    results = []
    for dtype, backend in pairs:
        progress(f"evaluating {dtype} on {backend}")
        embedder = Embedder.load(directory, variant=dtype, backend=backend, threads=threads, streams=streams)
        results.append(evaluate_embedder(embedder, suite, reference_vectors, label, rate=rate))
        del embedder
    for round_number in range(1, passes):
        progress(f"speed pass {round_number + 1} of {passes}")
        turn = list(zip(pairs, results))
        for (dtype, backend), result in turn[::-1] if round_number % 2 else turn:
            embedder = Embedder.load(directory, variant=dtype, backend=backend, threads=threads, streams=streams)
            result.texts_per_second = max(result.texts_per_second, round(rate(embedder, speed_texts), 1))
            del embedder
    return results


def installed_pairs(directory: Path) -> list[tuple[str, str]]:
    """The (variant, backend) pairs of an export that can run here; EvaluationError without an fp32 one."""
    pairs = runnable_variants(Manifest.read(directory))
    if not any(dtype == "fp32" for dtype, _ in pairs):
        raise EvaluationError(f"{directory} has no fp32 variant on an installed backend to compare with "
                              f"(it has {pairs or 'nothing installed'}); export it with --quantize fp32 ..., or "
                              "install the backend that runs its fp32 files")
    return pairs


def markdown_table(results: list[Evaluation]) -> str:
    """The figures as a Markdown table (the worst domain's), speed as a ratio to fp32 on the same backend."""
    fp32 = {r.backend: r.texts_per_second for r in results if r.variant == "fp32"}
    lines = ["| variant | backend | cos mean | cos min | cos p1 | top-10 overlap | worst domain | texts/s | vs fp32 "
             "| MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        f = r.fidelity
        ratio = r.texts_per_second / fp32[r.backend] if r.backend in fp32 else float("nan")
        lowest = min(r.domains, key=lambda name: r.domains[name].top10_overlap) if r.domains else "-"
        lines.append(f"| {r.variant} | {r.backend} | {f.cosine_mean:.4f} | {f.cosine_min:.4f} | {f.cosine_p1:.4f} "
                     f"| {f.top10_overlap:.3f} | {lowest} | {r.texts_per_second:.1f} | {ratio:.2f}x "
                     f"| {r.bytes / 1e6:.1f} |")
    return "\n".join(lines)


def domain_table(results: list[Evaluation], suite: Suite) -> str:
    """One row per domain, one column per variant other than fp32: cos mean / p1 / min / top-10 overlap."""
    shown = [r for r in results if r.variant != "fp32"]
    lines = ["| domain | queries x documents | " + " | ".join(f"{r.variant}/{r.backend}" for r in shown) + " |",
             "|---|---|" + "---|" * len(shown)]
    for name, (queries, documents) in suite.domains.items():
        cells = []
        for r in shown:
            f = r.domains[name]
            cells.append(f"{f.cosine_mean:.4f} / {f.cosine_p1:.4f} / {f.cosine_min:.4f} / {f.top10_overlap:.3f}")
        lines.append(f"| {name} | {len(queries)} x {len(documents)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
