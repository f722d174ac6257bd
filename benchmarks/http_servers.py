"""How the benchmarks start one ASGI app under each HTTP server (the same app object, the server's own settings).

"edgembed" is `edgembed serve`'s runner (Granian's embeddable server on this process's loop); "granian" is
Granian's CLI (a worker process); "uvicorn" runs on httptools and uvloop; "hypercorn" on h11.
"""
from __future__ import annotations

import sys

SERVERS = ("edgembed", "granian", "uvicorn", "hypercorn")


def server_command(name: str, port: int, factory: str, *, limit: int = 30) -> list[str]:
    """The command that serves the app `factory` ("module:function", called with no argument) on 127.0.0.1:port;
    `limit` seconds for the head, keep-alive and drain timeouts where the server has them."""
    python = sys.executable
    if name == "edgembed":
        module, function = factory.split(":")
        script = (f"import sys; from {module} import {function}; from edgembed.serve.servers import run_granian; "
                  "from edgembed.serve.settings import ServeSettings; "
                  f"sys.exit(run_granian({function}(), ServeSettings(port={port}, header_timeout={limit}, "
                  f"graceful_timeout={limit}), lambda host, port: None))")
        return [python, "-c", script]
    if name == "granian":
        return [python, "-m", "granian", "--interface", "asgi", "--factory", "--host", "127.0.0.1", "--port",
                str(port), "--http", "1", "--no-ws", "--http1-header-read-timeout", str(limit * 1000),
                "--workers-kill-timeout", str(limit), "--log-level", "warning", factory]
    if name == "uvicorn":
        return [python, "-m", "uvicorn", "--factory", "--host", "127.0.0.1", "--port", str(port), "--http",
                "httptools", "--loop", "uvloop", "--timeout-keep-alive", str(limit), "--timeout-graceful-shutdown",
                str(limit), "--no-access-log", "--log-level", "warning", factory]
    if name == "hypercorn":
        return [python, "-m", "hypercorn", "--bind", f"127.0.0.1:{port}", "--keep-alive", str(limit),
                "--graceful-timeout", str(limit), "--read-timeout", str(limit), f"{factory}()"]
    raise ValueError(f"unknown server {name!r}; known: {', '.join(SERVERS)}")
