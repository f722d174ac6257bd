"""The server's limits and names, with TEI's defaults."""
from __future__ import annotations

from dataclasses import dataclass

from edgembed.runtime import defaults
from edgembed.runtime.errors import InvalidArgumentError, check_positive_int

DEFAULT_HOST = "127.0.0.1"  # an edge box's server is reached through a proxy or by local services
DEFAULT_PORT = 8080
MAX_CONCURRENT_REQUESTS = 512
MAX_BATCH_TOKENS = defaults.MAX_BATCH_TOKENS  # the runtime's, which is TEI's too
MAX_CLIENT_BATCH_SIZE = 32
PAYLOAD_LIMIT = 2_000_000
# A batch running longer than this makes /health answer 503: the engine is taken for hung.
HEALTH_TIMEOUT = 60.0
# Seconds a client gets to send a request's head (an idle keep-alive connection waits as long for its next one),
# then its body; and what SIGTERM's drain gets.
HEADER_TIMEOUT = 30.0
BODY_TIMEOUT = 60.0
GRACEFUL_TIMEOUT = 30.0


@dataclass(frozen=True)
class ServeSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    model_id: str = ""  # the served name; empty: the manifest's source model id
    max_concurrent_requests: int = MAX_CONCURRENT_REQUESTS
    max_batch_tokens: int = MAX_BATCH_TOKENS
    max_client_batch_size: int = MAX_CLIENT_BATCH_SIZE
    payload_limit: int = PAYLOAD_LIMIT
    api_key: str | None = None
    auto_truncate: bool = True
    health_timeout: float = HEALTH_TIMEOUT
    header_timeout: float = HEADER_TIMEOUT
    body_timeout: float = BODY_TIMEOUT
    graceful_timeout: float = GRACEFUL_TIMEOUT

    def __post_init__(self) -> None:
        for name in ("max_concurrent_requests", "max_batch_tokens", "max_client_batch_size", "payload_limit"):
            check_positive_int(name.replace("_", "-"), getattr(self, name))
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise InvalidArgumentError("port", self.port, "an integer from 0 to 65535 (0: any free port)")
        for name in ("health_timeout", "header_timeout", "body_timeout", "graceful_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InvalidArgumentError(name.replace("_", "-"), value, "a number of seconds above 0")
        if self.api_key is not None and not self.api_key.strip():
            raise InvalidArgumentError("api-key", self.api_key, "a non-empty key", "leave it unset to serve "
                                       "without authentication")
