"""Embedder: text in, float32 embeddings out, no torch anywhere. Loading is in loading.py, the choice of
variant in selection.py; this file tokenizes, runs batches, pools and post-processes."""
from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding

from .backends import Backend, Compile, build_feeds, compile_graph, cuda_available, installed_backends
from .batching import DEFAULT_MAX_BATCH_TOKENS, plan_batches
from .cpu import int8_path
from .errors import (
    ClosedError,
    InvalidArgumentError,
    InvalidTypeError,
    ModelFileError,
    UnknownChoiceError,
    check_bool,
    check_int_range,
    check_optional_str,
    check_positive_int,
)
from .loading import VERIFY_MODES, LoadedModel, open_model
from .manifest import Manifest
from .memory import trim_heap
from .pooling import combine_windows, pool, truncate_dim
from .pooling import normalize as l2_normalize
from .precision import RANGED_PRECISIONS, check_precision, check_ranges, manifest_ranges, quantize
from .selection import AUTO_MIN_COSINE, exported_pairs, select
from .similarity import similarity_matrix
from .streams import STREAM_BATCH_TOKENS
from .tokenization import TokenizedTexts, check_unicode

DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
# With chunking=True and no chunk_overlap, neighbouring windows share max_length // this many tokens.
CHUNK_OVERLAP_FRACTION = 8


@dataclass(frozen=True)
class EncodeStats:
    """What an Embedder has embedded since it was loaded."""

    texts: int = 0
    tokens: int = 0
    truncated: int = 0


class Embedder:
    """Embeds texts with one exported variant on one backend. Safe to share between threads.

    `close()` (or the end of `with Embedder.load(...) as model:`) releases the compiled graph and the stream
    threads; using the Embedder afterwards raises ClosedError.
    """

    def __init__(self, loaded: LoadedModel, reason: str = "requested") -> None:
        self._model_path = loaded.model_path  # `loaded` itself is not kept: close() must drop the last reference
        self.directory = loaded.directory
        self.manifest = loaded.manifest
        self._variant = loaded.variant
        self._backend = loaded.backend  # the streams' graph, and the single texts' too without a latency copy
        self._latency_backend = loaded.latency_backend
        self._threads = loaded.threads
        self._backend_name = loaded.backend.name
        self._tokenizer = loaded.tokenizer
        self._streams = loaded.streams
        self._reason = reason
        self._stats = EncodeStats()
        self._stats_lock = threading.Lock()
        self._warned_dim = False
        self._state = threading.Lock()  # guards _closed, _active and the release
        self._closed = False
        self._active = 0  # calls running on the backend

    def __enter__(self) -> "Embedder":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the compiled graph, its memory and the stream threads; calling it again does nothing. Calls
        already running (on other threads, or the one whose callback closes) finish first, and the last of them
        releases; any later call raises ClosedError."""
        with self._state:
            if self._closed:
                return
            self._closed = True
            idle = self._active == 0
        if idle:
            self._release()

    @property
    def closed(self) -> bool:
        """True once close() was called."""
        return self._closed

    def _release(self) -> None:
        with self._state:
            backends = [b for b in (self._backend, self._latency_backend) if b is not None]
            self._backend = self._latency_backend = None
        if not backends:
            return
        self._streams.close()
        for backend in backends:
            backend.close()
        del backends, backend
        trim_heap()

    @classmethod
    def load(cls, path: str | Path, *, variant: str | None = None, backend: str | None = None,
             max_length: int | None = None, threads: int | None = None, streams: int | None = None,
             providers: Sequence[str] | None = None, auto_min_cosine: float = AUTO_MIN_COSINE,
             verify: str = "size", latency_copy: bool = False, compile: Compile = compile_graph) -> "Embedder":
        """Load an exported model directory (the output of `edgembed export`).

        `variant`/`backend`: a name, "auto" (the fastest faithful one, see selection.py) or None (edgembed's
        default order for this CPU). `threads`: inference threads (default: the physical cores). `streams`: with
        several texts, how many batches run at once, each on threads // streams threads (default: 2 on a CPU
        with 2+ cores; 1 turns it off); one compiled copy of the weights serves them and single texts, which
        then run on one stream's threads. `latency_copy=True` compiles a second copy for single texts on every
        thread: faster single texts for the memory of the weights again (docs/memory.md). `verify`: "size"
        (default), "sha256" or "none" for the model files.
        `compile`: what turns a graph file into a Backend (tests pass a recording one).
        """
        if not isinstance(path, (str, Path)):
            raise InvalidTypeError("path", path, "a directory path (str or pathlib.Path)")
        directory = Path(path)
        return cls.from_manifest(directory, Manifest.read(directory), variant=variant, backend=backend,
                                 max_length=max_length, threads=threads, streams=streams, providers=providers,
                                 auto_min_cosine=auto_min_cosine, verify=verify, latency_copy=latency_copy,
                                 compile=compile)

    @classmethod
    def from_manifest(cls, directory: Path, manifest: Manifest, *, variant: str | None = None,
                      backend: str | None = None, max_length: int | None = None, threads: int | None = None,
                      streams: int | None = None, providers: Sequence[str] | None = None,
                      auto_min_cosine: float = AUTO_MIN_COSINE, verify: str = "size", latency_copy: bool = False,
                      compile: Compile = compile_graph) -> "Embedder":
        """Build an Embedder from an in-memory manifest (the exporter validates variants this way)."""
        check_optional_str("variant", variant)
        check_optional_str("backend", backend)
        check_bool("latency_copy", latency_copy)
        if verify not in VERIFY_MODES:
            raise InvalidArgumentError("verify", verify, " or ".join(repr(m) for m in VERIFY_MODES))
        wants_cuda = "auto" in (variant, backend)
        chosen = select(manifest, variant=variant, backend=backend, installed=installed_backends(),
                        int8_path=int8_path(), cuda=wants_cuda and cuda_available(), min_cosine=auto_min_cosine)
        if chosen.variant.fidelity is not None and not chosen.variant.fidelity.passed:
            warnings.warn(
                f"variant {chosen.variant.name} was kept with --allow-low-fidelity: cosine min "
                f"{chosen.variant.fidelity.cosine_min:.4f} < threshold {chosen.variant.fidelity.threshold}",
                stacklevel=3)
        loaded = open_model(Path(directory), manifest, chosen.variant, chosen.backend, compile=compile,
                            max_length=max_length, threads=threads, streams=streams,
                            providers=tuple(providers) if providers else chosen.providers, verify=verify,
                            latency_copy=latency_copy)
        return cls(loaded, chosen.reason)

    @property
    def dimension(self) -> int:
        """Length of a full embedding (before any `dim` truncation)."""
        return self.manifest.hidden_size

    @property
    def max_length(self) -> int:
        """Token limit per text, special tokens included."""
        return self._tokenizer.max_length

    @property
    def variant(self) -> str:
        return self._variant.dtype

    @property
    def backend(self) -> str:
        return self._backend_name

    @property
    def model_id(self) -> str:
        """The checkpoint the export came from."""
        return self.manifest.model_id

    @property
    def variants(self) -> list[tuple[str, str]]:
        """Every (variant, backend) pair this directory holds."""
        return [(dtype, name) for dtype, name, _ in exported_pairs(self.manifest)]

    @property
    def size_bytes(self) -> int:
        """Bytes on disk of the files this Embedder loaded (not the variant's alternates for other CPUs)."""
        loaded = self._model_path.relative_to(self.directory.resolve()).as_posix()
        others = set(self._variant.alternates.values()) | {self._variant.model_file}
        return sum(entry.bytes for entry in self._variant.files if entry.path == loaded or entry.path not in others)

    @property
    def prompts(self) -> dict[str, str]:
        return dict(self.manifest.prompts)

    @property
    def stats(self) -> EncodeStats:
        """Texts, tokens and truncated texts embedded since load (truncation is otherwise silent)."""
        return self._stats

    def describe(self) -> str:
        """One line: the variant and backend in use, why, their recorded fidelity, how batches and single texts
        share the threads and the weights, and this CPU's int8 path."""
        fidelity = self._variant.fidelity
        figure = f", cosine to PyTorch min {fidelity.cosine_min:.4f}" if fidelity else ""
        chosen = self._model_path.relative_to(self.directory.resolve()).as_posix()
        file = f" from {chosen}" if chosen != self._variant.model_file else ""
        return (f"{self.variant} on {self.backend}{file} ({self._reason}){figure}; "
                f"dimension {self.dimension}, max_length {self.max_length}, {self._layout()}"
                f"; int8 path of this CPU: {int8_path().description}")

    def _layout(self) -> str:
        """What the streams and the latency copy cost, in words (the figures are in docs/memory.md)."""
        streams, threads = self._streams.count, self._threads
        if streams == 1:
            return f"one batch at a time on {_threads(threads)}, one copy of the weights"
        each = _threads(threads // streams)
        single = (f"single texts on a second copy of the weights with {_threads(threads)}" if self._latency_backend
                  else f"single texts on {each} too, one copy of the weights")
        return f"{streams} batches at a time for several texts on {each} each, {single}"

    def tokenize(self, texts: str | Iterable[str], *, prompt_name: str | None = None, prompt: str | None = None,
                 truncate: bool = True) -> TokenizedTexts:
        """Tokenize texts with the prompt applied, as encode() does; pass the result to embed()."""
        items = _as_texts(texts)
        check_bool("truncate", truncate)
        return self._tokenizer.tokenize(items, prefix=self._prefix(prompt_name, prompt), truncate=truncate)

    def embed(self, tokens: TokenizedTexts, *, batch_size: int = 32, max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
              normalize: bool | None = None, dim: int | None = None, precision: str = "float32",
              ranges: np.ndarray | None = None, on_batch: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Embed tokenized texts: shape (len(tokens), dim) in `precision` (see encode), in their order.
        `on_batch(texts, tokens)` runs on the calling thread after each batch (for progress bars)."""
        if not isinstance(tokens, TokenizedTexts):
            raise InvalidTypeError("tokens", tokens, "the TokenizedTexts that Embedder.tokenize returns")
        check_positive_int("batch_size", batch_size)
        check_positive_int("max_batch_tokens", max_batch_tokens)
        self._check_postprocess(normalize, dim)
        self._output_ranges(normalize, dim, precision, ranges)
        if on_batch is not None and not callable(on_batch):
            raise InvalidTypeError("on_batch", on_batch, "None or a function of (texts, tokens)")
        vectors = self._run(list(tokens.encodings), batch_size, max_batch_tokens, on_batch)
        self._count(len(tokens), tokens.token_count, tokens.truncated_count)
        return self.postprocess(vectors, normalize=normalize, dim=dim, precision=precision, ranges=ranges)

    def postprocess(self, vectors: np.ndarray, *, normalize: bool | None = None, dim: int | None = None,
                    precision: str = "float32", ranges: np.ndarray | None = None) -> np.ndarray:
        """What follows pooling: keep the first `dim` components (Matryoshka), then L2-normalize when `normalize`
        (None follows the model), then convert to `precision`. embed(..., normalize=False) followed by this gives
        embed's own result."""
        self._check_postprocess(normalize, dim)
        output_ranges = self._output_ranges(normalize, dim, precision, ranges)
        vectors = truncate_dim(np.asarray(vectors, dtype=np.float32), dim)
        if self.manifest.normalize if normalize is None else normalize:
            vectors = l2_normalize(vectors)
        return quantize(vectors, precision, ranges=output_ranges)

    def embedding_ranges(self, *, dim: int | None = None, normalize: bool | None = None) -> np.ndarray:
        """The fixed int8/uint8 ranges (2, dim) of this model's vectors at `dim` and `normalize` (None: the
        model's), as measured at export; MissingRangesError names the ones the export has."""
        self._check_postprocess(normalize, dim)
        return manifest_ranges(self.manifest, "int8", dim or self.dimension,
                               self.manifest.normalize if normalize is None else normalize)

    def encode(self, texts: str | Iterable[str], *, batch_size: int = 32, prompt_name: str | None = None,
               prompt: str | None = None, normalize: bool | None = None, dim: int | None = None,
               truncate: bool = True, max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS, chunking: bool = False,
               chunk_overlap: int | None = None, precision: str = "float32",
               ranges: np.ndarray | None = None) -> np.ndarray:
        """Embed texts: shape (n, dim) in `precision` (float32 by default), or (dim,) for a single string.

        `prompt` (a literal prefix) wins over `prompt_name` (a key of the manifest's prompts); with neither, the
        manifest's default prompt applies. `normalize=None` follows the model. `dim` keeps the first `dim`
        components before normalizing. Texts are tokenized once, sorted by length and batched by `batch_size`
        and `max_batch_tokens` (padded tokens per batch); results come back in input order. Texts over
        max_length are cut (`stats` counts them); `truncate=False` raises InputTooLongError instead.
        `chunking=True` embeds a text longer than max_length as windows of max_length tokens sharing
        `chunk_overlap` tokens (default max_length // 8), pooled together (see pooling.combine_windows).
        `precision`: "float32", or sentence-transformers' compact codes (runtime/precision.py): "int8"/"uint8"
        (dim bytes, per-component ranges fixed per model: the export's, or `ranges` (2, dim)), "binary"/"ubinary"
        (dim / 8 bytes of packed sign bits).
        """
        single = isinstance(texts, str)
        check_bool("chunking", chunking)
        if not chunking:
            tokens = self.tokenize(texts, prompt_name=prompt_name, prompt=prompt, truncate=truncate)
            vectors = self.embed(tokens, batch_size=batch_size, max_batch_tokens=max_batch_tokens,
                                 normalize=normalize, dim=dim, precision=precision, ranges=ranges)
        else:
            vectors = self._encode_chunked(texts, batch_size=batch_size, prompt_name=prompt_name, prompt=prompt,
                                           normalize=normalize, dim=dim, truncate=truncate,
                                           max_batch_tokens=max_batch_tokens, chunk_overlap=chunk_overlap,
                                           precision=precision, ranges=ranges)
        return vectors[0] if single else vectors

    def encode_query(self, texts: str | Iterable[str], *, batch_size: int = 32, normalize: bool | None = None,
                     dim: int | None = None, truncate: bool = True, max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
                     chunking: bool = False, chunk_overlap: int | None = None, precision: str = "float32",
                     ranges: np.ndarray | None = None) -> np.ndarray:
        """encode() with the manifest's "query" prompt, when it has one."""
        name = "query" if "query" in self.manifest.prompts else None
        return self.encode(texts, batch_size=batch_size, prompt_name=name, prompt=None if name else "",
                           normalize=normalize, dim=dim, truncate=truncate, max_batch_tokens=max_batch_tokens,
                           chunking=chunking, chunk_overlap=chunk_overlap, precision=precision, ranges=ranges)

    def encode_document(self, texts: str | Iterable[str], *, batch_size: int = 32, normalize: bool | None = None,
                        dim: int | None = None, truncate: bool = True,
                        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS, chunking: bool = False,
                        chunk_overlap: int | None = None, precision: str = "float32",
                        ranges: np.ndarray | None = None) -> np.ndarray:
        """encode() with the first of the "document", "passage", "corpus" prompts the manifest has."""
        name = next((n for n in DOCUMENT_PROMPT_NAMES if n in self.manifest.prompts), None)
        return self.encode(texts, batch_size=batch_size, prompt_name=name, prompt=None if name else "",
                           normalize=normalize, dim=dim, truncate=truncate, max_batch_tokens=max_batch_tokens,
                           chunking=chunking, chunk_overlap=chunk_overlap, precision=precision, ranges=ranges)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Pairwise scores (len(a), len(b)) with the model's similarity function (cosine by default)."""
        return similarity_matrix(a, b, self.manifest.similarity_fn_name)

    def _encode_chunked(self, texts: str | Iterable[str], *, batch_size: int, prompt_name: str | None,
                        prompt: str | None, normalize: bool | None, dim: int | None, truncate: bool,
                        max_batch_tokens: int, chunk_overlap: int | None, precision: str,
                        ranges: np.ndarray | None) -> np.ndarray:
        items = _as_texts(texts)
        check_bool("truncate", truncate)
        check_positive_int("batch_size", batch_size)
        check_positive_int("max_batch_tokens", max_batch_tokens)
        self._check_postprocess(normalize, dim)
        self._output_ranges(normalize, dim, precision, ranges)
        overlap = self.max_length // CHUNK_OVERLAP_FRACTION if chunk_overlap is None else check_int_range(
            "chunk_overlap", chunk_overlap, 0, self.max_length // 2, "at most half of max_length")
        prefix = self._prefix(prompt_name, prompt)
        items = [prefix + text for text in items] if prefix else items
        for index, text in enumerate(items):
            check_unicode(f"texts[{index}]", text)
        if not items:
            return self.postprocess(np.zeros((0, self.dimension), np.float32), normalize=normalize, dim=dim,
                                    precision=precision, ranges=ranges)
        windows = self._tokenizer.encode_windows(items, overlap)
        encodings = [window for text_windows in windows for window in text_windows]
        owners = np.repeat(np.arange(len(items)), [len(text_windows) for text_windows in windows])
        lengths = np.asarray([len(e) for e in encodings], np.float32)
        vectors = self._run(encodings, batch_size, max_batch_tokens)
        self._count(len(items), int(lengths.sum()), 0)
        combined = combine_windows(vectors, owners, lengths, self.manifest.pooling, len(items))
        return self.postprocess(combined, normalize=normalize, dim=dim, precision=precision, ranges=ranges)

    def _run(self, encodings: list[Encoding], batch_size: int, max_batch_tokens: int,
             on_batch: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Pooled, unnormalized vectors of `encodings`, in their order."""
        with self._state:
            if self._closed:
                raise ClosedError(self.directory)
            self._active += 1
            backend, latency = self._backend, self._latency_backend or self._backend
        try:
            return self._run_on(backend, latency, encodings, batch_size, max_batch_tokens, on_batch)
        finally:
            with self._state:
                self._active -= 1
                last = self._closed and self._active == 0
            if last:
                self._release()

    def _run_on(self, backend: Backend, latency: Backend, encodings: list[Encoding], batch_size: int,
                max_batch_tokens: int, on_batch: Callable[[int, int], None] | None) -> np.ndarray:
        lengths = [len(encoding) for encoding in encodings]
        vectors = np.zeros((len(encodings), self.dimension), dtype=np.float32)

        def embed_rows(rows: list[int], engine: Backend = backend) -> None:
            batch = self._tokenizer.pad([encodings[row] for row in rows])
            vectors[rows] = pool(engine.run(self._feeds(engine, batch)), batch.attention_mask,
                                 self.manifest.pooling)

        def report(rows: list[int]) -> None:
            if on_batch is not None:
                on_batch(len(rows), sum(lengths[row] for row in rows))

        streams = self._streams.count
        if streams > 1 and len(encodings) > 1:
            per_stream = -(-len(encodings) // streams)  # every stream gets a batch
            budget = max(1, min(max_batch_tokens // streams, STREAM_BATCH_TOKENS))
            self._streams.map(embed_rows, plan_batches(lengths, min(batch_size, per_stream), budget), report)
        else:
            for rows in plan_batches(lengths, batch_size, max_batch_tokens):
                embed_rows(rows, latency)
                report(rows)
        return vectors

    def _count(self, texts: int, tokens: int, truncated: int) -> None:
        with self._stats_lock:
            old = self._stats
            self._stats = EncodeStats(old.texts + texts, old.tokens + tokens, old.truncated + truncated)

    def _feeds(self, backend: Backend, batch) -> dict[str, np.ndarray]:
        try:
            return build_feeds(backend.inputs, batch)
        except ValueError as exc:
            raise ModelFileError(self._model_path, str(exc)) from None

    def _prefix(self, prompt_name: str | None, prompt: str | None) -> str:
        check_optional_str("prompt", prompt)
        check_optional_str("prompt_name", prompt_name)
        if prompt is not None:
            return prompt
        name = prompt_name if prompt_name is not None else self.manifest.default_prompt_name
        if name is None:
            return ""
        if name not in self.manifest.prompts:
            raise UnknownChoiceError("prompt name", name, self.manifest.prompts,
                                     "prompts are set at export with --prompt NAME=TEXT")
        return self.manifest.prompts[name]

    def _output_ranges(self, normalize: bool | None, dim: int | None, precision: str,
                       ranges: np.ndarray | None) -> np.ndarray | None:
        """The int8/uint8 ranges `precision` will use (checked before any work), None for the others."""
        if check_precision(precision) not in RANGED_PRECISIONS:
            if ranges is not None:
                raise InvalidArgumentError("ranges", "(an array)", f"None with precision={precision!r}",
                                           "ranges apply to int8 and uint8 only")
            return None
        size = dim or self.dimension
        if ranges is not None:
            return check_ranges(ranges, size)
        normalized = self.manifest.normalize if normalize is None else normalize
        return manifest_ranges(self.manifest, precision, size, normalized)

    def _check_postprocess(self, normalize: bool | None, dim: int | None) -> None:
        check_bool("normalize", normalize, allow_none=True)
        if dim is None:
            return
        trained = self.manifest.matryoshka_dims
        check_int_range("dim", dim, 1, self.dimension, f"this model was trained for {trained}" if trained else "")
        if dim not in trained and dim != self.dimension and not self._warned_dim:
            self._warned_dim = True
            warnings.warn(f"dim={dim} is not among the Matryoshka dims this export records ({trained or 'none'}); "
                          "a model not trained for it loses more than a Matryoshka model would", stacklevel=4)


def _threads(count: int) -> str:
    return f"{count} thread" + ("s" if count != 1 else "")


def _as_texts(texts: object) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
        raise InvalidTypeError("texts", texts, "a string or an iterable of strings")
    items = list(texts)
    for index, text in enumerate(items):
        if not isinstance(text, str):
            raise InvalidTypeError(f"texts[{index}]", text, "str")
    return items
