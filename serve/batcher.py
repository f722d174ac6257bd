"""Dynamic batching, TEI's design: requests queue in arrival order; one batcher takes as many as fit the padded-token
budget, runs them as one batch on a worker thread and hands each request its own rows back.

There is no wait timer: when the engine is free and a request is queued, its batch starts at once, so a lone
request on an idle server pays no batching delay. Under load, clients answered by the batch that just ended
come back within a few event-loop passes: while fewer than half the texts in play (queued, plus the batch just
answered) are queued, the batcher yields to the event loop, and stops at the first pass that brings no
request. A batch takes at most that half, so closed-loop clients settle into two equal cohorts: one cohort's
HTTP round trip overlaps the other's inference instead of leaving the engine idle (docs/serve.md).
"""
from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from edgembed.runtime import Embedder, EncodePlan, TokenizedTexts

from .errors import BACKEND, ApiError
from .metrics import Metrics

# Event-loop passes the batcher yields at most while answered clients come back (each pass must bring one).
MAX_ARRIVAL_PASSES = 100


@dataclass(frozen=True)
class Embedded:
    """One request's vectors and where its time went."""

    vectors: np.ndarray
    queue_seconds: float
    inference_seconds: float


@dataclass
class _Entry:
    tokens: TokenizedTexts
    plan: EncodePlan  # the request's options, checked against the model: its rows are post-processed with them
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
        self._last_texts = 0  # texts of the batch answered last: their clients may be on their way back

    def start(self) -> None:
        """Start the batching task on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        # One thread: a batch already spreads over every core (the Embedder's threads and streams).
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="edgembed-batch")
        self._task = self._loop.create_task(self._run(), name="edgembed-batcher")

    async def embed(self, tokens: TokenizedTexts, plan: EncodePlan) -> Embedded:
        """Queue a request's texts and wait for their vectors (post-processed with the normalize, dim and precision
        of its `plan`, which Embedder.check made)."""
        if self._closing or self._task is None or self._task.done():
            raise ApiError("the server is shutting down", BACKEND, status=503)
        future = self._loop.create_future()
        self._queue.append(_Entry(tokens, plan, future, time.perf_counter(), max(tokens.lengths)))
        self._metrics.set("te_queue_size", len(self._queue))
        self._wakeup.set()
        return await future

    def health(self) -> str | None:
        """None when healthy, else why not: the batcher stopped, or a batch has run past the health timeout (not
        started yet is healthy: an app mounted in another starts batching with its first request)."""
        if self._task is not None and self._task.done():
            return "the batcher is not running"
        since = self._running_since
        if since is not None and time.monotonic() - since > self._health_timeout:
            return (f"a batch has been running for {time.monotonic() - since:.0f} s, longer than the health "
                    f"timeout of {self._health_timeout:g} s: the engine looks hung")
        return None

    @property
    def started(self) -> bool:
        return self._task is not None

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
            await self._let_arrivals_in()
            entries = self._next_batch()
            if entries:
                await self._run_batch(entries)
                self._last_texts = sum(len(entry.tokens) for entry in entries)

    def _half_in_play(self) -> int:
        """Half the texts queued or just answered (at least 1): the size of one of two equal cohorts."""
        queued = sum(len(entry.tokens) for entry in self._queue)
        return max(1, -(-(queued + self._last_texts) // 2))

    async def _let_arrivals_in(self) -> None:
        """Yield to the event loop while fewer than half the texts in play are queued and requests keep arriving."""
        for _ in range(MAX_ARRIVAL_PASSES):
            if sum(len(entry.tokens) for entry in self._queue) >= self._half_in_play():
                return
            before = len(self._queue)
            await asyncio.sleep(0)
            if len(self._queue) == before:
                return

    def _next_batch(self) -> list[_Entry]:
        """Queued entries, oldest first, while their texts padded to the longest fit the token budget (the
        first always goes, however long); entries whose client went away are dropped."""
        entries: list[_Entry] = []
        longest = texts = tokens = 0
        cohort = self._half_in_play()
        while self._queue and texts < cohort:
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
        """On the worker thread: one run for the whole batch, then each request's rows with its own options
        (one postprocess call per distinct set of options: per request it cost more than the run of a query)."""
        vectors = self._model.embed(merged, normalize=False, max_batch_tokens=self._max_batch_tokens)
        bounds, start = [], 0
        groups: dict[tuple, list[int]] = {}
        for index, entry in enumerate(entries):
            bounds.append((start, start + len(entry.tokens)))
            start += len(entry.tokens)
            options = entry.plan.options  # given ranges by identity: the server's are always None, the export's
            groups.setdefault((entry.plan.normalize, options.dim, options.precision, id(options.ranges)),
                              []).append(index)
        outputs: list[np.ndarray] = [None] * len(entries)  # type: ignore[list-item]
        for members in groups.values():
            rows = np.concatenate([np.arange(*bounds[i]) for i in members])
            done = self._model.postprocess_with(vectors[rows], entries[members[0]].plan)
            offset = 0
            for i in members:
                size = bounds[i][1] - bounds[i][0]
                outputs[i] = done[offset:offset + size]
                offset += size
        return outputs
