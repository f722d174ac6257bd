"""`edgembed search OUT VECTORS QUERY...`: the top-k rows of a vectors file for each query (argparse only here;
the handler imports numpy, pyarrow and the model)."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from .commands import add_export_dir, add_load_options, load_embedder
from .errors import InvalidArgumentError, MissingRangesError, ModelFileError, UsageError

SEARCH_PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")  # precision.PRECISIONS, checked by a test
CODE_KINDS = {"int8": ("int8", "binary"), "uint8": ("uint8", "ubinary")}  # value type -> precisions it can hold
OUTPUT_FORMATS = ("table", "json", "jsonl")
# Schema metadata keys that may name the model and the variant of an embed-file output.
MODEL_KEYS = ("edgembed.model_id", "edgembed.model", "model_id", "model")
VARIANT_KEYS = ("edgembed.variant", "variant")
PRECISION_KEYS = ("edgembed.precision", "precision")
DIMENSION_KEYS = ("edgembed.dimension", "dimension")
PYARROW_EXTRA = "jobs"


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
class VectorsFile:
    """What the search needs from a vectors file: the matrix in the requested form and how to label its rows."""

    path: Path
    rows: int
    dim: int
    corpus: object  # float32 vectors, or codes in the requested precision
    rescore: object | None
    ids: list | None
    model_id: str | None
    variant: str | None


def run_search(args: argparse.Namespace) -> int:
    import numpy as np

    from .precision import quantize
    from .search import search

    _check_args(args)
    model = load_embedder(args)
    header = _read_header(args)
    _check_model(header, model, args.force)
    args.precision = _choose_precision(args, header)
    dim = header["dim"]
    if dim > model.dimension:
        raise UsageError(f"{args.vectors} holds vectors of {dim} components, more than the {model.dimension} "
                         f"of the model in {args.model_dir}: they were not made by it")
    cut = None if dim == model.dimension else dim
    binary = args.precision in ("binary", "ubinary")
    ranges = header["ranges"]
    if ranges is None and (args.precision in ("int8", "uint8") or args.rescore):
        try:
            ranges = model.embedding_ranges(dim=cut)
        except MissingRangesError as exc:
            raise MissingRangesError(f"{exc}. Here: re-export the model with this edgembed, or search with "
                                     "--precision float32, or binary without --rescore") from None

    def convert(block: np.ndarray):
        if args.precision == "float32" or header["stored"] != "float32":
            return block, None
        codes = quantize(block, args.precision, ranges=ranges)
        if not args.rescore:
            return codes, None
        return codes, (quantize(block, "int8", ranges=ranges) if binary else block)

    vectors = _read_vectors(args, header, convert)
    queries = model.encode_query(args.texts, dim=cut)
    hits = search(queries, vectors.corpus, k=args.top_k, precision=args.precision, ranges=ranges,
                  rescore=vectors.rescore, rescore_precision="int8" if binary else "float32",
                  rescore_multiplier=args.rescore_multiplier)
    texts = _hit_texts(args, vectors, hits.indices)
    _print(args, vectors, hits, texts)
    return 0


def _check_args(args: argparse.Namespace) -> None:
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
    if _is_npy(args.vectors) and args.labels is None:
        print(f"edgembed search: {args.vectors} has no labels; hits are shown by row number (--texts FILE adds "
              "them)", file=sys.stderr)


def _is_npy(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".npy"


def _read_header(args: argparse.Namespace) -> dict:
    """Rows, dim, value type and the recorded model and precision of VECTORS, without reading its vectors."""
    if _is_npy(args.vectors):
        import numpy as np

        try:
            matrix = np.load(args.vectors, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise ModelFileError(args.vectors, f"cannot be read as a .npy matrix ({exc})") from None
        kind = _value_kind(str(matrix.dtype) if matrix.dtype.kind != "f" else "float")
        if matrix.ndim != 2 or kind is None:
            raise ModelFileError(args.vectors, f"holds a {matrix.dtype} array of shape {matrix.shape}; expected "
                                               "float vectors or int8/uint8 codes (rows, columns)")
        return _header(args, rows=matrix.shape[0], width=matrix.shape[1], kind=kind, metadata={})
    dataset = _parquet_dataset(args.vectors)
    schema = dataset.schema
    if args.embedding_column not in schema.names:
        raise ModelFileError(args.vectors, f"has no column {args.embedding_column!r} (columns: "
                                           f"{', '.join(schema.names)}); name it with --embedding-column")
    column_type = schema.field(args.embedding_column).type
    size = getattr(column_type, "list_size", None)
    value = str(column_type.value_type) if size is not None else ""
    kind = _value_kind("float" if value in ("halffloat", "float", "double") else value)
    if size is None or kind is None:
        raise ModelFileError(args.vectors, f"column {args.embedding_column!r} is {column_type}, not a fixed-size "
                                           "list of floats or int8/uint8 codes as embed-file writes")
    metadata = {key.decode("utf-8", "replace"): value.decode("utf-8", "replace")
                for key, value in (schema.metadata or {}).items()}
    return {**_header(args, rows=dataset.count_rows(), width=size, kind=kind, metadata=metadata),
            "dataset": dataset}


def _value_kind(name: str) -> str | None:
    return name if name in ("float", *CODE_KINDS) else None


def _header(args: argparse.Namespace, *, rows: int, width: int, kind: str, metadata: dict[str, str]) -> dict:
    stored = "float32" if kind == "float" else _first(metadata, PRECISION_KEYS)
    if stored is not None and stored not in (("float32",) if kind == "float" else CODE_KINDS[kind]):
        raise ModelFileError(args.vectors, f"says it holds {stored} vectors, but its values are {kind}")
    recorded_dim = _first(metadata, DIMENSION_KEYS)
    binary = (stored or args.precision) in ("binary", "ubinary")
    dim = int(recorded_dim) if binary and recorded_dim else width * 8 if binary else width
    ranges = _edgembed_metadata(metadata).get("ranges")
    return {"rows": rows, "width": width, "dim": dim, "kind": kind, "stored": stored,
            "ranges": None if ranges is None else _ranges(args, ranges, dim), "model_id": _first(metadata, MODEL_KEYS),
            "variant": _first(metadata, VARIANT_KEYS)}


def _ranges(args: argparse.Namespace, ranges: object, dim: int):
    import numpy as np

    from .precision import check_ranges

    try:
        return check_ranges(np.asarray(ranges, dtype=np.float32), dim)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(args.vectors, f"records int8 ranges that cannot be used ({exc})") from None


def _choose_precision(args: argparse.Namespace, header: dict) -> str:
    """The precision to search in: the file's own for codes, the asked one (default float32) for float vectors."""
    stored, asked, kind = header["stored"], args.precision, header["kind"]
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


def _edgembed_metadata(metadata: dict[str, str]) -> dict:
    """The JSON object embed-file stores under the schema metadata key "edgembed" ({} when absent or not one)."""
    try:
        value = json.loads(metadata.get("edgembed", "{}"))
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _first(metadata: dict[str, str], keys: tuple[str, ...]) -> str | None:
    """The first of `keys` in the schema metadata, also inside a JSON object stored under "edgembed"."""
    nested = _edgembed_metadata(metadata)
    for key in keys:
        for source in (metadata, nested, {f"edgembed.{k}": v for k, v in nested.items()}):
            if source.get(key):
                return str(source[key])
    return None


def _check_model(header: dict, model, force: bool) -> None:
    recorded = header["model_id"]
    if recorded is None or recorded == model.model_id:
        return
    message = (f"the vectors were made with model {recorded!r}"
               + (f" ({header['variant']})" if header["variant"] else "")
               + f", but OUT holds {model.model_id!r}: its queries would not match them")
    if not force:
        raise UsageError(message + "; pass --force to search anyway")
    print(f"edgembed search: warning: {message} (--force)", file=sys.stderr)


def _parquet_dataset(path: Path):
    try:
        import pyarrow.dataset as ds
    except ImportError:
        raise UsageError(f"reading Parquet needs pyarrow, which is not installed; install it with: "
                         f'pip install "edgembed[{PYARROW_EXTRA}]" (or pip install pyarrow)') from None
    try:
        return ds.dataset(str(path), format="parquet")
    except Exception as exc:  # pyarrow raises ArrowInvalid and others for what is not Parquet
        raise ModelFileError(path, f"cannot be read as Parquet ({type(exc).__name__}: {exc})") from None


def _read_vectors(args: argparse.Namespace, header: dict, convert) -> VectorsFile:
    """The vectors, converted batch by batch (so an int8 or binary search never holds them all as float32)."""
    import numpy as np

    corpus, rescore, ids = [], [], None
    dtype = np.float32 if header["kind"] == "float" else np.dtype(header["kind"])
    if "dataset" not in header:
        matrix = np.load(args.vectors, mmap_mode="r")
        for start in range(0, len(matrix), 65536):
            block = np.asarray(matrix[start:start + 65536], dtype=dtype)
            codes, extra = convert(block)
            corpus.append(codes)
            rescore.append(extra)
        if args.labels is not None:
            ids = _read_labels(args.labels, len(matrix))
    else:
        dataset = header["dataset"]
        columns = [args.embedding_column] + ([args.id_column] if args.id_column in dataset.schema.names else [])
        ids = [] if args.id_column in dataset.schema.names else None
        for batch in dataset.to_batches(columns=columns):
            column = batch.column(args.embedding_column)
            if column.null_count:
                raise ModelFileError(args.vectors, f"column {args.embedding_column!r} has empty (null) rows")
            block = column.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
            codes, extra = convert(block.reshape(len(batch), header["width"]))
            corpus.append(codes)
            rescore.append(extra)
            if ids is not None:
                ids.extend(batch.column(args.id_column).to_pylist())
    from .precision import CODE_DTYPES, code_width

    width = code_width(args.precision, header["dim"])
    matrix = np.concatenate(corpus) if corpus else np.zeros((0, width), CODE_DTYPES[args.precision])
    extra = np.concatenate(rescore) if rescore and rescore[0] is not None else None
    return VectorsFile(path=args.vectors, rows=len(matrix), dim=header["dim"], corpus=matrix, rescore=extra,
                       ids=ids, model_id=header["model_id"], variant=header["variant"])


def _read_labels(path: Path, rows: int) -> list[str]:
    try:
        labels = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--texts {path}: cannot be read as UTF-8 text ({exc})") from None
    if len(labels) != rows:
        raise UsageError(f"--texts {path} has {len(labels)} lines but the vectors have {rows} rows; "
                         "give one line per row, in order")
    return labels


def _hit_texts(args: argparse.Namespace, vectors: VectorsFile, indices) -> dict[int, str] | None:
    """The text of each hit row: a .npy's labels are its texts; a Parquet file's --text-column, if it has one."""
    rows = sorted({int(i) for i in indices.ravel()})
    if _is_npy(args.vectors):
        return None
    dataset = _parquet_dataset(args.vectors)
    if args.text_column not in dataset.schema.names or not rows:
        return None
    import pyarrow as pa

    taken = dataset.take(pa.array(rows, pa.int64()), columns=[args.text_column]).column(0).to_pylist()
    return dict(zip(rows, taken))


def _print(args: argparse.Namespace, vectors: VectorsFile, hits, texts: dict[int, str] | None) -> None:
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
