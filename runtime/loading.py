"""Loading an export: every path checked to lie inside the directory, files verified, graphs compiled and
checked against the manifest. Encoding lives in embedder.py."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from .backends import Backend, BackendOptions, Compile, check_graph, engine_options
from .cpu import int8_path
from .errors import ChecksumError, InvalidArgumentError, ManifestError, ModelFileError, check_int_range
from .manifest import MANIFEST_NAME, Manifest, Variant
from .options import VERIFY_MODES, LoadOptions
from .streams import Streams, resolve_streams
from .tokenization import TextTokenizer

_HASH_BLOCK = 1 << 20


@dataclass
class LoadedModel:
    """What an Embedder runs: the manifest's choice of variant compiled on one backend for the streams, and its
    tokenizer. Single texts run on the same compiled graph (one copy of the weights) unless a `latency_copy` was
    asked for: a second one with every thread for one caller."""

    directory: Path
    manifest: Manifest
    variant: Variant
    backend: Backend
    tokenizer: TextTokenizer
    streams: Streams
    model_path: Path  # the graph loaded: the variant's file, or its alternate for this CPU's int8 family
    threads: int  # shared by the streams
    latency_backend: Backend | None = None


def inside(directory: Path, relative: object, what: str) -> Path:
    """`directory / relative` after resolving symlinks and `..`; ModelFileError when it lies outside `directory`."""
    if not isinstance(relative, str) or not relative or Path(relative).is_absolute():
        raise ModelFileError(directory / MANIFEST_NAME, f"{what} must be a relative path inside the model "
                                                        f"directory, got {relative!r}; re-export the model")
    root = directory.resolve()
    path = (directory / relative).resolve()
    if path != root and root not in path.parents:
        raise ModelFileError(directory / relative, f"{what} resolves to {path}, outside the model directory "
                                                   f"{root}; refusing to read it (re-export or re-copy the model)")
    return path


def verify_files(directory: Path, variant: Variant, mode: str = "size") -> None:
    """Each file of `variant` exists inside `directory` with its recorded size ("size") and also its recorded
    sha256 ("sha256"); "none" checks only that the paths lie inside the directory."""
    if mode not in VERIFY_MODES:
        raise InvalidArgumentError("verify", mode, " or ".join(repr(m) for m in VERIFY_MODES))
    for entry in variant.files:
        path = inside(directory, entry.path, f"file of variant {variant.name}")
        if mode == "none":
            continue
        if not path.is_file():
            raise ModelFileError(path, "not found; the exported directory is incomplete, re-export or re-copy it")
        size = path.stat().st_size
        if size != entry.bytes:
            raise ModelFileError(path, f"is {size} bytes but manifest.json records {entry.bytes}; "
                                       "the file is corrupt or from another export, re-copy it")
        if mode == "sha256" and sha256_of(path) != entry.sha256:
            raise ChecksumError(path, "its sha256 differs from the one manifest.json records; the file is "
                                      "damaged or from another export, re-copy it")


def sha256_of(path: Path) -> str:
    """Streamed, so a multi-GB weight file is never held in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def open_model(directory: Path, manifest: Manifest, variant: Variant, backend_name: str, options: LoadOptions, *,
               compile: Compile) -> LoadedModel:
    """Check and compile `variant` on `backend_name` for `options.streams` callers at once, each on its share of
    the threads; with `latency_copy` and several streams, compile it a second time for one caller on all of them."""
    verify_files(directory, variant, options.verify)
    model_path = inside(directory, variant.file_for(int8_path().family), f"file of variant {variant.name}")
    tokenizer_path = inside(directory, manifest.tokenizer_file, "tokenizer_file")
    limit = manifest.max_length if options.max_length is None else check_int_range(
        "max_length", options.max_length, 1, manifest.max_position_embeddings,
        "the model's position limit (max_position_embeddings) is the largest value")
    tokenizer = TextTokenizer(tokenizer_path, limit, manifest.pad_token_id)
    if not 0 <= manifest.pad_token_id < tokenizer.vocab_size:
        raise ManifestError(directory / MANIFEST_NAME,
                            f"pad_token_id {manifest.pad_token_id} is not an id of the tokenizer "
                            f"(0 to {tokenizer.vocab_size - 1}); re-export the model")
    engine = engine_options(backend_name, variant, {"providers": options.providers})
    stream_count, total_threads = resolve_streams(options.streams, options.threads, engine.on_cpu)
    shared = BackendOptions(threads=total_threads, streams=stream_count, engine=engine)
    backend = compile(backend_name, model_path, variant.output, shared)
    latency = None
    try:
        check_graph(backend, model_path, manifest.hidden_size)
        if options.latency_copy and stream_count > 1:
            latency = compile(backend_name, model_path, variant.output, replace(shared, streams=1))
    except BaseException:
        backend.close()
        raise
    return LoadedModel(directory, manifest, variant, backend, tokenizer, Streams(stream_count), model_path,
                       total_threads, latency)
