"""`edgembed eval`: its arguments, and the handler that runs the evaluation."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgembed.commands import add_export_dir
from edgembed.runtime import check_positive_int

from .domains import DEFAULT_DOCUMENTS, DEFAULT_QUERIES, DOMAIN_NAMES
from .evaluate import SPEED_DOCUMENTS, SPEED_PASSES


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "eval", help="measure every variant: cosine and top-10 overlap against fp32, speed, size",
        description="Evaluate every variant of OUT on every installed backend against its fp32 variant and "
                    "write a Markdown report, JSON and a PNG plot.")
    add_export_dir(parser)
    parser.add_argument("--texts", type=Path, metavar="FILE", help="documents, one per line or JSONL, measured "
                        "as one domain named 'custom' with --queries (default: the built-in suite of domains)")
    parser.add_argument("--queries", type=Path, metavar="FILE", help="queries, one per line or JSONL")
    parser.add_argument("--domains", nargs="+", metavar="NAME", choices=DOMAIN_NAMES,
                        help=f"built-in domains to measure (default: every installed one of {', '.join(DOMAIN_NAMES)})")
    parser.add_argument("--size", type=int, nargs=2, default=[DEFAULT_QUERIES, DEFAULT_DOCUMENTS],
                        metavar=("QUERIES", "DOCUMENTS"), help=f"at most this many queries and documents per "
                        f"built-in domain (default: {DEFAULT_QUERIES} {DEFAULT_DOCUMENTS})")
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
    from .domains import Suite, evaluation_suite, find_domain
    from .errors import TextFileError
    from .evaluate import domain_table, evaluate_directory, installed_pairs, markdown_table
    from .plot import plot
    from .text_files import read_texts

    installed_pairs(args.model_dir)  # fail before reading thousands of texts
    if bool(args.texts) != bool(args.queries):
        raise TextFileError("--texts and --queries go together (documents and the queries searching them); "
                            "give both, or neither for the built-in suite")
    if args.texts:
        suite = Suite(domains={"custom": (read_texts(args.queries, args.field, "--field"),
                                          read_texts(args.texts, args.field, "--field"))})
    else:
        check_positive_int("--size QUERIES", args.size[0])
        check_positive_int("--size DOCUMENTS", args.size[1])
        suite = evaluation_suite(*args.size, domains=args.domains)
        if not suite.domains:
            raise TextFileError(f"none of the domains {', '.join(suite.missing)} is installed here; see "
                                "docs/evaluation-suite.md, or give --texts and --queries")
    results = evaluate_directory(args.model_dir, suite, threads=args.threads, passes=args.passes,
                                 streams=args.streams, progress=lambda line: print(line, file=sys.stderr, flush=True))
    table, domains = markdown_table(results), domain_table(results, suite)
    report = args.report or args.model_dir / "eval"
    report.mkdir(parents=True, exist_ok=True)
    (report / "report.json").write_text(json.dumps([r.to_dict() for r in results], indent=2) + "\n")
    missing = (f" Not installed here, so not measured: {', '.join(suite.missing)} (docs/evaluation-suite.md)."
               if suite.missing else "")
    sources = sorted({s for name in suite.domains if name != "custom" for s in find_domain(name).sources()})
    header = (f"# edgembed eval of {args.model_dir}\n\n{len(suite.domains)} domains, {suite.texts()} texts; "
              f"reference: {results[0].fidelity.reference}; int8 path: {results[0].fidelity.int8_path}; the figures "
              f"of the first table are each the worst over the domains; texts/s: the best of {args.passes} passes "
              f"over up to {SPEED_DOCUMENTS} documents of every domain, the variants taking turns; batches at a time: "
              f"{args.streams or 'default'}.{missing}\n\n")
    body = (f"{table}\n\n## Per domain (cos mean / p1 / min / top-10 overlap)\n\n{domains}\n"
            + ("\nSources:\n\n" + "".join(f"- {s}\n" for s in sources) if sources else ""))
    (report / "report.md").write_text(header + body)
    drew = plot(results, report / "fidelity_vs_speed.png")
    print(table + "\n\n" + domains)
    print(f"wrote {report / 'report.md'}, {report / 'report.json'}"
          + (f", {report / 'fidelity_vs_speed.png'}" if drew else " (no plot: pip install matplotlib)"))
    return 0
