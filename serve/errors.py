"""Every error of `edgembed serve`, in one place.

ApiError is what a client gets: an HTTP status, TEI's `error_type` and, for the OpenAI routes, a `param` and a
`code`. The routes render it in their API's shape (see responses.py). Status codes follow TEI: empty 400,
validation and tokenization 422, body too large 413, overloaded 429, engine failure 424, unhealthy 503.
"""
from __future__ import annotations

from edgembed.runtime.errors import EdgembedError

# TEI's error_type values, and the statuses TEI gives them.
EMPTY, VALIDATION, TOKENIZER, OVERLOADED, BACKEND, UNHEALTHY = (
    "empty", "validation", "tokenizer", "overloaded", "backend", "unhealthy")
# Ours, where TEI answers with a bare status.
UNAUTHORIZED, PAYLOAD_TOO_LARGE, NOT_FOUND, METHOD_NOT_ALLOWED, TIMEOUT = (
    "unauthorized", "payload_too_large", "not_found", "method_not_allowed", "timeout")
STATUS = {EMPTY: 400, VALIDATION: 422, TOKENIZER: 422, OVERLOADED: 429, BACKEND: 424, UNHEALTHY: 503,
          UNAUTHORIZED: 401, PAYLOAD_TOO_LARGE: 413, NOT_FOUND: 404, METHOD_NOT_ALLOWED: 405, TIMEOUT: 408}


class ServeError(EdgembedError):
    """Base class of the server's errors."""


class ApiError(ServeError):
    """An answer to a client that is not a success. `status` defaults to TEI's status for `error_type`."""

    def __init__(self, message: str, error_type: str = VALIDATION, *, status: int | None = None,
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.status = status or STATUS[error_type]
        self.param = param
        self.code = code
        self.headers = headers or {}
