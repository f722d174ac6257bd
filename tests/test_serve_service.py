"""The inference service without HTTP (TEI's `Infer`): permits, tokenization, batching and metrics in one place,
on the real fast export."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fast_model import build_fast_export

from edgembed.runtime import Embedder, EncodeOptions
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
        result = await service.embed(EmbedRequest(texts, False, EncodeOptions(normalize=True, dim=16)))
        return result, service.render_metrics()

    result, metrics = _serve(model, work)
    np.testing.assert_allclose(result.vectors, model.encode(texts, dim=16, normalize=True), atol=ATOL)
    assert result.tokens.token_count == model.tokenize(texts).token_count
    assert result.total_seconds >= result.inference_seconds > 0
    assert 'te_request_success{method="batch"} 1' in metrics and "te_request_duration_count 1" in metrics


def test_requests_past_the_concurrency_limit_are_refused_with_retry_after(model):
    async def work(service: EmbeddingService):
        requests = [service.embed(EmbedRequest([f"text {n}"], True, EncodeOptions(normalize=True))) for n in range(3)]
        return await asyncio.gather(*requests, return_exceptions=True), service.render_metrics()

    answers, metrics = _serve(model, work, max_concurrent_requests=1)
    refused = [a for a in answers if isinstance(a, ApiError)]
    assert refused and all(a.error_type == OVERLOADED and a.headers["Retry-After"] == "1" for a in refused)
    assert any(not isinstance(a, Exception) for a in answers)
    assert 'te_request_count{method="single"} 3' in metrics


def test_a_text_over_the_limit_without_truncation_names_its_index_and_size(model):
    async def work(service: EmbeddingService):
        with pytest.raises(ApiError) as refused:
            await service.embed(EmbedRequest(["short", "word " * 500], False,
                                             EncodeOptions(truncate=False, normalize=True)))
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


def test_the_app_mounted_in_another_starlette_app_serves_without_its_own_lifespan(model):
    """A mounted app's lifespan never runs (Starlette does not forward it): batching starts with the first request."""
    import threading

    import httpx
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    from edgembed.serve import create_app
    from edgembed.serve.servers import run_granian

    async def home(request):
        return PlainTextResponse("the user's own app")

    parent = Starlette(routes=[Route("/", home), Mount("/embeddings-service", create_app(model))])
    stop, listening = threading.Event(), []
    thread = threading.Thread(target=run_granian, args=(parent, ServeSettings(port=0),
                                                         lambda host, port: listening.append(port), stop), daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if listening:
                break
            threading.Event().wait(0.02)
        url = f"http://127.0.0.1:{listening[0]}"
        assert httpx.get(url + "/").text == "the user's own app"
        assert httpx.get(url + "/embeddings-service/health").status_code == 200
        answer = httpx.post(url + "/embeddings-service/embed", json={"inputs": ["mounted"]}, timeout=60)
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(answer.json(), model.encode(["mounted"], normalize=True), atol=ATOL)
    finally:
        stop.set()
        thread.join(30)
