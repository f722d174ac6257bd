"""Dynamic batching, TEI's design: requests queue in arrival order; one batcher takes as many as fit the padded-token
budget, runs them as one batch on a worker thread and hands each request its own rows back.

There is no wait timer: when the engine is free and a request is queued, its batch starts at once, so a lone
request on an idle server pays no batching delay. The next batch is formed the moment the engine frees, from
everything that queued while it ran (TEI prepares it when the running one starts; here forming it is a few
microseconds of list work, and forming it later lets more requests in).
"""
from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from edgembed.runtime import Embedder, TokenizedTexts

from .errors import BACKEND, ApiError
from .metrics import Metrics


@dataclass(frozen=True)
class Embedded:
    """One request's vectors and where its time went."""

    vectors: np.ndarray
    queue_seconds: float
    inference_seconds: float


@dataclass
class _Entry:
    tokens: TokenizedTexts
    normalize: bool | None
    dim: int | None
    precision: str
    future: asyncio.Future
    queued_at: float
    longest: int


class Batcher:
    """Owns the queue, the batching task and the one worker thread that calls the Embedder."""

    def __init__(self, model: Embedder, *, max_batch_tokens: int, metrics: Metrics, health_timeout: float) -> None:
        self._model = model
        self._max_batch_tokens = max_batch_tokens
        self._metrics = metrics
        self._health_timeout = health_timeout
        self._queue: collections.deque[_Entry] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._running_since: float | None = None
        self._closing = False

    def start(self) -> None:
        """Start the batching task on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        # One thread: a batch already spreads over every core (the Embedder's threads and streams).
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="edgembed-batch")
        self._task = self._loop.create_task(self._run(), name="edgembed-batcher")

    async def embed(self, tokens: TokenizedTexts, *, normalize: bool | None, dim: int | None,
                    precision: str = "float32") -> Embedded:
        """Queue a request's texts and wait for their vectors (post-processed with its normalize, dim and
        precision)."""
        if self._closing or self._task is None or self._task.done():
            raise ApiError("the server is shutting down", BACKEND, status=503)
        future = self._loop.create_future()
        self._queue.append(_Entry(tokens, normalize, dim, precision, future, time.perf_counter(), max(tokens.lengths)))
        self._metrics.set("te_queue_size", len(self._queue))
        self._wakeup.set()
        return await future

    def health(self) -> str | None:
        """None when healthy, else why not: the batcher stopped, or a batch has run past the health timeout."""
        if self._task is None or self._task.done():
            return "the batcher is not running"
        since = self._running_since
        if since is not None and time.monotonic() - since > self._health_timeout:
            return (f"a batch has been running for {time.monotonic() - since:.0f} s, longer than the health "
                    f"timeout of {self._health_timeout:g} s: the engine looks hung")
        return None

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def close(self) -> None:
        """Finish every queued request, then stop."""
        self._closing = True
        if self._task is not None:
            self._wakeup.set()
            await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    async def _run(self) -> None:
        while True:
            while not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            entries = self._next_batch()
            if entries:
                await self._run_batch(entries)

    def _next_batch(self) -> list[_Entry]:
        """Queued entries, oldest first, while their texts padded to the longest fit the token budget (the
        first always goes, however long); entries whose client went away are dropped."""
        entries: list[_Entry] = []
        longest = texts = tokens = 0
        while self._queue:
            entry = self._queue[0]
            if entry.future.done():  # cancelled: the client disconnected
                self._queue.popleft()
                self._metrics.increment("te_request_failure", err="dropped")
                continue
            padded = max(longest, entry.longest) * (texts + len(entry.tokens))
            if entries and padded > self._max_batch_tokens:
                break
            self._queue.popleft()
            entries.append(entry)
            longest, texts = max(longest, entry.longest), texts + len(entry.tokens)
            tokens += entry.tokens.token_count
        self._metrics.set("te_queue_size", len(self._queue))
        if entries:
            self._metrics.observe("te_batch_next_size", texts)
            self._metrics.observe("te_batch_next_tokens", tokens)
        return entries

    async def _run_batch(self, entries: list[_Entry]) -> None:
        merged = entries[0].tokens if len(entries) == 1 else TokenizedTexts.concat([e.tokens for e in entries])
        started = time.perf_counter()
        self._running_since = time.monotonic()
        try:
            outputs = await self._loop.run_in_executor(self._executor, self._embed, merged, entries)
        except Exception as exc:  # the engine failed: every request of the batch gets a 424, the server goes on
            self._metrics.increment("te_request_failure", err="inference")
            error = ApiError(f"inference failed: {type(exc).__name__}: {exc}", BACKEND)
            for entry in entries:
                if not entry.future.done():
                    entry.future.set_exception(error)
            return
        finally:
            self._running_since = None
        inference = time.perf_counter() - started
        for entry, vectors in zip(entries, outputs):
            if not entry.future.done():
                entry.future.set_result(Embedded(vectors, started - entry.queued_at, inference))

    def _embed(self, merged: TokenizedTexts, entries: list[_Entry]) -> list[np.ndarray]:
        """On the worker thread: one run for the whole batch, then each request's rows with its own options."""
        vectors = self._model.embed(merged, normalize=False, max_batch_tokens=self._max_batch_tokens)
        outputs, start = [], 0
        for entry in entries:
            stop = start + len(entry.tokens)
            outputs.append(self._model.postprocess(vectors[start:stop], normalize=entry.normalize, dim=entry.dim,
                                                   precision=entry.precision))
            start = stop
        return outputs
