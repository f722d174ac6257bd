"""`edgembed embed` and `edgembed verify`, and the load options every command that loads an export shares
(argparse only; handlers import the rest)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from edgembed.runtime import defaults
from edgembed.runtime.errors import InvalidArgumentError, UsageError

OUTPUT_FORMATS = ("json", "jsonl", "summary")


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _add_embed(subparsers)
    _add_verify(subparsers)


def add_export_dir(parser: argparse.ArgumentParser) -> None:
    """The OUT argument every command that reads an export takes."""
    parser.add_argument("model_dir", metavar="OUT", type=Path, help="directory written by 'edgembed export'")


LOAD_FLAGS = ("--variant", "--backend", "--max-length", "--threads", "--streams", "--verify", "--auto-min-cosine")


def add_load_options(parser: argparse.ArgumentParser, *, choice_default: str | None = None) -> None:
    """The Embedder.load options, shared by every command that loads an export; `choice_default` is what
    --variant and --backend default to (None: edgembed's order for this CPU)."""
    from edgembed.runtime.backends import BACKENDS
    from edgembed.runtime.preference import preference_order

    dtypes = ", ".join(dict.fromkeys(dtype for dtype, _ in preference_order("vnni")))  # the table's names, in order
    default = f"default: {choice_default}" if choice_default else "default: edgembed's order for this CPU"
    parser.add_argument("--variant", default=choice_default,
                        help=f"a variant OUT holds ({dtypes}), or auto: the fastest faithful one ({default})")
    parser.add_argument("--backend", default=choice_default, help=f"{', '.join(BACKENDS)} or auto ({default})")
    parser.add_argument("--max-length", type=int, metavar="N", help="token limit per text (default: the manifest's)")
    parser.add_argument("--threads", type=int, metavar="N", help="inference threads (default: the physical cores)")
    parser.add_argument("--streams", type=int, metavar="N",
                        help="batches run at once for several texts, sharing the threads (default: 2 on a "
                             "CPU with 2+ cores; 1 turns it off)")
    parser.add_argument("--verify", default="size", metavar="MODE",
                        help="check the model files at load: size (default), sha256 or none")
    parser.add_argument("--auto-min-cosine", type=float, default=None, metavar="X",
                        help="with auto: the least recorded cosine to PyTorch a variant needs (default "
                             f"{defaults.AUTO_MIN_COSINE})")


def load_options(args: argparse.Namespace):
    """The LoadOptions the load flags ask for."""
    from edgembed.runtime import LoadOptions

    minimum = defaults.AUTO_MIN_COSINE if args.auto_min_cosine is None else args.auto_min_cosine
    if not 0.0 <= minimum <= 1.0:
        raise InvalidArgumentError("--auto-min-cosine", minimum, "a number from 0 to 1")
    return LoadOptions(variant=args.variant, backend=args.backend, max_length=args.max_length, threads=args.threads,
                       streams=args.streams, verify=args.verify, auto_min_cosine=minimum)


def load_embedder(args: argparse.Namespace):
    """The Embedder the load options ask for."""
    from edgembed.runtime.embedder import Embedder

    model = Embedder.load_with(args.model_dir, load_options(args))
    if "auto" in (args.variant, args.backend):
        print(f"edgembed {args.command}: using {model.describe()}", file=sys.stderr)
    return model


def _add_embed(subparsers) -> None:
    parser = subparsers.add_parser(
        "embed", help="embed texts with an exported model and print JSON",
        description="Embed TEXT arguments (or one text per line on stdin) and print JSON.")
    add_export_dir(parser)
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed (default: one per line on stdin)")
    add_load_options(parser)
    parser.add_argument("--prompt-name", help="a prompt stored in the manifest, e.g. query or document")
    parser.add_argument("--dim", type=int, help="keep the first DIM components (Matryoshka), then normalize")
    parser.add_argument("--batch-size", type=int, default=defaults.BATCH_SIZE, metavar="N")
    parser.add_argument("--chunking", action="store_true",
                        help="embed texts longer than max-length as overlapping windows pooled together "
                             "instead of cutting them")
    parser.add_argument("--format", default="json", dest="output_format", metavar="FORMAT",
                        help="json (one object, default), jsonl (one line per text) or summary (for a human)")
    parser.set_defaults(handler=_run_embed, accepts_extra_texts=True)


def _run_embed(args: argparse.Namespace) -> int:
    if args.output_format not in OUTPUT_FORMATS:
        raise InvalidArgumentError("--format", args.output_format, " or ".join(OUTPUT_FORMATS))
    texts = args.texts or _read_stdin_texts()
    model = load_embedder(args)
    vectors = model.encode(texts, batch_size=args.batch_size, prompt_name=args.prompt_name, dim=args.dim,
                           chunking=args.chunking)
    cut = model.stats.truncated
    if cut:
        print(f"edgembed embed: {cut} of {len(texts)} texts had more than max_length={model.max_length} tokens "
              "and were cut (--chunking embeds them whole; --max-length raises the limit)", file=sys.stderr)
    if args.output_format == "json":
        json.dump({"variant": model.variant, "backend": model.backend, "dimension": int(vectors.shape[1]),
                   "embeddings": vectors.tolist()}, sys.stdout)
        sys.stdout.write("\n")
    elif args.output_format == "jsonl":
        for index, vector in enumerate(vectors):
            sys.stdout.write(json.dumps({"index": index, "embedding": vector.tolist()}) + "\n")
    else:
        print(f"{len(texts)} text(s) -> {vectors.shape[1]} dimensions with {model.variant} on {model.backend}")
        for text, vector in zip(texts, vectors):
            head = ", ".join(f"{value:+.4f}" for value in vector[:4])
            print(f"  [{head}, ...] norm {float((vector ** 2).sum() ** 0.5):.3f}  {text[:60]!r}")
    return 0


def _read_stdin_texts() -> list[str]:
    if sys.stdin is None:
        raise UsageError("no texts: pass TEXT arguments, or one text per line on stdin")
    if sys.stdin.isatty():
        print("edgembed embed: reading texts from stdin, one per line; end with Ctrl-D (or pass TEXT arguments)",
              file=sys.stderr)
    texts = []
    for number, raw in enumerate(sys.stdin.buffer, start=1):
        try:
            texts.append(raw.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError as exc:
            raise InvalidArgumentError(f"stdin line {number}", raw[:60], "UTF-8 text",
                                       f"byte {raw[exc.start]:#04x} at position {exc.start} is not UTF-8; "
                                       "convert the input first, e.g. iconv -f latin1 -t utf-8") from None
    if not texts:
        raise UsageError("no texts: stdin was empty; pass TEXT arguments, or one text per line on stdin")
    return texts


def _add_verify(subparsers) -> None:
    parser = subparsers.add_parser(
        "verify", help="check a copied export: every file present, inside OUT, with its recorded sha256",
        description="Check every file manifest.json lists (and the tokenizer) before deploying a copied export.")
    add_export_dir(parser)
    parser.add_argument("--mode", default="sha256", help="sha256 (default) or size")
    parser.set_defaults(handler=_run_verify)


def _run_verify(args: argparse.Namespace) -> int:
    from edgembed.runtime.errors import ModelFileError
    from edgembed.runtime.loading import inside, verify_files
    from edgembed.runtime.manifest import Manifest
    from edgembed.runtime.tokenization import TextTokenizer

    if args.mode not in ("sha256", "size"):
        raise InvalidArgumentError("--mode", args.mode, "'sha256' or 'size'")
    manifest = Manifest.read(args.model_dir)
    TextTokenizer(inside(args.model_dir, manifest.tokenizer_file, "tokenizer_file"), manifest.max_length,
                  manifest.pad_token_id)
    failures, total, start = 0, 0, time.perf_counter()
    for variant in manifest.variants:
        try:
            verify_files(args.model_dir, variant, args.mode)
            total += sum(entry.bytes for entry in variant.files)
            print(f"ok      {variant.name}")
        except ModelFileError as exc:
            failures += 1
            print(f"FAILED  {variant.name}: {exc}")
    seconds = time.perf_counter() - start
    print(f"{len(manifest.variants) - failures} of {len(manifest.variants)} variants verified ({args.mode}, "
          f"{total / 1e6:.1f} MB in {seconds:.2f} s)")
    return 1 if failures else 0
