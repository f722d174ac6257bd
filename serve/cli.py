"""`edgembed serve` (argparse only; the handler imports the web stack). Every flag also reads an environment
variable, EDGEMBED_ and the flag's name in capitals (--max-batch-tokens: EDGEMBED_MAX_BATCH_TOKENS); the command
line wins."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edgembed.commands import LOAD_FLAGS, add_load_options, load_embedder
from edgembed.runtime.errors import UsageError

from .settings import (
    BODY_TIMEOUT,
    DEFAULT_HOST,
    DEFAULT_PORT,
    GRACEFUL_TIMEOUT,
    HEADER_TIMEOUT,
    HEALTH_TIMEOUT,
    MAX_BATCH_TOKENS,
    MAX_CLIENT_BATCH_SIZE,
    MAX_CONCURRENT_REQUESTS,
    PAYLOAD_LIMIT,
    ServeSettings,
)

ENV_PREFIX = "EDGEMBED_"
MODEL_DIR_ENV = "EDGEMBED_MODEL_DIR"
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve an export over HTTP: OpenAI /v1/embeddings and TEI /embed, with dynamic batching",
        description="Serve an exported model over HTTP with the OpenAI embeddings API and the Hugging Face "
                    "text-embeddings-inference API; concurrent requests are batched together. Needs the server "
                    'extra: pip install "edgembed[server]". Every option also reads the environment variable '
                    "EDGEMBED_ and its name in capitals (--max-batch-tokens: EDGEMBED_MAX_BATCH_TOKENS); the "
                    "command line wins.")
    parser.add_argument("model_dir", metavar="OUT", type=Path, nargs="?", default=os.environ.get(MODEL_DIR_ENV),
                        help=f"directory written by 'edgembed export' [env: {MODEL_DIR_ENV}]")
    add_load_options(parser, choice_default="auto")  # the fastest faithful pair of this CPU
    flags = list(LOAD_FLAGS)

    def option(flag: str, **kwargs) -> None:
        parser.add_argument(flag, **kwargs)
        flags.append(flag)

    option("--host", default=DEFAULT_HOST,
           help=f"address to bind (default {DEFAULT_HOST}: this machine only; 0.0.0.0 for every interface)")
    option("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 picks a free one")
    option("--model-id", metavar="NAME",
           help="the model name clients send and get back (default: the export's hub model id, or the export "
                "folder's name)")
    option("--max-concurrent-requests", type=int, default=MAX_CONCURRENT_REQUESTS, metavar="N",
           help=f"requests in flight before new ones get 429 (default {MAX_CONCURRENT_REQUESTS})")
    option("--max-batch-tokens", type=int, default=MAX_BATCH_TOKENS, metavar="N",
           help=f"padded tokens per batch of merged requests (default {MAX_BATCH_TOKENS})")
    option("--max-client-batch-size", type=int, default=MAX_CLIENT_BATCH_SIZE, metavar="N",
           help=f"texts per request before it gets 422 (default {MAX_CLIENT_BATCH_SIZE})")
    option("--payload-limit", type=int, default=PAYLOAD_LIMIT, metavar="BYTES",
           help=f"request body size before it gets 413 (default {PAYLOAD_LIMIT})")
    option("--api-key", metavar="KEY",
           help="require 'Authorization: Bearer KEY' on every route but /health and /metrics; prefer the "
                "environment variable, which other users cannot read in the process list")
    option("--auto-truncate", type=_truth, default=True, metavar="BOOL",
           help="cut texts over the model's limit when a request does not say truncate (default true; false: such "
                "texts get 422)")
    option("--health-timeout", type=float, default=HEALTH_TIMEOUT, metavar="SECONDS",
           help=f"a batch running longer makes /health answer 503 (default {HEALTH_TIMEOUT:g})")
    option("--header-timeout", type=float, default=HEADER_TIMEOUT, metavar="SECONDS",
           help=f"a request's head must arrive within this time, else the connection closes; an idle "
                f"connection waits as long for its next request (default {HEADER_TIMEOUT:g})")
    option("--body-timeout", type=float, default=BODY_TIMEOUT, metavar="SECONDS",
           help=f"a request's body must arrive within this time after its head, else 408 (default {BODY_TIMEOUT:g})")
    option("--graceful-timeout", type=float, default=GRACEFUL_TIMEOUT, metavar="SECONDS",
           help=f"on SIGTERM, requests in progress get this long to finish before the process exits (default "
                f"{GRACEFUL_TIMEOUT:g})")
    parser.set_defaults(**_environment_defaults(flags), handler=run)


def run(args: argparse.Namespace) -> int:
    from .app import served_name
    from .server import require_web_stack, serve, warm_up

    require_web_stack()  # before loading a model, so a missing extra fails at once
    settings = settings_from(args)
    with load_embedder(args) as model:
        warm_up(model)
        print(f"edgembed serve: {model.variant} on {model.backend}, served as {served_name(model, settings)!r}"
              + ("; API key required" if settings.api_key else ""), file=sys.stderr, flush=True)
        return serve(model, settings)


def settings_from(args: argparse.Namespace) -> ServeSettings:
    """The server's settings from parsed options (flags, else EDGEMBED_* variables, else the defaults)."""
    if args.model_dir is None:
        raise UsageError(f"no model: pass OUT (a directory written by 'edgembed export') or set {MODEL_DIR_ENV}")
    return ServeSettings(
        host=args.host, port=args.port, model_id=args.model_id or "",
        max_concurrent_requests=args.max_concurrent_requests, max_batch_tokens=args.max_batch_tokens,
        max_client_batch_size=args.max_client_batch_size, payload_limit=args.payload_limit, api_key=args.api_key,
        auto_truncate=args.auto_truncate, health_timeout=args.health_timeout, header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        graceful_timeout=args.graceful_timeout)


def options_from_environment() -> argparse.Namespace:
    """`edgembed serve`'s options from the EDGEMBED_* variables alone (for the app factory of other servers)."""
    parser = argparse.ArgumentParser(prog="edgembed serve")
    add_parsers(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve"])


def _environment_defaults(flags: list[str]) -> dict[str, str]:
    """EDGEMBED_FLAG for each --flag that has one set, as the flag's default (argparse converts a string default
    with the flag's type, so a bad value is reported like a bad flag)."""
    found = {}
    for flag in flags:
        name = ENV_PREFIX + flag[2:].upper().replace("-", "_")
        if name in os.environ:
            found[flag[2:].replace("-", "_")] = os.environ[name]
    return found


def _truth(word: str) -> bool:
    if word.lower() in TRUE_WORDS:
        return True
    if word.lower() in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {word!r}")
