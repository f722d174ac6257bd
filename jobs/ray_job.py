"""The job's shards on Ray Data: read tasks read one shard each, an actor pool embeds and writes them.

Each read task yields one block holding one whole shard (its good rows and its bad rows); `map_batches` with
`batch_size=None` hands each block to an actor as it is, so an actor embeds exactly the shard the single-box
job would, in the same chunks, and writes the same `part-NNNNNN.parquet` (temporary file, then rename). A
shard is written under a name that depends only on its number, so when Ray retries the work of a killed
actor, the retry replaces the file with the same rows: nothing is lost or doubled. The driver checks that
every pending shard came back once.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from edgembed.runtime.errors import EdgembedError, MissingDependencyError

from .embedding import EmbedSettings
from .errors import WorkerError
from .inputs import InputPlan, InputSpec, ShardRows, read_range
from .shard_work import check_bad_rows, finish_shard
from .shards import ShardInfo

# Rows of an empty shard (every line blank) travel as one placeholder row with this row number.
_NO_ROWS = -1


def run_on_ray(address: bool | str, *, spec: InputSpec, plan: InputPlan, pending: list[int], shard_size: int,
               settings: EmbedSettings, embedder, metadata: dict[str, object], directory: Path, on_bad_row: str,
               progress, actors: int | None, cpus_per_actor: int | None, streams: int | None,
               ship_model: bool) -> dict[int, ShardInfo]:
    """Embed the `pending` shards on a Ray actor pool; the infos of the shards written."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingDependencyError("ray", "ray") from None
    from edgembed.runtime.errors import check_positive_int

    if cpus_per_actor is not None:
        check_positive_int("cpus_per_actor", cpus_per_actor)
    started = not ray.is_initialized()
    if started:
        # Ray uploads a local working_dir only for a whole job (ray.init), not for one operator's actors
        ray.init(address=None if address is True else address, logging_level="WARNING",
                 runtime_env=_shipped_model(embedder) if ship_model else None)
    try:
        cpus_per_actor = cpus_per_actor or _default_cpus_per_actor(ray)
        pool = actors or max(1, int(ray.cluster_resources().get("CPU", 1)) // cpus_per_actor)
        check_positive_int("actors", pool)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the job's own progress counts shards as they come back
        _quiet_ray_data()
        # one block per read task, whatever its size: an actor gets whole shards, never a slice of one
        context.target_max_block_size = None
        source = ShardDatasource(spec, plan, pending, shard_size, on_bad_row)
        # same CPUs as the actors: Ray fuses the read into the actor pool (no extra worker processes)
        dataset = ray.data.read_datasource(source, override_num_blocks=len(pending), num_cpus=cpus_per_actor)
        actor_options = {"model_dir": None if ship_model else str(Path(embedder.directory).resolve()),
                         "variant": embedder.variant, "backend": embedder.backend, "max_length": embedder.max_length,
                         "threads": cpus_per_actor, "streams": streams, "settings": settings,
                         "id_type": plan.id_type, "metadata": metadata, "directory": str(directory.resolve())}
        # batch_size=None: each block (one whole shard) is one call; the actors' threads are their CPUs
        results = dataset.map_batches(EmbedShards, batch_size=None, batch_format="pyarrow",
                                      compute=ray.data.ActorPoolStrategy(size=pool), num_cpus=cpus_per_actor,
                                      fn_constructor_kwargs=actor_options)
        infos: dict[int, ShardInfo] = {}
        for batch in results.iter_batches(batch_size=None, batch_format="pyarrow"):
            for entry in batch.to_pylist():
                info = ShardInfo(entry["shard"], entry["first_row"], entry["end_row"], entry["texts"],
                                 entry["tokens"], entry["truncated"],
                                 tuple((row, reason) for row, reason in json.loads(entry["skipped"])))
                if info.shard in infos:
                    raise WorkerError(f"shard {info.shard} came back twice from the Ray workers")
                infos[info.shard] = info
                progress.update(rows=info.end_row - info.first_row, texts=info.texts, tokens=info.tokens)
    except Exception as exc:  # Ray wraps a worker's exception; an edgembed error inside is the one to report
        ours = _edgembed_error_inside(exc)
        if ours is not None:
            raise ours from None
        raise
    finally:
        if started:
            ray.shutdown()
    missing = sorted(set(pending) - set(infos))
    if missing:
        raise WorkerError(f"{len(missing)} shards did not come back from the Ray workers (first: {missing[:5]}); "
                          "run the same command again to embed them")
    return infos


def _quiet_ray_data() -> None:
    """Ray Data's INFO lines (execution plan, start, finish) stay in its log file, not on the job's stderr."""
    import logging

    from ray.util.debug import log_once

    log_once("ray_data_progress_manager_disabled")  # its note that bars are off: the job has its own
    for handler in logging.getLogger("ray.data").handlers:
        if "File" not in type(handler).__name__:  # the console handler; the session log file keeps everything
            handler.setLevel(max(handler.level, logging.WARNING))


def _edgembed_error_inside(exc: BaseException) -> EdgembedError | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, EdgembedError) and type(exc).__module__.startswith("edgembed."):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__
    return None


def _default_cpus_per_actor(ray) -> int:
    """2 where every node has 2 CPUs or more, else 1: one actor of two streams holds one copy of the weights and
    was at least as fast as two one-CPU actors in every run (docs/jobs.md)."""
    cpus = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")]
    return 2 if cpus and min(cpus) >= 2 else 1


def _shipped_model(embedder) -> dict[str, object]:
    """runtime_env uploading the export with the job: every file but other variants' model files."""
    keep = {entry.path for variant in embedder.manifest.variants if variant.dtype == embedder.variant
            for entry in variant.files}
    drop = sorted({entry.path for variant in embedder.manifest.variants for entry in variant.files} - keep)
    return {"working_dir": str(Path(embedder.directory).resolve()), "excludes": [f"/{path}" for path in drop]}


def _datasource_base():
    from ray.data import Datasource

    return Datasource


class ShardDatasource(_datasource_base()):
    """A Ray Data source whose read tasks each read one shard of the job's input (with edgembed's readers,
    so row numbers, ids and bad rows are exactly the single-box job's)."""

    def __init__(self, spec: InputSpec, plan: InputPlan, shards: list[int], shard_size: int,
                 on_bad_row: str) -> None:
        super().__init__()
        self._spec = spec
        self._tasks = [(shard, plan.offsets[shard], shard * shard_size, min((shard + 1) * shard_size, plan.rows))
                       for shard in shards]
        self._id_type = plan.id_type
        self._on_bad_row = on_bad_row

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list:
        from ray.data.block import BlockMetadata
        from ray.data.datasource import ReadTask

        return [ReadTask(functools.partial(_read_block, self._spec, self._id_type, self._on_bad_row, *task),
                         BlockMetadata(num_rows=task[3] - task[2], size_bytes=None, input_files=[str(self._spec.path)],
                                       exec_stats=None))
                for task in self._tasks]

    def get_name(self) -> str:
        return "EdgembedShards"


def _read_block(spec: InputSpec, id_type: str, on_bad_row: str, shard: int, offset: int, first: int, end: int):
    import pyarrow as pa

    rows = read_range(spec, id_type=id_type, offset=offset, first=first, end=end)
    check_bad_rows(rows, on_bad_row, str(spec.path))
    count = len(rows.rows) + len(rows.bad)
    row_numbers = rows.rows + [row for row, _ in rows.bad] or [_NO_ROWS]
    size = len(row_numbers)
    ids = rows.ids + [None] * (size - len(rows.ids))
    texts = rows.texts + [None] * (size - len(rows.texts))
    problems = [None] * len(rows.rows) + [reason for _, reason in rows.bad] + [None] * (size - count)
    yield pa.table({"shard": pa.array([shard] * size, pa.int64()), "first_row": pa.array([first] * size, pa.int64()),
                    "end_row": pa.array([end] * size, pa.int64()), "count": pa.array([count] * size, pa.int64()),
                    "row": pa.array(row_numbers, pa.int64()),
                    "id": pa.array(ids, pa.int64() if id_type == "int64" else pa.string()),
                    "text": pa.array(texts, pa.string()), "problem": pa.array(problems, pa.string())})


class EmbedShards:
    """The actor: loads the export once, on `threads` threads (its CPUs: ONNX Runtime and OpenVINO ignore
    OMP_NUM_THREADS), then embeds and writes every shard it is given; its model is closed when Ray Data shuts the
    actor down (Ray deletes the object then)."""

    def __init__(self, *, model_dir: str | None, variant: str, backend: str, max_length: int, threads: int,
                 streams: int | None, settings: EmbedSettings, id_type: str, metadata: dict[str, object],
                 directory: str) -> None:
        from edgembed.runtime import Embedder

        # model_dir None: the export was shipped as the job's runtime_env working_dir, the actor's current directory
        if model_dir is None and not os.path.isfile("manifest.json"):
            raise WorkerError(f"ship_model: no manifest.json in the actor's working directory {os.getcwd()}; when "
                              "Ray is started before embed_file, start it with ray.init(runtime_env="
                              "{'working_dir': OUT}), or drop ship_model and give every node the export's path")
        self._model = Embedder.load(model_dir or os.getcwd(), variant=variant, backend=backend,
                                    max_length=max_length, threads=threads, streams=streams)
        self._settings = settings
        self._id_type = id_type
        self._metadata = metadata
        self._directory = Path(directory)

    def __del__(self) -> None:
        model = getattr(self, "_model", None)  # absent when __init__ failed
        if model is not None:
            model.close()

    def __call__(self, batch):
        import pyarrow as pa

        columns = batch.to_pydict()
        shards = set(columns["shard"])
        if len(shards) != 1 or len(columns["row"]) != max(columns["count"][0], 1):
            raise WorkerError(f"a batch held {len(columns['row'])} rows of shards {sorted(shards)}, not one whole "
                              "shard; was DataContext.target_max_block_size changed?")
        shard = columns["shard"][0]
        rows = ShardRows(columns["first_row"][0], columns["end_row"][0])
        for row, row_id, text, problem in zip(columns["row"], columns["id"], columns["text"], columns["problem"]):
            if row == _NO_ROWS:
                continue
            if problem is None:
                rows.rows.append(row)
                rows.ids.append(row_id)
                rows.texts.append(text)
            else:
                rows.bad.append((row, problem))
        info = finish_shard(self._model, rows, shard=shard, settings=self._settings, id_type=self._id_type,
                            metadata=self._metadata, directory=self._directory)
        return pa.table({"shard": [info.shard], "first_row": [info.first_row], "end_row": [info.end_row],
                         "texts": [info.texts], "tokens": [info.tokens], "truncated": [info.truncated],
                         "skipped": [json.dumps([list(bad) for bad in info.skipped])], "pid": [os.getpid()]})
