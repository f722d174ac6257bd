"""Request bodies of the OpenAI and TEI APIs, checked by hand into plain dataclasses (no pydantic on the hot path).

Field names, defaults and statuses follow TEI's router (router/src/http/types.rs) and OpenAI's embeddings API:
an empty batch is 400, every other bad field 422 naming the field.
"""
from __future__ import annotations

from dataclasses import dataclass

from edgembed.runtime import EncodeOptions
from edgembed.runtime.errors import bounded_repr
from edgembed.runtime.precision import PRECISIONS

from .errors import EMPTY, ApiError
from .settings import ServeSettings

ENCODING_FORMATS = ("float", "base64")


@dataclass(frozen=True)
class EmbedRequest:
    """What every embedding route asks of the service: the texts, and the options they are embedded with (its
    prompt_name, truncate, normalize, dim and precision, the last an edgembed extension: sentence-transformers'
    compact codes)."""

    texts: list[str]
    single: bool  # the client sent one string rather than a list
    options: EncodeOptions


@dataclass(frozen=True)
class TokenizeRequest:
    texts: list[str]
    add_special_tokens: bool
    prompt_name: str | None


@dataclass(frozen=True)
class SimilarityRequest:
    source: str
    sentences: list[str]
    truncate: bool
    prompt_name: str | None


def parse_openai(body: object, settings: ServeSettings, *, served_name: str, dimension: int
                 ) -> tuple[EmbedRequest, str]:
    """POST /v1/embeddings: (the request, its encoding_format). OpenAI always answers with unit vectors."""
    body = _object(body)
    model = body.get("model")
    if model is not None and model != served_name:
        raise ApiError(f"The model {_show(model)} does not exist; this server serves {served_name!r}",
                       status=404, param="model", code="model_not_found")
    encoding_format = body.get("encoding_format")
    if encoding_format is None:
        encoding_format = "float"
    if encoding_format not in ENCODING_FORMATS:
        raise ApiError(f"encoding_format must be 'float' or 'base64', not {_show(encoding_format)}",
                       param="encoding_format")
    texts, single = _texts(body.get("input"), "input", settings)
    dim = _dimensions(body.get("dimensions"), dimension)
    precision = _precision(body)
    if precision != "float32" and encoding_format == "base64":
        raise ApiError(f"precision {precision!r} answers with integer codes, and OpenAI clients decode base64 as "
                       "float32; send encoding_format 'float' with it", param="encoding_format")
    options = EncodeOptions(truncate=settings.auto_truncate, normalize=True, dim=dim, precision=precision)
    return EmbedRequest(texts, single, options), encoding_format


def parse_tei_embed(body: object, settings: ServeSettings, *, dimension: int) -> EmbedRequest:
    """POST /embed and POST /: TEI's EmbedRequest (normalize defaults to true, truncate to --auto-truncate)."""
    body = _object(body)
    texts, single = _texts(body.get("inputs"), "inputs", settings)
    options = EncodeOptions(prompt_name=_prompt_name(body), normalize=_bool(body, "normalize", True),
                            truncate=_truncation(body, settings), dim=_dimensions(body.get("dimensions"), dimension),
                            precision=_precision(body))
    return EmbedRequest(texts, single, options)


def parse_tokenize(body: object, settings: ServeSettings) -> TokenizeRequest:
    body = _object(body)
    texts, _ = _texts(body.get("inputs"), "inputs", settings)
    return TokenizeRequest(texts, _bool(body, "add_special_tokens", True), _prompt_name(body))


def parse_similarity(body: object, settings: ServeSettings) -> SimilarityRequest:
    """TEI's sentence-similarity body: {"inputs": {"source_sentence", "sentences"}, "parameters": {...}}."""
    body = _object(body)
    inputs = body.get("inputs")
    if not isinstance(inputs, dict):
        raise ApiError("inputs must be an object with source_sentence and sentences", param="inputs")
    source = inputs.get("source_sentence")
    if not isinstance(source, str):
        raise ApiError(f"inputs.source_sentence must be a string, not {_show(source)}", param="inputs.source_sentence")
    sentences = inputs.get("sentences")
    if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
        raise ApiError("inputs.sentences must be a list of strings", param="inputs.sentences")
    if not sentences:
        raise ApiError("inputs.sentences cannot be empty", EMPTY, param="inputs.sentences", code="empty_input")
    _check_batch_size(len(sentences) + 1, settings, "inputs.sentences")  # +1: the source sentence
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ApiError("parameters must be an object", param="parameters")
    return SimilarityRequest(source, sentences, _truncation(parameters, settings), _prompt_name(parameters))


def _object(body: object) -> dict:
    if not isinstance(body, dict):
        raise ApiError(f"the request body must be a JSON object, not {type(body).__name__}")
    return body


def _texts(value: object, param: str, settings: ServeSettings) -> tuple[list[str], bool]:
    if isinstance(value, str):
        return [value], True
    if value is None:
        raise ApiError(f"{param} is missing: send a string or a list of strings", param=param)
    if not isinstance(value, list):
        raise ApiError(f"{param} must be a string or a list of strings, not {_show(value)}", param=param)
    if not value:
        raise ApiError(f"{param} cannot be empty", EMPTY, param=param, code="empty_input")
    for index, text in enumerate(value):
        if not isinstance(text, str):
            if isinstance(text, (int, list)) and not isinstance(text, bool):
                raise ApiError(f"{param}[{index}] is token ids; this server takes text only, send the string",
                               param=param, code="token_ids_not_supported")
            raise ApiError(f"{param}[{index}] must be a string, not {_show(text)}", param=param)
    _check_batch_size(len(value), settings, param)
    return value, False


def _check_batch_size(size: int, settings: ServeSettings, param: str) -> None:
    if size > settings.max_client_batch_size:
        raise ApiError(f"batch size {size} > maximum allowed batch size {settings.max_client_batch_size}",
                       param=param, code="too_many_inputs")


def _dimensions(value: object, dimension: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= dimension:
        raise ApiError(f"dimensions must be an integer from 1 to {dimension} (the model's dimension), "
                       f"not {_show(value)}", param="dimensions")
    return value


def _precision(body: dict) -> str:
    value = body.get("precision")
    if value is None:
        return "float32"
    if value not in PRECISIONS:
        raise ApiError(f"precision must be one of {', '.join(map(repr, PRECISIONS))} (sentence-transformers' "
                       f"names), not {_show(value)}", param="precision")
    return value


def _truncation(body: dict, settings: ServeSettings) -> bool:
    direction = body.get("truncation_direction")
    if direction is not None and direction not in ("Right", "right"):
        if direction in ("Left", "left"):
            raise ApiError("truncation_direction Left is not supported: edgembed keeps the start of a text "
                           "(Right); cut the text yourself to keep its end", param="truncation_direction")
        raise ApiError(f"truncation_direction must be 'Right', not {_show(direction)}", param="truncation_direction")
    truncate = body.get("truncate")
    if truncate is None:
        return settings.auto_truncate
    if not isinstance(truncate, bool):
        raise ApiError(f"truncate must be true or false, not {_show(truncate)}", param="truncate")
    return truncate


def _bool(body: dict, key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(f"{key} must be true or false, not {_show(value)}", param=key)
    return value


def _prompt_name(body: dict) -> str | None:
    name = body.get("prompt_name")
    if name is not None and not isinstance(name, str):
        raise ApiError(f"prompt_name must be a string, not {_show(name)}", param="prompt_name")
    return name


def _show(value: object) -> str:
    return bounded_repr(value, limit=60)
