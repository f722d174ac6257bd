"""The vectors file `edgembed embed-file` writes: Parquet shards with an id and an embedding column (a fixed-size
list of float32, or of the int8/uint8 codes of a compact precision) whose schema metadata holds, as one JSON
object under the key `edgembed`, the header below plus the shard's own counts; or a bare .npy matrix."""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from edgembed.runtime import ModelFileError

METADATA_KEY = b"edgembed"
ID_COLUMN = "id"
EMBEDDING_COLUMN = "embedding"
# Value type of the embedding column -> the precisions whose codes it can hold (float columns hold float32).
CODE_KINDS = {"int8": ("int8", "binary"), "uint8": ("uint8", "ubinary")}
# Flat schema-metadata keys that name a header field in files made before the header was one JSON object,
# most specific first; read by header_from_metadata only.
LEGACY_KEYS = {"model_id": ("edgembed.model_id", "edgembed.model", "model_id", "model"),
               "variant": ("edgembed.variant", "variant"),
               "precision": ("edgembed.precision", "precision"),
               "dimension": ("edgembed.dimension", "dimension")}


@dataclass(frozen=True)
class VectorsFileHeader:
    """What a vectors file says about its vectors: the model that made them and how (None: not recorded)."""

    model_id: str | None = None
    variant: str | None = None
    backend: str | None = None
    dimension: int | None = None  # of the vectors, also when binary codes pack 8 of them per byte
    precision: str | None = None
    ranges: list[list[float]] | None = None  # int8/uint8: per-component min (row 0) and max (row 1)
    prompt: str | None = None
    prompt_name: str | None = None
    job_id: str | None = None
    edgembed_version: str | None = None

    def to_metadata(self) -> dict[str, object]:
        """The JSON object stored under METADATA_KEY (ranges only for the precisions that have them)."""
        fields = asdict(self)
        if self.ranges is None:
            del fields["ranges"]
        return fields


def header_from_metadata(metadata: Mapping[bytes, bytes] | None, source: object) -> VectorsFileHeader:
    """The header a Parquet schema's metadata records; `source` names the file in errors.

    embed-file stores the header as a JSON object under "edgembed". Files from before that, or written by hand,
    may carry model_id, variant, precision and dimension as flat keys instead (LEGACY_KEYS). Each of those four
    fields takes the first of its keys, in order, found with a value either as a flat key or inside the JSON
    object (where an "edgembed." prefix may be left off); the other fields come from the JSON object only.
    """
    flat = {key.decode("utf-8", "replace"): value.decode("utf-8", "replace")
            for key, value in (metadata or {}).items()}
    recorded = _recorded_object(flat)
    fields = {name: recorded.get(name) for name in ("backend", "ranges", "prompt", "prompt_name", "job_id",
                                                    "edgembed_version")}
    for name, keys in LEGACY_KEYS.items():
        fields[name] = _first(keys, flat, recorded)
    dimension = fields["dimension"]
    if dimension is not None and not dimension.isdigit():
        raise ModelFileError(source, f"records a dimension of {dimension!r}, not a whole number; write it "
                                     "again with edgembed embed-file")
    return VectorsFileHeader(**{**fields, "dimension": None if dimension is None else int(dimension)})


def _recorded_object(flat: dict[str, str]) -> dict:
    """The JSON object under "edgembed" ({} when absent or not an object: such a file records nothing)."""
    try:
        value = json.loads(flat.get(METADATA_KEY.decode(), "{}"))
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _first(keys: tuple[str, ...], flat: dict[str, str], recorded: dict) -> str | None:
    for key in keys:
        for source, name in ((flat, key), (recorded, key), (recorded, key.removeprefix("edgembed."))):
            if source.get(name):
                return str(source[name])
    return None
