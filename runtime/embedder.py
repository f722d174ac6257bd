"""Embedder: text in, float32 embeddings out, no torch anywhere. Loading is in loading.py, the choice of
variant in selection.py; this file tokenizes, runs batches, pools and post-processes."""
from __future__ import annotations

import inspect
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tokenizers import Encoding

from . import defaults
from .backends import Backend, Compile, build_feeds, compile_graph, cuda_available, installed_backends
from .batching import plan_batches
from .cpu import int8_path
from .encode_plan import EncodePlan, plan_encode
from .errors import ClosedError, InvalidTypeError, ModelFileError
from .loading import LoadedModel, open_model
from .manifest import EXTERNAL_DATA_SUFFIX, Manifest
from .memory import trim_heap
from .options import EncodeOptions, LoadOptions
from .pooling import combine_windows, pool, truncate_dim
from .pooling import normalize as l2_normalize
from .precision import manifest_ranges, quantize
from .selection import exported_pairs, select
from .similarity import similarity_matrix
from .streams import STREAM_BATCH_TOKENS
from .tokenization import TokenizedTexts, check_unicode

DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
_RUNTIME = Path(__file__).parent


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

    def __enter__(self) -> Embedder:
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
             providers: Sequence[str] | None = None, auto_min_cosine: float = defaults.AUTO_MIN_COSINE,
             verify: str = defaults.VERIFY, latency_copy: bool = False, compile: Compile = compile_graph
             ) -> Embedder:
        """Load an exported model directory (the output of `edgembed export`).

        `variant`/`backend`: a name, "auto" (the fastest faithful one, see selection.py) or None (edgembed's
        default order for this CPU). `threads`: inference threads (default: the physical cores). `streams`: with
        several texts, how many batches run at once, each on threads // streams threads (default: 2 on a CPU
        with 2+ cores; 1 turns it off); one compiled copy of the weights serves them and single texts, which
        then run on one stream's threads. `latency_copy=True` compiles a second copy for single texts on every
        thread: faster single texts for the memory of the weights again (docs/memory.md). `verify`: "size"
        (default), "sha256" or "none" for the model files. `load_with(path, LoadOptions(...))` takes the same
        options as one value.
        `compile`: what turns a graph file into a Backend (tests pass a recording one).
        """
        options = LoadOptions(variant=variant, backend=backend, max_length=max_length, threads=threads,
                              streams=streams, providers=providers, auto_min_cosine=auto_min_cosine, verify=verify,
                              latency_copy=latency_copy)
        return cls.load_with(path, options, compile=compile)

    @classmethod
    def load_with(cls, path: str | Path, options: LoadOptions, *, compile: Compile = compile_graph) -> Embedder:
        """load() with its options as one LoadOptions value."""
        if not isinstance(path, (str, Path)):
            raise InvalidTypeError("path", path, "a directory path (str or pathlib.Path)")
        directory = Path(path)
        return cls.from_manifest(directory, Manifest.read(directory), options, compile=compile)

    @classmethod
    def from_manifest(cls, directory: Path, manifest: Manifest, options: LoadOptions = LoadOptions(), *,
                      compile: Compile = compile_graph) -> Embedder:
        """Build an Embedder from an in-memory manifest (the exporter validates variants this way)."""
        if not isinstance(options, LoadOptions):
            raise InvalidTypeError("options", options, "a LoadOptions")
        wants_cuda = "auto" in (options.variant, options.backend)
        chosen = select(manifest, variant=options.variant, backend=options.backend, installed=installed_backends(),
                        int8_path=int8_path(), cuda=wants_cuda and cuda_available(),
                        min_cosine=options.auto_min_cosine)
        if chosen.variant.fidelity is not None and not chosen.variant.fidelity.passed:
            warnings.warn(
                f"variant {chosen.variant.name} was kept with --allow-low-fidelity: cosine min "
                f"{chosen.variant.fidelity.cosine_min:.4f} < threshold {chosen.variant.fidelity.threshold}",
                stacklevel=_caller_outside_runtime())
        # the providers asked for, else the ones the selection chose (CUDA's for auto on a GPU)
        opened = replace(options, providers=options.providers or chosen.providers)
        return cls(open_model(Path(directory), manifest, chosen.variant, chosen.backend, opened, compile=compile),
                   chosen.reason)

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
        unloaded = (set(self._variant.alternates.values()) | {self._variant.model_file}) - {loaded}
        # A graph's external weights (GRAPH.onnx_data, `export --external-data`) belong to that graph.
        return sum(entry.bytes for entry in self._variant.files
                   if not any(entry.path in (graph, graph + EXTERNAL_DATA_SUFFIX) for graph in unloaded))

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

    def check(self, options: EncodeOptions) -> EncodePlan:
        """`options` checked against this model, once: encode_with, tokenize_with, embed_with and postprocess_with
        take the plan and check nothing again."""
        return plan_encode(options, self.manifest, max_length=self._tokenizer.max_length,
                           on_untrained_dim=self._warn_dim)

    def tokenize(self, texts: str | Iterable[str], *, prompt_name: str | None = None, prompt: str | None = None,
                 truncate: bool = True) -> TokenizedTexts:
        """Tokenize texts with the prompt applied, as encode() does; pass the result to embed()."""
        return self.tokenize_with(texts, self.check(EncodeOptions(prompt_name=prompt_name, prompt=prompt,
                                                                  truncate=truncate)))

    def tokenize_with(self, texts: str | Iterable[str], options: EncodeOptions | EncodePlan) -> TokenizedTexts:
        """tokenize() with the prompt and truncation of `options` (an EncodeOptions, or check()'s plan of one)."""
        plan = self._plan(options)
        return self._tokenizer.tokenize(_as_texts(texts), prefix=plan.prefix, truncate=plan.options.truncate)

    def embed(self, tokens: TokenizedTexts, *, batch_size: int = defaults.BATCH_SIZE,
              max_batch_tokens: int = defaults.MAX_BATCH_TOKENS, normalize: bool | None = None, dim: int | None = None,
              precision: str = defaults.PRECISION, ranges: np.ndarray | None = None,
              on_batch: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Embed tokenized texts: shape (len(tokens), dim) in `precision` (see encode), in their order.
        `on_batch(texts, tokens)` runs on the calling thread after each batch (for progress bars)."""
        options = EncodeOptions(batch_size=batch_size, max_batch_tokens=max_batch_tokens, normalize=normalize,
                                dim=dim, precision=precision, ranges=ranges)
        return self.embed_with(tokens, self.check(options), on_batch=on_batch)

    def embed_with(self, tokens: TokenizedTexts, options: EncodeOptions | EncodePlan, *,
                   on_batch: Callable[[int, int], None] | None = None) -> np.ndarray:
        """embed() with the batching and output options of `options` (an EncodeOptions, or check()'s plan of
        one); its prompt and truncation were the tokenizer's business."""
        if not isinstance(tokens, TokenizedTexts):
            raise InvalidTypeError("tokens", tokens, "the TokenizedTexts that Embedder.tokenize returns")
        if on_batch is not None and not callable(on_batch):
            raise InvalidTypeError("on_batch", on_batch, "None or a function of (texts, tokens)")
        plan = self._plan(options)
        vectors = self._run(list(tokens.encodings), plan.options.batch_size, plan.options.max_batch_tokens, on_batch)
        self._count(len(tokens), tokens.token_count, tokens.truncated_count)
        return self.postprocess_with(vectors, plan)

    def postprocess(self, vectors: np.ndarray, *, normalize: bool | None = None, dim: int | None = None,
                    precision: str = defaults.PRECISION, ranges: np.ndarray | None = None) -> np.ndarray:
        """What follows pooling: keep the first `dim` components (Matryoshka), then L2-normalize when `normalize`
        (None follows the model), then convert to `precision`. embed(..., normalize=False) followed by this gives
        embed's own result."""
        options = EncodeOptions(normalize=normalize, dim=dim, precision=precision, ranges=ranges)
        return self.postprocess_with(vectors, self.check(options))

    def postprocess_with(self, vectors: np.ndarray, options: EncodeOptions | EncodePlan) -> np.ndarray:
        """postprocess() with the dim, normalize, precision and ranges of `options` (an EncodeOptions, or check()'s
        plan of one)."""
        plan = self._plan(options)
        vectors = truncate_dim(np.asarray(vectors, dtype=np.float32), plan.options.dim)
        if plan.normalize:
            vectors = l2_normalize(vectors)
        return quantize(vectors, plan.options.precision, ranges=plan.ranges)

    def embedding_ranges(self, *, dim: int | None = None, normalize: bool | None = None) -> np.ndarray:
        """The fixed int8/uint8 ranges (2, dim) of this model's vectors at `dim` and `normalize` (None: the
        model's), as measured at export; MissingRangesError names the ones the export has."""
        plan = self.check(EncodeOptions(dim=dim, normalize=normalize))
        return manifest_ranges(self.manifest, "int8", plan.dimension, plan.normalize)

    def encode(self, texts: str | Iterable[str], *, batch_size: int = defaults.BATCH_SIZE,
               prompt_name: str | None = None, prompt: str | None = None, normalize: bool | None = None,
               dim: int | None = None, truncate: bool = True, max_batch_tokens: int = defaults.MAX_BATCH_TOKENS,
               chunking: bool = False, chunk_overlap: int | None = None, precision: str = defaults.PRECISION,
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
        (dim / 8 bytes of packed sign bits). `encode_with(texts, EncodeOptions(...))` takes the same options as
        one value.
        """
        options = EncodeOptions(batch_size=batch_size, prompt_name=prompt_name, prompt=prompt, normalize=normalize,
                                dim=dim, truncate=truncate, max_batch_tokens=max_batch_tokens, chunking=chunking,
                                chunk_overlap=chunk_overlap, precision=precision, ranges=ranges)
        return self.encode_with(texts, self.check(options))

    def encode_with(self, texts: str | Iterable[str], options: EncodeOptions | EncodePlan) -> np.ndarray:
        """encode() with its options as one value: an EncodeOptions, or the plan check() made of one."""
        plan = self._plan(options)
        if plan.options.chunking:
            vectors = self._encode_chunked(texts, plan)
        else:
            vectors = self.embed_with(self.tokenize_with(texts, plan), plan)
        return vectors[0] if isinstance(texts, str) else vectors

    def encode_query(self, texts: str | Iterable[str], *, batch_size: int = defaults.BATCH_SIZE,
                     normalize: bool | None = None, dim: int | None = None, truncate: bool = True,
                     max_batch_tokens: int = defaults.MAX_BATCH_TOKENS, chunking: bool = False,
                     chunk_overlap: int | None = None, precision: str = defaults.PRECISION,
                     ranges: np.ndarray | None = None) -> np.ndarray:
        """encode() with the manifest's "query" prompt, when it has one."""
        name = "query" if "query" in self.manifest.prompts else None
        return self.encode(texts, batch_size=batch_size, prompt_name=name, prompt=None if name else "",
                           normalize=normalize, dim=dim, truncate=truncate, max_batch_tokens=max_batch_tokens,
                           chunking=chunking, chunk_overlap=chunk_overlap, precision=precision, ranges=ranges)

    def encode_document(self, texts: str | Iterable[str], *, batch_size: int = defaults.BATCH_SIZE,
                        normalize: bool | None = None, dim: int | None = None, truncate: bool = True,
                        max_batch_tokens: int = defaults.MAX_BATCH_TOKENS, chunking: bool = False,
                        chunk_overlap: int | None = None, precision: str = defaults.PRECISION,
                        ranges: np.ndarray | None = None) -> np.ndarray:
        """encode() with the first of the "document", "passage", "corpus" prompts the manifest has."""
        name = next((n for n in DOCUMENT_PROMPT_NAMES if n in self.manifest.prompts), None)
        return self.encode(texts, batch_size=batch_size, prompt_name=name, prompt=None if name else "",
                           normalize=normalize, dim=dim, truncate=truncate, max_batch_tokens=max_batch_tokens,
                           chunking=chunking, chunk_overlap=chunk_overlap, precision=precision, ranges=ranges)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Pairwise scores (len(a), len(b)) with the model's similarity function (cosine by default)."""
        return similarity_matrix(a, b, self.manifest.similarity_fn_name)

    def _encode_chunked(self, texts: str | Iterable[str], plan: EncodePlan) -> np.ndarray:
        items = _as_texts(texts)
        items = [plan.prefix + text for text in items] if plan.prefix else items
        for index, text in enumerate(items):
            check_unicode(f"texts[{index}]", text)
        if not items:
            return self.postprocess_with(np.zeros((0, self.dimension), np.float32), plan)
        windows = self._tokenizer.encode_windows(items, plan.chunk_overlap)
        encodings = [window for text_windows in windows for window in text_windows]
        owners = np.repeat(np.arange(len(items)), [len(text_windows) for text_windows in windows])
        lengths = np.asarray([len(e) for e in encodings], np.float32)
        vectors = self._run(encodings, plan.options.batch_size, plan.options.max_batch_tokens)
        self._count(len(items), int(lengths.sum()), 0)
        combined = combine_windows(vectors, owners, lengths, self.manifest.pooling, len(items))
        return self.postprocess_with(combined, plan)

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

    def _warn_dim(self, dim: int) -> None:
        if not self._warned_dim:
            self._warned_dim = True
            warnings.warn(f"dim={dim} is not among the Matryoshka dims this export records "
                          f"({self.manifest.matryoshka_dims or 'none'}); a model not trained for it loses more than a "
                          "Matryoshka model would", stacklevel=_caller_outside_runtime())

    def _plan(self, options: EncodeOptions | EncodePlan) -> EncodePlan:
        """A plan as it is (checked once already), or the plan of an EncodeOptions."""
        if isinstance(options, EncodePlan):
            return options
        if not isinstance(options, EncodeOptions):
            raise InvalidTypeError("options", options, "an EncodeOptions, or the EncodePlan Embedder.check made of one")
        return self.check(options)


def _caller_outside_runtime() -> int:
    """The stacklevel, for a warning raised here, of the first caller outside runtime/, however deep the call."""
    frame, level = inspect.currentframe(), 0
    while frame is not None and Path(frame.f_code.co_filename).parent == _RUNTIME:
        frame, level = frame.f_back, level + 1
    return level


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
