"""embed_file: a corpus file in, embeddings out as Parquet shards (or one .npy), resumable, on one box or Ray."""
from __future__ import annotations

import importlib
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from edgembed import __version__
from edgembed.runtime import ClosedError, EncodeOptions, EncodePlan, LoadOptions
from edgembed.runtime.errors import InvalidArgumentError, InvalidTypeError, MissingDependencyError
from edgembed.runtime.precision import CODE_DTYPES, code_width

from .embedding import vector_options
from .errors import JobStateError
from .options import JobOptions, RayOptions
from .progress import DEFAULT_LOG_SECONDS, MODES, Progress, choose_mode
from .shard_work import check_bad_rows, finish_shard
from .state import JobState, check_same_job, input_fingerprint, model_fingerprint, read_state, write_atomically
from .vectors_file import VectorsFileHeader

SKIPPED_FILE = "_skipped.jsonl"
LABEL = "edgembed embed-file"


@dataclass(frozen=True)
class JobSummary:
    """The whole job's counts (resumed shards included) and this run's time."""

    output: str
    rows: int
    texts: int
    skipped: int
    tokens: int
    truncated: int
    shards: int
    resumed_shards: int
    texts_this_run: int
    tokens_this_run: int
    seconds: float
    model_id: str
    variant: str
    backend: str
    dimension: int
    precision: str = "float32"

    @property
    def texts_per_second(self) -> float:
        return self.texts_this_run / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "texts_per_second": round(self.texts_per_second, 1)}

    def line(self) -> str:
        resumed = f", {self.resumed_shards} of {self.shards} shards done before" if self.resumed_shards else ""
        skipped = f", {self.skipped:,} rows skipped" if self.skipped else ""
        codes = f" as {self.precision} codes" if self.precision != "float32" else ""
        return (f"{self.texts:,} texts, {self.tokens:,} tokens, {self.truncated:,} truncated{skipped}; "
                f"{self.texts_this_run:,} embedded in {self.seconds:.1f} s ({self.texts_per_second:,.0f} texts/s)"
                f"{resumed} -> {self.output} ({self.variant} on {self.backend}, {self.dimension} dimensions{codes})")


def embed_file(model, input, output, *, encode: EncodeOptions = EncodeOptions(), load: LoadOptions = LoadOptions(),
               job: JobOptions = JobOptions(), ray: RayOptions | None = None, progress: bool | str | None = None,
               log_every: float = DEFAULT_LOG_SECONDS, stream: TextIO | None = None) -> JobSummary:
    """Embed every text of `input` with `model` (an export directory or a loaded Embedder) into `output`.

    `input`: text (one per line), JSONL, CSV or Parquet (by extension, or `job.input_format`); `job.text_field`
    and `job.id_field` name the fields (ids default to row numbers from 0). `output`: a directory of Parquet
    shards (id, embedding) plus `_job.json`, or a `.npy` matrix (`job.output_format`, default by the name's
    suffix). The job runs in shards of `job.shard_size` rows, each written atomically: run it again with the
    same arguments after an interruption and it embeds only the missing shards. A different model, input or
    vector option is refused unless `job.overwrite`. `job.on_bad_row`: "error" stops at a bad row, naming it;
    "skip" leaves it out and lists it in `_skipped.jsonl`. `encode` holds Embedder.encode's options (prompt, dim,
    chunking, precision, batch sizes): precision "int8"/"uint8"/"binary"/"ubinary" writes sentence-transformers'
    codes, with the export's fixed ranges recorded in the file metadata. `load` holds Embedder.load's, used when
    `model` is a path; the Ray actors load with them too. `progress`: None picks a bar on a terminal and a line
    every `log_every` seconds otherwise. `ray` runs the shards on a Ray actor pool (RayOptions: the address, the
    actors and their CPUs, default 2 where every node has 2 or more: one copy of the weights for two streams,
    docs/jobs.md; `ship_model` uploads the export with the job instead of reading it from the same path on every
    node).
    """
    _require("pyarrow", "jobs")
    from .inputs import input_spec, scan

    _check_types(encode=encode, load=load, job=job, ray=ray)
    stream = stream or sys.stderr
    mode = choose_mode(progress, stream)
    if mode not in MODES:
        raise InvalidArgumentError("progress", progress, "None, True, False or one of " + ", ".join(MODES))
    spec = input_spec(input, input_format=job.input_format, text_field=job.text_field, id_field=job.id_field)
    target = _output_target(Path(output), job)
    embedder = _load(model, load)
    # An Embedder the caller passed stays open; one loaded here is closed when the job ends, however it ends.
    try:
        encode_plan = _check_encode(embedder, encode)  # before any file is touched
        start = time.perf_counter()
        plan = scan(spec, job.shard_size)
        state = _job_state(spec, plan, embedder, target, encode_plan, load, job, ray)
        directory = _prepare(target, state, job.overwrite, output_format=_kind(target, job.output_format),
                             stream=stream)
        from .shards import finished_shards, remove_temporary_files

        remove_temporary_files(directory)
        infos = finished_shards(directory, state.job_id)
        pending = [shard for shard in range(plan.shards) if shard not in infos]
        state.write(directory, "running")
        header = VectorsFileHeader(model_id=embedder.model_id, variant=embedder.variant, backend=embedder.backend,
                                   dimension=encode_plan.dimension, precision=encode.precision,
                                   ranges=None if encode_plan.ranges is None else encode_plan.ranges.tolist(),
                                   prompt=encode.prompt, prompt_name=encode.prompt_name, job_id=state.job_id,
                                   edgembed_version=__version__)
        metadata = header.to_metadata()  # plain JSON data: it travels to the shard writers, on Ray too
        done_rows = sum(info.end_row - info.first_row for info in infos.values())
        bar = Progress(total=plan.rows, done=done_rows, mode=mode, label=LABEL, every=log_every, stream=stream)
        try:
            if pending and ray is not None:
                _require("ray", "ray")
                from .ray_job import run_on_ray

                if embedder is not model:  # the actors load their own; the driver's copy would only hold memory
                    embedder.close()

                infos.update(run_on_ray(ray, spec=spec, plan=plan, pending=pending, shard_size=job.shard_size,
                                        encode=encode, load=load, embedder=embedder, metadata=metadata,
                                        directory=directory, on_bad_row=job.on_bad_row, progress=bar))
            elif pending:
                infos.update(_run_here(embedder, spec=spec, plan=plan, pending=pending, shard_size=job.shard_size,
                                       encode_plan=encode_plan, metadata=metadata, directory=directory,
                                       on_bad_row=job.on_bad_row, progress=bar))
        finally:
            bar.close()
        summary = JobSummary(
            output=str(target), rows=plan.rows, texts=sum(i.texts for i in infos.values()),
            skipped=sum(len(i.skipped) for i in infos.values()), tokens=sum(i.tokens for i in infos.values()),
            truncated=sum(i.truncated for i in infos.values()), shards=plan.shards,
            resumed_shards=plan.shards - len(pending), texts_this_run=bar.texts, tokens_this_run=bar.tokens,
            seconds=time.perf_counter() - start, model_id=embedder.model_id, variant=embedder.variant,
            backend=embedder.backend, dimension=encode_plan.dimension, precision=encode.precision)
        _finish(target, directory, state, infos, summary, _kind(target, job.output_format))
        return summary
    finally:
        if embedder is not model:
            embedder.close()


def _check_types(**values: object) -> None:
    """Each option value is of its class (None allowed for ray): a dict or a keyword would fail later, less clearly."""
    classes = {"encode": EncodeOptions, "load": LoadOptions, "job": JobOptions, "ray": RayOptions}
    for name, value in values.items():
        if not isinstance(value, classes[name]) and not (name == "ray" and value is None):
            raise InvalidTypeError(name, value, classes[name].__name__ + (" or None" if name == "ray" else ""))


def _check_encode(embedder, encode: EncodeOptions) -> EncodePlan:
    """The options checked against the model: a bad prompt name or dim, or int8 without ranges at that dim, fails
    here, as does an Embedder already closed."""
    if encode.ranges is not None:
        raise InvalidArgumentError("ranges", "(an array)", "None", "a job's int8/uint8 codes use the export's "
                                   "fixed ranges, which it records in the file metadata")
    if embedder.closed:
        raise ClosedError(embedder.directory)
    return embedder.check(encode)


def _job_state(spec, plan, embedder, target: Path, encode_plan: EncodePlan, load: LoadOptions, job: JobOptions,
               ray: RayOptions | None) -> JobState:
    """What identifies the job (input, model, vectors: a resume must match them) and what it was run with."""
    encode = encode_plan.options
    return JobState(
        identity={"input": {"format": spec.format, "text_field": spec.text_field, "id_field": spec.id_field,
                            **input_fingerprint(spec.path)},
                  "model": model_fingerprint(embedder),
                  "vectors": {**vector_options(encode), "dimension": encode_plan.dimension,
                              "shard_size": job.shard_size}},
        details={"paths": {"input": str(spec.path.resolve()), "model": str(Path(embedder.directory).resolve()),
                           "output": str(target.resolve())},
                 "plan": {"rows": plan.rows, "shards": plan.shards, "id_type": plan.id_type},
                 "execution": {"batch_size": encode.batch_size, "max_batch_tokens": encode.max_batch_tokens,
                               "threads": load.threads, "streams": load.streams, "on_bad_row": job.on_bad_row,
                               "ray": False if ray is None else ray.address or "local or RAY_ADDRESS",
                               "edgembed_version": __version__}})


def _run_here(embedder, *, spec, plan, pending, shard_size, encode_plan, metadata, directory, on_bad_row, progress):
    from .inputs import read_shard

    infos = {}
    for shard in pending:
        rows = read_shard(spec, plan, shard, shard_size)
        check_bad_rows(rows, on_bad_row, str(spec.path))
        infos[shard] = finish_shard(embedder, rows, shard=shard, encode_plan=encode_plan, id_type=plan.id_type,
                                    metadata=metadata, directory=directory,
                                    on_chunk=lambda texts, tokens: progress.update(rows=texts, texts=texts,
                                                                                   tokens=tokens))
        progress.update(rows=(rows.end_row - rows.first_row) - len(rows.texts), texts=0, tokens=0)
    return infos




def _require(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(module, extra) from None


def _load(model, options: LoadOptions):
    from edgembed.runtime import Embedder

    if isinstance(model, Embedder):
        return model
    if not isinstance(model, (str, Path)):
        raise InvalidTypeError("model", model, "an export directory (str or Path) or an Embedder")
    return Embedder.load_with(model, options)


def _kind(target: Path, output_format: str | None) -> str:
    return output_format or ("npy" if target.suffix.lower() == ".npy" else "parquet")


def _output_target(target: Path, job: JobOptions) -> Path:
    if _kind(target, job.output_format) == "npy" and job.id_field is not None:
        raise InvalidArgumentError("id_field", job.id_field, "no id field with a .npy output",
                                   "a .npy holds only the matrix (rows in input order); write a Parquet "
                                   "directory to keep ids")
    return target


def work_directory(target: Path, kind: str) -> Path:
    """Where the shards go: VECTORS itself for Parquet, VECTORS.parts beside a .npy until it is assembled."""
    return target if kind == "parquet" else target.with_name(target.name + ".parts")


def _prepare(target: Path, state: JobState, overwrite: bool, *, output_format: str | None, stream) -> Path:
    """The shard directory, ready: new, or holding this same job (resume), or cleared with `overwrite`."""
    from .shards import is_job_file

    kind = _kind(target, output_format)
    directory = work_directory(target, kind)
    if kind == "npy" and target.exists() and not directory.exists():
        if not overwrite:
            raise JobStateError(f"{target} exists; pass --overwrite to replace it")
        target.with_name(target.name + ".skipped.jsonl").unlink(missing_ok=True)
    if directory.exists() and not directory.is_dir():
        raise JobStateError(f"{directory} exists and is not a directory")
    if directory.is_dir():
        foreign = sorted(p.name for p in directory.iterdir() if not is_job_file(p.name))
        if foreign:
            raise JobStateError(f"{directory} holds files that are not this job's ({', '.join(foreign[:5])}); "
                                "write the vectors to a new or empty directory")
        previous = read_state(directory) if not overwrite else None
        if overwrite:
            for path in directory.iterdir():
                path.unlink()
        elif previous is not None:
            check_same_job(previous, state, directory)
            old_execution = previous.get("execution", {})
            changed = [f"{name} {old_execution.get(name)} -> {value}" for name, value in
                       state.details["execution"].items()
                       if name in ("batch_size", "max_batch_tokens", "threads", "streams")
                       and old_execution.get(name) != value]
            if changed:
                print(f"{LABEL}: resuming with other batch options ({', '.join(changed)}): texts may share "
                      "batches differently, so the new shards' vectors can differ slightly from an uninterrupted "
                      "run's (float rounding; q8 within its batch tolerance)", file=stream)
        elif any(directory.iterdir()):
            raise JobStateError(f"{directory} holds shards but no _job.json; pass --overwrite to start over")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _finish(target: Path, directory: Path, state: JobState, infos, summary: JobSummary, kind: str) -> None:
    """Write the skipped rows, the .npy if asked, and mark the job complete."""
    skipped = [{"row": row, "reason": reason} for shard in sorted(infos) for row, reason in infos[shard].skipped]
    skipped_path = directory / SKIPPED_FILE if kind == "parquet" else target.with_name(target.name + ".skipped.jsonl")
    if skipped:
        write_atomically(skipped_path, "".join(json.dumps(entry) + "\n" for entry in skipped).encode())
    if kind == "npy":
        from .shards import part_name, write_npy

        write_npy([directory / part_name(shard) for shard in sorted(infos)], target,
                  code_width(summary.precision, summary.dimension), summary.texts,
                  CODE_DTYPES[summary.precision])
        shutil.rmtree(directory)
        return
    state.write(directory, "complete", summary.to_dict())
