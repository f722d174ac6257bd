"""The HTTP routes (on serve/routing.py): OpenAI's /v1/embeddings, TEI's /embed, /, /tokenize, /similarity, and
/health, /info, /metrics.

Every embedding request goes the same way: key (401), body within --payload-limit (413), JSON (400), fields
(400/422), a free slot of --max-concurrent-requests (429), tokenization (422 for a text over the limit with
truncate=false), then the batcher. Errors come back in the route's API shape; nothing a client sends reaches
the catch-all 500.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time

import orjson

from edgembed import __version__
from edgembed.runtime import Embedder, InputTooLongError, MissingRangesError, TokenizedTexts, UsageError, int8_path

from . import responses
from .routing import App, Handler, Request, Response
from .batcher import Batcher, Embedded
from .errors import (
    BACKEND,
    EMPTY,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    OVERLOADED,
    PAYLOAD_TOO_LARGE,
    TOKENIZER,
    UNAUTHORIZED,
    UNHEALTHY,
    VALIDATION,
    ApiError,
)
from .metrics import Metrics
from .protocol import EmbedRequest, parse_openai, parse_similarity, parse_tei_embed, parse_tokenize
from .settings import ServeSettings

log = logging.getLogger("edgembed.serve")
JSON = "application/json"
# Requests with more characters than this are tokenized on a thread, so a big batch does not stall the loop;
# short ones are tokenized inline (a thread hop costs more than tokenizing a query).
INLINE_TOKENIZE_CHARACTERS = 4096
# te_request_failure's err label for each error_type (TEI's labels where TEI has one).
FAILURE_LABELS = {EMPTY: "validation", VALIDATION: "validation", TOKENIZER: "tokenization", OVERLOADED: "overloaded",
                  BACKEND: "inference", UNAUTHORIZED: "unauthorized", PAYLOAD_TOO_LARGE: "payload"}
OPENAI, TEI = "openai", "tei"


class Server:
    """The state the routes share: the model, the limits, the batcher, the metrics, the in-flight count."""

    def __init__(self, model: Embedder, settings: ServeSettings) -> None:
        self.model = model
        self.settings = settings
        self.served_name = settings.model_id or model.model_id
        self.metrics = Metrics(model.max_length)
        self.batcher = Batcher(model, max_batch_tokens=settings.max_batch_tokens, metrics=self.metrics,
                               health_timeout=settings.health_timeout)
        self.in_flight = 0
        self._authorization = f"Bearer {settings.api_key}".encode() if settings.api_key else None

    def app(self) -> App:
        openai_embeddings, tei_embed = self._guard(self.openai_embeddings, OPENAI), self._guard(self.tei_embed, TEI)
        routes = {
            "/v1/embeddings": {"POST": openai_embeddings},
            "/embeddings": {"POST": openai_embeddings},
            "/v1/models": {"GET": self._guard(self.openai_models, OPENAI)},
            "/embed": {"POST": tei_embed},
            "/": {"GET": self.health, "POST": tei_embed},  # as in TEI: huggingface_hub's InferenceClient posts here
            "/tokenize": {"POST": self._guard(self.tokenize, TEI)},
            "/similarity": {"POST": self._guard(self.similarity, TEI)},
            "/info": {"GET": self._guard(self.info, TEI)},
            "/health": {"GET": self.health},
            "/metrics": {"GET": self.prometheus},
        }
        return App(routes, not_found=self._not_found, not_allowed=self._not_allowed)

    @contextlib.asynccontextmanager
    async def lifespan(self):
        """The batcher runs from before the first connection until the last answer is written."""
        self.batcher.start()
        try:
            yield
        finally:
            await self.batcher.close()

    # --- embedding routes -------------------------------------------------------------------------------------

    async def openai_embeddings(self, request: Request) -> Response:
        started = time.perf_counter()
        params, encoding_format = parse_openai(self._json(request), self.settings,
                                               served_name=self.served_name, dimension=self.model.dimension)
        tokens, embedded, tokenization = await self._embed(params)
        body = responses.openai_embeddings(embedded.vectors, encoding_format=encoding_format,
                                           model=self.served_name, tokens=tokens.token_count)
        return self._success(body, params, tokens, embedded, tokenization, started)

    async def tei_embed(self, request: Request) -> Response:
        started = time.perf_counter()
        params = parse_tei_embed(self._json(request), self.settings, dimension=self.model.dimension)
        tokens, embedded, tokenization = await self._embed(params)
        return self._success(responses.tei_embeddings(embedded.vectors), params, tokens, embedded, tokenization,
                             started)

    async def similarity(self, request: Request) -> Response:
        started = time.perf_counter()
        parsed = parse_similarity(self._json(request), self.settings)
        # the vectors encode() gives, scored with the model's similarity function (cosine unless it says otherwise)
        params = EmbedRequest([parsed.source, *parsed.sentences], False, parsed.truncate, parsed.prompt_name,
                              normalize=None)
        tokens, embedded, tokenization = await self._embed(params)
        scores = self.model.similarity(embedded.vectors[:1], embedded.vectors[1:])[0]
        return self._success(responses.dumps(scores.astype("float32")), params, tokens, embedded, tokenization,
                             started)

    async def _embed(self, params: EmbedRequest) -> tuple[TokenizedTexts, Embedded, float]:
        self.metrics.increment("te_request_count", method="single" if params.single else "batch")
        if self.in_flight >= self.settings.max_concurrent_requests:
            raise ApiError(f"Model is overloaded: {self.in_flight} requests in flight, the limit "
                           f"(--max-concurrent-requests) is {self.settings.max_concurrent_requests}; retry shortly",
                           OVERLOADED, headers={"Retry-After": "1"})
        self._check_ranges(params)
        self.in_flight += 1
        try:
            start = time.perf_counter()
            tokens = await self._tokenize(params.texts, prompt_name=params.prompt_name, truncate=params.truncate)
            tokenization = time.perf_counter() - start
            embedded = await self.batcher.embed(tokens, normalize=params.normalize, dim=params.dim,
                                                precision=params.precision)
        finally:
            self.in_flight -= 1
        return tokens, embedded, tokenization

    def _check_ranges(self, params: EmbedRequest) -> None:
        """int8/uint8 codes need the export's ranges at this dim: a 422 before the request is queued."""
        if params.precision not in ("int8", "uint8"):
            return
        try:
            self.model.embedding_ranges(dim=params.dim, normalize=params.normalize)
        except MissingRangesError:
            size = params.dim or self.model.dimension
            raise ApiError(f"precision {params.precision!r} needs the int8 ranges measured at export for {size} "
                           f"dimensions (normalize={params.normalize}), and this export has none there; ask for "
                           "binary or float32, or serve an export made by this edgembed with that dimension in "
                           "its --matryoshka-dims", VALIDATION, param="precision", code="no_ranges") from None

    async def _tokenize(self, texts: list[str], *, prompt_name: str | None, truncate: bool) -> TokenizedTexts:
        def run() -> TokenizedTexts:
            return self.model.tokenize(texts, prompt_name=prompt_name, truncate=truncate)

        try:
            if sum(len(text) for text in texts) <= INLINE_TOKENIZE_CHARACTERS:
                return run()
            return await asyncio.get_running_loop().run_in_executor(None, run)
        except InputTooLongError as exc:
            raise ApiError(f"input at index {exc.index} has {exc.tokens} tokens, more than the model's limit of "
                           f"{exc.max_length}; shorten it, or send truncate=true to cut it", VALIDATION,
                           param="input", code="input_too_long") from None
        except UsageError as exc:  # an unknown prompt_name, a text that is not valid Unicode
            raise ApiError(str(exc), VALIDATION) from None

    def _success(self, body: bytes, params: EmbedRequest, tokens: TokenizedTexts, embedded: Embedded,
                 tokenization: float, started: float) -> Response:
        metrics = self.metrics
        metrics.increment("te_request_success", method="single" if params.single else "batch")
        total = time.perf_counter() - started
        metrics.observe("te_request_duration", total)
        metrics.observe("te_request_tokenization_duration", tokenization)
        metrics.observe("te_request_queue_duration", embedded.queue_seconds)
        metrics.observe("te_request_inference_duration", embedded.inference_seconds)
        for length in tokens.lengths:
            metrics.observe("te_request_input_length", length)
        headers = {"x-compute-type": "cpu", "x-compute-tokens": str(tokens.token_count),
                   "x-compute-characters": str(sum(len(text) for text in params.texts)),
                   "x-total-time": _ms(total), "x-compute-time": _ms(total), "x-tokenization-time": _ms(tokenization),
                   "x-queue-time": _ms(embedded.queue_seconds), "x-inference-time": _ms(embedded.inference_seconds)}
        return Response(body, media_type=JSON, headers=headers)

    # --- other routes -----------------------------------------------------------------------------------------

    async def openai_models(self, request: Request) -> Response:
        """OpenAI's model list, for clients that look the served name up before embedding."""
        model = {"id": self.served_name, "object": "model", "created": 0, "owned_by": "edgembed"}
        return Response(responses.dumps({"object": "list", "data": [model]}), media_type=JSON)

    async def tokenize(self, request: Request) -> Response:
        parsed = parse_tokenize(self._json(request), self.settings)
        tokens = await self._tokenize(parsed.texts, prompt_name=parsed.prompt_name, truncate=True)
        name = parsed.prompt_name if parsed.prompt_name is not None else self.model.manifest.default_prompt_name
        prefix = self.model.prompts.get(name, "") if name else ""
        return Response(responses.tokens(list(tokens.encodings), [prefix + text for text in parsed.texts],
                                         add_special_tokens=parsed.add_special_tokens), media_type=JSON)

    async def info(self, request: Request) -> Response:
        model, settings = self.model, self.settings
        body = {
            "model_id": model.model_id, "model_sha": model.manifest.source.get("revision"),
            "model_dtype": model.variant, "served_model_name": self.served_name,
            "model_type": {"embedding": {"pooling": model.manifest.pooling}},
            "max_concurrent_requests": settings.max_concurrent_requests, "max_input_length": model.max_length,
            "max_batch_tokens": settings.max_batch_tokens, "max_batch_requests": None,
            "max_client_batch_size": settings.max_client_batch_size, "auto_truncate": settings.auto_truncate,
            "tokenization_workers": 1, "version": __version__, "sha": None, "docker_label": None,
            # edgembed's own fields
            "backend": model.backend, "variant": model.variant, "dimension": model.dimension,
            "matryoshka_dims": list(model.manifest.matryoshka_dims), "normalize": model.manifest.normalize,
            "prompts": model.prompts, "default_prompt_name": model.manifest.default_prompt_name,
            "similarity_fn_name": model.manifest.similarity_fn_name, "payload_limit": settings.payload_limit,
            "health_timeout": settings.health_timeout, "int8_path": int8_path().name,
            "int8_path_description": int8_path().description, "engine": model.describe(),
        }
        return Response(responses.dumps(body), media_type=JSON)

    async def health(self, request: Request) -> Response:
        problem = self.batcher.health()
        if problem is None:
            return Response(b"", status_code=200)
        self.metrics.increment("te_request_failure", err="unhealthy")
        return Response(responses.tei_error(ApiError(problem, UNHEALTHY)), status_code=503, media_type=JSON)

    async def prometheus(self, request: Request) -> Response:
        self.metrics.set("te_queue_size", self.batcher.queued)
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # --- shared steps -----------------------------------------------------------------------------------------

    def _guard(self, handler: Handler, flavor: str) -> Handler:
        """The route behind the key check, with every ApiError rendered in the route's shape."""
        async def guarded(request: Request) -> Response:
            try:
                self._authorize(request)
                return await handler(request)
            except ApiError as error:
                return self._error(error, flavor)
            except Exception as exc:  # a bug of ours, never the client's input: logged, answered as 500
                log.exception("internal error on %s", request.path)
                return self._error(ApiError(f"internal error: {type(exc).__name__}: {exc}", BACKEND, status=500),
                                   flavor)

        return guarded

    def _authorize(self, request: Request) -> None:
        if self._authorization is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, self._authorization):  # constant time: the key does not leak by timing
            raise ApiError("missing or wrong API key: send the header 'Authorization: Bearer KEY'", UNAUTHORIZED,
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    def _json(self, request: Request) -> object:
        if request.body_too_large is not None:
            raise _too_large(request.body_too_large, self.settings.payload_limit)
        try:
            return orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(f"the request body is not valid JSON: {exc}", VALIDATION, status=400) from None

    def _error(self, error: ApiError, flavor: str) -> Response:
        self.metrics.increment("te_request_failure", err=_failure_label(error))
        body = responses.openai_error(error) if flavor == OPENAI else responses.tei_error(error)
        return Response(body, status_code=error.status, media_type=JSON, headers=error.headers)

    async def _not_found(self, request: Request) -> Response:
        error = ApiError(f"no route {request.path}; see GET /info and the README for the routes", NOT_FOUND)
        return self._plain_error(request, error)

    async def _not_allowed(self, request: Request) -> Response:
        error = ApiError(f"{request.method} is not allowed on {request.path}", METHOD_NOT_ALLOWED)
        return self._plain_error(request, error)

    def _plain_error(self, request: Request, error: ApiError) -> Response:
        openai = request.path.startswith("/v1/")
        body = responses.openai_error(error) if openai else responses.tei_error(error)
        return Response(body, status_code=error.status, media_type=JSON)


def _failure_label(error: ApiError) -> str:
    if error.code == "too_many_inputs":
        return "batch_size"
    return FAILURE_LABELS.get(error.error_type, error.error_type)


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(f"the request body has {size} bytes, more than the payload limit of {limit} bytes "
                    "(--payload-limit); send fewer or shorter texts per request", PAYLOAD_TOO_LARGE)


def _ms(seconds: float) -> str:
    return str(int(seconds * 1000))
