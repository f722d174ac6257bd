"""Run the app under uvicorn (httptools and uvloop when installed) until SIGTERM or Ctrl-C.

On SIGTERM the listening socket closes at once, every request already accepted is answered (the batcher keeps
running until uvicorn has sent the last response), then the process exits 0. uvicorn by itself re-raises the
signal after its graceful shutdown, which would end the process with status 143; `_Server` keeps the drain and
drops the re-raise.
"""
from __future__ import annotations

import contextlib
import importlib.util
import signal
import sys
import threading

from edgembed.runtime import Embedder

from .errors import ServerDependencyError
from .settings import ServeSettings

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Seconds an idle keep-alive connection stays open (uvicorn's default is 5): pooling clients keep theirs longer,
# and a connection the server closed first costs the client a failed send or a reconnect.
KEEP_ALIVE_SECONDS = 60
WARMUP_TEXTS = ["warm up", "warm up the second stream"]


def require_web_stack() -> None:
    for module in ("uvicorn", "orjson"):
        if importlib.util.find_spec(module) is None:
            raise ServerDependencyError(module)


def warm_up(model: Embedder) -> None:
    """One text (the latency path) and two (the streams' graph, compiled on first use) before the first client."""
    model.encode(WARMUP_TEXTS[:1])
    model.encode(WARMUP_TEXTS)


def build_server(model: Embedder, settings: ServeSettings, *, log_level: str = "warning"):
    """A uvicorn server for the app, not started (tests run it on a thread)."""
    require_web_stack()
    import uvicorn

    from .app import Server

    app = Server(model, settings).app()
    # no proxy-headers middleware: nothing here reads the client's address or scheme
    config = uvicorn.Config(app, host=settings.host, port=settings.port, lifespan="on", access_log=False,
                            log_level=log_level, server_header=False, proxy_headers=False,
                            timeout_keep_alive=KEEP_ALIVE_SECONDS,
                            loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
                            http="httptools" if importlib.util.find_spec("httptools") else "h11")
    return _make_server_class(uvicorn.Server)(config)


def serve(model: Embedder, settings: ServeSettings) -> int:
    """Serve until SIGTERM/SIGINT; 0 when every accepted request was answered."""
    server = build_server(model, settings)
    server.run()
    return 0 if server.started else 1


def _make_server_class(base):
    class _Server(base):
        """uvicorn's Server with a line naming the bound address (port 0 picks a free port) and with signals
        that stop it without re-raising."""

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                for server in self.servers:
                    for sock in server.sockets:
                        host, port = sock.getsockname()[:2]
                        print(f"edgembed serve: listening on http://{host}:{port}", file=sys.stderr, flush=True)

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self._stop) for sig in HANDLED_SIGNALS}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        def _stop(self, sig: int, frame) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True  # a second Ctrl-C stops waiting for in-flight requests
                return
            name = signal.Signals(sig).name
            print(f"edgembed serve: {name}: no new connections; answering the requests in flight, then exiting",
                  file=sys.stderr, flush=True)
            self.should_exit = True

    return _Server
