"""Start the real `edgembed serve` process on a free loopback port and stop it, for the server tests."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from edgembed.runtime import Embedder

LISTENING = re.compile(r"listening on (http://[\d.]+:\d+)")


@dataclass
class ServerProcess:
    process: subprocess.Popen
    url: str
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send `sig` and wait for the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(model_dir: Path | None, log: Path, *args: str, env: dict[str, str] | None = None,
                 timeout: float = 90) -> ServerProcess:
    """`python -m edgembed serve MODEL_DIR --port 0 ARGS...` (no MODEL_DIR: from the environment); returns once
    /health answers 200."""
    command = [sys.executable, "-m", "edgembed", "serve", *([str(model_dir)] if model_dir else []), "--port", "0",
               *args]
    environment = {**os.environ, **(env or {})}
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=environment)
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline and process.poll() is None:
        found = LISTENING.search(log.read_text(errors="replace"))
        if found:
            url = found.group(1)
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    return ServerProcess(process, url, log)
            except httpx.TransportError:
                pass
        time.sleep(0.05)
    process.kill()
    process.wait(10)
    raise RuntimeError(f"edgembed serve did not become healthy (exit {process.returncode}, listening on {url}):\n"
                       + log.read_text(errors="replace")[-3000:])


@contextlib.contextmanager
def serve_in_thread(model: Embedder, **settings) -> Iterator[str]:
    """The server on a thread of this process (so a test can hand it a patched Embedder); yields its URL."""
    from edgembed.serve.server import serve
    from edgembed.serve.settings import ServeSettings

    stop, listening = threading.Event(), []
    thread = threading.Thread(target=serve, args=(model, ServeSettings(port=0, **settings)),
                              kwargs={"stop": stop, "announce": lambda host, port: listening.append(port)},
                              daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not listening and time.monotonic() < deadline:
            time.sleep(0.02)
        assert listening, "the server did not start listening"
        yield f"http://127.0.0.1:{listening[0]}"
    finally:
        stop.set()
        thread.join(30)


class FailingEmbedder(Embedder):
    """A real Embedder whose engine fails on the next `failures` batches (one at first), as an engine that ran
    out of memory."""

    failures = 1

    def embed(self, tokens, **options):
        if self.failures:
            self.failures -= 1
            raise RuntimeError("the engine ran out of memory")
        return super().embed(tokens, **options)


class GatedEmbedder(Embedder):
    """A real Embedder whose embed() first waits for its gate: an engine busy or hung until the test releases it."""

    @classmethod
    def load(cls, *args, **kwargs) -> GatedEmbedder:
        model = super().load(*args, **kwargs)
        model.gate, model.entered = threading.Event(), threading.Event()
        return model

    def embed(self, tokens, **options):
        self.entered.set()
        self.gate.wait(60)
        return super().embed(tokens, **options)
