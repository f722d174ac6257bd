"""The HTTP server: Granian (hyper underneath), embedded on this process's event loop, so the model is loaded
once. hyper bounds a request head in size and in time (--header-timeout) and frames requests strictly; the app
bounds the body (--payload-limit, --body-timeout) and decides auth before reading it; this file maps the settings
and gives SIGTERM its drain deadline (--graceful-timeout). Why Granian: docs/serve.md, "Which HTTP server".
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable

from .settings import ServeSettings

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
BACKLOG = 2048
# The largest request head hyper buffers before it answers 431 (its read buffer, which bodies stream through).
MAX_HEAD_BYTES = 64 * 1024
# Granian's own log lines go to stderr, errors only (it announces its embedded mode as experimental: we chose it,
# docs/serve.md says why); the access log stays off.
GRANIAN_LOGGING = {
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stderr"},
                 "access": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stderr"}},
}
Announce = Callable[[str, int], None]


def run_granian(app, settings: ServeSettings, announce: Announce, stop: threading.Event | None = None) -> int:
    """Serve `app` until SIGTERM/SIGINT (or `stop`, set from another thread); `announce(host, port)` once it
    accepts connections. Returns the exit status."""
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server.embed import Server

    port = settings.port or free_port(settings.host)
    check_port_free(settings.host, port)
    http1 = HTTP1Settings(header_read_timeout=int(settings.header_timeout * 1000), keep_alive=True,
                          max_buffer_size=MAX_HEAD_BYTES)
    server = Server(app, address=settings.host, port=port, interface=Interfaces.ASGI, http=HTTPModes.http1,
                    websockets=False, backlog=BACKLOG, http1_settings=http1, log_access=False,
                    log_level=LogLevels.error, log_dictconfig=GRANIAN_LOGGING)

    async def main() -> int:
        serving = asyncio.ensure_future(server.serve())
        with _stop_requests(stop) as stopping:
            await _announce_when_listening(settings.host, port, announce, serving)
            await asyncio.wait((serving, stopping), return_when=asyncio.FIRST_COMPLETED)
            if serving.done():
                if serving.exception() is not None:
                    print(f"edgembed serve: the HTTP server stopped: {serving.exception()}", file=sys.stderr,
                          flush=True)
                    return 1
                return 0
            server.stop()
            return await _drain(serving, settings.graceful_timeout)

    return _run_loop(main())


def check_port_free(host: str, port: int) -> None:
    """OSError when another process listens on host:port (bound as servers bind, so a port in TIME_WAIT is free)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def free_port(host: str) -> int:
    """A port nothing listens on now, for --port 0 (Granian does not report the port it bound)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _run_loop(main) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


@contextlib.contextmanager
def _stop_requests(stop: threading.Event | None):
    """A future that completes on SIGTERM or SIGINT (main thread only) or when `stop` is set from another thread;
    after the first signal, a second one ends the process."""
    loop = asyncio.get_running_loop()
    stopping = loop.create_future()
    installed = []
    if sys.platform != "win32" and threading.current_thread() is threading.main_thread():
        for sig in HANDLED_SIGNALS:
            loop.add_signal_handler(sig, _stop_once, loop, sig, stopping)
            installed.append(sig)
    if stop is not None:
        loop.run_in_executor(None, stop.wait).add_done_callback(
            lambda _: stopping.done() or stopping.set_result(None))
    try:
        yield stopping
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        if stop is not None:
            stop.set()  # lets the waiting thread end


def _stop_once(loop: asyncio.AbstractEventLoop, sig: int, stopping: asyncio.Future) -> None:
    print(f"edgembed serve: {signal.Signals(sig).name}: no new connections; answering the requests in progress, "
          "then exiting", file=sys.stderr, flush=True)
    loop.remove_signal_handler(sig)
    if not stopping.done():
        stopping.set_result(None)


async def _announce_when_listening(host: str, port: int, announce: Announce, serving: asyncio.Future) -> None:
    """Call `announce` once the port accepts connections (Granian binds inside its own start-up)."""
    while not serving.done():
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        announce(host, port)
        return


async def _drain(serving: asyncio.Future, timeout: float) -> int:
    """Wait for the server to finish the requests in progress, at most `timeout` seconds; past it, a process
    serving from its main thread ends at once (what is still in progress is cut), one on a thread cancels."""
    try:
        await asyncio.wait_for(asyncio.shield(serving), timeout)
        return 0
    except asyncio.TimeoutError:
        print(f"edgembed serve: still busy after {timeout:g} s (--graceful-timeout); exiting", file=sys.stderr,
              flush=True)
    if threading.current_thread() is threading.main_thread():
        logging.shutdown()
        os._exit(0)
    serving.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await serving
    return 0
