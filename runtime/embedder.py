"""Embedder: text in, float32 embeddings out, no torch anywhere."""
from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from tokenizers import Encoding

from .batching import DEFAULT_MAX_BATCH_TOKENS, plan_batches
from .auto import AUTO_MIN_COSINE, choose
from .backends import (
    BACKEND_EXTRAS,
    BACKEND_MODULES,
    Backend,
    BackendOptions,
    build_feeds,
    cuda_available,
    installed_backends,
    load_backend,
)
from .errors import (
    BackendUnavailableError,
    ModelFileError,
    UnknownChoiceError,
    check_positive_int,
)
from .manifest import BACKEND_FORMATS, Manifest, Variant
from .pooling import normalize as l2_normalize
from .pooling import combine_windows, pool, truncate_dim
from .similarity import similarity_matrix
from .streams import STREAM_BATCH_TOKENS, Streams, resolve_streams
from .tokenization import Batch, TextTokenizer

# Picked when load() is given no variant: fastest first on a CPU.
VARIANT_PREFERENCE = ("q8", "fp32", "fp16")
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
# With chunking=True and no chunk_overlap, neighbouring windows share max_length // this many tokens.
CHUNK_OVERLAP_FRACTION = 8


class Embedder:
    """Embeds texts with one exported variant on one backend."""

    def __init__(self, directory: Path, manifest: Manifest, variant: Variant, backend: Backend,
                 tokenizer: TextTokenizer, reason: str = "requested", streams: Streams | None = None) -> None:
        self.directory = Path(directory)
        self.manifest = manifest
        self._variant = variant
        self._backend = backend
        self._tokenizer = tokenizer
        self._reason = reason
        self._streams = streams or Streams(1, lambda: backend)  # count 1: never used, one batch at a time

    @classmethod
    def load(cls, path: str | Path, variant: str | None = None, backend: str | None = None,
             max_length: int | None = None, threads: int | None = None,
             providers: Sequence[str] | None = None, auto_min_cosine: float = AUTO_MIN_COSINE,
             streams: int | None = None) -> "Embedder":
        """Load an exported model directory (the output of `edgembed export`).

        `threads`: inference threads (default: the physical cores). `streams`: with several texts, how many
        batches run at once, each on threads // streams threads (default: 2 on a CPU with 2+ cores, 1 turns it
        off). A single text always gets all the threads.
        """
        directory = Path(path)
        return cls.from_manifest(directory, Manifest.read(directory), variant, backend, max_length, threads,
                                 providers, auto_min_cosine, streams)

    @classmethod
    def from_manifest(cls, directory: Path, manifest: Manifest, variant: str | None = None,
                      backend: str | None = None, max_length: int | None = None, threads: int | None = None,
                      providers: Sequence[str] | None = None,
                      auto_min_cosine: float = AUTO_MIN_COSINE, streams: int | None = None) -> "Embedder":
        """Build an Embedder from an in-memory manifest (used by the exporter to validate).

        `variant="auto"` and/or `backend="auto"` pick the fastest installed variant whose recorded
        cosine to PyTorch is at least `auto_min_cosine`; `describe()` says what was picked and why.
        """
        reason = "requested"
        if "auto" in (variant, backend):
            choice = choose(manifest, variant or "auto", backend or "auto", installed_backends(), cuda_available(),
                            auto_min_cosine)
            variant, backend, reason = choice.variant, choice.backend, f"auto: {choice.reason}"
            providers = providers or choice.providers
        backend_name = _choose_backend(manifest, backend)
        chosen = _choose_variant(manifest, variant, backend_name)
        if chosen.fidelity is not None and not chosen.fidelity.passed:
            warnings.warn(
                f"variant {chosen.name} was kept with --allow-low-fidelity: cosine min "
                f"{chosen.fidelity.cosine_min:.4f} < threshold {chosen.fidelity.threshold}", stacklevel=2)
        for entry in chosen.files:
            _check_file(directory, entry.path, entry.bytes)
        on_cpu = all(name == "CPUExecutionProvider" for name in providers or ())
        stream_count, total_threads = resolve_streams(streams, threads, on_cpu)
        options = BackendOptions(threads=threads, precision_hint=chosen.precision_hint,
                                 providers=tuple(providers) if providers else None)
        compiled = load_backend(backend_name, directory / chosen.model_file, chosen.output, options)
        stream_options = replace(options, threads=total_threads, streams=stream_count)
        compile_streams = functools.partial(load_backend, backend_name, directory / chosen.model_file, chosen.output,
                                            stream_options)
        limit = _check_max_length(manifest, max_length)
        tokenizer = TextTokenizer(directory / manifest.tokenizer_file, limit, manifest.pad_token_id)
        return cls(directory, manifest, chosen, compiled, tokenizer, reason, Streams(stream_count, compile_streams))

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
        return self._backend.name

    @property
    def variants(self) -> list[tuple[str, str]]:
        """Every (variant, backend) pair this directory holds."""
        formats = {fmt: name for name, fmt in BACKEND_FORMATS.items()}
        return [(v.dtype, formats[v.format]) for v in self.manifest.variants if v.format in formats]

    @property
    def size_bytes(self) -> int:
        """Bytes on disk of the variant's model files."""
        return sum(entry.bytes for entry in self._variant.files)

    @property
    def prompts(self) -> dict[str, str]:
        return dict(self.manifest.prompts)

    def describe(self) -> str:
        """One line: the variant and backend in use, why, and their recorded fidelity."""
        fidelity = self._variant.fidelity
        figure = f", cosine to PyTorch min {fidelity.cosine_min:.4f}" if fidelity else ""
        streams = self._streams.count
        return (f"{self.variant} on {self.backend} ({self._reason}){figure}; "
                f"dimension {self.dimension}, max_length {self.max_length}, "
                + (f"{streams} batches at a time for several texts" if streams > 1 else "one batch at a time"))

    def encode(self, texts: str | Iterable[str], batch_size: int = 32, prompt_name: str | None = None,
               prompt: str | None = None, normalize: bool | None = None, dim: int | None = None,
               truncate: bool = True, max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS, chunking: bool = False,
               chunk_overlap: int | None = None) -> np.ndarray:
        """Embed texts: float32 of shape (n, dim), or (dim,) for a single string.

        `prompt` (a literal prefix) wins over `prompt_name` (a key of the manifest's prompts);
        with neither, the manifest's default prompt applies. `normalize=None` follows the model
        (the manifest's `normalize`). `dim` keeps the first `dim` components before normalizing.
        Texts are tokenized once, sorted by length and batched by `batch_size` and by
        `max_batch_tokens` (padded tokens per batch); results come back in input order. With streams
        (see load()), several texts are cut into at least that many batches of at most STREAM_BATCH_TOKENS
        padded tokens (a longer text gets a batch of its own), which run at once and share the token budget.
        `chunking=True` embeds a text longer than max_length as windows of max_length tokens that share
        `chunk_overlap` tokens (default max_length // 8), pooled together (see `combine_windows`) instead of
        cutting it at max_length. Each window sees only its own tokens, so this approximates a model that
        could read the whole text; raising max_length (up to the model's position limit) is exact.
        """
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        _check_texts(items)
        check_positive_int("batch_size", batch_size)
        check_positive_int("max_batch_tokens", max_batch_tokens)
        self._check_dim(dim)
        if chunking:
            chunk_overlap = self.max_length // CHUNK_OVERLAP_FRACTION if chunk_overlap is None else chunk_overlap
            self._check_overlap(chunk_overlap)
        prefix = self._prefix(prompt_name, prompt)
        if prefix:
            items = [prefix + text for text in items]
        owners = None
        if chunking and items:
            windows = self._tokenizer.encode_windows(items, chunk_overlap)
            encodings = [window for text_windows in windows for window in text_windows]
            owners = np.repeat(np.arange(len(items)), [len(text_windows) for text_windows in windows])
        else:
            encodings = self._tokenize(items, truncate) if items else []
        lengths = [len(encoding.ids) for encoding in encodings]
        vectors = np.zeros((len(encodings), self.dimension), dtype=np.float32)

        def embed(backend: Backend, rows: list[int]) -> None:
            batch = self._tokenizer.pad([encodings[row] for row in rows])
            vectors[rows] = pool(backend.run(self._feeds(batch)), batch.attention_mask, self.manifest.pooling)

        streams = self._streams.count
        if streams > 1 and len(encodings) > 1:
            per_stream = -(-len(encodings) // streams)  # every stream gets a batch
            budget = max(1, min(max_batch_tokens // streams, STREAM_BATCH_TOKENS))
            self._streams.map(embed, plan_batches(lengths, min(batch_size, per_stream), budget))
        else:
            for rows in plan_batches(lengths, batch_size, max_batch_tokens):
                embed(self._backend, rows)
        if owners is not None:
            vectors = combine_windows(vectors, owners, np.asarray(lengths, np.float32), self.manifest.pooling,
                                      len(items))
        vectors = truncate_dim(vectors, dim)
        if self.manifest.normalize if normalize is None else normalize:
            vectors = l2_normalize(vectors)
        return vectors[0] if single else vectors

    def encode_query(self, texts: str | Iterable[str], batch_size: int = 32, normalize: bool | None = None,
                     dim: int | None = None, truncate: bool = True, chunking: bool = False) -> np.ndarray:
        """encode() with the manifest's "query" prompt, when it has one."""
        name = "query" if "query" in self.manifest.prompts else None
        return self.encode(texts, batch_size=batch_size, prompt_name=name, prompt=None if name else "",
                           normalize=normalize, dim=dim, truncate=truncate, chunking=chunking)

    def encode_document(self, texts: str | Iterable[str], batch_size: int = 32, normalize: bool | None = None,
                        dim: int | None = None, truncate: bool = True, chunking: bool = False) -> np.ndarray:
        """encode() with the first of the "document", "passage", "corpus" prompts the manifest has."""
        name = next((n for n in DOCUMENT_PROMPT_NAMES if n in self.manifest.prompts), None)
        return self.encode(texts, batch_size=batch_size, prompt_name=name, prompt=None if name else "",
                           normalize=normalize, dim=dim, truncate=truncate, chunking=chunking)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Pairwise scores (len(a), len(b)) with the model's similarity function (cosine by default)."""
        return similarity_matrix(a, b, self.manifest.similarity_fn_name)

    def _tokenize(self, items: list[str], truncate: bool) -> list[Encoding]:
        try:
            return self._tokenizer.encode(items, truncate=truncate)
        except (TypeError, ValueError) as exc:
            _check_unicode(items)  # tokenizers reports a lone surrogate as a misleading TypeError
            raise exc

    def _feeds(self, batch: Batch) -> dict[str, np.ndarray]:
        try:
            return build_feeds(self._backend.inputs, batch)
        except ValueError as exc:
            raise ModelFileError(self.directory / self._variant.model_file, str(exc)) from None

    def _prefix(self, prompt_name: str | None, prompt: str | None) -> str:
        if prompt is not None:
            return prompt
        name = prompt_name if prompt_name is not None else self.manifest.default_prompt_name
        if name is None:
            return ""
        if name not in self.manifest.prompts:
            raise UnknownChoiceError("prompt name", name, self.manifest.prompts,
                                     "prompts are set at export with --prompt NAME=TEXT")
        return self.manifest.prompts[name]

    def _check_overlap(self, overlap: int) -> None:
        limit = self.max_length // 2
        if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap <= limit:
            raise ValueError(f"chunk_overlap must be an integer from 0 to {limit} (half of max_length "
                             f"{self.max_length}), got {overlap!r}")

    def _check_dim(self, dim: int | None) -> int:
        if dim is None:
            return self.dimension
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= self.dimension:
            raise ValueError(f"dim must be an integer from 1 to {self.dimension}, got {dim!r}"
                             + (f"; this model was trained for {self.manifest.matryoshka_dims}"
                                if self.manifest.matryoshka_dims else ""))
        return dim


def _check_texts(items: list[object]) -> None:
    for index, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] is {type(text).__name__}, expected str")


def _check_unicode(items: list[str]) -> None:
    for index, text in enumerate(items):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"texts[{index}] is not valid Unicode ({exc.reason} at position {exc.start})") from None


def _choose_backend(manifest: Manifest, requested: str | None) -> str:
    if requested is not None:
        if requested not in BACKEND_FORMATS:
            raise UnknownChoiceError("backend", requested, BACKEND_FORMATS)
        return requested
    exported = {v.format for v in manifest.variants}
    candidates = [name for name, fmt in BACKEND_FORMATS.items() if fmt in exported]
    for name in installed_backends():
        if name in candidates:
            return name
    if not candidates:
        raise ModelFileError("manifest.json", "lists no variant; re-export the model")
    raise BackendUnavailableError(candidates[0], BACKEND_MODULES[candidates[0]], BACKEND_EXTRAS[candidates[0]])


def _choose_variant(manifest: Manifest, requested: str | None, backend: str) -> Variant:
    fmt = BACKEND_FORMATS[backend]
    available = [v.dtype for v in manifest.variants if v.format == fmt]
    if requested is None:
        for dtype in VARIANT_PREFERENCE:
            if dtype in available:
                requested = dtype
                break
        else:
            requested = available[0] if available else "fp32"
    found = manifest.find(fmt, requested)
    if found is None:
        others = sorted({f"{v.dtype} ({name})" for v in manifest.variants
                         for name, f in BACKEND_FORMATS.items() if f == v.format and name != backend})
        hint = f"other backends have: {', '.join(others)}" if others else ""
        raise UnknownChoiceError(f"variant for backend {backend!r}", requested, available, hint)
    return found


def _check_file(directory: Path, relative: str, expected_bytes: int) -> None:
    """The file must lie inside the model directory and have the size the manifest records."""
    path = (directory / relative)
    root = directory.resolve()
    if root not in path.resolve().parents:
        raise ModelFileError(path, "lies outside the model directory; refusing to load it")
    if not path.is_file():
        raise ModelFileError(path, "not found; the exported directory is incomplete, re-export or re-copy it")
    size = path.stat().st_size
    if size != expected_bytes:
        raise ModelFileError(path, f"is {size} bytes but manifest.json records {expected_bytes}; "
                                   "the file is corrupt or from another export")


def _check_max_length(manifest: Manifest, requested: int | None) -> int:
    if requested is None:
        return manifest.max_length
    limit = manifest.max_position_embeddings
    if isinstance(requested, bool) or not isinstance(requested, int) or not 1 <= requested <= limit:
        raise ValueError(f"max_length must be an integer from 1 to {limit} (the model's position limit), "
                         f"got {requested!r}")
    return requested
