"""The inference service without HTTP (TEI's `Infer`): permits, tokenization, batching and metrics in one place,
on the real fast export."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fast_model import build_fast_export

from edgembed.runtime import Embedder
from edgembed.serve.errors import OVERLOADED, VALIDATION, ApiError
from edgembed.serve.protocol import EmbedRequest
from edgembed.serve.service import EmbeddingService
from edgembed.serve.settings import ServeSettings

ATOL = 2e-6


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    out = build_fast_export(tmp_path_factory.mktemp("service") / "out", openvino=False)
    return Embedder.load(out, variant="fp32", backend="onnxruntime")


def _serve(model: Embedder, work, **settings):
    async def session():
        service = EmbeddingService(model, ServeSettings(**settings))
        service.start()
        try:
            return await work(service)
        finally:
            await service.close()

    return asyncio.run(session())


def test_an_answer_is_encode_and_is_counted_with_its_timings(model):
    texts = ["first text", "a second, longer text for the batch"]

    async def work(service: EmbeddingService):
        result = await service.embed(EmbedRequest(texts, False, True, None, normalize=True, dim=16))
        return result, service.render_metrics()

    result, metrics = _serve(model, work)
    np.testing.assert_allclose(result.vectors, model.encode(texts, dim=16, normalize=True), atol=ATOL)
    assert result.tokens.token_count == model.tokenize(texts).token_count
    assert result.total_seconds >= result.inference_seconds > 0
    assert 'te_request_success{method="batch"} 1' in metrics and "te_request_duration_count 1" in metrics


def test_requests_past_the_concurrency_limit_are_refused_with_retry_after(model):
    async def work(service: EmbeddingService):
        requests = [service.embed(EmbedRequest([f"text {n}"], True, True)) for n in range(3)]
        return await asyncio.gather(*requests, return_exceptions=True), service.render_metrics()

    answers, metrics = _serve(model, work, max_concurrent_requests=1)
    refused = [a for a in answers if isinstance(a, ApiError)]
    assert refused and all(a.error_type == OVERLOADED and a.headers["Retry-After"] == "1" for a in refused)
    assert any(not isinstance(a, Exception) for a in answers)
    assert 'te_request_count{method="single"} 3' in metrics


def test_a_text_over_the_limit_without_truncation_names_its_index_and_size(model):
    async def work(service: EmbeddingService):
        with pytest.raises(ApiError) as refused:
            await service.embed(EmbedRequest(["short", "word " * 500], False, False))
        return refused.value

    error = _serve(model, work)
    assert error.error_type == VALIDATION and error.status == 422 and error.code == "input_too_long"
    assert "index 1" in error.message and f"max_length={model.max_length}" in error.message


def test_a_failure_is_counted_under_teis_label(model):
    async def work(service: EmbeddingService):
        service.record_failure(ApiError("too many", VALIDATION, code="too_many_inputs"))
        service.record_failure(ApiError("busy", OVERLOADED))
        return service.render_metrics()

    metrics = _serve(model, work)
    assert 'te_request_failure{err="batch_size"} 1' in metrics and 'te_request_failure{err="overloaded"} 1' in metrics
