"""A job's own options, apart from the model's (LoadOptions) and the vectors' (EncodeOptions); imports no pyarrow,
so the CLI's parser can take its defaults from here."""
from __future__ import annotations

from dataclasses import dataclass

from edgembed.runtime.errors import InvalidArgumentError, check_bool, check_optional_str, check_positive_int

DEFAULT_SHARD_SIZE = 10_000
OUTPUT_FORMATS = ("parquet", "npy")
BAD_ROW_POLICIES = ("error", "skip")


@dataclass(frozen=True)
class JobOptions:
    """Where the texts are in INPUT, how VECTORS is written, and what happens to what is already there."""

    input_format: str | None = None  # by INPUT's extension when None
    text_field: str = "text"
    id_field: str | None = None  # row numbers from 0 when None
    output_format: str | None = None  # by VECTORS' suffix when None
    shard_size: int = DEFAULT_SHARD_SIZE
    on_bad_row: str = "error"
    overwrite: bool = False

    def __post_init__(self) -> None:
        check_optional_str("input_format", self.input_format)
        check_optional_str("id_field", self.id_field)
        if self.output_format is not None and self.output_format not in OUTPUT_FORMATS:
            raise InvalidArgumentError("output_format", self.output_format, " or ".join(map(repr, OUTPUT_FORMATS)))
        check_positive_int("shard_size", self.shard_size)
        if self.on_bad_row not in BAD_ROW_POLICIES:
            raise InvalidArgumentError("on_bad_row", self.on_bad_row, " or ".join(map(repr, BAD_ROW_POLICIES)))
        check_bool("overwrite", self.overwrite)


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the job runs on Ray (docs/jobs.md)."""

    address: str | None = None  # None: a local Ray, or the cluster of RAY_ADDRESS
    actors: int | None = None  # None: the cluster's CPUs // cpus_per_actor
    cpus_per_actor: int | None = None  # None: 2 where every node has 2 or more, else 1
    ship_model: bool = False  # upload the export with the job instead of reading it on every node

    def __post_init__(self) -> None:
        check_optional_str("address", self.address)
        if self.actors is not None:
            check_positive_int("actors", self.actors)
        if self.cpus_per_actor is not None:
            check_positive_int("cpus_per_actor", self.cpus_per_actor)
        check_bool("ship_model", self.ship_model)
