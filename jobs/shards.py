"""Shard files: one Parquet file per shard (id, embedding), written to a temporary name and renamed.

A shard file exists under its final name only when it is complete, so the files present are the finished
shards. Each carries, in the Parquet file metadata under the key `edgembed`, the job's VectorsFileHeader
(vectors_file.py: model id, variant, backend, dimension, precision with the int8/uint8 ranges, job id), its row
range, its token counts and the rows it skipped.
"""
from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import JobStateError
from .state import sync_directory
from .vectors_file import EMBEDDING_COLUMN, ID_COLUMN, METADATA_KEY

EMBEDDING_TYPES = {np.dtype(np.float32): pa.float32(), np.dtype(np.int8): pa.int8(), np.dtype(np.uint8): pa.uint8()}
_PART = re.compile(r"part-(\d{6,})\.parquet")
_TEMPORARY = re.compile(r"\.part-\d+\.parquet\.tmp-.*")


def part_name(shard: int) -> str:
    return f"part-{shard:06d}.parquet"


@dataclass(frozen=True)
class ShardInfo:
    """What a finished shard file says about itself."""

    shard: int
    first_row: int
    end_row: int
    texts: int
    tokens: int
    truncated: int
    skipped: tuple[tuple[int, str], ...]


def shard_table(ids: list[object], vectors: np.ndarray, id_type: str, metadata: dict[str, object]) -> pa.Table:
    """The Arrow table of a shard: id (int64 or string) and embedding (a fixed-size list of float32, or of the
    int8/uint8 codes of a compact precision)."""
    kind = np.dtype(vectors.dtype)
    if kind not in EMBEDDING_TYPES:
        raise TypeError(f"embeddings of {kind} have no Parquet type here; expected one of "
                        f"{', '.join(map(str, EMBEDDING_TYPES))}")
    vectors = np.ascontiguousarray(vectors)
    width = vectors.shape[1]
    values = pa.Array.from_buffers(EMBEDDING_TYPES[kind], vectors.size, [None, pa.py_buffer(vectors.reshape(-1))])
    embedding = pa.FixedSizeListArray.from_arrays(values, width)
    id_array = _int64_array(ids) if id_type == "int64" else _string_array(ids)
    schema = pa.schema([pa.field(ID_COLUMN, id_array.type, nullable=False),
                        pa.field(EMBEDDING_COLUMN, pa.list_(EMBEDDING_TYPES[kind], width), nullable=False)],
                       metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})
    return pa.Table.from_arrays([id_array, embedding], schema=schema)


# Arrays built from buffers: pa.array() imports pandas when it is installed (half a second, once per process).
def _int64_array(values: list[object]) -> pa.Array:
    data = np.asarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(data), [None, pa.py_buffer(data)])


def _string_array(values: list[object]) -> pa.Array:
    encoded = [str(value).encode("utf-8") for value in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(item) for item in encoded], out=offsets[1:])
    return pa.Array.from_buffers(pa.string(), len(encoded), [None, pa.py_buffer(offsets),
                                                             pa.py_buffer(b"".join(encoded))])


def write_shard(directory: Path, shard: int, table: pa.Table) -> Path:
    """Write `table` as shard `shard` of `directory`: a temporary file, fsync, then an atomic rename."""
    final = directory / part_name(shard)
    temporary = directory / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        # embeddings are noise to a compressor; the row group is the shard, so readers can take one at a time
        with open(temporary, "wb") as handle:
            pq.write_table(table, handle, compression={ID_COLUMN: "snappy", EMBEDDING_COLUMN: "none"},
                           use_dictionary=[ID_COLUMN], write_statistics=[ID_COLUMN],
                           row_group_size=max(1, table.num_rows))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)
    sync_directory(directory)
    return final


def read_shard_info(path: Path, job_id: str) -> ShardInfo:
    """The metadata of a finished shard file; JobStateError when it belongs to another job or is unreadable."""
    try:
        metadata = pq.read_schema(path).metadata or {}
        content = json.loads(metadata[METADATA_KEY])
    except (KeyError, ValueError, OSError, pa.ArrowException) as exc:
        raise JobStateError(f"{path} is not a shard written by edgembed embed-file ({exc}); remove it or pass "
                            "--overwrite") from None
    if content.get("job_id") != job_id:
        raise JobStateError(f"{path} belongs to job {content.get('job_id')}, not {job_id}; pass --overwrite")
    rows = content["rows"]
    return ShardInfo(content["shard"], rows[0], rows[1], content["texts"], content["tokens"], content["truncated"],
                     tuple((row, reason) for row, reason in content["skipped"]))


def finished_shards(directory: Path, job_id: str) -> dict[int, ShardInfo]:
    """Every finished shard of `directory`, by shard number."""
    found = {}
    for path in directory.iterdir():
        match = _PART.fullmatch(path.name)
        if match:
            info = read_shard_info(path, job_id)
            if info.shard != int(match.group(1)):
                raise JobStateError(f"{path} holds shard {info.shard}; was it renamed? pass --overwrite")
            found[info.shard] = info
    return found


def remove_temporary_files(directory: Path) -> None:
    """Temporary files of a killed run (never renamed, so never part of the output)."""
    for path in directory.iterdir():
        if _TEMPORARY.fullmatch(path.name):
            path.unlink(missing_ok=True)


def is_job_file(name: str) -> bool:
    return bool(_PART.fullmatch(name) or _TEMPORARY.fullmatch(name)) or name in ("_job.json", "_skipped.jsonl") \
        or name.startswith("._job.json.tmp-") or name.startswith("._skipped.jsonl.tmp-")


def write_npy(parts: list[Path], target: Path, width: int, rows: int, dtype: np.dtype) -> None:
    """Concatenate the shards' embeddings (`width` columns of `dtype`), in order, into one .npy (written beside
    `target`, then renamed)."""
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        matrix = np.lib.format.open_memmap(temporary, mode="w+", dtype=dtype, shape=(rows, width))
        start = 0
        for path in parts:
            column = pq.read_table(path, columns=[EMBEDDING_COLUMN]).column(EMBEDDING_COLUMN).combine_chunks()
            block = column.values.to_numpy(zero_copy_only=False).reshape(-1, width)
            matrix[start:start + len(block)] = block
            start += len(block)
        matrix.flush()
        del matrix
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    sync_directory(target.parent)
