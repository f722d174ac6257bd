"""`edgembed embed-file` (argparse only; the handler imports the job, pyarrow and Ray when it runs)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgembed.runtime import defaults

from .options import BAD_ROW_POLICIES, DEFAULT_SHARD_SIZE, OUTPUT_FORMATS
from .progress import DEFAULT_LOG_SECONDS

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")  # runtime.precision.PRECISIONS, checked by a test


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from edgembed.commands import add_load_options

    parser = subparsers.add_parser(
        "embed-file", help="embed a corpus file into Parquet shards (or .npy), with progress and resume",
        description="Embed every text of INPUT (text one per line, JSONL, CSV or Parquet) with the export OUT "
                    "into VECTORS: a directory of Parquet shards (id, embedding) or a .npy matrix. Shards are "
                    "written atomically; run the same command again after an interruption to finish the job.")
    parser.add_argument("model_dir", metavar="OUT", type=Path, help="directory written by 'edgembed export'")
    parser.add_argument("input", metavar="INPUT", type=Path, help="the texts: .txt (one per line), .jsonl, .csv, "
                        ".tsv or .parquet (other extensions are read as text)")
    parser.add_argument("-o", "--output", metavar="VECTORS", type=Path, required=True,
                        help="a directory of Parquet shards, or a file ending in .npy for one matrix")
    source = parser.add_argument_group("input")
    source.add_argument("--input-format", choices=("text", "jsonl", "csv", "parquet"),
                        help="override the format the extension implies")
    source.add_argument("--text-field", default="text", metavar="NAME",
                        help="field/column holding the text (JSONL, CSV, Parquet; default: text)")
    source.add_argument("--id-field", metavar="NAME", help="field/column holding the id (default: the row "
                        "number from 0)")
    source.add_argument("--on-bad-row", choices=BAD_ROW_POLICIES, default="error",
                        help="a row without a usable text: stop naming it (default), or skip it and list it in "
                             "VECTORS/_skipped.jsonl")
    vectors = parser.add_argument_group("vectors")
    vectors.add_argument("--prompt-name", help="a prompt stored in the manifest, e.g. document")
    vectors.add_argument("--prompt", help="a literal prefix for every text (wins over --prompt-name)")
    vectors.add_argument("--dim", type=int, help="keep the first DIM components (Matryoshka), then normalize")
    vectors.add_argument("--chunking", action="store_true",
                         help="embed texts longer than max-length as overlapping windows pooled together")
    vectors.add_argument("--precision", choices=PRECISIONS, default="float32",
                         help="float32 (default), or compact codes as sentence-transformers makes them: int8 / "
                              "uint8 (the export's fixed ranges; 4x smaller), binary / ubinary (32x smaller)")
    vectors.add_argument("--batch-size", type=int, default=defaults.BATCH_SIZE, metavar="N")
    vectors.add_argument("--max-batch-tokens", type=int, default=defaults.MAX_BATCH_TOKENS, metavar="N",
                         help=f"padded tokens per batch at most (default {defaults.MAX_BATCH_TOKENS})")
    engine = parser.add_argument_group("model loading")
    add_load_options(engine)
    job = parser.add_argument_group("job")
    job.add_argument("--output-format", choices=OUTPUT_FORMATS, help="default: npy when VECTORS ends in .npy")
    job.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, metavar="ROWS",
                     help=f"rows per shard, the unit of resume (default {DEFAULT_SHARD_SIZE:,})")
    job.add_argument("--overwrite", action="store_true",
                     help="discard a previous job in VECTORS (another model, input or options) and start over")
    job.add_argument("--progress", choices=("auto", "bar", "log", "off"), default="auto",
                     help="auto (default): a bar on a terminal, a line every --log-every seconds otherwise")
    job.add_argument("--log-every", type=float, default=DEFAULT_LOG_SECONDS, metavar="SECONDS",
                     help=f"seconds between progress lines in log mode (default {DEFAULT_LOG_SECONDS:g})")
    scale = parser.add_argument_group("Ray (pip install \"edgembed[ray]\")")
    scale.add_argument("--ray", nargs="?", const=True, default=False, metavar="ADDRESS",
                       help="run the shards on Ray: a local Ray, the cluster of RAY_ADDRESS, or ADDRESS "
                            "(e.g. auto, ray://head:10001)")
    scale.add_argument("--actors", type=int, metavar="N",
                       help="actors in the pool (default: the cluster's CPUs // --cpus-per-actor)")
    scale.add_argument("--cpus-per-actor", type=int, metavar="K",
                       help="CPUs each actor reserves; its engine runs on that many threads (default 2 where "
                            "every node has 2 or more, else 1)")
    scale.add_argument("--ship-model", action="store_true",
                       help="upload OUT with the job (runtime_env working_dir) instead of reading it from the same "
                            "path on every node")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgembed.commands import load_embedder, load_options
    from edgembed.runtime import EncodeOptions

    from .job import embed_file
    from .options import JobOptions, RayOptions

    encode = EncodeOptions(batch_size=args.batch_size, prompt_name=args.prompt_name, prompt=args.prompt, dim=args.dim,
                           max_batch_tokens=args.max_batch_tokens, chunking=args.chunking, precision=args.precision)
    job = JobOptions(input_format=args.input_format, text_field=args.text_field, id_field=args.id_field,
                     output_format=args.output_format, shard_size=args.shard_size, on_bad_row=args.on_bad_row,
                     overwrite=args.overwrite)
    # --ray alone is True: a local Ray, or the cluster of RAY_ADDRESS
    ray = None if args.ray is False else RayOptions(address=None if args.ray is True else args.ray,
                                                     actors=args.actors, cpus_per_actor=args.cpus_per_actor,
                                                     ship_model=args.ship_model)
    model = load_embedder(args)
    summary = embed_file(model, args.input, args.output, encode=encode, load=load_options(args), job=job, ray=ray,
                         progress=None if args.progress == "auto" else args.progress, log_every=args.log_every)
    print(f"edgembed embed-file: {summary.line()}", file=sys.stderr)
    return 0
