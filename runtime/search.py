"""Exact top-k search over float32, int8/uint8 and binary corpora, in numpy, block by block.

Scores are dot products (cosine for the normalized vectors most models give): float query x float corpus;
float query x the int8/uint8 codes read back to the middle of their steps (precision.dequantize, folded into
one matrix product); for binary corpora 1 - 2 * hamming / bits (the cosine of the +-1 vectors), hamming
distances counted with popcount on 64-bit words. The corpus is read `block_rows` rows at a time, blocks in
parallel on `threads` threads, so memory beyond the corpus stays bounded whatever its size (a memory-mapped
.npy works). With `rescore`, the first pass keeps rescore_multiplier * k candidates per query, which are then
scored by the float query against `rescore` (float32 or int8/uint8 vectors of the same rows): the binary
shortlist + int8 rescoring recipe. Results are sorted by score, ties by the lower corpus index.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .errors import InvalidArgumentError, InvalidTypeError, check_positive_int
from .precision import BINARY_PRECISIONS, CODE_DTYPES, RANGED_PRECISIONS, check_precision, check_ranges, dequantize

# Bytes of working memory per block (score matrix and block conversions); several blocks run at once.
BLOCK_BUDGET = 32 * 2**20
MIN_BLOCK_ROWS = 256
MAX_BLOCK_ROWS = 65536  # enough blocks to keep every thread busy to the end
BLAS_MIN_QUERIES = 8  # fewer queries than this are scored without BLAS (see _dot)
CONVERT_ROWS = 512  # int8 rows turned into float32 at a time: a whole block at once was slower (docs/notes)
# The default shortlist is k x max(MIN_RESCORE_MULTIPLIER, ceil(SHORTLIST_DIMENSIONS / dimensions)) rows: fewer
# dimensions rank less surely in the first pass (384: x8, 768 and more: x4; docs/vectors.md).
MIN_RESCORE_MULTIPLIER = 4
SHORTLIST_DIMENSIONS = 3072
_INT8_SHIFT = 128
_BINARY_FLIP = np.uint8(0x80)  # binary codes are ubinary bytes - 128, i.e. with the top bit flipped
_POPCOUNT_TABLE = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


@dataclass(frozen=True)
class Hits:
    """Top-k results: `indices` (queries, k) int64 corpus rows, best first, and their `scores` (float32).

    For a single query vector both are 1-D. k is capped at the corpus size.
    """

    indices: np.ndarray
    scores: np.ndarray


def search(queries: np.ndarray, corpus: np.ndarray, *, k: int = 10, precision: str = "float32",
           ranges: np.ndarray | None = None, rescore: np.ndarray | None = None,
           rescore_precision: str = "float32", rescore_multiplier: int | None = None,
           block_rows: int | None = None, threads: int | None = None) -> Hits:
    """The k best corpus rows for every query.

    `queries`: float32 (q, dim) or (dim,); for a binary/int8 corpus they may also be codes of its precision.
    `corpus`: vectors in `precision` ("float32", "int8", "uint8", "binary", "ubinary"), as Embedder.encode
    returns them. `ranges` (2, dim): the int8/uint8 ranges of the corpus or of `rescore` (Embedder.
    embedding_ranges()). `rescore`: vectors of the same rows in `rescore_precision` (float32, int8 or uint8) to
    re-rank a first-pass shortlist of rescore_multiplier * k rows with the float query (default: by the corpus's
    dimensions, default_rescore_multiplier()).
    `block_rows`: corpus rows per block (default: about BLOCK_BUDGET bytes of work). `threads`: blocks searched
    at once (default: the CPU count).
    """
    check_precision(precision)
    check_positive_int("k", k)
    threads = (os.cpu_count() or 1) if threads is None else check_positive_int("threads", threads)
    corpus = _check_corpus(corpus, precision)
    single = np.ndim(queries) == 1
    query_matrix = np.atleast_2d(np.asarray(queries))
    float_queries = query_matrix.dtype.kind == "f"
    shortlist = k
    if rescore is not None:
        if rescore_multiplier is None:
            rescore_multiplier = default_rescore_multiplier(_dimensions(corpus, precision))
        shortlist = k * check_positive_int("rescore_multiplier", rescore_multiplier)
        if not float_queries:
            raise InvalidTypeError("queries", f"(array of {query_matrix.dtype})", "float vectors when rescoring",
                                   "rescoring scores the float query against the rescore vectors")
    first = _Pass(query_matrix, corpus, precision, ranges)
    wanted = min(shortlist, len(corpus))
    rows = block_rows if block_rows is not None else first.default_block_rows()
    check_positive_int("block_rows", rows)
    cost, ids = first.top(wanted, rows, threads)
    if rescore is not None:
        cost, ids = _rescore(query_matrix, ids, rescore, rescore_precision, ranges, len(corpus), min(k, wanted))
        scores = -cost
    else:
        scores = first.scores(cost)
    hits = Hits(indices=ids.astype(np.int64), scores=scores.astype(np.float32))
    return Hits(hits.indices[0], hits.scores[0]) if single else hits


def default_rescore_multiplier(dimensions: int) -> int:
    """The shortlist multiplier search() uses for a corpus of `dimensions` components: 8 for 384, 4 from 768 on."""
    check_positive_int("dimensions", dimensions)
    return max(MIN_RESCORE_MULTIPLIER, -(-SHORTLIST_DIMENSIONS // dimensions))


def _dimensions(corpus: np.ndarray, precision: str) -> int:
    return corpus.shape[1] * 8 if precision in BINARY_PRECISIONS else corpus.shape[1]


def hamming_distances(queries: np.ndarray, corpus: np.ndarray, *, precision: str = "ubinary") -> np.ndarray:
    """Bits that differ between every query and corpus row, (q, n) int32, for packed binary/ubinary codes."""
    if precision not in BINARY_PRECISIONS:
        raise InvalidArgumentError("precision", precision, "'binary' or 'ubinary'")
    corpus = _check_corpus(corpus, precision)
    query_codes = _binary_query_codes(np.atleast_2d(np.asarray(queries)), corpus, precision)
    return _hamming(query_codes, corpus.view(np.uint8)).astype(np.int32)


class _Pass:
    """The first pass over the corpus: one way to score a block for each kind of corpus."""

    def __init__(self, queries: np.ndarray, corpus: np.ndarray, precision: str, ranges: np.ndarray | None) -> None:
        self.corpus, self.precision = corpus, precision
        width = corpus.shape[1]
        if precision in BINARY_PRECISIONS:
            self.bits = queries.shape[1] if queries.dtype.kind == "f" else 8 * width
            self.query_codes = _binary_query_codes(queries, corpus, precision)
            return
        if queries.dtype.kind != "f" and precision in RANGED_PRECISIONS:
            _check_query_width(queries, width)
            queries = dequantize(_same_codes(queries, precision), precision, ranges=ranges)  # symmetric: read back
        self.queries = _float_queries(queries, width)
        if precision in RANGED_PRECISIONS:
            if ranges is None:
                raise InvalidArgumentError("ranges", None, f"the (2, {width}) ranges the {precision} corpus was made "
                                           "with", "Embedder.embedding_ranges(dim=...) gives a model's")
            bounds = check_ranges(ranges, width)
            step = (bounds[1] - bounds[0]) / np.float32(255)
            step = np.where(step == 0, np.float32(1), step).astype(np.float32)
            shift = (_INT8_SHIFT if precision == "int8" else 0) + 0.5
            # q . (low + (code + shift) * step) = (q * step) . code + q . (low + shift * step)
            self.weights = self.queries * step
            self.offset = (self.queries @ (bounds[0] + np.float32(shift) * step)).astype(np.float32)[:, None]

    def default_block_rows(self) -> int:
        count = len(self.query_codes if self.precision in BINARY_PRECISIONS else self.queries)
        row_bytes = 4 * count + (2 * self.corpus.shape[1] if self.precision in BINARY_PRECISIONS
                                 else 4 * self.corpus.shape[1])
        return min(MAX_BLOCK_ROWS, max(MIN_BLOCK_ROWS, BLOCK_BUDGET // row_bytes))

    def block_cost(self, start: int, stop: int) -> np.ndarray:
        """(queries, stop - start): smaller is better (minus the score, or the hamming distance)."""
        block = self.corpus[start:stop]
        if self.precision in BINARY_PRECISIONS:
            return _hamming(self.query_codes, block.view(np.uint8))
        with np.errstate(invalid="ignore", over="ignore"):  # a bad row is reported below, by its index
            if self.precision == "float32":
                scores = _dot(self.queries, block.astype(np.float32, copy=False))
            else:
                scores = self._code_scores(block)
        if not np.isfinite(scores).all():
            row = start + int(np.nonzero(~np.isfinite(scores).all(axis=0))[0][0])
            raise InvalidArgumentError(f"corpus[{row}]", "(a vector with NaN or infinity)", "finite numbers")
        return np.negative(scores, out=scores)

    def _code_scores(self, block: np.ndarray) -> np.ndarray:
        """weights x codes + offset, converting CONVERT_ROWS rows at a time into a buffer that stays in cache."""
        scores = np.empty((len(self.weights), len(block)), np.float32)
        buffer = np.empty((min(CONVERT_ROWS, len(block)), block.shape[1]), np.float32)
        for start in range(0, len(block), CONVERT_ROWS):
            part = block[start:start + CONVERT_ROWS]
            np.copyto(buffer[:len(part)], part, casting="unsafe")
            np.matmul(self.weights, buffer[:len(part)].T, out=scores[:, start:start + len(part)])
        return np.add(scores, self.offset, out=scores)

    def top(self, wanted: int, rows: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        count = len(self.query_codes if self.precision in BINARY_PRECISIONS else self.queries)
        if wanted == 0:
            return np.zeros((count, 0), np.float32), np.zeros((count, 0), np.int64)

        def block_top(start: int) -> tuple[np.ndarray, np.ndarray]:
            stop = min(start + rows, len(self.corpus))
            return _smallest(self.block_cost(start, stop), np.arange(start, stop, dtype=np.int64), wanted)

        starts = range(0, len(self.corpus), rows)
        if threads > 1 and len(starts) > 1:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                parts = list(pool.map(block_top, starts))
        else:
            parts = [block_top(start) for start in starts]
        if len(parts) == 1:
            return parts[0]
        return _smallest(np.concatenate([p[0] for p in parts], axis=1),
                         np.concatenate([p[1] for p in parts], axis=1), wanted)

    def scores(self, cost: np.ndarray) -> np.ndarray:
        if self.precision in BINARY_PRECISIONS:
            return (1 - 2 * cost.astype(np.float64) / self.bits).astype(np.float32)
        return -cost


def _dot(queries: np.ndarray, block: np.ndarray) -> np.ndarray:
    """queries x block.T. A few queries go through einsum's own loop: BLAS's matrix-vector product, threaded on
    its own, was slower inside the block threads (docs/notes/2026-12-06-figures-from-code.md)."""
    if len(queries) < BLAS_MIN_QUERIES:
        return np.einsum("qd,bd->qb", queries, block)
    return queries @ block.T


def _rescore(queries: np.ndarray, ids: np.ndarray, rescore: np.ndarray, precision: str,
             ranges: np.ndarray | None, rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank each query's shortlist `ids` by the float query x `rescore` vectors of those rows."""
    if precision not in ("float32", *RANGED_PRECISIONS):
        raise InvalidArgumentError("rescore_precision", precision, "'float32', 'int8' or 'uint8'")
    rescore = _check_corpus(rescore, precision, name="rescore")
    if len(rescore) != rows:
        raise InvalidArgumentError("rescore", f"({len(rescore)} rows)", f"the corpus's {rows} rows, in its order")
    queries = _float_queries(queries, rescore.shape[1])
    if precision in RANGED_PRECISIONS:
        if ranges is None:
            raise InvalidArgumentError("ranges", None, f"the (2, {rescore.shape[1]}) ranges of the {precision} "
                                       "rescore vectors", "Embedder.embedding_ranges(dim=...) gives a model's")
        ranges = check_ranges(ranges, rescore.shape[1])
    costs, kept = [], []
    chunk = max(1, BLOCK_BUDGET // max(1, 4 * ids.shape[1] * rescore.shape[1]))
    for start in range(0, len(queries), chunk):
        chosen = ids[start:start + chunk]
        vectors = rescore[chosen.ravel()]
        if precision != "float32":
            vectors = dequantize(vectors, precision, ranges=ranges)
        vectors = vectors.astype(np.float32, copy=False).reshape(*chosen.shape, -1)
        scores = np.einsum("qd,qmd->qm", queries[start:start + chunk], vectors)
        cost, best = _smallest(-scores, chosen, k)
        costs.append(cost)
        kept.append(best)
    return np.concatenate(costs), np.concatenate(kept)


def _smallest(cost: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest costs of each row with their ids, sorted by (cost, id): ties go to the lower id."""
    count, width = cost.shape
    ids = np.broadcast_to(ids, cost.shape)
    k = min(k, width)
    if width > k:
        kth = _kth_smallest_counts(cost, k) if cost.dtype.kind == "u" else np.partition(cost, k - 1, axis=1)[:, k - 1:k]
        rows, cols = np.nonzero(cost <= kth)  # every row keeps at least k: all ties at the boundary
        picked_cost, picked_ids = cost[rows, cols], ids[rows, cols]
    else:
        rows = np.repeat(np.arange(count), width)
        picked_cost, picked_ids = cost.ravel(), ids.ravel()
    order = np.lexsort((picked_ids, picked_cost, rows))
    starts = np.searchsorted(rows[order], np.arange(count))
    take = order[starts[:, None] + np.arange(k)]
    return picked_cost[take], picked_ids[take]


def _kth_smallest_counts(cost: np.ndarray, k: int) -> np.ndarray:
    """The k-th smallest of each row of small unsigned integers (hamming distances), by counting: (rows, 1)."""
    levels = int(cost.max()) + 1
    offsets = (np.arange(len(cost), dtype=np.int64) * levels)[:, None]
    counts = np.bincount((cost + offsets).ravel(), minlength=levels * len(cost)).reshape(len(cost), levels)
    return np.argmax(np.cumsum(counts, axis=1) >= k, axis=1)[:, None].astype(cost.dtype)


def _hamming(query_codes: np.ndarray, block: np.ndarray, popcount=None) -> np.ndarray:
    """Hamming distances (q, len(block)) between packed uint8 codes (unsigned), on the widest word that
    divides a row."""
    popcount = popcount or (np.bitwise_count if hasattr(np, "bitwise_count") else _table_popcount)
    width = block.shape[1]
    word = next(w for w in (np.uint64, np.uint32, np.uint16, np.uint8) if width % np.dtype(w).itemsize == 0)
    if popcount is _table_popcount:
        word = np.uint8  # the lookup table counts bytes
    words = np.ascontiguousarray(block).view(word)
    query_words = np.ascontiguousarray(query_codes).view(word)
    # uint16 sums halve the memory traffic of int32 ones; wider codes than 65,535 bits need uint32
    out = np.empty((len(query_words), len(words)), np.uint16 if width * 8 < 2**16 else np.uint32)
    for row, query in enumerate(query_words):
        counts = popcount(np.bitwise_xor(words, query))
        total = out[row]
        total[...] = counts[:, 0]
        for column in range(1, counts.shape[1]):  # column adds beat sum(axis=1) on a narrow axis
            total += counts[:, column]
    return out


def _table_popcount(words: np.ndarray) -> np.ndarray:
    """Bits set per byte, for numpy < 2.0 (no np.bitwise_count)."""
    return _POPCOUNT_TABLE[words]


def _binary_query_codes(queries: np.ndarray, corpus: np.ndarray, precision: str) -> np.ndarray:
    """The queries as packed bytes in the corpus's own byte form (binary bytes have the top bit flipped)."""
    width = corpus.shape[1]
    if queries.dtype.kind == "f":
        if queries.ndim != 2 or -(-queries.shape[1] // 8) != width:
            raise InvalidArgumentError("queries", f"(array of shape {queries.shape})",
                                       f"float vectors of {8 * width - 7} to {8 * width} components or packed "
                                       f"codes of {width} bytes, like the {precision} corpus")
        codes = np.packbits(queries > 0, axis=-1)
        return codes ^ _BINARY_FLIP if precision == "binary" else codes
    _check_query_width(queries, width)
    return _same_codes(queries, precision).view(np.uint8)


def _same_codes(queries: np.ndarray, precision: str) -> np.ndarray:
    expected = np.dtype(CODE_DTYPES[precision])
    if queries.dtype != expected:
        raise InvalidTypeError("queries", f"(array of {queries.dtype})",
                               f"float vectors or {expected} codes like the {precision} corpus")
    return queries


def _check_query_width(queries: np.ndarray, width: int) -> None:
    if queries.ndim != 2 or queries.shape[1] != width:
        raise InvalidArgumentError("queries", f"(array of shape {queries.shape})",
                                   f"vectors of {width} columns, like the corpus")


def _float_queries(queries: np.ndarray, width: int) -> np.ndarray:
    if queries.dtype.kind != "f":
        raise InvalidTypeError("queries", f"(array of {queries.dtype})", "float vectors")
    _check_query_width(queries, width)
    if not np.isfinite(queries).all():
        raise InvalidArgumentError("queries", "(vectors with NaN or infinity)", "finite numbers")
    return queries.astype(np.float32, copy=False)


def _check_corpus(corpus: object, precision: str, name: str = "corpus") -> np.ndarray:
    if not isinstance(corpus, np.ndarray):
        raise InvalidTypeError(name, corpus, "a numpy array (a memory-mapped .npy works)")
    if corpus.ndim != 2:
        raise InvalidArgumentError(name, f"(array of shape {corpus.shape})", "a 2-D array (rows, columns)")
    expected = CODE_DTYPES[precision]
    if precision == "float32" and corpus.dtype.kind != "f" or precision != "float32" and corpus.dtype != expected:
        hint = {"int8": "'int8' or 'binary'", "uint8": "'uint8' or 'ubinary'"}.get(corpus.dtype.name, "'float32'")
        raise InvalidTypeError(name, f"(array of {corpus.dtype})", f"{np.dtype(expected).name} for precision "
                               f"{precision!r}", f"an array of {corpus.dtype} is precision {hint}")
    return corpus
