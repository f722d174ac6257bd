"""The inference service behind every route (TEI's `Infer`): the in-flight permits, tokenization, the batcher and
every metric, apart from HTTP. The routes (app.py) translate requests and answers; this file decides what runs.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from edgembed.runtime import (
    Embedder,
    EncodeOptions,
    EncodePlan,
    InputTooLongError,
    MissingRangesError,
    TokenizedTexts,
    UsageError,
)

from .batcher import Batcher
from .errors import (
    BACKEND,
    EMPTY,
    OVERLOADED,
    PAYLOAD_TOO_LARGE,
    TIMEOUT,
    TOKENIZER,
    UNAUTHORIZED,
    VALIDATION,
    ApiError,
)
from .metrics import Metrics
from .protocol import EmbedRequest
from .settings import ServeSettings

# Requests with more characters than this are tokenized on a thread, so a big batch does not stall the loop;
# short ones are tokenized inline (a thread hop costs more than tokenizing a query).
INLINE_TOKENIZE_CHARACTERS = 4096
# te_request_failure's err label for each error_type (TEI's labels where TEI has one).
FAILURE_LABELS = {EMPTY: "validation", VALIDATION: "validation", TOKENIZER: "tokenization", OVERLOADED: "overloaded",
                  BACKEND: "inference", UNAUTHORIZED: "unauthorized", PAYLOAD_TOO_LARGE: "payload",
                  TIMEOUT: "timeout"}


@dataclass(frozen=True)
class Embedding:
    """One request's vectors, its tokens and where its time went."""

    vectors: np.ndarray
    tokens: TokenizedTexts
    tokenization_seconds: float
    queue_seconds: float
    inference_seconds: float
    total_seconds: float


class EmbeddingService:
    """One model behind the limits of `settings`; safe to call from the event loop's coroutines."""

    def __init__(self, model: Embedder, settings: ServeSettings) -> None:
        self.model = model
        self.settings = settings
        self.metrics = Metrics(model.max_length)
        self.batcher = Batcher(model, max_batch_tokens=settings.max_batch_tokens, metrics=self.metrics,
                               health_timeout=settings.health_timeout)
        self.in_flight = 0

    def start(self) -> None:
        """Start batching on the running event loop (the app's lifespan, or the first request of an app mounted in
        another whose lifespan does not reach it)."""
        if not self.batcher.started:
            self.batcher.start()

    async def close(self) -> None:
        """Answer everything queued, then stop batching."""
        await self.batcher.close()

    async def embed(self, request: EmbedRequest) -> Embedding:
        """The vectors of `request` (in its precision, dimensions and normalization), or an ApiError."""
        started = time.perf_counter()
        single = "single" if request.single else "batch"
        self.metrics.increment("te_request_count", method=single)
        if self.in_flight >= self.settings.max_concurrent_requests:
            raise ApiError(f"Model is overloaded: {self.in_flight} requests in flight, the limit "
                           f"(--max-concurrent-requests) is {self.settings.max_concurrent_requests}; retry shortly",
                           OVERLOADED, headers={"Retry-After": "1"})
        plan = self._plan(request.options)
        self.start()
        self.in_flight += 1
        try:
            tokens = await self.tokenize(request.texts, plan)
            tokenized = time.perf_counter()
            embedded = await self.batcher.embed(tokens, plan)
        finally:
            self.in_flight -= 1
        result = Embedding(embedded.vectors, tokens, tokenized - started, embedded.queue_seconds,
                           embedded.inference_seconds, time.perf_counter() - started)
        self._record_success(single, result)
        return result

    async def tokenize(self, texts: list[str], options: EncodeOptions | EncodePlan) -> TokenizedTexts:
        """The runtime's tokenization with the prompt and truncation of `options`, inline for short requests, on a
        thread for long ones."""
        def run() -> TokenizedTexts:
            return self.model.tokenize_with(texts, options)

        try:
            if sum(len(text) for text in texts) <= INLINE_TOKENIZE_CHARACTERS:
                return run()
            return await asyncio.get_running_loop().run_in_executor(None, run)
        except InputTooLongError as exc:
            raise ApiError(f"input at index {exc.index} {exc.size_phrase}; shorten it, or send truncate=true to "
                           "cut it", VALIDATION, param="input", code="input_too_long") from None
        except UsageError as exc:  # an unknown prompt_name, a text that is not valid Unicode
            raise ApiError(str(exc), VALIDATION) from None

    def similarity(self, vectors: np.ndarray) -> np.ndarray:
        """Scores of the first vector against the others, with the model's similarity function."""
        return self.model.similarity(vectors[:1], vectors[1:])[0].astype(np.float32)

    def health(self) -> str | None:
        """None when healthy, else why not (counted as a failure)."""
        problem = self.batcher.health()
        if problem is not None:
            self.metrics.increment("te_request_failure", err="unhealthy")
        return problem

    def record_failure(self, error: ApiError) -> None:
        """Count a refused request under TEI's err label for its kind."""
        label = "batch_size" if error.code == "too_many_inputs" else FAILURE_LABELS.get(error.error_type,
                                                                                       error.error_type)
        self.metrics.increment("te_request_failure", err=label)

    def render_metrics(self) -> str:
        self.metrics.set("te_queue_size", self.batcher.queued)
        return self.metrics.render()

    def _plan(self, options: EncodeOptions) -> EncodePlan:
        """The request's options checked against the model once, before it is queued: a 422 for what it cannot do
        (int8/uint8 codes need the export's ranges at this dim; a prompt_name must be the model's)."""
        try:
            return self.model.check(options)
        except MissingRangesError:
            size = options.dim or self.model.dimension
            raise ApiError(f"precision {options.precision!r} needs the int8 ranges measured at export for {size} "
                           f"dimensions (normalize={options.normalize}), and this export has none there; ask for "
                           "binary or float32, or serve an export made by this edgembed with that dimension in "
                           "its --matryoshka-dims", VALIDATION, param="precision", code="no_ranges") from None
        except UsageError as exc:  # an unknown prompt_name
            raise ApiError(str(exc), VALIDATION) from None

    def _record_success(self, method: str, result: Embedding) -> None:
        metrics = self.metrics
        metrics.increment("te_request_success", method=method)
        metrics.observe("te_request_duration", result.total_seconds)
        metrics.observe("te_request_tokenization_duration", result.tokenization_seconds)
        metrics.observe("te_request_queue_duration", result.queue_seconds)
        metrics.observe("te_request_inference_duration", result.inference_seconds)
        for length in result.tokens.lengths:
            metrics.observe("te_request_input_length", length)
