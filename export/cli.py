"""Arguments of `edgembed export`; the heavy imports happen only when it runs."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgembed.evaluation.domains import EXPORT_CHECK_DOCUMENTS, EXPORT_CHECK_QUERIES, EXPORT_CHECK_TOKENS, TOP10_GOAL
from edgembed.runtime.errors import InvalidArgumentError
from edgembed.runtime.manifest import Variant

from .variants import DEFAULT_Q4_BLOCK_SIZE, DEFAULT_Q8_RECIPE, DTYPES, FORMATS, Q8_RECIPES


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "export", help="export a checkpoint to ONNX and OpenVINO, validated against PyTorch",
        description="Export MODEL (a hub id or a local directory) to ONNX and OpenVINO variants, check each one "
                    "against the PyTorch reference, and write OUT/manifest.json.")
    parser.add_argument("model", metavar="MODEL",
                        help="hub id (e.g. nomic-ai/modernbert-embed-base) or local directory")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUT", help="directory to create")
    parser.add_argument("--quantize", nargs="+", default=["fp32"], metavar="DTYPE",
                        help=f"variants to write: {' '.join(DTYPES)} (default: fp32)")
    parser.add_argument("--format", nargs="+", default=list(FORMATS), dest="formats", metavar="FORMAT",
                        help=f"{', '.join(FORMATS)} (default: all)")
    parser.add_argument("--revision", help="hub branch, tag or commit (hub ids only)")
    parser.add_argument("--prompt", action="append", default=[], metavar="NAME=TEXT",
                        help='prompt to store, e.g. --prompt query="search_query: " (repeatable)')
    parser.add_argument("--matryoshka-dims", nargs="+", type=int, default=[], metavar="DIM",
                        help="embedding sizes the model was trained to be truncated to, e.g. 768 512 256")
    parser.add_argument("--min-cosine", action="append", default=[], metavar="DTYPE=VALUE",
                        help="override a variant's fidelity threshold, e.g. --min-cosine q8=0.99")
    parser.add_argument("--allow-low-fidelity", action="store_true",
                        help="keep variants below their threshold (marked in the manifest) instead of failing")
    parser.add_argument("--allow-pickle-weights", action="store_true",
                        help="load *.bin pickle weights when there are no safetensors (runs code from the file)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--calibration-data", type=Path, metavar="FILE",
                        help="texts for calibrated variants (q8, q8-static) and for the int8/uint8 output ranges "
                             "(encode(precision=...)): one per line, or JSONL (see --calibration-field);"
                             " default: the built-in set, drawn from every domain of the evaluation suite and kept "
                             "apart from its evaluation texts")
    parser.add_argument("--calibration-field", default="text", metavar="NAME",
                        help="the JSONL field holding the text (default: text)")
    parser.add_argument("--q4-block-size", type=int, default=DEFAULT_Q4_BLOCK_SIZE, metavar="N",
                        help="weights per quantization block in the ONNX q4 variant "
                             f"(default: {DEFAULT_Q4_BLOCK_SIZE})")
    parser.add_argument("--q8-recipe", choices=Q8_RECIPES, default=DEFAULT_Q8_RECIPE,
                        help="how the q8 variants are made: smoothed (ONNX: outlier channels smoothed and a few kept "
                             "in float; OpenVINO: nncf's INT8_ASYM weights) or turned (each MatMul input turned by "
                             "block Hadamard matrices first, GPTQ int8 weights: a closer top-10 on non-Latin text; "
                             "ONNX Runtime 2-7%% slower on batches and up to 10%% on lone queries, OpenVINO 0-4%% "
                             "on batches and 4-12%% on lone queries; docs/q8-recipe.md) "
                             f"(default: {DEFAULT_Q8_RECIPE})")
    parser.add_argument("--eval-size", type=int, nargs=2, default=[EXPORT_CHECK_QUERIES, EXPORT_CHECK_DOCUMENTS],
                        metavar=("QUERIES", "DOCUMENTS"),
                        help="retrieval check of every variant on each domain of the built-in suite, each text "
                             f"read up to its {EXPORT_CHECK_TOKENS}th token (default: {EXPORT_CHECK_QUERIES} "
                             f"{EXPORT_CHECK_DOCUMENTS} per domain; 0 0 skips)")
    parser.add_argument("--attention", default=None, metavar="MODE",
                        help="ModernBERT attention in the graph: efficient (default; sliding-window layers block by "
                             "block, global layers fused; linear memory in the length) or standard (transformers' "
                             "own, L x L masks in every layer)")
    parser.add_argument("--external-data", action="store_true",
                        help="write each ONNX graph's weights to a FILE.onnx_data beside it: ONNX Runtime maps that "
                             "file instead of reading the weights into memory, for a lower load peak and RSS "
                             "(README: Deployment); transformers.js then needs use_external_data_format")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: optimum's choice for the architecture)")
    parser.add_argument("--verbose", action="store_true",
                        help="show the warnings, log lines and progress bars of the tools the export drives "
                             "(optimum, torch, ONNX Runtime, OpenVINO, nncf); by default only the ones that mean "
                             "something are shown, as notes")
    parser.set_defaults(handler=run)


def _pairs(values: list[str], option: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise InvalidArgumentError(option, value, "NAME=VALUE, e.g. query=\"search_query: \"")
        pairs[name] = text
    return pairs


def run(args: argparse.Namespace) -> int:
    from edgembed.evaluation.text_files import read_texts

    from .pipeline import ExportRequest, run_export

    thresholds = {}
    for name, value in _pairs(args.min_cosine, "--min-cosine").items():
        try:
            thresholds[name] = float(value)
        except ValueError:
            raise InvalidArgumentError("--min-cosine", f"{name}={value}", "DTYPE=NUMBER, e.g. q8=0.99") from None
    request = ExportRequest(
        model=args.model, output=args.output, dtypes=list(dict.fromkeys(args.quantize)),
        formats=list(dict.fromkeys(args.formats)), revision=args.revision, prompts=_pairs(args.prompt, "--prompt"),
        matryoshka_dims=args.matryoshka_dims, min_cosine=thresholds, allow_low_fidelity=args.allow_low_fidelity,
        allow_pickle=args.allow_pickle_weights, overwrite=args.overwrite, opset=args.opset,
        calibration_texts=read_texts(args.calibration_data, args.calibration_field) if args.calibration_data else None,
        q4_block_size=args.q4_block_size, q8_recipe=args.q8_recipe, attention=args.attention,
        eval_queries=args.eval_size[0], eval_documents=args.eval_size[1], external_data=args.external_data,
        verbose=args.verbose,
    )
    manifest = run_export(request, progress=lambda line: print(line, file=sys.stderr, flush=True))
    for variant in manifest.variants:
        fidelity = variant.fidelity
        size = sum(f.bytes for f in variant.files)
        flag = "" if fidelity is None or fidelity.passed else "  LOW FIDELITY (kept)"
        overlap = f"  top-10 overlap {variant.evaluation.top10_overlap:.3f}" if variant.evaluation else ""
        print(f"{variant.name:20} {size / 1e6:9.1f} MB  cosine min {fidelity.cosine_min:.6f} "
              f"mean {fidelity.cosine_mean:.6f}{overlap}{flag}")
    print(f"wrote {args.output}/manifest.json")
    note = recipe_note(manifest.variants, q8_recipe=args.q8_recipe)
    if note:
        print(note, file=sys.stderr)
    return 0


def recipe_note(variants: list[Variant], *, q8_recipe: str) -> str | None:
    """A line pointing at `--q8-recipe turned` when a q8 of the default recipe reordered a domain's nearest
    neighbours beyond the goal in the export's retrieval check (the trade is the user's: docs/q8-recipe.md)."""
    if q8_recipe != DEFAULT_Q8_RECIPE:
        return None
    short = []
    for variant in variants:
        domains = {name: figure.top10_overlap for name, figure in variant.evaluation_domains.items()
                   if figure.top10_overlap is not None}
        if variant.dtype == "q8" and domains and min(domains.values()) < TOP10_GOAL:
            worst = min(domains, key=domains.__getitem__)
            short.append(f"{variant.name} {domains[worst]:.3f} ({worst})")
    if not short:
        return None
    return (f"note: in the retrieval check the q8 kept less than {TOP10_GOAL} of PyTorch's top-10 on some domains: "
            f"{', '.join(short)}. --q8-recipe turned keeps more there, for a few percent of q8's speed "
            f"(docs/q8-recipe.md)")
