"""The export's retrieval check at several sizes: does a smaller check still tell a good q8 from a bad one?

    python benchmarks/check_size.py --model minilm --out benchmarks/results/check-size

For each size (queries x documents per domain, the export's cut of every text at its 128th token), the suite of
the export's check is embedded by the export's fp32 ONNX variant (the reference), edgembed's q8 variants and the
ONNX Runtime peers of benchmarks/fidelity.py (quantize_dynamic per tensor and per channel, transformers.js-style,
optimum's avx512_vnni config), all from the same fp32 graph, in one run. Printed per size and variant: the worst
domain's top-10 overlap and the lowest cosine, as the export records them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import fidelity

HERE = Path(__file__).resolve().parent


def measure(export: Path, sizes: list[tuple[int, int]], threads: int) -> dict:
    from tokenizers import Tokenizer

    from edgembed.evaluation.domains import export_check_suite
    from edgembed.evaluation.evaluate import suite_fidelity

    tokenizer = Tokenizer.from_file(str(export / "tokenizer.json"))  # as the export counts: no cut, no padding
    tokenizer.no_truncation()
    tokenizer.no_padding()
    specs = {**fidelity.own_specs(export),
             **{name: spec for name, spec in fidelity.build_peers(export).items() if spec["format"] == "onnx"}}
    rows: dict[str, dict] = {}
    for queries, documents in sizes:
        suite = export_check_suite(queries, documents, tokenizer=tokenizer)
        texts = suite.flatten()
        tokens = sum(len(e.ids) for e in tokenizer.encode_batch(texts))
        reference = fidelity.embed(export, {"format": "onnx", "dtype": "fp32"}, texts, threads)
        for name, spec in specs.items():
            worst, domains = suite_fidelity(fidelity.embed(export, spec, texts, threads), reference, suite, "fp32")
            lowest = min(domains, key=lambda domain: domains[domain].top10_overlap)
            rows.setdefault(name, {})[f"{queries}x{documents}"] = {
                "texts": len(texts), "tokens": tokens, "top10_worst": worst.top10_overlap, "top10_worst_domain": lowest,
                "cos_min": worst.cosine_min, "cos_mean_worst": worst.cosine_mean,
                "top10": {domain: figures.top10_overlap for domain, figures in domains.items()}}
            print(f"{queries}x{documents} ({len(texts)} texts, {tokens} tokens) {name}: top-10 worst "
                  f"{worst.top10_overlap:.3f} ({lowest}), cos min {worst.cosine_min:.4f}", file=sys.stderr, flush=True)
    return rows


def markdown(results: dict) -> str:
    first = next(iter(results["rows"].values()))  # every variant ran the same sizes
    sizes = list(first)
    lines = [f"# The export's check at several sizes: {results['model']}", "",
             f"Host: {results['cpu']} ({results['isa']}); {results['seconds']:.0f} s. Against the export's fp32 ONNX "
             "variant. Cells: worst domain's top-10 overlap / lowest cosine.", "",
             "| variant | " + " | ".join(f"{s} ({first[s]['texts']} texts)" for s in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for name, by_size in results["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{by_size[s]['top10_worst']:.3f} / {by_size[s]['cos_min']:.4f}"
                                                 for s in sizes) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="minilm or tiny, as in benchmarks/fidelity.py")
    parser.add_argument("--export", type=Path, help="an existing export with fp32 and q8 (default: export into WORK)")
    parser.add_argument("--work", type=Path, default=HERE / ".cache" / "check-size")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "check-size")
    parser.add_argument("--sizes", nargs="+", default=["10x100", "10x50", "10x25"], metavar="QxD")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    export = fidelity.ensure_export(args)
    sizes = [tuple(int(part) for part in size.split("x")) for size in args.sizes]
    from edgembed.runtime.cpu import cpu_model

    results = {"model": args.model if not args.export else str(args.export), "isa": fidelity.isa(),
               "cpu": cpu_model(), "rows": measure(export, sizes, args.threads)}
    results["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "check-size.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "check-size.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
