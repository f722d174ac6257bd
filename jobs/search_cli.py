"""`edgembed search OUT VECTORS QUERY...`: the top-k rows of a vectors file for each query (argparse only here;
the handler imports numpy, the vectors reader and the model)."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgembed.commands import add_export_dir, add_load_options, load_embedder
from edgembed.runtime import InvalidArgumentError, MissingRangesError, ModelFileError, UsageError

SEARCH_PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")  # precision.PRECISIONS, checked by a test
OUTPUT_FORMATS = ("table", "json", "jsonl")

if TYPE_CHECKING:
    from .vectors_reader import VectorsReader


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "search", help="exact top-k search of a vectors file (embed-file's Parquet, or .npy) for queries",
        description="Embed each QUERY with the model in OUT (its query prompt) and print the K best rows of "
                    "VECTORS: a Parquet file or directory written by 'edgembed embed-file' (id and embedding "
                    "columns; float32 vectors or the codes of its --precision), or a .npy matrix with --texts for "
                    "its labels.")
    add_export_dir(parser)
    parser.add_argument("vectors", metavar="VECTORS", type=Path, help="Parquet file or directory, or a .npy file")
    parser.add_argument("texts", nargs="+", metavar="QUERY", help="query texts")
    parser.add_argument("-k", "--top-k", type=int, default=10, metavar="K", help="rows per query (default: 10)")
    parser.add_argument("--precision", metavar="P",
                        help="search float vectors as float32 (default), int8 / uint8 (the model's fixed ranges) "
                             "or binary / ubinary; a file of codes is searched in its own precision")
    parser.add_argument("--rescore", action="store_true",
                        help="re-rank a shortlist of K x --rescore-multiplier rows with the float query against "
                             "int8 vectors (binary) or the float vectors (int8)")
    parser.add_argument("--rescore-multiplier", type=int, metavar="N",
                        help="shortlist size / K (default: by the vectors' dimensions, 8 for 384, 4 from 768 on)")
    parser.add_argument("--texts", dest="labels", type=Path, metavar="FILE",
                        help="one text per line for the rows of a .npy (shown beside each hit)")
    parser.add_argument("--id-column", default="id", metavar="NAME", help="Parquet id column (default: id)")
    parser.add_argument("--embedding-column", default="embedding", metavar="NAME",
                        help="Parquet vector column (default: embedding)")
    parser.add_argument("--text-column", default="text", metavar="NAME",
                        help="Parquet column shown beside each hit when the file has it (default: text)")
    parser.add_argument("--force", action="store_true",
                        help="search even when VECTORS says it was made by another model than OUT's")
    parser.add_argument("--format", default="table", dest="output_format", metavar="FORMAT",
                        help="table (default), json (one object) or jsonl (one line per hit)")
    add_load_options(parser)
    parser.set_defaults(handler=run_search, accepts_extra_texts=True)



@dataclass
class SearchCorpus:
    """What the search needs from a vectors file: the matrix in the requested form and how to label its rows."""

    path: Path
    rows: int
    corpus: object  # float32 vectors, or codes in the requested precision
    rescore: object | None
    ids: list | None


def run_search(args: argparse.Namespace) -> int:
    import numpy as np

    from edgembed.runtime import quantize, search

    from .vectors_reader import VectorsReader

    _check_args(args)
    model = load_embedder(args)
    reader = VectorsReader(args.vectors, embedding_column=args.embedding_column)
    dim = reader.dimension(reader.stored_precision or args.precision)
    ranges = None if reader.header.ranges is None else _recorded_ranges(args.vectors, reader.header.ranges, dim)
    _check_model(reader, model, args.force)
    args.precision = _choose_precision(args, reader)
    if dim > model.dimension:
        raise UsageError(f"{args.vectors} holds vectors of {dim} components, more than the {model.dimension} "
                         f"of the model in {args.model_dir}: they were not made by it")
    cut = None if dim == model.dimension else dim
    binary = args.precision in ("binary", "ubinary")
    if ranges is None and (args.precision in ("int8", "uint8") or args.rescore):
        try:
            ranges = model.embedding_ranges(dim=cut)
        except MissingRangesError as exc:
            raise MissingRangesError(f"{exc}. Here: re-export the model with this edgembed, or search with "
                                     "--precision float32, or binary without --rescore") from None

    def convert(block: np.ndarray):
        if args.precision == "float32" or reader.stored_precision != "float32":
            return block, None
        codes = quantize(block, args.precision, ranges=ranges)
        if not args.rescore:
            return codes, None
        return codes, (quantize(block, "int8", ranges=ranges) if binary else block)

    vectors = _read_corpus(args, reader, dim, convert)
    queries = model.encode_query(args.texts, dim=cut)
    hits = search(queries, vectors.corpus, k=args.top_k, precision=args.precision, ranges=ranges,
                  rescore=vectors.rescore, rescore_precision="int8" if binary else "float32",
                  rescore_multiplier=args.rescore_multiplier)
    texts = _hit_texts(args, reader, hits.indices)
    _print(args, vectors, hits, texts)
    return 0


def _check_args(args: argparse.Namespace) -> None:
    from .vectors_reader import is_npy

    if args.precision is not None and args.precision not in SEARCH_PRECISIONS:
        raise InvalidArgumentError("--precision", args.precision, " or ".join(SEARCH_PRECISIONS))
    if args.output_format not in OUTPUT_FORMATS:
        raise InvalidArgumentError("--format", args.output_format, " or ".join(OUTPUT_FORMATS))
    if args.top_k < 1:
        raise InvalidArgumentError("-k", args.top_k, "an integer of at least 1")
    if args.rescore_multiplier is not None and args.rescore_multiplier < 1:
        raise InvalidArgumentError("--rescore-multiplier", args.rescore_multiplier, "an integer of at least 1")
    if not args.vectors.exists():
        raise UsageError(f"{args.vectors}: no such file or directory")
    if is_npy(args.vectors) and args.labels is None:
        print(f"edgembed search: {args.vectors} has no labels; hits are shown by row number (--texts FILE adds "
              "them)", file=sys.stderr)


def _recorded_ranges(path: Path, ranges: object, dim: int):
    import numpy as np

    from edgembed.runtime.precision import check_ranges

    try:
        return check_ranges(np.asarray(ranges, dtype=np.float32), dim)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(path, f"records int8 ranges that cannot be used ({exc})") from None


def _choose_precision(args: argparse.Namespace, reader: VectorsReader) -> str:
    """The precision to search in: the file's own for codes, the asked one (default float32) for float vectors."""
    from .vectors_file import CODE_KINDS

    stored, asked, kind = reader.stored_precision, args.precision, reader.kind
    if kind == "float":
        chosen = asked or "float32"
    elif stored is None:
        if asked not in CODE_KINDS[kind]:
            options = " or ".join(f"--precision {option}" for option in CODE_KINDS[kind])
            raise UsageError(f"{args.vectors} holds {kind} codes with no record of their precision; say which "
                             f"they are with {options}")
        chosen = asked
    elif asked not in (None, stored):
        raise UsageError(f"{args.vectors} holds {stored} codes (embed-file --precision {stored}), which can only "
                         f"be searched as {stored}: drop --precision {asked}, or write float32 vectors with "
                         f"embed-file to search them as {asked}")
    else:
        chosen = stored
    if args.rescore and chosen == "float32":
        raise UsageError("--rescore re-ranks an int8 or binary search: add --precision int8 or binary")
    if args.rescore and kind != "float":
        raise UsageError(f"--rescore scores a shortlist with float32 (or int8) vectors of the same rows, and "
                         f"{args.vectors} holds only {chosen} codes: search without --rescore, or write float32 "
                         f"vectors with embed-file and search them with --precision {chosen} --rescore")
    return chosen


def _check_model(reader: VectorsReader, model, force: bool) -> None:
    recorded, variant = reader.header.model_id, reader.header.variant
    if recorded is None or recorded == model.model_id:
        return
    message = (f"the vectors were made with model {recorded!r}"
               + (f" ({variant})" if variant else "")
               + f", but OUT holds {model.model_id!r}: its queries would not match them")
    if not force:
        raise UsageError(message + "; pass --force to search anyway")
    print(f"edgembed search: warning: {message} (--force)", file=sys.stderr)


def _read_corpus(args: argparse.Namespace, reader: VectorsReader, dim: int, convert) -> SearchCorpus:
    """The vectors, converted block by block (so an int8 or binary search never holds them all as float32)."""
    import numpy as np

    from edgembed.runtime.precision import CODE_DTYPES, code_width

    from .vectors_reader import is_npy

    corpus, rescore = [], []
    ids = [] if reader.has_column(args.id_column) else None
    for block, block_ids in reader.blocks(id_column=args.id_column):
        codes, extra = convert(block)
        corpus.append(codes)
        rescore.append(extra)
        if ids is not None:
            ids.extend(block_ids)
    if is_npy(args.vectors) and args.labels is not None:
        ids = _read_labels(args.labels, reader.rows)
    width = code_width(args.precision, dim)
    matrix = np.concatenate(corpus) if corpus else np.zeros((0, width), CODE_DTYPES[args.precision])
    extra = np.concatenate(rescore) if rescore and rescore[0] is not None else None
    return SearchCorpus(path=args.vectors, rows=len(matrix), corpus=matrix, rescore=extra, ids=ids)


def _read_labels(path: Path, rows: int) -> list[str]:
    try:
        labels = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--texts {path}: cannot be read as UTF-8 text ({exc})") from None
    if len(labels) != rows:
        raise UsageError(f"--texts {path} has {len(labels)} lines but the vectors have {rows} rows; "
                         "give one line per row, in order")
    return labels


def _hit_texts(args: argparse.Namespace, reader: VectorsReader, indices) -> dict[int, str] | None:
    """The text of each hit row: a .npy's labels are its texts; a Parquet file's --text-column, if it has one."""
    rows = sorted({int(i) for i in indices.ravel()})
    taken = reader.values_at(rows, args.text_column)
    return None if taken is None else dict(zip(rows, taken))


def _print(args: argparse.Namespace, vectors: SearchCorpus, hits, texts: dict[int, str] | None) -> None:
    results = []
    for query, indices, scores in zip(args.texts, hits.indices, hits.scores):
        results.append({"query": query, "hits": [
            {"rank": rank, "row": int(row), "id": vectors.ids[row] if vectors.ids is not None else int(row),
             "score": round(float(score), 6), **({"text": texts[int(row)]} if texts else {})}
            for rank, (row, score) in enumerate(zip(indices, scores), start=1)]})
    if args.output_format == "json":
        json.dump({"vectors": str(vectors.path), "rows": vectors.rows, "precision": args.precision,
                   "rescore": args.rescore, "results": results}, sys.stdout, default=str)
        sys.stdout.write("\n")
        return
    if args.output_format == "jsonl":
        for result in results:
            for hit in result["hits"]:
                sys.stdout.write(json.dumps({"query": result["query"], **hit}, default=str) + "\n")
        return
    for result in results:
        print(f"query: {result['query']}")
        for hit in result["hits"]:
            text = hit.get("text")
            shown = f"  {text[:80]!r}" if text is not None else ""
            print(f"  {hit['rank']:>3}  {hit['score']:.4f}  {hit['id']}{shown}")
