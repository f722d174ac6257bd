"""Options as values: LoadOptions and EncodeOptions are checked when made, Embedder.check adds the model's checks once
per call, and the keyword API and the values share their defaults."""
from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

from edgembed.runtime import Embedder, EncodeOptions, LoadOptions, defaults
from edgembed.runtime import embedder as embedder_module
from edgembed.runtime.errors import UnknownChoiceError

TEXTS = ["hello world", "a sentence that is a little longer than the first one", "x " * 200]


@pytest.fixture(scope="module")
def model(fast_export):
    return Embedder.load(fast_export, variant="fp32", backend="onnxruntime")


@pytest.mark.parametrize("make,error,message", [
    (lambda: EncodeOptions(batch_size=0), ValueError, "batch_size=0 is not valid: expected an integer of at least 1"),
    (lambda: EncodeOptions(max_batch_tokens=True), TypeError, "max_batch_tokens is bool"),
    (lambda: EncodeOptions(normalize="yes"), TypeError, "normalize is str"),
    (lambda: EncodeOptions(precision="int4"), ValueError, "unknown precision 'int4'"),
    (lambda: EncodeOptions(ranges=np.zeros((2, 4))), ValueError, "ranges apply to int8 and uint8 only"),
    (lambda: LoadOptions(verify="md5"), ValueError, "verify='md5' is not valid: expected 'size' or 'sha256'"),
    (lambda: LoadOptions(threads=0), ValueError, "threads=0 is not valid"),
    (lambda: LoadOptions(streams=0), ValueError, "streams=0 is not valid: expected an integer of at least 1"),
    (lambda: LoadOptions(auto_min_cosine=1.5), ValueError, "auto_min_cosine=1.5 is not valid"),
    (lambda: LoadOptions(providers="CPUExecutionProvider"), TypeError, "providers is str"),
])
def test_a_bad_value_is_refused_when_the_options_are_made(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_options_are_frozen_values():
    options = EncodeOptions(dim=16)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.dim = 8  # type: ignore[misc]
    assert options == EncodeOptions(dim=16) and hash(options) == hash(EncodeOptions(dim=16))
    assert LoadOptions(providers=["CPUExecutionProvider"]).providers == ("CPUExecutionProvider",)


@pytest.mark.parametrize("method,values", [(Embedder.load, LoadOptions), (Embedder.encode, EncodeOptions)])
def test_the_keywords_and_the_values_share_their_defaults(method, values):
    fields = {field.name: field.default for field in dataclasses.fields(values)}
    keywords = {name: parameter.default for name, parameter in inspect.signature(method).parameters.items()
                if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name != "compile"}
    assert keywords == fields
    assert (EncodeOptions().batch_size, EncodeOptions().max_batch_tokens) == (defaults.BATCH_SIZE,
                                                                           defaults.MAX_BATCH_TOKENS)


def test_encode_with_values_is_encode_with_keywords(fast_export, model):
    options = EncodeOptions(prompt_name="query", dim=16, batch_size=2)
    expected = model.encode(TEXTS, prompt_name="query", dim=16, batch_size=2)
    np.testing.assert_array_equal(model.encode_with(TEXTS, options), expected)
    np.testing.assert_array_equal(model.encode_with(TEXTS, model.check(options)), expected)
    tokens = model.tokenize_with(TEXTS, options)
    np.testing.assert_array_equal(model.embed_with(tokens, options), expected)
    raw = model.embed(tokens, normalize=False)
    np.testing.assert_array_equal(model.postprocess_with(raw, options), model.postprocess(raw, dim=16))
    loaded = Embedder.load_with(fast_export, LoadOptions(variant="fp32", backend="onnxruntime", streams=1))
    assert loaded.describe() == Embedder.load(fast_export, variant="fp32", backend="onnxruntime",
                                              streams=1).describe()


@pytest.mark.parametrize("call,calls", [
    (lambda m: m.encode(TEXTS, dim=16), 1),
    (lambda m: m.encode(TEXTS, chunking=True, chunk_overlap=4), 1),
    (lambda m: m.encode_query(TEXTS), 1),
    (lambda m: m.embed(m.tokenize(TEXTS), precision="binary"), 2),  # tokenize, then embed
])
def test_every_call_checks_its_options_against_the_model_once(model, monkeypatch, call, calls):
    checked = []

    def counting(options, *args, **kwargs):
        checked.append(options)
        return plan_encode(options, *args, **kwargs)

    plan_encode = embedder_module.plan_encode
    monkeypatch.setattr(embedder_module, "plan_encode", counting)
    call(model)
    assert len(checked) == calls


def test_a_plan_passed_on_is_not_checked_again(model, monkeypatch):
    plan = model.check(EncodeOptions(dim=16))
    monkeypatch.setattr(embedder_module, "plan_encode", None)  # any check from here on would fail
    assert model.encode_with(TEXTS, plan).shape == (len(TEXTS), 16)


def test_the_model_dependent_checks_name_what_this_model_allows(model):
    with pytest.raises(ValueError, match="dim=33 is not valid: expected an integer from 1 to 32"):
        model.check(EncodeOptions(dim=33))
    with pytest.raises(UnknownChoiceError, match="unknown prompt name 'nope'; available: 'document', 'query'"):
        model.check(EncodeOptions(prompt_name="nope"))
    with pytest.raises(ValueError, match="chunk_overlap=999 is not valid"):
        model.check(EncodeOptions(chunking=True, chunk_overlap=999))
    plan = model.check(EncodeOptions(prompt_name="query", chunking=True))
    assert plan.prefix == model.prompts["query"] and plan.chunk_overlap == model.max_length // 8
    assert plan.normalize is model.manifest.normalize and plan.dimension == model.dimension
    with pytest.raises(TypeError, match="options is dict"):
        model.encode_with(TEXTS, {"dim": 16})
