"""Progress lines of the export: numbered steps with their time and the peak memory so far, and a heartbeat
that speaks up when a step has been silent for HEARTBEAT_SECONDS."""
from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

HEARTBEAT_SECONDS = 30.0
GB = 2**30


def peak_rss() -> int | None:
    """The most memory this process (or a finished child of it) has held resident so far, in bytes."""
    try:
        import resource
    except ImportError:  # not on Linux or macOS
        return None
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) * unit


def current_rss() -> int | None:
    """The memory this process holds resident now, in bytes (Linux; None elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def _cpu_seconds() -> float:
    """CPU time of every thread of this process and of its finished children."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def memory_summary() -> str:
    """'RSS 2.1 GB, peak 5.7 GB' with what this platform can tell."""
    parts = []
    now, peak = current_rss(), peak_rss()
    if now is not None:
        parts.append(f"RSS {now / GB:.1f} GB")
    if peak is not None:
        parts.append(f"peak {peak / GB:.1f} GB")
    return ", ".join(parts) or "memory unknown"


class Progress:
    """Passes lines to `sink` from any thread, one at a time, and remembers when the last one went out.

    `status(text)` records where a long step is (e.g. "312 of 1124 texts") without printing; the heartbeat
    prints it when the step has been silent long enough.
    """

    def __init__(self, sink: Callable[[str], None]) -> None:
        self.sink, self.lock = sink, threading.Lock()
        self.last_line = time.monotonic()
        self.current: str | None = None

    def __call__(self, line: str) -> None:
        with self.lock:
            self.sink(line)
            self.last_line = time.monotonic()

    def status(self, text: str | None) -> None:
        self.current = text


class Steps:
    """Numbered steps: `[n/N] message` when each starts, `done in X s (CPU, RSS, peak so far)` when it ends, and
    while it runs a line at least every HEARTBEAT_SECONDS. Use as a context manager (it owns a thread)."""

    def __init__(self, total: int, progress: Progress, heartbeat: float = HEARTBEAT_SECONDS) -> None:
        self.total, self.number, self.progress, self.heartbeat = total, 0, progress, heartbeat
        self.started, self.cpu_started = time.perf_counter(), _cpu_seconds()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="export-heartbeat", daemon=True)

    def __enter__(self) -> Steps:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        self.thread.join()

    def next(self, message: str) -> None:
        self.finish()
        self.number += 1
        self.started, self.cpu_started = time.perf_counter(), _cpu_seconds()
        self.progress.status(None)
        self.progress(f"[{self.number}/{self.total}] {message}")

    def finish(self) -> None:
        if self.number:
            cpu = _cpu_seconds() - self.cpu_started
            seconds = time.perf_counter() - self.started
            self.progress(f"      done in {seconds:.1f} s (CPU {cpu:.0f} s; {memory_summary()})")

    def _beat(self) -> None:
        while not self.stopped.wait(1.0):
            if self.number and time.monotonic() - self.progress.last_line >= self.heartbeat:
                where = self.progress.current or "working"
                self.progress(f"      ... {where} ({time.perf_counter() - self.started:.0f} s into this step, "
                              f"{memory_summary()})")
