"""Export: convert every requested variant, validate it against PyTorch, then write the directory."""
from __future__ import annotations

import gc
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from edgembed.evaluation.domains import (
    EXPORT_CHECK_DOCUMENTS,
    EXPORT_CHECK_LONG_TOKENS,
    EXPORT_CHECK_QUERIES,
    EXPORT_CHECK_TOKENS,
    calibration_texts,
    describe_calibration,
    export_check_suite,
)
from edgembed.evaluation.evaluate import encode_suite, suite_fidelity
from edgembed.runtime.backends import build_feeds
from edgembed.runtime.errors import InvalidArgumentError, UnknownChoiceError
from edgembed.runtime.manifest import EmbeddingRanges, Manifest, Variant
from edgembed.runtime.tokenization import TextTokenizer

from . import onnx_variants
from .attention import ATTENTION_MODES, DEFAULT_ATTENTION, efficient_attention
from .converting import ConvertInputs
from .embedding_ranges import ranges_recipe, record_ranges
from .errors import ExportError, FidelityError, UnsupportedModelError
from .files import copy_side_files, file_entry
from .progress import Progress, Steps
from .q8_turned import TurnedRounding
from .quiet import quiet_tools
from .reference import load_reference_model, reference_embeddings, reference_token_ids
from .source import Source, resolve
from .validate import REFERENCE, load_variant, measure_variant, token_differences
from .validation_texts import validation_texts
from .variants import (
    DEFAULT_Q4_BLOCK_SIZE,
    DEFAULT_Q8_RECIPE,
    DTYPES,
    FILE_FORMATS,
    FORMATS,
    Q8_RECIPES,
    RECIPES,
    SUPPORTED,
    Recipe,
    find_recipe,
)

# The fp32 ONNX graph every converter starts from is the onnx/fp32 variant's file.
FP32_ONNX = find_recipe("onnx", "fp32")
# Where the fp32 graph of standard ONNX ops waits while its converters run (with efficient attention only).
STANDARD_OPS_DIR = ".standard-ops-source"
CHECK_REFERENCE = (f"{REFERENCE}; texts cut after {EXPORT_CHECK_TOKENS} tokens "
                   f"({EXPORT_CHECK_LONG_TOKENS} in the long domain)")


@dataclass
class ExportRequest:
    """Everything `edgembed export` was asked to do."""

    model: str
    output: Path
    dtypes: list[str] = field(default_factory=lambda: ["fp32"])
    formats: list[str] = field(default_factory=lambda: list(FORMATS))
    revision: str | None = None
    prompts: dict[str, str] = field(default_factory=dict)
    matryoshka_dims: list[int] = field(default_factory=list)
    min_cosine: dict[str, float] = field(default_factory=dict)
    allow_low_fidelity: bool = False
    allow_pickle: bool = False
    overwrite: bool = False
    opset: int | None = None
    calibration_texts: list[str] | None = None  # None: the built-in set (evaluation/corpus.py)
    eval_queries: int = EXPORT_CHECK_QUERIES  # retrieval check per domain of the built-in suite; 0 skips it
    eval_documents: int = EXPORT_CHECK_DOCUMENTS
    q4_block_size: int = DEFAULT_Q4_BLOCK_SIZE
    q8_recipe: str = DEFAULT_Q8_RECIPE  # the q8 recipe: smoothed or turned (export/q8_turned.py)
    attention: str | None = None  # None: efficient for ModernBERT, standard for other architectures
    external_data: bool = False  # ONNX weights in FILE.onnx_data beside each graph
    verbose: bool = False  # let other tools' warnings, log lines and progress bars through


def run_export(request: ExportRequest, progress: Callable[[str], None] = print) -> Manifest:
    """Export, validate and write; the output directory appears only when every variant passed.

    `progress` gets one line per step (with its time and the peak memory so far), a line at least every
    HEARTBEAT_SECONDS inside long steps, and other tools' notes (their noise only with `request.verbose`).
    """
    _check_request(request)
    recipes = [r for r in RECIPES if r.format in request.formats and r.dtype in request.dtypes]
    emit = Progress(progress)
    for fmt in request.formats:
        for dtype in request.dtypes:
            if dtype not in SUPPORTED[fmt]:
                emit(f"note: {fmt} has no {dtype} variant; skipped (it has {', '.join(SUPPORTED[fmt])})")
    if request.q8_recipe != DEFAULT_Q8_RECIPE and not any(r.dtype == "q8" for r in recipes):
        emit(f"note: --q8-recipe {request.q8_recipe} makes the q8 variants, which this export does not write")
    calibrated = any(r.calibrates(request.q8_recipe) for r in recipes)
    with quiet_tools(request.verbose, emit), Steps(4 + calibrated + len(recipes), emit) as steps:
        manifest = _export(request, recipes, calibrated, steps, emit)
        steps.finish()
    return manifest


def _export(request: ExportRequest, recipes: list[Recipe], calibrated: bool, steps: Steps,
            emit: Progress) -> Manifest:
    steps.next(f"loading {request.model}" + (f" at revision {request.revision}" if request.revision else ""))
    source = resolve(request.model, request.revision, request.allow_pickle)
    model = load_reference_model(source.transformer_dir, request.allow_pickle)
    config = model.config
    parent = request.output.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{request.output.name}.partial-", dir=parent) as scratch:
        out = Path(scratch)
        copy_side_files(source, out)
        manifest = _base_manifest(source, config, request, out)
        _check_matryoshka(request.matryoshka_dims, manifest.hidden_size)
        manifest.calibration = describe_calibration(request.calibration_texts)
        texts = validation_texts()
        suite = (export_check_suite(request.eval_queries, request.eval_documents,
                                    tokenizer=_plain_tokenizer(out / manifest.tokenizer_file))
                 if request.eval_queries and request.eval_documents else None)
        everything = texts + (suite.flatten() if suite else [])
        steps.next(f"PyTorch reference embeddings of {len(everything)} texts")
        token_ids = reference_token_ids(source.transformer_dir, everything, manifest.max_length)
        vectors = reference_embeddings(model, source.transformer_dir, everything, manifest.pooling,
                                       manifest.max_length, token_ids=token_ids, status=emit.status)
        reference = vectors[:len(texts)]
        retrieval = (suite, vectors[len(texts):]) if suite and suite.domains else None
        repeated = (_repeated_checks(recipes, TextTokenizer(out / manifest.tokenizer_file, manifest.max_length,
                                                            manifest.pad_token_id),
                                     everything[len(texts):], token_ids[len(texts):], emit)
                    if retrieval else set())

        steps.next("exporting the fp32 ONNX graph with optimum")
        manifest.attention = _attention_mode(request.attention, config, emit)
        emit.status("tracing the model for ONNX Runtime")
        fp32_files = _export_graph(model, out / FP32_ONNX.file, request.opset, manifest.attention,
                                   onnxruntime_ops=True)
        standard_ops = fp32_files[0]  # the same graph unless the attention is efficient
        if manifest.attention == "efficient" and not all(FILE_FORMATS[r.format].onnxruntime_ops for r in recipes):
            # ONNX Runtime's contrib ops are not other engines': their graph gets plain global attention and RoPE.
            emit.status("tracing the model again, with standard ops, for the other engines")
            standard_ops = _export_graph(model, out / STANDARD_OPS_DIR / "model.onnx", request.opset,
                                         manifest.attention, onnxruntime_ops=False)[0]
        sources = {fmt: fp32_files[0] if spec.onnxruntime_ops else standard_ops for fmt, spec in FILE_FORMATS.items()}
        del model  # the PyTorch weights are not needed past here: every later step reads the ONNX files
        gc.collect()
        calibration = None
        if calibrated:
            steps.next("tokenizing the calibration texts")
            calibration = _calibration_feeds(out, manifest, onnx_variants.graph_inputs(fp32_files[0]),
                                             request.calibration_texts)
        ranges_from = ranges_recipe(recipes)
        # Each format's turned q8 rounds the same weights against the same texts: the second reuses the first's.
        turned_rounding = (TurnedRounding() if request.q8_recipe == "turned"
                           and sum(r.dtype == "q8" for r in recipes) > 1 else None)
        for recipe in recipes:
            steps.next(f"{recipe.name}: converting and validating")
            variant, ranges = _convert_and_validate(recipe, request, out, manifest, sources, calibration, texts,
                                                    reference, retrieval, emit, ranges=recipe is ranges_from,
                                                    repeated=recipe.name in repeated, turned_rounding=turned_rounding)
            manifest.variants.append(variant)
            if ranges is not None:  # int8/uint8 output ranges (runtime/precision.py), fixed per model
                manifest.embedding_ranges = ranges
        if FP32_ONNX not in recipes:  # exported as every converter's source, not asked for itself
            for path in fp32_files:
                path.unlink()
        shutil.rmtree(out / STANDARD_OPS_DIR, ignore_errors=True)
        steps.next(f"writing {request.output}")
        manifest.write(out)
        _move_into_place(out, request.output, request.overwrite)
    return manifest


def _convert_and_validate(recipe: Recipe, request: ExportRequest, out: Path, manifest: Manifest,
                          sources: dict[str, Path], calibration, texts: list[str], reference: np.ndarray,
                          retrieval, progress: Progress, ranges: bool, repeated: bool,
                          turned_rounding: TurnedRounding | None = None) -> tuple[Variant, EmbeddingRanges | None]:
    """Convert one variant and check it; with `ranges`, also measure the int8/uint8 output ranges with it.
    With `repeated`, a variant that passed its validation leaves the retrieval check to another (_repeated_checks).
    """
    alternates = {family: out / path for family, path in (recipe.alternates or {}).items()}
    files = recipe.convert(ConvertInputs(source=sources[recipe.format], destination=out / recipe.file,
                                         calibration=calibration, alternates=alternates,
                                         q4_block_size=request.q4_block_size, q8_recipe=request.q8_recipe,
                                         status=progress.status, turned_rounding=turned_rounding))
    if request.external_data and recipe.format == "onnx":
        files = onnx_variants.weights_beside(files)
    variant = Variant(format=recipe.format, dtype=recipe.dtype, files=[file_entry(out, p) for p in files],
                      precision_hint=recipe.precision_hint, quantization=recipe.describe(
                          q4_block_size=request.q4_block_size, q8_recipe=request.q8_recipe),
                      portable=recipe.portable, alternates=dict(recipe.alternates or {}))
    threshold = request.min_cosine.get(recipe.dtype, recipe.min_cosine)
    progress.status(f"validating {recipe.name} through the runtime")
    embedder = load_variant(out, manifest, variant)
    variant.fidelity, variant.speed = measure_variant(embedder, texts, reference, threshold)
    progress(f"      cosine to PyTorch: min {variant.fidelity.cosine_min:.6f} "
             f"mean {variant.fidelity.cosine_mean:.6f} (threshold {threshold}); "
             f"{variant.speed.texts_per_second:.1f} texts/s on the validation texts")
    if not variant.fidelity.passed and not request.allow_low_fidelity:
        raise FidelityError(variant.name, "cosine min", variant.fidelity.cosine_min, threshold)
    if retrieval is not None and repeated and variant.fidelity.passed:
        progress(f"      retrieval check: left to the other {recipe.format} variants (the same runtime path, and "
                 f"the runtime's tokens are transformers' on all {retrieval[0].texts()} texts)")
    elif retrieval is not None:
        suite, reference_vectors = retrieval
        progress.status(f"retrieval check of {recipe.name}: {len(suite.domains)} domains, {suite.texts()} texts")
        variant.evaluation, variant.evaluation_domains = suite_fidelity(encode_suite(embedder, suite),
                                                                        reference_vectors, suite, CHECK_REFERENCE)
        worst = min(variant.evaluation_domains, key=lambda name: variant.evaluation_domains[name].top10_overlap)
        progress(f"      on {len(suite.domains)} domains ({suite.texts()} texts): lowest top-10 overlap "
                 f"{variant.evaluation.top10_overlap:.3f} ({worst}), cosine min {variant.evaluation.cosine_min:.4f}")
    measured = None
    if ranges:
        progress.status(f"int8/uint8 output ranges with {recipe.name}")
        measured = record_ranges(embedder, manifest, variant, request.calibration_texts, progress)
    del embedder  # its session and weights go before the next variant loads
    gc.collect()
    return variant, measured


def _repeated_checks(recipes: list[Recipe], tokenizer: TextTokenizer, texts: list[str], token_ids: list[list[int]],
                     progress: Callable[[str], None]) -> set[str]:
    """The fp32 variants whose retrieval check would tell nothing new: an fp32 graph matches PyTorch to 0.9999 on
    the validation texts (or fails the export), and another variant of its format runs the same runtime path over
    the check's texts. That holds while the runtime tokenizes every check text as transformers does."""
    candidates = {r.name for r in recipes
                  if r.dtype == "fp32" and any(o.format == r.format and o is not r for o in recipes)}
    if not candidates:
        return set()
    differing = token_differences(tokenizer, texts, token_ids)
    if differing:
        progress(f"note: the runtime tokenizes {len(differing)} of the {len(texts)} check texts differently from "
                 f"transformers (the first is text {differing[0]}); the fp32 variants' retrieval check shows what "
                 f"that costs")
        return set()
    return candidates


def _plain_tokenizer(path: Path) -> Tokenizer:
    """The model's tokenizer without its truncation and padding: it counts a text's tokens."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def _attention_mode(requested: str | None, config, progress: Callable[[str], None]) -> str:
    """The attention the graph will have: efficient rewrites exist for ModernBERT only."""
    if requested is None:
        return DEFAULT_ATTENTION if config.model_type == "modernbert" else "standard"
    if requested == "efficient" and config.model_type != "modernbert":
        progress(f"note: --attention efficient applies to ModernBERT; {config.model_type} is exported as it is")
        return "standard"
    return requested


def _export_graph(model, destination: Path, opset: int | None, attention: str, onnxruntime_ops: bool) -> list[Path]:
    """The fp32 ONNX graph, with ModernBERT's attention rewritten when `attention` is efficient."""
    if attention != "efficient":
        return onnx_variants.export_fp32(model, destination, opset)
    with efficient_attention(model, onnxruntime_ops):
        return onnx_variants.export_fp32(model, destination, opset)


def _calibration_feeds(out: Path, manifest: Manifest, inputs: list[str],
                       texts: list[str] | None) -> list[dict[str, np.ndarray]]:
    """One feed per calibration text, tokenized exactly as the runtime will tokenize."""
    if texts is None:
        texts = calibration_texts()
    tokenizer = TextTokenizer(out / manifest.tokenizer_file, manifest.max_length, manifest.pad_token_id)
    declared = {name: np.dtype(np.int64) for name in inputs}
    return [build_feeds(declared, tokenizer.pad(tokenizer.tokenize([text]).encodings)) for text in texts]


def _check_request(request: ExportRequest) -> None:
    for dtype in request.dtypes:
        if dtype not in DTYPES:
            raise UnknownChoiceError("--quantize value", dtype, DTYPES)
    for fmt in request.formats:
        if fmt not in FORMATS:
            raise UnknownChoiceError("--format value", fmt, FORMATS)
    if request.attention is not None and request.attention not in ATTENTION_MODES:
        raise UnknownChoiceError("--attention value", request.attention, ATTENTION_MODES)
    for dtype in request.min_cosine:
        if dtype not in DTYPES:
            raise UnknownChoiceError("--min-cosine variant", dtype, DTYPES)
    if request.q4_block_size < 16 or request.q4_block_size & (request.q4_block_size - 1):
        raise InvalidArgumentError("--q4-block-size", request.q4_block_size, "a power of two, at least 16")
    if request.q8_recipe not in Q8_RECIPES:
        raise UnknownChoiceError("--q8-recipe value", request.q8_recipe, Q8_RECIPES)
    if request.calibration_texts is not None and not request.calibration_texts:
        raise InvalidArgumentError("--calibration-data", "(no texts)", "a file with at least one text")
    if request.output.exists() and not request.overwrite and any(request.output.iterdir()):
        raise ExportError(f"{request.output} exists and is not empty; choose another -o or pass --overwrite")


def _check_matryoshka(dims: list[int], hidden: int) -> None:
    bad = [d for d in dims if not 1 <= d <= hidden]
    if bad:
        raise InvalidArgumentError("--matryoshka-dims", bad, f"sizes from 1 to the hidden size {hidden}")


def _base_manifest(source: Source, config, request: ExportRequest, out: Path) -> Manifest:
    spec = source.spec
    positions = int(getattr(config, "max_position_embeddings", 0) or 0)
    if not positions:
        raise UnsupportedModelError(f"{source.model}: config.json has no max_position_embeddings")
    max_length = min(spec.max_seq_length or positions, positions)
    prompts = {**spec.prompts, **request.prompts}
    return Manifest(
        source={"model": source.model, "revision": source.revision},
        architecture=(config.architectures or [type(config).__name__])[0],
        model_type=config.model_type,
        hidden_size=int(config.hidden_size),
        max_length=int(max_length),
        max_position_embeddings=positions,
        pad_token_id=_pad_token_id(source, config, out),
        pooling=spec.pooling,
        normalize=spec.normalize,
        prompts=prompts,
        default_prompt_name=spec.default_prompt_name,
        similarity_fn_name=spec.similarity_fn_name,
        matryoshka_dims=sorted(set(request.matryoshka_dims), reverse=True),
        edgembed_version=_version(),
    )


def _pad_token_id(source: Source, config, out: Path) -> int:
    """The pad id the tokenizer uses; writes tokenizer.json when the source has only slow-tokenizer files."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source.transformer_dir), use_fast=True)
    if not (out / "tokenizer.json").is_file():
        if not getattr(tokenizer, "is_fast", False):
            raise UnsupportedModelError(f"{source.model}: no fast tokenizer (tokenizer.json) can be built for it")
        tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))
    for candidate in (tokenizer.pad_token_id, getattr(config, "pad_token_id", None)):
        if candidate is not None:
            return int(candidate)
    return 0


def _version() -> str:
    from edgembed import __version__

    return __version__


def _move_into_place(built: Path, target: Path, overwrite: bool) -> None:
    """Swap the finished directory into place; an existing one is replaced only with --overwrite."""
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if target.exists():
        if not overwrite:
            raise ExportError(f"{target} appeared during the export; nothing was replaced")
        backup = target.with_name(f".{target.name}.old")
        shutil.rmtree(backup, ignore_errors=True)
        target.rename(backup)
        built.rename(target)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        built.rename(target)
    built.mkdir()  # TemporaryDirectory cleanup expects its folder back
