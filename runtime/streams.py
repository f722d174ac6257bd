"""Batch-level parallelism: with several texts, run several batches at once on the one compiled graph.

On the 2-core machines measured (benchmarks/README.md), two batches in flight beat one batch on two threads: the
short element-wise ops between the MatMuls spend as much time handing work to the second thread as they save by
it. The batches run on the graph the latency path uses, so the weights are in memory once (docs/memory.md).
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .cpu import physical_cores
from .errors import InvalidArgumentError

Item = TypeVar("Item")
# Padded tokens per batch on a stream (fewer when max_batch_tokens / streams is smaller). Small batches keep
# their activations in the CPU's caches and the streams evenly loaded (docs/notes/2026-12-06-figures-from-code.md).
STREAM_BATCH_TOKENS = 512


def resolve_streams(streams: int | None, threads: int | None, on_cpu: bool) -> tuple[int, int]:
    """(streams, threads shared by them) for a load() call (LoadOptions checked both are at least 1);
    `streams=None` picks 2 on a CPU with 2+ cores, else 1."""
    total = threads or physical_cores()
    if streams is None:
        return (2 if on_cpu and total >= 2 else 1), total
    if streams > total:
        raise InvalidArgumentError("streams", streams, f"at most the {total} threads (each stream needs one)",
                                   "pass fewer streams, or more threads")
    return streams, total


class Streams:
    """`count` worker threads (started on first use) that run items at the same time."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._workers: ThreadPoolExecutor | None = None
        self._workers_pid = 0  # a forked child has none of its parent's threads and starts its own
        self._lock = threading.Lock()
        self._closed = False

    def map(self, work: Callable[[Item], None], items: Sequence[Item],
            on_done: Callable[[Item], None] | None = None) -> None:
        """work(item) for every item, `count` at a time; the first exception is raised here.
        `on_done(item)` runs on the calling thread as items finish, in their order."""
        with self._lock:
            if not self._closed and (self._workers is None or self._workers_pid != os.getpid()):
                self._workers = ThreadPoolExecutor(self.count, thread_name_prefix="edgembed-stream")
                self._workers_pid = os.getpid()
            workers = self._workers
        results = None
        if workers is not None:
            try:
                results = workers.map(work, items)
            except RuntimeError:  # close() shut the workers down since
                results = None
        # A call that raced close() finishes on its own thread rather than start threads nobody would stop.
        for item, _ in zip(items, results if results is not None else map(work, items)):
            if on_done is not None:
                on_done(item)

    def close(self) -> None:
        """Stop the worker threads after the work already handed to them."""
        with self._lock:
            workers, self._workers, self._closed = self._workers, None, True
        if workers is not None and self._workers_pid == os.getpid():
            workers.shutdown(wait=True)
