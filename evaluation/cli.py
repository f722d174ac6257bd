"""`edgembed eval`: its arguments, and the handler that runs the evaluation."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgembed.runtime.commands import add_export_dir

from .evaluate import SPEED_PASSES


def add_parsers(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "eval", help="measure every variant: cosine and top-10 overlap against fp32, speed, size",
        description="Evaluate every variant of OUT on every installed backend against its fp32 variant and "
                    "write a Markdown report, JSON and a PNG plot.")
    add_export_dir(parser)
    parser.add_argument("--texts", type=Path, metavar="FILE", help="documents, one per line or JSONL "
                        "(default: 3000 sentences of CPython's documentation)")
    parser.add_argument("--queries", type=Path, metavar="FILE", help="queries, one per line or JSONL (default: 300)")
    parser.add_argument("--field", default="text", help="the JSONL field holding the text (default: text)")
    parser.add_argument("--report", type=Path, metavar="DIR", help="where to write the report (default: OUT/eval)")
    parser.add_argument("--threads", type=int, metavar="N", help="inference threads (default: the physical cores)")
    parser.add_argument("--passes", type=int, default=SPEED_PASSES, metavar="N",
                        help=f"timed passes over the documents per variant, taken in turns; the best counts "
                             f"(default: {SPEED_PASSES})")
    parser.add_argument("--streams", type=int, metavar="N",
                        help="batches run at once for several texts, sharing the threads (default: 2 on a "
                             "CPU with 2+ cores; 1 turns it off)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from .corpus import evaluation_set
    from .evaluate import evaluate_directory, installed_pairs, markdown_table
    from .plot import plot
    from .text_files import read_texts

    installed_pairs(args.model_dir)  # fail before reading thousands of texts
    default_queries, default_documents = evaluation_set() if not (args.texts and args.queries) else ([], [])
    documents = read_texts(args.texts, args.field, "--field") if args.texts else default_documents
    queries = read_texts(args.queries, args.field, "--field") if args.queries else default_queries
    results = evaluate_directory(args.model_dir, queries, documents, threads=args.threads, passes=args.passes,
                                 streams=args.streams, progress=lambda line: print(line, file=sys.stderr, flush=True))
    table = markdown_table(results)
    report = args.report or args.model_dir / "eval"
    report.mkdir(parents=True, exist_ok=True)
    (report / "report.json").write_text(json.dumps([r.to_dict() for r in results], indent=2) + "\n")
    header = (f"# edgembed eval of {args.model_dir}\n\n{len(queries)} queries, {len(documents)} documents; "
              f"reference: {results[0].fidelity.reference}; int8 path: {results[0].fidelity.int8_path}; texts/s: "
              f"the best of {args.passes} passes over the documents, the variants taking turns; batches at a "
              f"time: {args.streams or 'default'}.\n\n")
    (report / "report.md").write_text(header + table + "\n")
    drew = plot(results, report / "fidelity_vs_speed.png")
    print(table)
    print(f"wrote {report / 'report.md'}, {report / 'report.json'}"
          + (f", {report / 'fidelity_vs_speed.png'}" if drew else " (no plot: pip install matplotlib)"))
    return 0
