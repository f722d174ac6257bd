"""Compact vectors: int8/uint8/binary codes with ranges fixed per model, and exact top-k search over them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgembed.runtime import (
    PRECISIONS,
    Embedder,
    Manifest,
    ManifestError,
    MissingRangesError,
    UsageError,
    code_bytes,
    dequantize,
    embedding_ranges,
    hamming_distances,
    quantize,
    search,
)
from edgembed.runtime.search import _hamming, _table_popcount

TEXTS = ["how do I open a file in python", "the with statement closes files", "list comprehensions",
         "generators yield values lazily", "exceptions unwind the stack", "a dictionary maps keys to values",
         "", "decorators wrap functions"]


@pytest.fixture(scope="module")
def model(ranged_export: Path) -> Embedder:
    return Embedder.load(ranged_export, variant="fp32", backend="onnxruntime")


def reference_codes(vectors: np.ndarray, ranges: np.ndarray, precision: str) -> np.ndarray:
    """sentence-transformers' formula, written out: floor of (x - min) / ((max - min) / 255), clipped."""
    steps = (ranges[1] - ranges[0]) / np.float32(255)
    levels = np.clip(np.floor((vectors - ranges[0]) / steps), 0, 255)
    return levels.astype(np.uint8) if precision == "uint8" else (levels - 128).astype(np.int8)


# --- codes -------------------------------------------------------------------------------------------------

def test_export_ranges_cover_every_dim_and_both_prompts(ranged_export: Path):
    stored = Manifest.read(ranged_export).embedding_ranges
    assert stored is not None and stored.variant == "onnx/fp32" and stored.texts == 80
    assert stored.prompts == ["document", "query"]
    assert [(r.dim, r.normalize) for r in stored.ranges] == [(32, True), (16, True)]
    for entry in stored.ranges:
        assert len(entry.min) == len(entry.max) == entry.dim
        assert all(-1 <= low < high <= 1 for low, high in zip(entry.min, entry.max))


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_codes_do_not_depend_on_the_batch(model: Embedder, precision: str):
    alone = np.stack([model.encode(text, precision=precision) for text in TEXTS])
    together = model.encode(TEXTS, precision=precision, batch_size=3)
    reordered = model.encode(TEXTS[::-1] + ["another text entirely, much longer than the rest " * 4],
                             precision=precision)[:len(TEXTS)][::-1]
    np.testing.assert_array_equal(alone, together)
    np.testing.assert_array_equal(alone, reordered)


def test_batch_ranges_would_change_codes(model: Embedder):
    """What the fixed ranges avoid: ranges taken from each batch (sentence-transformers' default) move codes."""
    vectors = model.encode(TEXTS)
    first = quantize(vectors[:4], "int8", ranges=embedding_ranges(vectors[:4]))
    second = quantize(vectors[:2], "int8", ranges=embedding_ranges(vectors[:2]))
    assert not np.array_equal(first[:2], second)


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_int8_follows_sentence_transformers_formula(model: Embedder, precision: str):
    vectors = model.encode(TEXTS)
    ranges = model.embedding_ranges()
    codes = model.encode(TEXTS, precision=precision)
    assert codes.dtype == np.dtype(precision) and codes.shape == (len(TEXTS), 32)
    np.testing.assert_array_equal(codes, reference_codes(vectors, ranges, precision))
    np.testing.assert_array_equal(codes, quantize(vectors, precision, ranges=ranges))


def test_binary_packs_sign_bits(model: Embedder):
    vectors = model.encode(TEXTS, dim=16)
    ubinary = model.encode(TEXTS, dim=16, precision="ubinary")
    binary = model.encode(TEXTS, dim=16, precision="binary")
    assert ubinary.dtype == np.uint8 and binary.dtype == np.int8 and ubinary.shape == (len(TEXTS), 2)
    np.testing.assert_array_equal(np.unpackbits(ubinary, axis=1), (vectors > 0).astype(np.uint8))
    np.testing.assert_array_equal(binary.astype(np.int16), ubinary.astype(np.int16) - 128)


def test_single_text_dim_and_user_ranges(model: Embedder):
    one = model.encode("hello", precision="int8", dim=16)
    assert one.shape == (16,) and one.dtype == np.int8
    own = np.stack([np.full(32, -0.5, np.float32), np.full(32, 0.5, np.float32)])
    codes = model.encode(TEXTS, precision="uint8", ranges=own)
    np.testing.assert_array_equal(codes, reference_codes(model.encode(TEXTS), own, "uint8"))
    assert model.encode_query(TEXTS[:2], precision="binary").shape == (2, 4)
    assert model.encode_document(TEXTS[:2], precision="int8", dim=16).shape == (2, 16)


def test_embed_and_postprocess_take_precision(model: Embedder):
    tokens = model.tokenize(TEXTS)
    raw = model.embed(tokens, normalize=False)
    np.testing.assert_array_equal(model.postprocess(raw, precision="int8"), model.embed(tokens, precision="int8"))
    np.testing.assert_array_equal(model.embed(tokens, precision="int8"), model.encode(TEXTS, precision="int8"))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_round_trip(precision: str):
    rng = np.random.default_rng(1)
    vectors = rng.uniform(-0.3, 0.3, (50, 24)).astype(np.float32)
    ranges = embedding_ranges(vectors)
    codes = quantize(vectors, precision, ranges=ranges)
    assert codes.nbytes == 50 * code_bytes(precision, 24)
    back = dequantize(codes, precision, ranges=ranges, dim=24)
    assert back.shape == vectors.shape and back.dtype == np.float32
    np.testing.assert_array_equal(quantize(back, precision, ranges=ranges), codes)
    if precision == "float32":
        np.testing.assert_array_equal(back, vectors)
    elif precision in ("int8", "uint8"):
        step = (ranges[1] - ranges[0]) / 255
        assert (np.abs(back - vectors) <= step * 0.5 + 1e-6).all()  # within half a step of the original
    else:
        np.testing.assert_array_equal(back > 0, vectors > 0)


def test_values_outside_the_ranges_clip_to_the_end_codes():
    ranges = np.array([[-1.0, 0.0], [1.0, 2.0]], np.float32)
    codes = quantize(np.array([[-5.0, 9.0], [1.5, 0.0]], np.float32), "int8", ranges=ranges)
    np.testing.assert_array_equal(codes, [[-128, 127], [127, -128]])


def test_binary_of_a_dim_not_a_multiple_of_eight():
    vectors = np.array([[1, -1, 1, 1, -1, -1, 1, 1, 1, -1, 0.5]], np.float32)
    codes = quantize(vectors, "ubinary")
    assert codes.shape == (1, 2)
    np.testing.assert_array_equal(dequantize(codes, "ubinary", dim=11), np.sign(vectors))


def test_manifest_ranges_round_trip(ranged_export: Path, tmp_path: Path):
    manifest = Manifest.read(ranged_export)
    manifest.write(tmp_path)
    again = Manifest.read(tmp_path)
    assert again.embedding_ranges == manifest.embedding_ranges
    entry = again.embedding_ranges.find(16, True)
    assert entry is not None and again.embedding_ranges.find(16, False) is None
    # float32 values survive JSON exactly, so the codes are the same after a copy
    np.testing.assert_array_equal(np.asarray([entry.min, entry.max], np.float32),
                                  Embedder.load(ranged_export, variant="fp32").embedding_ranges(dim=16))


def test_manifest_without_ranges_reads_and_bad_ranges_are_refused(ranged_export: Path, tmp_path: Path):
    data = json.loads((ranged_export / "manifest.json").read_text())
    assert Manifest.from_dict({k: v for k, v in data.items() if k != "embedding_ranges"}).embedding_ranges is None
    bad = json.loads(json.dumps(data))
    bad["embedding_ranges"]["ranges"][0]["max"][3] = -2.0
    with pytest.raises(ManifestError, match="dim 32 has a min above its max"):
        Manifest.from_dict(bad)
    bad = json.loads(json.dumps(data))
    bad["embedding_ranges"]["ranges"][1]["min"] = [0.0]
    with pytest.raises(ManifestError, match="dim 16 needs 16 min and 16 max values"):
        Manifest.from_dict(bad)
    bad = json.loads(json.dumps(data))
    bad["embedding_ranges"]["ranges"][0]["dim"] = 99
    with pytest.raises(ManifestError, match="dim 99 is not from 1 to hidden_size 32"):
        Manifest.from_dict(bad)


# --- errors ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("precision,error,message", [
    ("int4", UsageError, "unknown precision 'int4'; available: 'binary', 'float32', 'int8', 'ubinary', 'uint8'"),
    ("INT8", UsageError, "unknown precision 'INT8'"),
    (8, TypeError, "precision is int"),
])
def test_bad_precision(model: Embedder, precision, error, message):
    with pytest.raises(error, match=message):
        model.encode(TEXTS, precision=precision)


def test_a_dim_without_ranges_names_the_ones_there_are(model: Embedder):
    with pytest.warns(UserWarning):
        with pytest.raises(MissingRangesError) as caught:
            model.encode(TEXTS, precision="int8", dim=8)
    message = str(caught.value)
    assert "precision='int8' needs fixed ranges for dim=8 with normalize=True" in message
    assert "dim 32 (normalize=True), dim 16 (normalize=True)" in message and "onnx/fp32 over 80 texts" in message
    assert "--matryoshka-dims" in message and "ranges=" in message
    with pytest.raises(MissingRangesError, match="dim=16 with normalize=False"):
        model.encode(TEXTS, precision="uint8", dim=16, normalize=False)
    assert model.encode(TEXTS, precision="binary", dim=8).shape == (len(TEXTS), 1)  # binary needs no ranges


def test_an_export_without_ranges_says_how_to_get_them(fast_export: Path):
    old = Embedder.load(fast_export, variant="fp32", backend="onnxruntime")
    with pytest.raises(MissingRangesError, match="this export records none .* re-export it"):
        old.encode(TEXTS, precision="int8")
    with pytest.raises(MissingRangesError):
        old.embedding_ranges()
    codes = old.encode(TEXTS, precision="int8", ranges=embedding_ranges(old.encode(TEXTS)))
    assert codes.dtype == np.int8


@pytest.mark.parametrize("precision,ranges,message", [
    ("int8", np.zeros((2, 16), np.float32),
     r"ranges='\(array of shape \(2, 16\)\)' is not valid: expected shape \(2, 32\)"),
    ("int8", np.array([np.ones(32), np.zeros(32)]), r"min > max in 32 components"),
    ("int8", np.full((2, 32), np.nan), "finite numbers"),
    ("binary", np.zeros((2, 32)), "ranges apply to int8 and uint8 only"),
    ("float32", np.zeros((2, 32)), "ranges apply to int8 and uint8 only"),
])
def test_bad_ranges(model: Embedder, precision, ranges, message):
    with pytest.raises(UsageError, match=message):
        model.encode(TEXTS, precision=precision, ranges=ranges)


def test_quantize_refuses_codes_and_int8_without_ranges():
    with pytest.raises(TypeError, match="float embeddings"):
        quantize(np.zeros((2, 8), np.int8), "int8", ranges=np.zeros((2, 8)))
    with pytest.raises(UsageError, match="ranges=None is not valid"):
        quantize(np.zeros((2, 8), np.float32), "uint8")
    with pytest.raises(TypeError, match="uint8 codes for precision 'ubinary'"):
        dequantize(np.zeros((2, 1), np.int8), "ubinary")


# --- search ------------------------------------------------------------------------------------------------

def brute_force(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every score sorted: higher first, ties to the lower index (float64 scores, exact here)."""
    indices = np.array([np.lexsort((np.arange(len(row)), -row))[:k] for row in scores])
    return indices, np.take_along_axis(scores, indices, axis=1)


def tie_heavy_float(rows: int, dim: int, seed: int) -> np.ndarray:
    """Small integers: dot products are exact in float32 and many of them tie."""
    return np.random.default_rng(seed).integers(-2, 3, (rows, dim)).astype(np.float32)


@pytest.mark.parametrize("block_rows,threads", [(None, 1), (37, 1), (64, 2), (1000, 2)])
@pytest.mark.parametrize("k", [1, 10, 600])
def test_float_top_k_is_brute_force(block_rows, threads, k):
    corpus, queries = tie_heavy_float(500, 12, 0), tie_heavy_float(9, 12, 1)
    corpus[100] = corpus[7]  # a duplicate row: equal scores, the lower index first
    hits = search(queries, corpus, k=k, block_rows=block_rows, threads=threads)
    indices, scores = brute_force(queries.astype(np.float64) @ corpus.T.astype(np.float64), k)
    np.testing.assert_array_equal(hits.indices, indices)
    np.testing.assert_array_equal(hits.scores, scores)
    assert hits.indices.shape == (9, min(k, 500)) and hits.indices.dtype == np.int64


def test_float_top_k_on_real_valued_vectors():
    rng = np.random.default_rng(3)
    corpus, queries = rng.standard_normal((3000, 48)).astype(np.float32), rng.standard_normal((5, 48))
    hits = search(queries.astype(np.float32), corpus, k=20, block_rows=500, threads=2)
    exact = queries @ corpus.T.astype(np.float64)
    indices, scores = brute_force(exact, 20)
    np.testing.assert_array_equal(hits.indices, indices)
    np.testing.assert_allclose(hits.scores, scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("precision", ["int8", "uint8"])
@pytest.mark.parametrize("block_rows", [None, 50])
def test_int8_top_k_is_brute_force(precision, block_rows):
    # Ranges whose step is 1/64 and queries of small integers: the dequantized dot products are exact.
    low = np.full(10, -2.0, np.float32)
    ranges = np.stack([low, low + np.float32(255 / 64)])
    rng = np.random.default_rng(2)
    corpus_float = rng.uniform(-2, 2, (400, 10)).astype(np.float32)
    codes = quantize(corpus_float, precision, ranges=ranges)
    queries = tie_heavy_float(6, 10, 4)
    hits = search(queries, codes, k=15, precision=precision, ranges=ranges, block_rows=block_rows, threads=2)
    readback = dequantize(codes, precision, ranges=ranges).astype(np.float64)
    indices, scores = brute_force(queries @ readback.T, 15)
    np.testing.assert_array_equal(hits.indices, indices)
    np.testing.assert_array_equal(hits.scores, scores)
    # codes as queries: read back to floats, then the same search
    query_codes = quantize(queries / 3, precision, ranges=ranges)
    symmetric = search(query_codes, codes, k=5, precision=precision, ranges=ranges)
    indices, _ = brute_force(dequantize(query_codes, precision, ranges=ranges).astype(np.float64) @ readback.T, 5)
    np.testing.assert_array_equal(symmetric.indices, indices)


def hamming_reference(queries: np.ndarray, corpus_float: np.ndarray) -> np.ndarray:
    return ((queries[:, None, :] > 0) != (corpus_float[None, :, :] > 0)).sum(axis=2)


@pytest.mark.parametrize("precision", ["binary", "ubinary"])
@pytest.mark.parametrize("dim", [64, 24, 20, 768])
@pytest.mark.parametrize("block_rows,threads", [(None, 1), (77, 2)])
def test_binary_top_k_is_brute_force(precision, dim, block_rows, threads):
    rng = np.random.default_rng(dim)
    corpus_float = rng.standard_normal((700, dim)).astype(np.float32)
    queries = rng.standard_normal((4, dim)).astype(np.float32)
    codes = quantize(corpus_float, precision)
    distances = hamming_reference(queries, corpus_float)
    hits = search(queries, codes, k=25, precision=precision, block_rows=block_rows, threads=threads)
    indices, negated = brute_force(-distances.astype(np.float64), 25)
    np.testing.assert_array_equal(hits.indices, indices)
    np.testing.assert_array_equal(hits.scores, (1 - 2 * -negated / dim).astype(np.float32))
    np.testing.assert_array_equal(hamming_distances(queries, codes, precision=precision), distances)
    # packed query codes give the same ranking (the padding bits of both sides are zero)
    by_codes = search(quantize(queries, precision), codes, k=25, precision=precision, block_rows=block_rows)
    np.testing.assert_array_equal(by_codes.indices, indices)


def test_the_lookup_table_popcount_of_old_numpy_agrees():
    rng = np.random.default_rng(5)
    block = rng.integers(0, 256, (300, 96), dtype=np.uint8)
    queries = rng.integers(0, 256, (3, 96), dtype=np.uint8)
    expected = np.unpackbits(queries[:, None, :] ^ block[None], axis=2).sum(axis=2)
    np.testing.assert_array_equal(_hamming(queries, block, popcount=_table_popcount), expected)
    np.testing.assert_array_equal(_hamming(queries, block), expected)


@pytest.mark.parametrize("rescore_precision", ["int8", "float32"])
@pytest.mark.parametrize("multiplier", [1, 3, 50])
def test_binary_shortlist_rescored_is_brute_force(rescore_precision, multiplier):
    low = np.full(16, -2.0, np.float32)
    ranges = np.stack([low, low + np.float32(255 / 64)])
    rng = np.random.default_rng(7)
    corpus_float = (np.round(rng.uniform(-2, 2, (900, 16)) * 64) / 64).astype(np.float32)  # exact products
    queries = tie_heavy_float(5, 16, 8)
    binary = quantize(corpus_float, "binary")
    rescore = quantize(corpus_float, rescore_precision, ranges=ranges)
    k = 8
    hits = search(queries, binary, k=k, precision="binary", rescore=rescore, rescore_precision=rescore_precision,
                  ranges=ranges, rescore_multiplier=multiplier, block_rows=100, threads=2)
    shortlist, _ = brute_force(-hamming_reference(queries, corpus_float).astype(np.float64), k * multiplier)
    readback = dequantize(rescore, rescore_precision, ranges=ranges).astype(np.float64)
    for row, query in enumerate(queries):
        scores = readback[shortlist[row]] @ query
        order = np.lexsort((shortlist[row], -scores))[:k]
        np.testing.assert_array_equal(hits.indices[row], shortlist[row][order])
        np.testing.assert_array_equal(hits.scores[row], scores[order])


def test_int8_first_pass_rescored_with_float():
    rng = np.random.default_rng(9)
    corpus = rng.standard_normal((2000, 32)).astype(np.float32)
    ranges = embedding_ranges(corpus)
    codes = quantize(corpus, "int8", ranges=ranges)
    queries = rng.standard_normal((3, 32)).astype(np.float32)
    hits = search(queries, codes, k=10, precision="int8", ranges=ranges, rescore=corpus, rescore_multiplier=200)
    # a shortlist of every row makes rescoring the plain float search
    np.testing.assert_array_equal(hits.indices, search(queries, corpus, k=10).indices)


def test_search_edges():
    corpus = tie_heavy_float(5, 4, 0)
    single = search(corpus[0], corpus, k=3)
    assert single.indices.shape == (3,) and single.indices[0] == 0
    assert search(corpus[:2], corpus, k=50).indices.shape == (2, 5)
    empty = search(corpus[:2], corpus[:0], k=5)
    assert empty.indices.shape == (2, 0) and empty.scores.shape == (2, 0)
    memmapped = search(corpus[:2], np.lib.format.open_memmap("/dev/shm/edgembed-search-test.npy", mode="w+",
                                                             dtype=np.float32, shape=corpus.shape), k=2)
    assert memmapped.indices.shape == (2, 2)
    Path("/dev/shm/edgembed-search-test.npy").unlink()


@pytest.mark.parametrize("call,error,message", [
    (lambda c, q: search(q, c.astype(np.int8), k=3), TypeError, "an array of int8 is precision 'int8' or 'binary'"),
    (lambda c, q: search(q, c, k=3, precision="int8"), TypeError, "int8 for precision 'int8'"),
    (lambda c, q: search(q, quantize(c, "int8", ranges=embedding_ranges(c)), k=3, precision="int8"),
     UsageError, "ranges=None is not valid: expected the \\(2, 8\\) ranges"),
    (lambda c, q: search(q[:, :4], c, k=3), UsageError, "vectors of 8 columns, like the corpus"),
    (lambda c, q: search(q, c, k=0), UsageError, "k=0 is not valid"),
    (lambda c, q: search(q, c, k=3, precision="int4"), UsageError, "unknown precision 'int4'"),
    (lambda c, q: search(q, quantize(c, "binary"), k=3, precision="binary",
                         rescore=c[:5]), UsageError, "the corpus's 40 rows"),
    (lambda c, q: search(quantize(q, "binary"), quantize(c, "binary"), k=3, precision="binary", rescore=c),
     TypeError, "float vectors when rescoring"),
    (lambda c, q: search(q, quantize(c, "binary"), k=3, precision="binary", rescore=c, rescore_precision="binary"),
     UsageError, "'float32', 'int8' or 'uint8'"),
    (lambda c, q: search(q * np.nan, c, k=3), UsageError, "NaN"),
    (lambda c, q: search(q, np.where(np.arange(40)[:, None] == 13, np.inf, c).astype(np.float32), k=3),
     UsageError, r"corpus\[13\]"),
    (lambda c, q: search(q, c.tolist(), k=3), TypeError, "a numpy array"),
])
def test_search_errors(call, error, message):
    rng = np.random.default_rng(0)
    corpus, queries = rng.standard_normal((40, 8)).astype(np.float32), rng.standard_normal((2, 8)).astype(np.float32)
    with pytest.raises(error, match=message):
        call(corpus, queries)


def test_the_default_shortlist_grows_as_the_dimensions_shrink():
    from edgembed.runtime.search import default_rescore_multiplier

    assert [default_rescore_multiplier(d) for d in (64, 256, 384, 768, 1024)] == [48, 12, 8, 4, 4]
    rng = np.random.default_rng(7)
    corpus = rng.standard_normal((3000, 384)).astype(np.float32)
    queries = rng.standard_normal((6, 384)).astype(np.float32)
    binary, rescore = quantize(corpus, "binary"), corpus
    default = search(queries, binary, k=10, precision="binary", rescore=rescore)
    explicit = search(queries, binary, k=10, precision="binary", rescore=rescore, rescore_multiplier=8)
    np.testing.assert_array_equal(default.indices, explicit.indices)
    assert not np.array_equal(default.indices, search(queries, binary, k=10, precision="binary", rescore=rescore,
                                                      rescore_multiplier=4).indices)


def test_export_ranges_are_widened_by_a_share_of_their_span():
    from edgembed.export.embedding_ranges import widened

    bounds = np.array([[-0.2, 0.0, -0.9], [0.2, 0.5, 0.95]], dtype=np.float32)
    np.testing.assert_allclose(widened(bounds, 0.2, normalized=True), [[-0.28, -0.1, -1.0], [0.28, 0.6, 1.0]],
                               atol=1e-6)
    np.testing.assert_allclose(widened(bounds, 0.2, normalized=False)[:, 2], [-1.27, 1.32], atol=1e-6)
