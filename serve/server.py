"""Build and run the server: the routes (app.py) on the HTTP/1.1 connections of http.py.

On SIGTERM the listening socket closes at once, every request already begun is answered (the batcher keeps
running until the last answer is written), then the process exits 0.
"""
from __future__ import annotations

import importlib.util

from edgembed.runtime import Embedder

from .errors import ServerDependencyError
from .settings import ServeSettings

WARMUP_TEXTS = ["warm up", "warm up the second stream"]


def require_web_stack() -> None:
    for module in ("httptools", "orjson"):
        if importlib.util.find_spec(module) is None:
            raise ServerDependencyError(module)


def warm_up(model: Embedder) -> None:
    """One text (the latency path) and two (the streams' graph, compiled on first use) before the first client."""
    model.encode(WARMUP_TEXTS[:1])
    model.encode(WARMUP_TEXTS)


def build_server(model: Embedder, settings: ServeSettings):
    """The server for `model`, not started (tests run it on a thread)."""
    require_web_stack()
    from .app import Server
    from .http import HttpServer

    routes = Server(model, settings)
    return HttpServer(routes.app(), host=settings.host, port=settings.port, payload_limit=settings.payload_limit,
                      lifespan=routes.lifespan)


def serve(model: Embedder, settings: ServeSettings) -> int:
    """Serve until SIGTERM/SIGINT; 0 when every accepted request was answered."""
    return build_server(model, settings).run()
