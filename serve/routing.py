"""What the routes see of HTTP: a request read whole, a response, and routing by path and method.

The connection (serve/http.py) reads a request's body before the route runs, so the routes never wait on the
network; a body over --payload-limit is not kept, the request only says how large it was.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("edgembed.serve")


@dataclass(slots=True)
class Request:
    """An HTTP request: method, path (no query), lowercase headers, the body; `body_too_large` is the size
    that went over the payload limit (the body is then empty)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    body_too_large: int | None = None


@dataclass(slots=True)
class Response:
    body: bytes | str = b""
    status_code: int = 200
    media_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.body, str):
            self.body = self.body.encode("utf-8")


Handler = Callable[[Request], Awaitable[Response]]


class App:
    """`routes` maps a path to {method: handler}; `not_found(request)` and `not_allowed(request)` answer the rest;
    HEAD runs the GET handler (the connection sends the head only)."""

    def __init__(self, routes: dict[str, dict[str, Handler]], *, not_found: Handler, not_allowed: Handler) -> None:
        self.routes = routes
        self.not_found = not_found
        self.not_allowed = not_allowed

    async def handle(self, request: Request) -> Response:
        methods = self.routes.get(request.path)
        method = "GET" if request.method == "HEAD" else request.method
        handler = self.not_found if methods is None else methods.get(method, self.not_allowed)
        try:
            return await handler(request)
        except Exception:  # the handlers answer every error themselves; this is a bug of ours
            log.exception("internal error on %s %s", request.method, request.path)
            return Response(b"internal error", 500, "text/plain; charset=utf-8")
