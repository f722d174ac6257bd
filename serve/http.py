"""HTTP/1.1 for `edgembed serve`, written on httptools' parser and the event loop's transports (uvloop when
installed).

Why not uvicorn: at 64 clients the server is CPU-bound on 2 cores, and uvicorn's ASGI cycle (a task, message
dicts, headers checked one by one, head and body in two writes) was the largest cost on the event loop
(docs/serve.md, "Why a server of our own"). Here a request is read whole, its route runs as one task, and the
answer leaves in one write.

What a connection does: keep-alive (HTTP/1.0 only when asked), pipelined requests answered in order, chunked
request bodies, `Expect: 100-continue`, a body over the payload limit refused with 413 as soon as its size is
known (its bytes are read and dropped, then the connection closes), 400 for a request that does not parse,
431 for a head over 64 KiB, idle connections closed after the keep-alive timeout, reading paused while the
client does not read its answers. A client that goes away cancels its request's task. On stop: the listening
socket closes, idle connections close, requests already begun (their bodies still arriving included) are
answered, then `serve` returns.
"""
from __future__ import annotations

import asyncio
import collections
import email.utils
import signal
import sys
import threading
import time
from http import HTTPStatus

import httptools

from .routing import App, Request, Response

# A connection with no request in progress is closed after this many seconds without a byte from its client.
KEEP_ALIVE_SECONDS = 60
MAX_HEAD_BYTES = 65536
# Requests read ahead of their answer on one connection (pipelining) before reading pauses.
MAX_PIPELINED = 16
STATUS_LINES = {status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode() for status in HTTPStatus}
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class HttpServer:
    """Serves `app` on host:port until stop(); `lifespan()` is entered before listening and left after the last
    answer."""

    def __init__(self, app: App, *, host: str, port: int, payload_limit: int, lifespan,
                 keep_alive: float | None = None) -> None:
        self.app = app
        self.host, self.port = host, port
        self.payload_limit = payload_limit
        self.keep_alive = KEEP_ALIVE_SECONDS if keep_alive is None else keep_alive
        self.started = False
        self._lifespan = lifespan
        self._connections: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._all_closed: asyncio.Event | None = None
        self._stopping = False
        self._date_second = -1
        self._date = b""

    def run(self) -> int:
        """Serve until SIGTERM or Ctrl-C (stop() from another thread); 0 once every accepted request is answered."""
        try:
            import uvloop
        except ImportError:
            return asyncio.run(self.serve())
        return uvloop.run(self.serve())

    def stop(self) -> None:
        """Stop accepting and finish the requests in progress (from any thread)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def serve(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._stop, self._all_closed = asyncio.Event(), asyncio.Event()
        async with self._lifespan():
            try:
                listener = await self._loop.create_server(lambda: _Connection(self), self.host, self.port,
                                                          backlog=2048)
            except OSError as exc:
                print(f"edgembed serve: cannot listen on {self.host}:{self.port}: {exc.strerror}; pick another "
                      "--port (0 takes any free one) or stop the process that holds it", file=sys.stderr, flush=True)
                return 1
            self.port = listener.sockets[0].getsockname()[1]
            print(f"edgembed serve: listening on http://{self.host}:{self.port}", file=sys.stderr, flush=True)
            self.started = True
            self._handle_signals()
            sweeper = self._loop.create_task(self._close_idle_connections())
            await self._stop.wait()
            listener.close()
            self._stopping = True
            for connection in list(self._connections):
                connection.close_when_idle()
            if self._connections:
                await self._all_closed.wait()
            sweeper.cancel()
        return 0

    # --- used by the connections ------------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping

    def date(self) -> bytes:
        """The Date header's value, formatted once a second."""
        now = int(time.time())
        if now != self._date_second:
            self._date_second, self._date = now, email.utils.formatdate(now, usegmt=True).encode()
        return self._date

    def opened(self, connection: _Connection) -> None:
        self._connections.add(connection)

    def closed(self, connection: _Connection) -> None:
        self._connections.discard(connection)
        if self._stopping and not self._connections:
            self._all_closed.set()

    # --- internals ----------------------------------------------------------------------------------------------

    def _handle_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # a test serving on a thread stops the server with stop()
        for sig in HANDLED_SIGNALS:
            self._loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: int) -> None:
        if self._stopping:
            if sig == signal.SIGINT:  # a second Ctrl-C stops waiting for the requests in progress
                for connection in list(self._connections):
                    connection.abort()
            return
        print(f"edgembed serve: {signal.Signals(sig).name}: no new connections; answering the requests in "
              "progress, then exiting", file=sys.stderr, flush=True)
        self._stop.set()

    async def _close_idle_connections(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, self.keep_alive / 4))
            deadline = self._loop.time() - self.keep_alive
            for connection in list(self._connections):
                connection.close_if_silent_since(deadline)


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, runs each one's route in order, writes the answers."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server._loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        # requests read and not yet answered, in order; a Response is an answer the connection itself gives
        self.pending: collections.deque[tuple[Request | Response, bool]] = collections.deque()
        self.task: asyncio.Task | None = None
        self.last_heard = self.loop.time()
        self.reading_paused = self.writing_paused = False
        self.finishing = False  # no new request is taken: answer those begun, then close
        self.parser_broken = False
        self._reset_message()

    def _reset_message(self) -> None:
        self.in_message = False
        self.ignored = False  # begun after the connection started finishing: read and dropped
        self.url = b""
        self.headers: dict[str, str] = {}
        self.head_bytes = 0
        self.head_too_large = False
        self.body: list[bytes] = []
        self.body_size = 0
        self.refused = False  # the body went over the limit: its 413 is on its way, its bytes are dropped

    # --- asyncio.Protocol ---------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.server.opened(self)
        if self.server.stopping:
            self.close_when_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.task is not None:
            self.task.cancel()  # the client is gone: its texts leave the batch queue
        self.pending.clear()
        self.server.closed(self)

    def data_received(self, data: bytes) -> None:
        self.last_heard = self.loop.time()
        if self.parser_broken:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.finishing = True  # the upgrade is ignored: what was read is answered over HTTP/1.1, then close
            self.parser_broken = True
            self._close_if_done()
        except httptools.HttpParserError as exc:
            self.parser_broken = True
            self.in_message = False
            if self.head_too_large:
                self._answer_directly(431, f"the request's head is over {MAX_HEAD_BYTES} bytes")
            else:
                self._answer_directly(400, f"malformed HTTP request: {exc}")

    def pause_writing(self) -> None:  # the client does not read its answers: stop reading its requests
        self.writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._update_reading()

    # --- httptools callbacks ------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reset_message()
        self.in_message = True
        self.ignored = self.finishing

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        # several values of one header are joined with commas, as HTTP allows
        self.headers[key] = f"{self.headers[key]},{text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        if self.ignored:
            return
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.server.payload_limit:
            self._refuse(int(declared))
        elif self.headers.get("expect", "").lower() == "100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        if self.refused or self.ignored:
            return
        self.body_size += len(chunk)
        if self.body_size > self.server.payload_limit:
            self.body.clear()
            self._refuse(self.body_size)
        else:
            self.body.append(chunk)

    def on_message_complete(self) -> None:
        self.in_message = False
        if self.refused or self.ignored:
            self._close_if_done()
            return
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self._queue(self._request(body, None), self.parser.should_keep_alive())

    # --- requests and answers -----------------------------------------------------------------------------------

    def _request(self, body: bytes, too_large: int | None) -> Request:
        method = self.parser.get_method().decode("ascii")
        path = httptools.parse_url(self.url).path.decode("latin-1")
        return Request(method, path, self.headers, body, too_large)

    def _refuse(self, size: int) -> None:
        """The body is over the limit: its route answers 413 now, the rest of the body is read and dropped, then
        the connection closes (a client waiting for 100-continue sends no body: it closes after the answer)."""
        self.refused = True
        if self.headers.get("expect", "").lower() == "100-continue":
            self.in_message = False
            self.parser_broken = True
        self._queue(self._request(b"", size), False)

    def _answer_directly(self, status: int, message: str) -> None:
        import orjson

        body = orjson.dumps({"error": message, "error_type": "validation"})
        self._queue(Response(body, status, "application/json"), False)

    def _queue(self, item: Request | Response, keep_alive: bool) -> None:
        if not keep_alive:
            self.finishing = True
        self.pending.append((item, keep_alive))
        if self.task is None:
            self._start_next()
        else:
            self._update_reading()

    def _start_next(self) -> None:
        item, keep_alive = self.pending.popleft()
        self.task = self.loop.create_task(self._answer(item, keep_alive))
        self._update_reading()

    async def _answer(self, item: Request | Response, keep_alive: bool) -> None:
        response = item if isinstance(item, Response) else await self.server.app.handle(item)
        if self.transport.is_closing():
            return
        if not keep_alive:
            self.pending.clear()  # the client said it was done, or the request could not be read to its end
        last = not self.pending and (self.finishing or self.server.stopping)
        head_only = isinstance(item, Request) and item.method == "HEAD"
        self.transport.write(self._encode(response, head_only=head_only, keep_alive=keep_alive and not last))
        self.task = None
        if not keep_alive or last:
            self.finishing = True
        if self.pending:
            self._start_next()
        else:
            self._update_reading()
            self._close_if_done()

    def _encode(self, response: Response, *, head_only: bool, keep_alive: bool) -> bytes:
        body = response.body
        parts = [STATUS_LINES.get(response.status_code) or f"HTTP/1.1 {response.status_code} \r\n".encode(),
                 b"date: ", self.server.date(), b"\r\ncontent-length: %d\r\n" % len(body)]
        if response.media_type is not None:
            parts.append(b"content-type: %s\r\n" % response.media_type.encode("latin-1"))
        for name, value in response.headers.items():
            parts.append(f"{name}: {value}\r\n".encode("latin-1"))
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        if not head_only:
            parts.append(body)
        return b"".join(parts)

    def _count_head(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > MAX_HEAD_BYTES:
            self.head_too_large = True
            raise ValueError("head too large")  # httptools stops parsing and raises HttpParserCallbackError

    def _update_reading(self) -> None:
        pause = self.writing_paused or len(self.pending) >= MAX_PIPELINED
        if pause != self.reading_paused and not self.transport.is_closing():
            self.reading_paused = pause
            (self.transport.pause_reading if pause else self.transport.resume_reading)()

    # --- closing ------------------------------------------------------------------------------------------------

    def _close_if_done(self) -> None:
        """Close once finishing and nothing is owed: no answer in progress or queued, no request half read."""
        if self.finishing and self.task is None and not self.pending and not self.in_message:
            self.transport.close()

    def close_when_idle(self) -> None:
        """The server stops: a request in progress (its body still arriving included) is answered first."""
        self.finishing = True
        self._close_if_done()

    def close_if_silent_since(self, deadline: float) -> None:
        if self.task is None and not self.pending and self.last_heard < deadline:
            self.transport.close()

    def abort(self) -> None:
        self.transport.abort()
