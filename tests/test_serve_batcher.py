"""The server's batcher in process, on the real fast export: merging within the token budget, each request's own
options, a lone request alone, an engine failure answered as 424, clients that went away skipped."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fast_model import build_fast_export
from serve_process import FailingEmbedder

from edgembed.runtime import Embedder, EncodeOptions
from edgembed.serve.batcher import Batcher
from edgembed.serve.errors import ApiError
from edgembed.serve.metrics import Metrics

ATOL = 2e-6


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    out = build_fast_export(tmp_path_factory.mktemp("batcher") / "out", openvino=False)
    return Embedder.load(out, variant="fp32", backend="onnxruntime")


def _batch_sizes(metrics: Metrics) -> tuple[int, float]:
    """(batches run, texts in them) from the te_batch_next_size histogram."""
    return metrics.histogram("te_batch_next_size")


def run(coroutine):
    return asyncio.run(coroutine)


def test_queued_requests_merge_within_the_padded_token_budget(model):
    requests = [(["a short one"], None, None), (["two texts here", "and the second"], False, 16),
                (["x " * 20], True, None), (["tiny"], None, 16), (["last request of the queue", "b", "c"], None, None)]
    tokens = [model.tokenize(texts) for texts, _, _ in requests]
    budget = 3 * max(max(t.lengths) for t in tokens[:2])  # the first two requests fit, the third does not

    async def scenario():
        metrics = Metrics(model.max_length)
        batcher = Batcher(model, max_batch_tokens=budget, metrics=metrics, health_timeout=60)
        batcher.start()
        # all queued before the batcher first runs: it sees them together
        results = await asyncio.gather(*(batcher.embed(t, model.check(EncodeOptions(normalize=n, dim=d)))
                                         for t, (_, n, d) in zip(tokens, requests)))
        await batcher.close()
        return results, metrics

    results, metrics = run(scenario())
    for result, (texts, normalize, dim) in zip(results, requests):
        np.testing.assert_allclose(result.vectors, model.encode(texts, normalize=normalize, dim=dim), atol=ATOL)
    expected_batches, longest, count = 0, 0, 0  # the budget rule, recomputed: padded = longest x texts
    for t in tokens:
        if count and max(longest, max(t.lengths)) * (count + len(t)) > budget:
            expected_batches, longest, count = expected_batches + 1, 0, 0
        longest, count = max(longest, max(t.lengths)), count + len(t)
    batches, texts = _batch_sizes(metrics)
    assert batches == expected_batches + 1 and texts == sum(len(t) for t in tokens)
    assert 1 < batches < len(requests)  # merged, and split by the budget


def test_a_lone_request_runs_alone_at_once(model):
    async def scenario():
        metrics = Metrics(model.max_length)
        batcher = Batcher(model, max_batch_tokens=16384, metrics=metrics, health_timeout=60)
        batcher.start()
        result = await batcher.embed(model.tokenize(["only me"]), model.check(EncodeOptions()))
        await batcher.close()
        return result, metrics

    result, metrics = run(scenario())
    assert _batch_sizes(metrics) == (1, 1.0)
    np.testing.assert_allclose(result.vectors, model.encode(["only me"]), atol=ATOL)


def test_closed_loop_clients_settle_into_two_equal_cohorts(model):
    """Clients that send again as soon as they are answered: each batch takes half the texts in play, so one half
    makes its HTTP round trip while the other runs, and no batch is a lone straggler."""
    clients, rounds = 8, 6
    texts = [model.tokenize([f"client {number} asks again"]) for number in range(clients)]

    async def scenario():
        metrics = Metrics(model.max_length)
        batcher = Batcher(model, max_batch_tokens=16384, metrics=metrics, health_timeout=60)
        batcher.start()

        async def client(number: int) -> None:
            for _ in range(rounds):
                await batcher.embed(texts[number], model.check(EncodeOptions()))

        await asyncio.gather(*(client(number) for number in range(clients)))
        await batcher.close()
        return metrics

    metrics = run(scenario())
    batches, total = _batch_sizes(metrics)
    assert total == clients * rounds
    assert batches == 2 * rounds
    assert 'te_batch_next_size_bucket{le="4"} 12' in metrics.render()  # all 12 at most 4, so all exactly 4


def test_an_engine_failure_is_424_for_its_batch_and_the_batcher_goes_on(model):
    failing = FailingEmbedder.load(model.directory, variant="fp32", backend="onnxruntime")

    async def scenario():
        metrics = Metrics(failing.max_length)
        batcher = Batcher(failing, max_batch_tokens=16384, metrics=metrics, health_timeout=60)
        batcher.start()
        with pytest.raises(ApiError) as caught:
            await batcher.embed(failing.tokenize(["boom"]), failing.check(EncodeOptions()))
        after = await batcher.embed(failing.tokenize(["fine"]), failing.check(EncodeOptions()))
        healthy = batcher.health()
        await batcher.close()
        return caught.value, after, healthy, metrics

    error, after, healthy, metrics = run(scenario())
    assert error.status == 424 and error.error_type == "backend" and "ran out of memory" in error.message
    np.testing.assert_allclose(after.vectors, model.encode(["fine"]), atol=ATOL)
    assert healthy is None and metrics.value("te_request_failure", err="inference") == 1


def test_requests_whose_client_left_are_skipped(model):
    async def scenario():
        metrics = Metrics(model.max_length)
        batcher = Batcher(model, max_batch_tokens=16384, metrics=metrics, health_timeout=60)
        batcher.start()
        gone = asyncio.ensure_future(batcher.embed(model.tokenize(["gone"]), model.check(EncodeOptions())))
        await asyncio.sleep(0)  # queued
        gone.cancel()
        kept = await batcher.embed(model.tokenize(["kept"]), model.check(EncodeOptions()))
        await batcher.close()
        return kept, metrics

    kept, metrics = run(scenario())
    np.testing.assert_allclose(kept.vectors, model.encode(["kept"]), atol=ATOL)
    assert metrics.value("te_request_failure", err="dropped") == 1
    assert _batch_sizes(metrics) == (1, 1.0)


def test_close_answers_everything_queued(model):
    async def scenario():
        batcher = Batcher(model, max_batch_tokens=8, metrics=Metrics(model.max_length), health_timeout=60)
        batcher.start()
        plain = model.check(EncodeOptions())
        waiting = [asyncio.ensure_future(batcher.embed(model.tokenize([f"text {n}"]), plain)) for n in range(5)]
        await asyncio.sleep(0)
        await batcher.close()
        return await asyncio.wait_for(asyncio.gather(*waiting), 10)

    for n, result in enumerate(run(scenario())):
        np.testing.assert_allclose(result.vectors, model.encode([f"text {n}"]), atol=ATOL)
