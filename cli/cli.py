"""The `edgembed` command. Each package declares its own subcommands (argparse only, nothing heavy imported);
the handlers import what they need when they run."""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from edgembed import __version__
from edgembed.runtime.errors import EdgembedError, UsageError

# Modules with an add_parsers(subparsers) function, in the order their commands are listed by --help.
COMMAND_MODULES = ("edgembed.export.cli", "edgembed.commands", "edgembed.jobs.search_cli",
                   "edgembed.jobs.cli", "edgembed.evaluation.cli", "edgembed.serve.cli")
EXIT_USAGE = 2
EXIT_FAILURE = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgembed", description="ModernBERT embeddings without PyTorch.")
    parser.add_argument("--version", action="version", version=f"edgembed {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an error (for bug reports)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parsers(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in words  # accepted before or after the command
    parser = build_parser()
    args, extra = parser.parse_known_args([word for word in words if word != "--debug"])
    # argparse will not give a positional list the words that follow options ("embed OUT --variant q8 TEXT")
    if extra and getattr(args, "accepts_extra_texts", False) and not any(word.startswith("-") for word in extra):
        args.texts = [*args.texts, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.handler(args)
    except Exception as exc:  # every failure ends as one line; --debug keeps the traceback
        if debug:
            raise
        return _report(args.command, exc)
    except KeyboardInterrupt:
        print(f"edgembed {args.command}: interrupted", file=sys.stderr)
        return 130


def _report(command: str, exc: Exception) -> int:
    if isinstance(exc, BrokenPipeError):  # the reader went away (| head): not an error of ours
        return EXIT_FAILURE
    if isinstance(exc, EdgembedError):
        print(f"edgembed {command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILURE
    if isinstance(exc, (OSError, MemoryError)):
        print(f"edgembed {command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"edgembed {command}: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback "
          "and report it)", file=sys.stderr)
    return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
