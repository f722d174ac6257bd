"""One shard's work, the same on one box and in a Ray actor: check its bad rows, embed it, write its file."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgembed.runtime import EncodePlan

from .embedding import embed_texts
from .errors import InputFileError
from .inputs import ShardRows
from .shards import ShardInfo, shard_table, write_shard

_SHOWN_BAD_ROWS = 3


def check_bad_rows(rows: ShardRows, policy: str, input_name: str) -> None:
    """InputFileError naming the first bad rows when the policy is `error`."""
    if policy == "error" and rows.bad:
        shown = "; ".join(f"row {row}: {reason}" for row, reason in rows.bad[:_SHOWN_BAD_ROWS])
        more = f" (and {len(rows.bad) - _SHOWN_BAD_ROWS} more in rows {rows.first_row}-{rows.end_row - 1})" \
            if len(rows.bad) > _SHOWN_BAD_ROWS else ""
        raise InputFileError(f"INPUT {input_name}: {shown}{more}. Fix the input, or pass --on-bad-row skip to "
                             "embed the other rows and list these in the output's skipped file")


def finish_shard(model, rows: ShardRows, *, shard: int, encode_plan: EncodePlan, id_type: str,
                 metadata: dict[str, object], directory: Path,
                 on_chunk: Callable[[int, int], None] | None = None) -> ShardInfo:
    """Embed the good rows of a shard and write its file; the returned info is what the file's metadata says."""
    result = embed_texts(model, rows.texts, encode_plan, on_chunk)
    info = ShardInfo(shard, rows.first_row, rows.end_row, len(rows.texts), result.tokens, result.truncated,
                     tuple(rows.bad))
    content = {**metadata, "shard": shard, "rows": [rows.first_row, rows.end_row], "texts": info.texts,
               "tokens": info.tokens, "truncated": info.truncated, "skipped": [list(bad) for bad in rows.bad]}
    write_shard(directory, shard, shard_table(rows.ids, result.vectors, id_type, content))
    return info
