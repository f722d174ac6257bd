"""The Embedder's API: keyword-only options, tokenize/embed as encode's two halves, stats, strict types."""
from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest

from edgembed.runtime import Embedder, EncodeStats, InputTooLongError, TokenizedTexts
from edgembed.runtime.backends import compile_graph

TEXTS = ["hello world", "a sentence that is a little longer than the first one", "", "x " * 200]


@pytest.fixture(scope="module")
def model(fast_export):
    return Embedder.load(fast_export, variant="fp32", backend="onnxruntime")


def test_options_are_keyword_only(fast_export, model):
    with pytest.raises(TypeError):
        Embedder.load(fast_export, "fp32")  # type: ignore[misc]
    with pytest.raises(TypeError):
        model.encode(["x"], 8)  # type: ignore[misc]


@pytest.mark.parametrize("method", ["encode_query", "encode_document"])
def test_query_and_document_forward_every_encode_option(model, method):
    encode = dict(inspect.signature(Embedder.encode).parameters)
    for name in ("prompt_name", "prompt"):
        encode.pop(name)
    assert dict(inspect.signature(getattr(Embedder, method)).parameters) == encode


def test_tokenize_then_embed_is_encode(model):
    tokens = model.tokenize(TEXTS, prompt_name="query")
    assert isinstance(tokens, TokenizedTexts) and len(tokens) == 4
    np.testing.assert_allclose(model.embed(tokens), model.encode(TEXTS, prompt_name="query"), atol=1e-6)
    merged = TokenizedTexts.concat([tokens[:2], tokens[2:]])
    np.testing.assert_allclose(model.embed(merged, dim=16), model.encode_query(TEXTS, dim=16), atol=1e-6)


def test_postprocess_finishes_unnormalized_vectors(model):
    raw = model.embed(model.tokenize(TEXTS), normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(model.postprocess(raw, dim=16), model.encode(TEXTS, dim=16), atol=1e-6)


def test_truncation_is_counted(fast_export):
    fresh = Embedder.load(fast_export, variant="fp32", backend="openvino")
    assert fresh.stats == EncodeStats()
    tokens = fresh.tokenize(TEXTS)
    assert tokens.truncated == (False, False, False, True) and tokens.lengths[3] == fresh.max_length
    fresh.encode(TEXTS)
    assert fresh.stats.texts == 4 and fresh.stats.truncated == 1 and fresh.stats.tokens == sum(tokens.lengths)
    with pytest.raises(InputTooLongError, match=r"index 3 has 40\d tokens, more than max_length=64"):
        fresh.tokenize(TEXTS, truncate=False)


def test_a_huge_text_is_cut_before_tokenizing_with_the_same_tokens(model):
    huge = "word " * 200_000
    assert model.tokenize([huge]).encodings[0].ids == model.tokenize([huge[:2000]]).encodings[0].ids
    spaced = " " * 100_000 + "the words come after the spaces"  # a cut here would lose them
    assert model.tokenize([spaced]).lengths[0] > 3


@pytest.mark.parametrize("call,error,message", [
    (lambda m: m.encode(["x"], prompt=5), TypeError, "prompt is int"),
    (lambda m: m.encode(["x"], truncate="no"), TypeError, "truncate is str"),
    (lambda m: m.encode(["x"], normalize="yes"), TypeError, "normalize is str"),
    (lambda m: m.encode(["x"], chunking=1), TypeError, "chunking is int"),
    (lambda m: m.encode(b"bytes"), TypeError, "texts is bytes"),
    (lambda m: m.encode(None), TypeError, "texts is NoneType"),
    (lambda m: m.encode(["x"], batch_size=True), TypeError, "batch_size is bool"),
    (lambda m: m.encode(["x"], dim=33), ValueError, "dim=33 is not valid: expected an integer from 1 to 32"),
    (lambda m: m.embed(["x"]), TypeError, "tokens is list"),
])
def test_strict_types_name_the_argument(model, call, error, message):
    with pytest.raises(error, match=message):
        call(model)


def test_a_dim_the_model_was_not_trained_for_warns_once(fast_export):
    fresh = Embedder.load(fast_export, variant="fp32", backend="onnxruntime")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fresh.encode(["x"], dim=16)  # trained
        fresh.encode(["x"], dim=8)
        fresh.encode(["x"], dim=8)
    assert [str(w.message) for w in caught] == [
        "dim=8 is not among the Matryoshka dims this export records ([32, 16]); a model not trained for it "
        "loses more than a Matryoshka model would"]


def test_the_compile_hook_sees_every_graph_compiled(fast_export):
    compiled = []

    def recording(name, path, output, options):
        compiled.append((name, path.name, options.threads, options.streams))
        return compile_graph(name, path, output, options)

    model = Embedder.load(fast_export, variant="fp32", backend="openvino", threads=2, streams=2, compile=recording)
    model.encode(["one", "two", "three"])
    assert compiled == [("openvino", "openvino_model.xml", 2, 2)]  # once: single texts and streams share it


def test_describe_names_the_choice_and_the_cpu(model):
    text = model.describe()
    assert text.startswith("fp32 on onnxruntime (requested)") and "int8 path of this CPU:" in text


@pytest.mark.parametrize("streams", [1, 2])
def test_on_batch_reports_every_batch_on_the_calling_thread(fast_export, streams):
    import threading

    model = Embedder.load(fast_export, variant="fp32", backend="onnxruntime", threads=2, streams=streams)
    texts = [f"text number {i} " + "word " * (i % 17) for i in range(150)]
    tokens = model.tokenize(texts)
    calls = []
    vectors = model.embed(tokens, batch_size=16,
                          on_batch=lambda count, used: calls.append((count, used, threading.get_ident())))
    np.testing.assert_array_equal(vectors, model.embed(tokens, batch_size=16))
    assert len(calls) >= 150 // 16
    assert sum(c for c, _, _ in calls) == 150 and sum(t for _, t, _ in calls) == tokens.token_count
    assert {thread for _, _, thread in calls} == {threading.get_ident()}
    with pytest.raises(TypeError, match="on_batch"):
        model.embed(tokens, on_batch="print")
