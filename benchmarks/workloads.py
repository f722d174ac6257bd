"""The four workloads: single query latency, one batch, corpus throughput, cold start."""
from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from engines import Engine, EngineSpec

WORKLOADS = ("query", "batch", "corpus", "cold")
COLD_SCRIPT = Path(__file__).with_name("coldstart.py")
COLD_MARKER = "COLDSTART "


@dataclass(frozen=True)
class Settings:
    """Repeat counts and sizes; --quick uses QUICK."""

    query_warmup: int = 10
    query_repeats: int = 200
    batch_warmup: int = 1
    batch_repeats: int = 5
    corpus_size: int = 2000
    cold_repeats: int = 3
    batch_size: int = 32
    cold_timeout_s: float = 900.0


FULL = Settings()
QUICK = Settings(query_warmup=2, query_repeats=10, batch_warmup=1, batch_repeats=2, corpus_size=200, cold_repeats=1)


def measure_query(engine: Engine, query: str, settings: Settings) -> dict:
    """Latency of encode([query]) after warm-up: p50 and p99 in milliseconds."""
    for _ in range(settings.query_warmup):
        engine.encode([query], settings.batch_size)
    gc.collect()
    samples = []
    for _ in range(settings.query_repeats):
        start = time.perf_counter()
        engine.encode([query], settings.batch_size)
        samples.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": float(np.percentile(samples, 50)), "p99_ms": float(np.percentile(samples, 99)),
            "mean_ms": statistics.fmean(samples), "repeats": len(samples), "samples_ms": samples}


def measure_batch(engine: Engine, passages: list[str], settings: Settings) -> tuple[dict, np.ndarray]:
    """Seconds to encode the passages as one batch, median of repeats after warm-up."""
    vectors = None
    for _ in range(settings.batch_warmup):
        vectors = engine.encode(passages, len(passages))
    gc.collect()
    samples = []
    for _ in range(settings.batch_repeats):
        start = time.perf_counter()
        vectors = engine.encode(passages, len(passages))
        samples.append(time.perf_counter() - start)
    return {"median_s": statistics.median(samples), "texts": len(passages), "repeats": len(samples),
            "samples_s": samples}, np.asarray(vectors)


def measure_corpus(engine: Engine, corpus: list[str], settings: Settings) -> tuple[dict, np.ndarray]:
    """One pass over the corpus with batch_size 32 (the engine's own batching): texts per second."""
    gc.collect()
    start = time.perf_counter()
    vectors = engine.encode(corpus, settings.batch_size)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "texts_per_s": len(corpus) / seconds, "texts": len(corpus),
            "batch_size": settings.batch_size}, np.asarray(vectors)


def measure_cold(spec: EngineSpec, text: str, settings: Settings) -> dict:
    """Fresh interpreter to first vector (import + load + encode one text), median of repeats."""
    samples = []
    for _ in range(settings.cold_repeats):
        started = time.time()
        done = subprocess.run([sys.executable, str(COLD_SCRIPT), json.dumps(spec.to_dict()), text],
                              capture_output=True, text=True, timeout=settings.cold_timeout_s, env=os.environ.copy())
        reports = [line for line in done.stdout.splitlines() if line.startswith(COLD_MARKER)]
        if done.returncode != 0 or not reports:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"cold-start child exited {done.returncode}: " + " | ".join(tail))
        samples.append(json.loads(reports[-1][len(COLD_MARKER):])["first_vector_at"] - started)
    return {"median_s": statistics.median(samples), "repeats": len(samples), "samples_s": samples}


def cosine_min(vectors: np.ndarray, reference: np.ndarray) -> float:
    """Smallest row-wise cosine between two sets of embeddings of the same texts."""
    a = vectors.astype(np.float64)
    b = reference.astype(np.float64)
    dots = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return float(dots.min())
