"""`edgembed serve` (argparse only; the handler imports the web stack). Every flag also reads an environment
variable, EDGEMBED_ and the flag's name in capitals (--max-batch-tokens: EDGEMBED_MAX_BATCH_TOKENS); the command
line wins."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edgembed.runtime.commands import add_load_options, load_embedder
from edgembed.runtime.errors import UsageError

from .settings import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    HEALTH_TIMEOUT,
    MAX_BATCH_TOKENS,
    MAX_CLIENT_BATCH_SIZE,
    MAX_CONCURRENT_REQUESTS,
    PAYLOAD_LIMIT,
)

ENV_PREFIX = "EDGEMBED_"
MODEL_DIR_ENV = "EDGEMBED_MODEL_DIR"
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def add_parsers(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "serve", help="serve an export over HTTP: OpenAI /v1/embeddings and TEI /embed, with dynamic batching",
        description="Serve an exported model over HTTP with the OpenAI embeddings API and the Hugging Face "
                    "text-embeddings-inference API; concurrent requests are batched together. Needs the server "
                    'extra: pip install "edgembed[server]".')
    parser.add_argument("model_dir", metavar="OUT", type=Path, nargs="?", default=os.environ.get(MODEL_DIR_ENV),
                        help=f"directory written by 'edgembed export' [env: {MODEL_DIR_ENV}]")
    add_load_options(parser)
    parser.set_defaults(variant="auto", backend="auto")  # the fastest faithful pair of this CPU
    for action in parser._actions:
        if action.dest in ("variant", "backend"):
            action.help = action.help.replace("(default: edgembed's order for this CPU)", "(default here: auto)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to bind (default {DEFAULT_HOST}: this machine only; 0.0.0.0 for every "
                             "interface)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 picks a free one")
    parser.add_argument("--model-id", metavar="NAME",
                        help="the model name clients send and get back (default: the export's source model id)")
    parser.add_argument("--max-concurrent-requests", type=int, default=MAX_CONCURRENT_REQUESTS, metavar="N",
                        help=f"requests in flight before new ones get 429 (default {MAX_CONCURRENT_REQUESTS})")
    parser.add_argument("--max-batch-tokens", type=int, default=MAX_BATCH_TOKENS, metavar="N",
                        help=f"padded tokens per batch of merged requests (default {MAX_BATCH_TOKENS})")
    parser.add_argument("--max-client-batch-size", type=int, default=MAX_CLIENT_BATCH_SIZE, metavar="N",
                        help=f"texts per request before it gets 422 (default {MAX_CLIENT_BATCH_SIZE})")
    parser.add_argument("--payload-limit", type=int, default=PAYLOAD_LIMIT, metavar="BYTES",
                        help=f"request body size before it gets 413 (default {PAYLOAD_LIMIT})")
    parser.add_argument("--api-key", metavar="KEY",
                        help="require 'Authorization: Bearer KEY' on every route but /health and /metrics; prefer "
                             "the environment variable, which other users cannot read in the process list")
    parser.add_argument("--auto-truncate", type=_truth, default=True, metavar="BOOL",
                        help="cut texts over the model's limit when a request does not say truncate (default "
                             "true; false: such texts get 422)")
    parser.add_argument("--health-timeout", type=float, default=HEALTH_TIMEOUT, metavar="SECONDS",
                        help=f"a batch running longer makes /health answer 503 (default {HEALTH_TIMEOUT:g})")
    _read_environment(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from .server import require_web_stack, serve, warm_up
    from .settings import ServeSettings

    require_web_stack()  # before loading a model, so a missing extra fails at once
    if args.model_dir is None:
        raise UsageError(f"no model: pass OUT (a directory written by 'edgembed export') or set {MODEL_DIR_ENV}")
    model = load_embedder(args)
    settings = ServeSettings(
        host=args.host, port=args.port, model_id=args.model_id or "",
        max_concurrent_requests=args.max_concurrent_requests, max_batch_tokens=args.max_batch_tokens,
        max_client_batch_size=args.max_client_batch_size, payload_limit=args.payload_limit, api_key=args.api_key,
        auto_truncate=args.auto_truncate, health_timeout=args.health_timeout)
    warm_up(model)
    print(f"edgembed serve: {model.variant} on {model.backend}, served as {settings.model_id or model.model_id!r}"
          + ("; API key required" if settings.api_key else ""), file=sys.stderr, flush=True)
    return serve(model, settings)


def _read_environment(parser: argparse.ArgumentParser) -> None:
    """Each --flag's default from EDGEMBED_FLAG when set (argparse converts a string default with the flag's type,
    so a bad value is reported like a bad flag)."""
    for action in parser._actions:
        longs = [option for option in action.option_strings if option.startswith("--")]
        if not longs or longs[0] == "--help":
            continue
        name = ENV_PREFIX + longs[0][2:].upper().replace("-", "_")
        if name in os.environ:
            action.default = os.environ[name]
        action.help = (action.help or "") + f" [env: {name}]"


def _truth(word: str) -> bool:
    if word.lower() in TRUE_WORDS:
        return True
    if word.lower() in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {word!r}")
