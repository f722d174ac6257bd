"""Reading a vectors file back: embed-file's Parquet file or directory (or any Parquet with a fixed-size-list
embedding column), or a .npy matrix. Blocks of rows at a time, so a caller that turns them into codes never
holds the whole file as float32. Needs pyarrow for Parquet only."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgembed.runtime import ModelFileError, UsageError

from .vectors_file import CODE_KINDS, EMBEDDING_COLUMN, VectorsFileHeader, header_from_metadata

NPY_BLOCK_ROWS = 65536
PYARROW_EXTRA = "jobs"
BINARY_PRECISIONS = ("binary", "ubinary")


def is_npy(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".npy"


class VectorsReader:
    """An opened vectors file: its rows, stored width and value type ("float", "int8" or "uint8") and header,
    checked against each other; the vectors themselves are read by `blocks`."""

    def __init__(self, path: Path, *, embedding_column: str = EMBEDDING_COLUMN) -> None:
        self.path = path
        self.embedding_column = embedding_column
        if is_npy(path):
            self._dataset = None
            self._open_npy()
        else:
            self._dataset = _parquet_dataset(path)
            self._open_parquet()
        stored = self.stored_precision
        if stored is not None and stored not in (("float32",) if self.kind == "float" else CODE_KINDS[self.kind]):
            raise ModelFileError(path, f"says it holds {stored} vectors, but its values are {self.kind}")

    def _open_npy(self) -> None:
        try:
            matrix = np.load(self.path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise ModelFileError(self.path, f"cannot be read as a .npy matrix ({exc})") from None
        kind = _value_kind(str(matrix.dtype) if matrix.dtype.kind != "f" else "float")
        if matrix.ndim != 2 or kind is None:
            raise ModelFileError(self.path, f"holds a {matrix.dtype} array of shape {matrix.shape}; expected "
                                            "float vectors or int8/uint8 codes (rows, columns)")
        self.rows, self.width, self.kind = matrix.shape[0], matrix.shape[1], kind
        self.header = VectorsFileHeader()  # a .npy records nothing about its vectors

    def _open_parquet(self) -> None:
        schema = self._dataset.schema
        if self.embedding_column not in schema.names:
            raise ModelFileError(self.path, f"has no column {self.embedding_column!r} (columns: "
                                            f"{', '.join(schema.names)}); name it with --embedding-column")
        column_type = schema.field(self.embedding_column).type
        size = getattr(column_type, "list_size", None)
        value = str(column_type.value_type) if size is not None else ""
        kind = _value_kind("float" if value in ("halffloat", "float", "double") else value)
        if size is None or kind is None:
            raise ModelFileError(self.path, f"column {self.embedding_column!r} is {column_type}, not a fixed-size "
                                            "list of floats or int8/uint8 codes as embed-file writes")
        self.rows, self.width, self.kind = self._dataset.count_rows(), size, kind
        self.header = header_from_metadata(schema.metadata, self.path)

    @property
    def stored_precision(self) -> str | None:
        """float32 for float vectors; for codes, the precision the header records (None: not recorded)."""
        return "float32" if self.kind == "float" else self.header.precision

    def dimension(self, precision: str | None) -> int:
        """The vectors' dimension if the file holds `precision`: binary codes pack 8 components per byte (the
        header's dimension says how many are real); other values are one component each."""
        if precision not in BINARY_PRECISIONS:
            return self.width
        return self.header.dimension or self.width * 8

    def has_column(self, name: str) -> bool:
        return self._dataset is not None and name in self._dataset.schema.names

    def blocks(self, *, id_column: str | None = None) -> Iterator[tuple[np.ndarray, list | None]]:
        """(vectors, ids) of consecutive rows, as float32 or as the stored codes; ids are None unless the file
        has `id_column`."""
        dtype = np.float32 if self.kind == "float" else np.dtype(self.kind)
        if self._dataset is None:
            matrix = np.load(self.path, mmap_mode="r")
            for start in range(0, len(matrix), NPY_BLOCK_ROWS):
                yield np.asarray(matrix[start:start + NPY_BLOCK_ROWS], dtype=dtype), None
            return
        with_ids = id_column is not None and self.has_column(id_column)
        columns = [self.embedding_column] + ([id_column] if with_ids else [])
        for batch in self._dataset.to_batches(columns=columns):
            column = batch.column(self.embedding_column)
            if column.null_count:
                raise ModelFileError(self.path, f"column {self.embedding_column!r} has empty (null) rows")
            block = column.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
            yield block.reshape(len(batch), self.width), batch.column(id_column).to_pylist() if with_ids else None

    def values_at(self, rows: list[int], column: str) -> list | None:
        """The values of `column` at `rows` (row numbers), in that order; None when the file has no such column."""
        if not self.has_column(column) or not rows:
            return None
        import pyarrow as pa

        return self._dataset.take(pa.array(rows, pa.int64()), columns=[column]).column(0).to_pylist()


def _value_kind(name: str) -> str | None:
    return name if name in ("float", *CODE_KINDS) else None


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
