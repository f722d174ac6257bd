"""The few ASGI pieces the server needs (routing by method and path, a request, a response, the lifespan), on
uvicorn directly: Starlette's router, middleware and request objects cost a few percent of the 64-client
throughput (docs/serve.md, "Framework choice").
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("edgembed.serve")


class ClientDisconnect(Exception):
    """The client closed the connection before its request body was read."""


class Request:
    """An HTTP request: method, path, lowercase headers, and the body as it arrives."""

    __slots__ = ("method", "path", "headers", "_receive")

    def __init__(self, scope: dict, receive: Callable[[], Awaitable[dict]]) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        # several values of one header are joined with commas, as HTTP allows
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            headers[key] = f"{headers[key]},{text}" if key in headers else text
        self.headers = headers
        self._receive = receive

    async def stream(self) -> AsyncIterator[bytes]:
        """The body's chunks; ClientDisconnect when the client goes away first."""
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return


@dataclass
class Response:
    body: bytes | str = b""
    status_code: int = 200
    media_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.body, str):
            self.body = self.body.encode("utf-8")

    async def send(self, send: Callable[[dict], Awaitable[None]]) -> None:
        raw = [] if "content-length" in self.headers else [(b"content-length", str(len(self.body)).encode())]
        if self.media_type is not None:
            raw.append((b"content-type", self.media_type.encode()))
        raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status_code, "headers": raw})
        await send({"type": "http.response.body", "body": self.body})


Handler = Callable[[Request], Awaitable[Response]]


class App:
    """An ASGI application: `routes` maps a path to {method: handler}; `not_found(request)` and
    `not_allowed(request)` answer the rest; `lifespan()` runs around the server's life."""

    def __init__(self, routes: dict[str, dict[str, Handler]], *, not_found: Handler, not_allowed: Handler,
                 lifespan: Callable[[], contextlib.AbstractAsyncContextManager]) -> None:
        self.routes = routes
        self.not_found = not_found
        self.not_allowed = not_allowed
        self.lifespan = lifespan

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "http":
            request = Request(scope, receive)
            methods = self.routes.get(request.path)
            method = "GET" if request.method == "HEAD" else request.method
            handler = self.not_found if methods is None else methods.get(method, self.not_allowed)
            try:
                response = await handler(request)
            except Exception:  # the handlers answer every error themselves; this is a bug of ours
                log.exception("internal error on %s %s", request.method, request.path)
                response = Response(b"internal error", 500, "text/plain; charset=utf-8")
            if request.method == "HEAD":
                response = Response(b"", response.status_code, response.media_type,
                                    {**response.headers, "content-length": str(len(response.body))})
            await response.send(send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive, send) -> None:
        await receive()  # lifespan.startup
        manager = self.lifespan()
        try:
            await manager.__aenter__()
        except Exception as exc:
            log.exception("edgembed serve: startup failed")
            await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown: uvicorn has answered every request it accepted
        try:
            await manager.__aexit__(None, None, None)
        except Exception as exc:
            log.exception("edgembed serve: shutdown failed")
            await send({"type": "lifespan.shutdown.failed", "message": f"{type(exc).__name__}: {exc}"})
            return
        await send({"type": "lifespan.shutdown.complete"})
