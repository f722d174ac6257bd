"""The `edgembed` command: `export` (needs the export extra) and `embed` (runtime only)."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import EdgembedError


def _add_embed_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "embed", help="embed texts with an exported model and print JSON",
        description="Embed TEXT arguments (or one text per line on stdin) and print JSON.")
    parser.add_argument("model_dir", metavar="OUT", type=Path, help="directory written by 'edgembed export'")
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed (default: read stdin)")
    parser.add_argument("--variant", help="fp32, fp16, q8 or auto (default: q8 if exported, else fp32)")
    parser.add_argument("--backend", choices=["onnxruntime", "openvino", "auto"],
                        help="default: the first one installed; auto: the fastest faithful one")
    parser.add_argument("--prompt-name", help="a prompt stored in the manifest, e.g. query or document")
    parser.add_argument("--dim", type=int, help="keep the first DIM components (Matryoshka), then normalize")
    parser.add_argument("--max-length", type=int, help="token limit per text (default: the manifest's)")
    parser.add_argument("--threads", type=int, help="inference threads (default: the backend's choice)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.set_defaults(handler=_run_embed)


def _run_embed(args: argparse.Namespace) -> int:
    from .embedder import Embedder

    texts = args.texts or [line.rstrip("\n") for line in sys.stdin]
    model = Embedder.load(args.model_dir, variant=args.variant, backend=args.backend,
                          max_length=args.max_length, threads=args.threads)
    if "auto" in (args.variant, args.backend):
        print(f"edgembed embed: using {model.describe()}", file=sys.stderr)
    vectors = model.encode(texts, batch_size=args.batch_size, prompt_name=args.prompt_name, dim=args.dim)
    json.dump({"variant": model.variant, "backend": model.backend, "dimension": int(vectors.shape[1]),
               "embeddings": vectors.tolist()}, sys.stdout)
    sys.stdout.write("\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgembed", description="ModernBERT embeddings without PyTorch.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    from edgembed.export.cli import add_parser as add_export_parser  # argparse only, no heavy imports

    add_export_parser(subparsers)
    _add_embed_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse will not give a positional list the words that follow options ("embed OUT --variant q8 TEXT")
    if extra and args.command == "embed" and not any(word.startswith("-") for word in extra):
        args.texts = [*args.texts, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.handler(args)
    except EdgembedError as exc:
        print(f"edgembed {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
