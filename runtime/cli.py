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
    parser.add_argument("--streams", type=_positive_int, metavar="N",
                        help="batches run at once for several texts, sharing the threads (default: 2 on a "
                             "CPU with 2+ cores; 1 turns it off)")
    parser.add_argument("--chunking", action="store_true",
                        help="embed texts longer than max-length as overlapping windows pooled together "
                             "instead of cutting them")
    parser.set_defaults(handler=_run_embed)


def _run_embed(args: argparse.Namespace) -> int:
    from .embedder import Embedder

    texts = args.texts or [line.rstrip("\n") for line in sys.stdin]
    model = Embedder.load(args.model_dir, variant=args.variant, backend=args.backend,
                          max_length=args.max_length, threads=args.threads, streams=args.streams)
    if "auto" in (args.variant, args.backend):
        print(f"edgembed embed: using {model.describe()}", file=sys.stderr)
    vectors = model.encode(texts, batch_size=args.batch_size, prompt_name=args.prompt_name, dim=args.dim,
                           chunking=args.chunking)
    json.dump({"variant": model.variant, "backend": model.backend, "dimension": int(vectors.shape[1]),
               "embeddings": vectors.tolist()}, sys.stdout)
    sys.stdout.write("\n")
    return 0


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def _add_eval_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    from .evaluate import SPEED_PASSES  # numpy and the runtime's own modules, no backend

    parser = subparsers.add_parser(
        "eval", help="measure every variant: cosine and top-10 overlap against fp32, speed, size",
        description="Evaluate every variant of OUT on every installed backend against its fp32 variant and "
                    "write a Markdown report, JSON and a PNG plot.")
    parser.add_argument("model_dir", metavar="OUT", type=Path, help="directory written by 'edgembed export'")
    parser.add_argument("--texts", type=Path, metavar="FILE", help="documents, one per line or JSONL "
                        "(default: 3000 sentences of CPython's documentation)")
    parser.add_argument("--queries", type=Path, metavar="FILE", help="queries, one per line or JSONL (default: 300)")
    parser.add_argument("--field", default="text", help="the JSONL field holding the text (default: text)")
    parser.add_argument("--report", type=Path, metavar="DIR", help="where to write the report (default: OUT/eval)")
    parser.add_argument("--threads", type=int, help="inference threads (default: the backend's choice)")
    parser.add_argument("--passes", type=_positive_int, default=SPEED_PASSES, metavar="N",
                        help=f"timed passes over the documents per variant, taken in turns; the best counts "
                             f"(default: {SPEED_PASSES})")
    parser.add_argument("--streams", type=_positive_int, metavar="N",
                        help="batches run at once for several texts, sharing the threads (default: 2 on a "
                             "CPU with 2+ cores; 1 turns it off)")
    parser.set_defaults(handler=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from .corpus import evaluation_set
    from .evaluate import evaluate_directory, markdown_table, plot
    from .text_files import read_texts

    default_queries, default_documents = evaluation_set() if not (args.texts and args.queries) else ([], [])
    documents = read_texts(args.texts, args.field, "--field") if args.texts else default_documents
    queries = read_texts(args.queries, args.field, "--field") if args.queries else default_queries
    results = evaluate_directory(args.model_dir, queries, documents, args.threads, args.passes, args.streams,
                                 progress=lambda line: print(line, file=sys.stderr, flush=True))
    table = markdown_table(results)
    report = args.report or args.model_dir / "eval"
    report.mkdir(parents=True, exist_ok=True)
    (report / "report.json").write_text(json.dumps([r.to_dict() for r in results], indent=2) + "\n")
    header = (f"# edgembed eval of {args.model_dir}\n\n{len(queries)} queries, {len(documents)} documents; "
              f"reference: {results[0].reference}; texts/s: the best of {args.passes} passes over the "
              f"documents, the variants taking turns; batches at a time: {args.streams or 'default'}.\n\n")
    (report / "report.md").write_text(header + table + "\n")
    drew = plot(results, report / "fidelity_vs_speed.png")
    print(table)
    print(f"wrote {report / 'report.md'}, {report / 'report.json'}"
          + (f", {report / 'fidelity_vs_speed.png'}" if drew else " (no plot: pip install matplotlib)"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgembed", description="ModernBERT embeddings without PyTorch.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    from edgembed.export.cli import add_parser as add_export_parser  # argparse only, no heavy imports

    add_export_parser(subparsers)
    _add_embed_parser(subparsers)
    _add_eval_parser(subparsers)
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
