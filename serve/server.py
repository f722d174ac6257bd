"""Build and run the server: the routes (app.py) on the HTTP server of servers.py.

On SIGTERM the listening socket closes at once, every request already begun is answered within
--graceful-timeout (the batcher keeps running until the last answer), then the process exits 0.
"""
from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Callable

from edgembed.runtime import Embedder
from edgembed.runtime.errors import MissingDependencyError

from .settings import ServeSettings

WARMUP_TEXTS = ["warm up", "warm up the second stream"]


def require_web_stack() -> None:
    for module in ("granian", "starlette", "orjson"):
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(module, "server")


def warm_up(model: Embedder) -> None:
    """One text (the latency path) and two (the streams' graph, compiled on first use) before the first client."""
    model.encode(WARMUP_TEXTS[:1])
    model.encode(WARMUP_TEXTS)


def serve(model: Embedder, settings: ServeSettings, *, stop: threading.Event | None = None,
          announce: Callable[[str, int], None] | None = None) -> int:
    """Serve until SIGTERM/SIGINT (or `stop`, from another thread); 0 when every accepted request was answered or
    the drain deadline passed. `announce(host, port)` runs once the port accepts connections."""
    from .app import create_app
    from .servers import run_granian

    require_web_stack()
    try:
        return run_granian(create_app(model, settings), settings, announce or _announce, stop)
    except OSError as exc:
        print(f"edgembed serve: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}; pick "
              "another --port (0 takes any free one) or stop the process that holds it", file=sys.stderr, flush=True)
        return 1


def _announce(host: str, port: int) -> None:
    print(f"edgembed serve: listening on http://{host}:{port}", file=sys.stderr, flush=True)
