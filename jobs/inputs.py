"""Input files of a job: text (one per line), JSON Lines, CSV and Parquet, read one shard at a time.

A job is cut into shards of `shard_size` rows. Rows are numbered from 0: the line for text and JSONL (a blank
JSONL line holds nothing and yields no row), the record after the header for CSV, the row for Parquet. A scan
at the start finds where each shard begins (a byte offset, or a row for Parquet), so a shard can be read alone:
by the resumed job, or by a Ray read task.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputFileError

FORMATS = ("text", "jsonl", "csv", "parquet")
_EXTENSIONS = {".txt": "text", ".text": "text", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
               ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4")
_SCAN_BLOCK = 1 << 22
ID_TYPES = ("int64", "string")


@dataclass(frozen=True)
class InputSpec:
    """Where the texts are and how to read them."""

    path: Path
    format: str
    text_field: str = "text"
    id_field: str | None = None

    @property
    def delimiter(self) -> str:
        return "\t" if self.path.suffix.lower() == ".tsv" else ","


@dataclass(frozen=True)
class InputPlan:
    """What the scan found: the rows, where each shard starts and the type of the ids."""

    rows: int
    offsets: tuple[int, ...]
    id_type: str

    @property
    def shards(self) -> int:
        return len(self.offsets)


@dataclass
class ShardRows:
    """The rows of one shard: the good ones (row number, id, text) and the bad ones (row number, reason)."""

    first_row: int
    end_row: int
    rows: list[int] = field(default_factory=list)
    ids: list[object] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    bad: list[tuple[int, str]] = field(default_factory=list)


def input_spec(path: str | Path, *, input_format: str | None = None, text_field: str = "text",
               id_field: str | None = None) -> InputSpec:
    """The InputSpec of `path`: the format from `input_format` or the file's extension (text when unknown)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"INPUT {path} is not a file" + (" (a directory of Parquet files is not supported "
                                                             "yet; pass one file)" if path.is_dir() else ""))
    suffix = path.suffix.lower()
    if suffix in _COMPRESSED:
        raise InputFileError(f"INPUT {path} is compressed ({suffix}); decompress it first")
    if input_format is None:
        if suffix == ".json":
            raise InputFileError(f"INPUT {path}: a .json file may be one JSON document; for JSON Lines (one object "
                                 "a line) pass --input-format jsonl")
        input_format = _EXTENSIONS.get(suffix, "text")
    if input_format not in FORMATS:
        raise InputFileError(f"unknown input format {input_format!r}; available: {', '.join(FORMATS)}")
    if input_format == "text" and id_field is not None:
        raise InputFileError("a text file (one text per line) has no fields: drop --id-field (ids are line "
                             "numbers from 0), or use JSONL, CSV or Parquet")
    return InputSpec(path, input_format, text_field, id_field)


def scan(spec: InputSpec, shard_size: int) -> InputPlan:
    """Count the rows and find where every shard starts (one pass over the file, nothing kept but offsets)."""
    if spec.format == "parquet":
        return _scan_parquet(spec, shard_size)
    if spec.format == "csv":
        return _scan_csv(spec, shard_size)
    rows, offsets = _scan_lines(spec.path, shard_size)
    return InputPlan(rows, offsets, _jsonl_id_type(spec) if spec.format == "jsonl" else "int64")


def read_shard(spec: InputSpec, plan: InputPlan, shard: int, shard_size: int) -> ShardRows:
    """The rows of shard `shard`, with bad rows set aside with their reason."""
    first = shard * shard_size
    return read_range(spec, id_type=plan.id_type, offset=plan.offsets[shard], first=first,
                      end=min(first + shard_size, plan.rows))


def read_range(spec: InputSpec, *, id_type: str, offset: int, first: int, end: int) -> ShardRows:
    """Rows `first` to `end` (excluded), starting at `offset` (a byte, or the row for Parquet)."""
    out = ShardRows(first, end)
    reader = {"text": _text_rows, "jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows}[spec.format]
    for row, row_id, text, problem in reader(spec, id_type, offset, first, end):
        if problem is None:
            problem = text_problem(text)
        if problem is None:
            out.rows.append(row)
            out.ids.append(row_id)
            out.texts.append(text)
        else:
            out.bad.append((row, problem))
    return out


def text_problem(text: object) -> str | None:
    """Why `text` cannot be embedded, or None."""
    if text is None:
        return "the text is null"
    if not isinstance(text, str):
        return f"the text is {type(text).__name__}, not a string"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"the text is not valid UTF-8 (at character {exc.start})"
    return None


def _scan_lines(path: Path, shard_size: int) -> tuple[int, tuple[int, ...]]:
    """(lines, byte offset of every shard_size-th line): newline positions found with numpy, a block at a time."""
    offsets = [0]
    lines = 0
    position = 0
    last = b"\n"
    with open(path, "rb") as handle:
        while block := handle.read(_SCAN_BLOCK):
            newlines = np.flatnonzero(np.frombuffer(block, np.uint8) == 10)
            # the line numbered k starts after the k-th newline; shard boundaries are multiples of shard_size
            first_needed = len(offsets) * shard_size - lines
            for index in range(first_needed - 1, len(newlines), shard_size):
                offsets.append(position + int(newlines[index]) + 1)
            lines += len(newlines)
            position += len(block)
            last = block[-1:]
    if position and last != b"\n":
        lines += 1  # a last line without its newline
    return lines, tuple(offset for offset in offsets if offset < position)


def _text_rows(spec: InputSpec, id_type: str, offset: int, first: int, end: int):
    with open(spec.path, "rb") as handle:
        handle.seek(offset)
        for row in range(first, end):
            raw = handle.readline()
            raw = raw[:-1] if raw.endswith(b"\n") else raw
            raw = raw[:-1] if raw.endswith(b"\r") else raw
            try:
                yield row, row, raw.decode("utf-8"), None
            except UnicodeDecodeError as exc:
                yield row, row, None, (f"line {row + 1} is not UTF-8 (byte {raw[exc.start]:#04x} at position "
                                       f"{exc.start})")


def _jsonl_id_type(spec: InputSpec) -> str:
    """int64 or string: the type of the id in the first row that has one (ids of the other type are bad rows)."""
    if spec.id_field is None:
        return "int64"
    with open(spec.path, "rb") as handle:
        for raw in handle:
            try:
                value = json.loads(raw)
            except ValueError:
                continue
            row_id = value.get(spec.id_field) if isinstance(value, dict) else None
            if isinstance(row_id, bool):
                continue
            if isinstance(row_id, int):
                return "int64"
            if isinstance(row_id, str):
                return "string"
    return "string"


def _jsonl_rows(spec: InputSpec, id_type: str, offset: int, first: int, end: int):
    with open(spec.path, "rb") as handle:
        handle.seek(offset)
        for row in range(first, end):
            raw = handle.readline()
            if not raw.strip():
                continue  # a blank line holds nothing: no row
            try:
                value = json.loads(raw)
            except UnicodeDecodeError as exc:
                yield row, None, None, f"line {row + 1} is not UTF-8 ({exc.reason} at byte {exc.start})"
                continue
            except ValueError as exc:
                yield row, None, None, f"line {row + 1} is not JSON ({exc})"
                continue
            if not isinstance(value, dict):
                yield row, None, None, f"line {row + 1} is a JSON {type(value).__name__}, not an object"
                continue
            yield (row, *_fields(spec, id_type, value, f"line {row + 1}", row))


def _fields(spec: InputSpec, id_type: str, record: dict, where: str, row: int) -> tuple:
    """(id, text, problem) of a JSONL object or CSV record."""
    if spec.text_field not in record:
        return None, None, f"{where} has no field {spec.text_field!r} (--text-field)"
    text = record[spec.text_field]
    if spec.id_field is None:
        return row, text, None
    if spec.id_field not in record:
        return None, None, f"{where} has no field {spec.id_field!r} (--id-field)"
    row_id = record[spec.id_field]
    expected = int if id_type == "int64" else str
    if isinstance(row_id, bool) or not isinstance(row_id, expected):
        return None, None, (f"{where}: id {row_id!r} is {type(row_id).__name__}; this file's ids are "
                            f"{expected.__name__} (the type of the first row's id)")
    if expected is int and not -2**63 <= row_id < 2**63:
        return None, None, f"{where}: id {row_id} does not fit in 64 bits"
    return row_id, text, None


class _OffsetLines:
    """Lines of a binary file decoded for the csv module, keeping count of the bytes and lines handed out."""

    def __init__(self, handle, offset: int) -> None:
        handle.seek(offset)
        self._handle = handle
        self.offset = offset
        self.lines = 0

    def __iter__(self) -> Iterator[str]:
        for raw in self._handle:
            self.offset += len(raw)
            self.lines += 1
            yield raw.decode("utf-8", "surrogateescape")  # bad bytes become a bad row, not a failed file


def _csv_header(spec: InputSpec, handle) -> tuple[list[str], int]:
    """The header's field names and the byte offset of the first record; checks the fields asked for exist."""
    lines = _OffsetLines(handle, 0)
    try:
        header = next(csv.reader(lines, delimiter=spec.delimiter))
    except StopIteration:
        return [], lines.offset
    except csv.Error as exc:
        raise InputFileError(f"INPUT {spec.path}: the CSV header cannot be parsed ({exc})") from None
    header = [name.lstrip("\ufeff") if index == 0 else name for index, name in enumerate(header)]
    for option, name in (("--text-field", spec.text_field), ("--id-field", spec.id_field)):
        if name is not None and name not in header:
            raise InputFileError(f"INPUT {spec.path}: the CSV header has no column {name!r} ({option}); its "
                                 f"columns: {', '.join(header)}")
    return header, lines.offset


def _scan_csv(spec: InputSpec, shard_size: int) -> InputPlan:
    with open(spec.path, "rb") as handle:
        header, start = _csv_header(spec, handle)
        if not header:
            return InputPlan(0, (), "string")
        lines = _OffsetLines(handle, start)
        reader = csv.reader(lines, delimiter=spec.delimiter)
        offsets, rows = [], 0
        while True:
            before = lines.offset
            try:
                next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise InputFileError(f"INPUT {spec.path}: CSV record {rows} (line {reader.line_num + 1}) cannot "
                                     f"be parsed ({exc}); the rest of the file cannot be trusted, fix it "
                                     "first") from None
            if rows % shard_size == 0:
                offsets.append(before)
            rows += 1
    return InputPlan(rows, tuple(offsets), "string")


def _csv_rows(spec: InputSpec, id_type: str, offset: int, first: int, end: int):
    with open(spec.path, "rb") as handle:
        header, _ = _csv_header(spec, handle)
        lines = _OffsetLines(handle, offset)
        reader = csv.reader(lines, delimiter=spec.delimiter)
        for row in range(first, end):
            fields = next(reader)
            where = f"record {row} (ending at line {lines.lines} after byte {offset})"
            if len(fields) != len(header):
                yield row, None, None, f"{where} has {len(fields)} fields, the header {len(header)}"
                continue
            yield (row, *_fields(spec, id_type, dict(zip(header, fields)), where, row))


def _scan_parquet(spec: InputSpec, shard_size: int) -> InputPlan:
    import pyarrow as pa

    schema, rows = _parquet_schema(spec)
    text_type = schema.field(spec.text_field).type
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
        raise InputFileError(f"INPUT {spec.path}: column {spec.text_field!r} is {text_type}, not a string column")
    id_type = "int64"
    if spec.id_field is not None:
        kind = schema.field(spec.id_field).type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            id_type = "string"
        elif not pa.types.is_integer(kind):
            raise InputFileError(f"INPUT {spec.path}: id column {spec.id_field!r} is {kind}; ids must be integers "
                                 "or strings")
    return InputPlan(rows, tuple(range(0, rows, shard_size)), id_type)


def _parquet_schema(spec: InputSpec):
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(spec.path)
    except Exception as exc:  # pyarrow raises ArrowInvalid and others for a file that is not Parquet
        raise InputFileError(f"INPUT {spec.path} cannot be read as Parquet ({exc})") from None
    schema = handle.schema_arrow
    for option, name in (("--text-field", spec.text_field), ("--id-field", spec.id_field)):
        if name is not None and name not in schema.names:
            raise InputFileError(f"INPUT {spec.path}: no column {name!r} ({option}); its columns: "
                                 f"{', '.join(schema.names)}")
    return schema, handle.metadata.num_rows


def _parquet_rows(spec: InputSpec, id_type: str, offset: int, first: int, end: int):
    import pyarrow.parquet as pq

    handle = pq.ParquetFile(spec.path)
    columns = [spec.text_field] + ([spec.id_field] if spec.id_field and spec.id_field != spec.text_field else [])
    starts = np.cumsum([0] + [handle.metadata.row_group(i).num_rows for i in range(handle.num_row_groups)])
    groups = [i for i in range(handle.num_row_groups) if starts[i] < end and starts[i + 1] > first]
    row = int(starts[groups[0]]) if groups else end
    for batch in handle.iter_batches(batch_size=8192, row_groups=groups, columns=columns, use_threads=False):
        texts = batch.column(spec.text_field).to_pylist()
        ids = batch.column(spec.id_field).to_pylist() if spec.id_field else None
        for position, text in enumerate(texts):
            if first <= row < end:
                row_id = row if ids is None else ids[position]
                if row_id is None:
                    yield row, None, None, f"row {row}: id is null"
                elif text is None:
                    yield row, None, None, f"row {row}: the text is null"
                else:
                    yield row, row_id, text, None
            row += 1
            if row >= end:
                return
