"""The job's shards on Ray Data, through its public API: one row per pending shard, an actor pool that reads,
embeds and writes each shard it is given.

`ray.data.from_items` makes one block of each shard's descriptor (its number, where it starts, its rows);
`map_batches(EmbedShards, batch_size=1, compute=ActorPoolStrategy(size=actors))` hands the actors one
descriptor per call. The actor reads the shard with the single-box job's readers, embeds it in the same
chunks and writes the same `part-NNNNNN.parquet` (temporary file, then rename). A shard is written under a
name that depends only on its number, so when Ray retries the work of a killed actor, the retry replaces the
file with the same rows: nothing is lost or doubled. The driver checks that every pending shard came back once.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import replace
from pathlib import Path

from edgembed.runtime import EncodeOptions, LoadOptions
from edgembed.runtime.errors import EdgembedError, MissingDependencyError

from .errors import WorkerError
from .inputs import InputPlan, InputSpec, read_range
from .options import RayOptions
from .shard_work import check_bad_rows, finish_shard
from .shards import ShardInfo


def run_on_ray(options: RayOptions, *, spec: InputSpec, plan: InputPlan, pending: list[int], shard_size: int,
               encode: EncodeOptions, load: LoadOptions, embedder, metadata: dict[str, object], directory: Path,
               on_bad_row: str, progress) -> dict[int, ShardInfo]:
    """Embed the `pending` shards on a Ray actor pool; the infos of the shards written. The actors load the
    driver's variant and backend with `load`'s other options, on their CPUs' threads."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingDependencyError("ray", "ray") from None
    started = not ray.is_initialized()
    if started:
        # Ray uploads a local working_dir only for a whole job (ray.init), not for one operator's actors
        ray.init(address=options.address, logging_level="WARNING",
                 runtime_env=_shipped_model(embedder) if options.ship_model else None)
    try:
        cpus_per_actor = options.cpus_per_actor or _default_cpus_per_actor(ray)
        pool = options.actors or max(1, int(ray.cluster_resources().get("CPU", 1)) // cpus_per_actor)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the job's own progress counts shards as they come back
        context.raise_original_map_exception = True  # an actor's EdgembedError comes back itself, not wrapped
        _quiet_ray_data()
        # one block per shard, so that the pool spreads the shards over its actors
        shards = ray.data.from_items(_descriptors(plan, pending, shard_size), override_num_blocks=len(pending))
        actor_load = replace(load, variant=embedder.variant, backend=embedder.backend, max_length=embedder.max_length,
                             threads=cpus_per_actor)
        actor_options = {"model_dir": None if options.ship_model else str(Path(embedder.directory).resolve()),
                         "load": actor_load, "encode": encode, "id_type": plan.id_type, "metadata": metadata,
                         "directory": str(directory.resolve())}
        # the actors' threads are their CPUs; the reading options go to every call
        results = shards.map_batches(EmbedShards, batch_size=1, batch_format="pyarrow",
                                     compute=ray.data.ActorPoolStrategy(size=pool), num_cpus=cpus_per_actor,
                                     fn_constructor_kwargs=actor_options,
                                     fn_kwargs={"spec": spec, "on_bad_row": on_bad_row})
        infos: dict[int, ShardInfo] = {}
        for batch in results.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in batch.to_pylist():
                info = _shard_info(row)
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
    """Ray Data's INFO lines (execution plan, start, finish) and its note that progress bars are off stay in its
    log file, not on the job's stderr."""
    import logging

    for handler in logging.getLogger("ray.data").handlers:
        # the console handler; the session log file keeps everything
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(max(handler.level, logging.WARNING))
            handler.addFilter(_not_the_progress_bar_note)


def _not_the_progress_bar_note(record) -> bool:
    """False for Ray Data's warning that its bars are off: the job turned them off and shows its own (if Ray
    rewords it, the note is shown, nothing else changes)."""
    return not record.getMessage().startswith("Progress bars disabled")


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


def _descriptors(plan: InputPlan, pending: list[int], shard_size: int) -> list[dict[str, int]]:
    """One row per shard to embed: its number, where it starts in INPUT and its rows (first, end excluded)."""
    return [{"shard": shard, "offset": plan.offsets[shard], "first_row": shard * shard_size,
             "end_row": min((shard + 1) * shard_size, plan.rows)} for shard in pending]


class EmbedShards:
    """The actor: loads the export once, on `threads` threads (its CPUs: ONNX Runtime and OpenVINO ignore
    OMP_NUM_THREADS), then embeds and writes every shard it is given; its model is closed when Ray Data shuts the
    actor down (Ray deletes the object then)."""

    def __init__(self, *, model_dir: str | None, load: LoadOptions, encode: EncodeOptions, id_type: str,
                 metadata: dict[str, object], directory: str) -> None:
        from edgembed.runtime import Embedder

        # model_dir None: the export was shipped as the job's runtime_env working_dir, the actor's current directory
        if model_dir is None and not os.path.isfile("manifest.json"):
            raise WorkerError(f"ship_model: no manifest.json in the actor's working directory {os.getcwd()}; when "
                              "Ray is started before embed_file, start it with ray.init(runtime_env="
                              "{'working_dir': OUT}), or drop ship_model and give every node the export's path")
        self._model = Embedder.load_with(model_dir or os.getcwd(), load)
        self._encode_plan = self._model.check(encode)  # once per actor, not per shard
        self._id_type = id_type
        self._metadata = metadata
        self._directory = Path(directory)

    def __del__(self) -> None:
        model = getattr(self, "_model", None)  # absent when __init__ failed
        if model is not None:
            model.close()

    def __call__(self, batch, *, spec: InputSpec, on_bad_row: str):
        """Read, embed and write each shard of `batch` (one descriptor a row); one summary row per shard."""
        import pyarrow as pa

        infos = []
        for shard in batch.to_pylist():
            rows = read_range(spec, id_type=self._id_type, offset=shard["offset"], first=shard["first_row"],
                              end=shard["end_row"])
            check_bad_rows(rows, on_bad_row, str(spec.path))
            infos.append(finish_shard(self._model, rows, shard=shard["shard"], encode_plan=self._encode_plan,
                                      id_type=self._id_type, metadata=self._metadata, directory=self._directory))
        return pa.Table.from_pylist([_summary_row(info) for info in infos])


def _summary_row(info: ShardInfo) -> dict[str, object]:
    """A shard's info as one row of the actors' output (its skipped rows as JSON: a row number and a reason)."""
    return {**dataclasses.asdict(info), "skipped": json.dumps([list(bad) for bad in info.skipped])}


def _shard_info(row: dict) -> ShardInfo:
    return ShardInfo(**{**row, "skipped": tuple((number, reason) for number, reason in json.loads(row["skipped"]))})
