"""The HTTP routes as a plain ASGI application (Starlette): OpenAI's /v1/embeddings, TEI's /embed, /, /tokenize,
/similarity, and /health, /info, /metrics. They translate HTTP to the inference service (service.py) and back.

Every embedding request goes the same way: key (401, decided before a byte of the body is read), body within
--payload-limit (413) and --body-timeout (408), JSON (400), fields (400/422), then the service (429, 422 for a
text over the limit with truncate=false, 424 for an engine failure). Errors come back in the route's API shape;
nothing a client sends reaches the catch-all 500.

    from edgembed.serve import create_app          # mount it in your own Starlette or FastAPI app,
    app = create_app(Embedder.load("out"))         # or run it under any ASGI server
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
from collections.abc import Awaitable, Callable

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from edgembed import __version__
from edgembed.runtime import Embedder, EncodeOptions, int8_path
from edgembed.runtime.memory import trim_heap

from . import responses
from .errors import (
    BACKEND,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    PAYLOAD_TOO_LARGE,
    TIMEOUT,
    UNAUTHORIZED,
    UNHEALTHY,
    VALIDATION,
    ApiError,
)
from .protocol import EmbedRequest, parse_openai, parse_similarity, parse_tei_embed, parse_tokenize
from .service import Embedding, EmbeddingService
from .settings import ServeSettings

log = logging.getLogger("edgembed.serve")
JSON = "application/json"
OPENAI, TEI = "openai", "tei"
# A model id that is a hub name (owner/name), not a path on the machine that exported it.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
Endpoint = Callable[[Request], Awaitable[Response]]
# After a body this large, freed memory is handed back to the system (the allocator would keep it).
LARGE_BODY = 1 << 20


def create_app(model: Embedder, settings: ServeSettings | None = None, *, owns_model: bool = False) -> Starlette:
    """The server's routes for `model` as an ASGI application; batching starts with the first request (or the
    app's lifespan) and stops with the lifespan, which also closes `model` when the app `owns_model`."""
    return Routes(EmbeddingService(model, settings or ServeSettings()), owns_model=owns_model).app()


def app_from_environment() -> Starlette:
    """The app of `edgembed serve`, configured by EDGEMBED_MODEL_DIR and the other EDGEMBED_* variables, for other
    ASGI servers' factory option: `EDGEMBED_MODEL_DIR=out uvicorn --factory edgembed.serve.app:app_from_environment`.
    The model loads when the server calls this (in its worker process, when it has workers)."""
    from edgembed.commands import load_embedder

    from .cli import options_from_environment, settings_from

    options = options_from_environment()
    settings = settings_from(options)
    return create_app(load_embedder(options), settings, owns_model=True)


def served_name(model: Embedder, settings: ServeSettings) -> str:
    """--model-id, else the model's public id."""
    return settings.model_id or public_model_id(model)


def public_model_id(model: Embedder) -> str:
    """The model's hub id, else the export folder's name: never a path of the machine that exported it."""
    source = model.model_id
    return source if HUB_ID.fullmatch(source) and ".." not in source else model.directory.resolve().name


class Routes:
    """The endpoints of one service, each with its API's error shape."""

    def __init__(self, service: EmbeddingService, *, owns_model: bool = False) -> None:
        self.service, self.owns_model = service, owns_model
        self.model = service.model
        self.settings = service.settings
        self.name = served_name(self.model, self.settings)
        key = self.settings.api_key
        self._authorization = f"Bearer {key}".encode() if key else None

    def app(self) -> Starlette:
        openai_embeddings, tei_embed = self._guard(self.openai_embeddings, OPENAI), self._guard(self.tei_embed, TEI)
        routes = [
            Route("/v1/embeddings", openai_embeddings, methods=["POST"]),
            Route("/embeddings", openai_embeddings, methods=["POST"]),
            Route("/v1/models", self._guard(self.openai_models, OPENAI), methods=["GET"]),
            Route("/embed", tei_embed, methods=["POST"]),
            Route("/", self.root, methods=["GET", "POST"]),  # as TEI: huggingface_hub's InferenceClient posts here
            Route("/tokenize", self._guard(self.tokenize, TEI), methods=["POST"]),
            Route("/similarity", self._guard(self.similarity, TEI), methods=["POST"]),
            Route("/info", self._guard(self.info, TEI), methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
        ]
        return Starlette(routes=routes, lifespan=self._lifespan,
                         exception_handlers={HTTPException: self._http_exception})

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette):
        self.service.start()
        try:
            yield
        finally:
            await self.service.close()
            if self.owns_model:
                self.model.close()

    # --- embedding routes -------------------------------------------------------------------------------------

    async def openai_embeddings(self, request: Request) -> Response:
        params, encoding_format = parse_openai(await self._json(request), self.settings, served_name=self.name,
                                               dimension=self.model.dimension)
        result = await self._embed(request, params)
        body = responses.openai_embeddings(result.vectors, encoding_format=encoding_format, model=self.name,
                                           tokens=result.tokens.token_count)
        return self._success(body, params, result)

    async def tei_embed(self, request: Request) -> Response:
        params = parse_tei_embed(await self._json(request), self.settings, dimension=self.model.dimension)
        result = await self._embed(request, params)
        return self._success(responses.tei_embeddings(result.vectors), params, result)

    async def root(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._guard(self.tei_embed, TEI)(request)
        return await self.health(request)

    async def similarity(self, request: Request) -> Response:
        parsed = parse_similarity(await self._json(request), self.settings)
        # the vectors encode() gives, scored with the model's similarity function (cosine unless it says otherwise)
        params = EmbedRequest([parsed.source, *parsed.sentences], False,
                              EncodeOptions(prompt_name=parsed.prompt_name, truncate=parsed.truncate))
        result = await self._embed(request, params)
        return self._success(responses.dumps(self.service.similarity(result.vectors)), params, result)

    async def _embed(self, request: Request, params: EmbedRequest) -> Embedding:
        """The service's answer, given up (and its texts dropped from the queue) if the client hangs up first."""
        work = asyncio.ensure_future(self.service.embed(params))
        hang_up = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait((work, hang_up), return_when=asyncio.FIRST_COMPLETED)
        finally:
            hang_up.cancel()
        if not work.done():
            work.cancel()
            raise ClientDisconnect()
        return work.result()

    def _success(self, body: bytes, params: EmbedRequest, result: Embedding) -> Response:
        headers = {"x-compute-type": "cpu", "x-compute-tokens": str(result.tokens.token_count),
                   "x-compute-characters": str(sum(len(text) for text in params.texts)),
                   "x-total-time": _ms(result.total_seconds), "x-compute-time": _ms(result.total_seconds),
                   "x-tokenization-time": _ms(result.tokenization_seconds),
                   "x-queue-time": _ms(result.queue_seconds), "x-inference-time": _ms(result.inference_seconds)}
        return Response(body, media_type=JSON, headers=headers)

    # --- other routes -----------------------------------------------------------------------------------------

    async def openai_models(self, request: Request) -> Response:
        """OpenAI's model list, for clients that look the served name up before embedding."""
        model = {"id": self.name, "object": "model", "created": 0, "owned_by": "edgembed"}
        return Response(responses.dumps({"object": "list", "data": [model]}), media_type=JSON)

    async def tokenize(self, request: Request) -> Response:
        parsed = parse_tokenize(await self._json(request), self.settings)
        tokens = await self.service.tokenize(parsed.texts, EncodeOptions(prompt_name=parsed.prompt_name))
        name = parsed.prompt_name if parsed.prompt_name is not None else self.model.manifest.default_prompt_name
        prefix = self.model.prompts.get(name, "") if name else ""
        return Response(responses.tokens(list(tokens.encodings), [prefix + text for text in parsed.texts],
                                         add_special_tokens=parsed.add_special_tokens), media_type=JSON)

    async def info(self, request: Request) -> Response:
        model, settings = self.model, self.settings
        body = {
            "model_id": public_model_id(model), "model_sha": model.manifest.source.get("revision"),
            "model_dtype": model.variant, "served_model_name": self.name,
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
        problem = self.service.health()
        if problem is None:
            return Response(b"", status_code=200)
        return Response(responses.tei_error(ApiError(problem, UNHEALTHY)), status_code=503, media_type=JSON)

    async def prometheus(self, request: Request) -> Response:
        return Response(self.service.render_metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # --- shared steps -----------------------------------------------------------------------------------------

    def _guard(self, endpoint: Endpoint, flavor: str) -> Endpoint:
        """The route behind the key check, with every ApiError rendered in the route's shape."""
        async def guarded(request: Request) -> Response:
            try:
                self._authorize(request)
                return await endpoint(request)
            except ApiError as error:
                self.service.record_failure(error)
                return _error_response(error, flavor, close=not _body_read(request))
            except ClientDisconnect:  # nobody is left to read an answer
                return Response(b"", status_code=400, headers={"connection": "close"})
            except Exception as exc:  # a bug of ours, never the client's input: logged, answered as 500
                log.exception("internal error on %s", request.url.path)
                error = ApiError(f"internal error: {type(exc).__name__}", BACKEND, status=500)
                return _error_response(error, flavor, close=not _body_read(request))
            finally:
                if getattr(request.state, "body_size", 0) >= LARGE_BODY:
                    trim_heap()

        return guarded

    def _authorize(self, request: Request) -> None:
        if self._authorization is None:
            return
        given = request.headers.get("authorization", "").encode("latin-1")
        if not hmac.compare_digest(given, self._authorization):  # constant time: the key does not leak by timing
            raise ApiError("missing or wrong API key: send the header 'Authorization: Bearer KEY'", UNAUTHORIZED,
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    async def _json(self, request: Request) -> object:
        body = await read_body(request, limit=self.settings.payload_limit, timeout=self.settings.body_timeout)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(f"the request body is not valid JSON: {exc}", VALIDATION, status=400) from None

    async def _http_exception(self, request: Request, exc: HTTPException) -> Response:
        """404 and 405 from the router, in the API shape of the path."""
        if exc.status_code == 405:
            error = ApiError(f"{request.method} is not allowed on {request.url.path}", METHOD_NOT_ALLOWED)
        elif exc.status_code == 404:
            error = ApiError(f"no route {request.url.path}; see GET /info and the README for the routes", NOT_FOUND)
        else:
            error = ApiError(str(exc.detail), VALIDATION, status=exc.status_code)
        flavor = OPENAI if request.url.path.startswith("/v1/") else TEI
        return _error_response(error, flavor, close=not _body_read(request), headers=exc.headers)


async def read_body(request: Request, *, limit: int, timeout: float) -> bytes:
    """The whole body, refused past `limit` bytes (declared or counted) or when it takes over `timeout` seconds."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    body = bytearray()  # one copy of the body, never a list of chunks and their join

    async def collect() -> None:
        async for chunk in request.stream():
            if len(body) + len(chunk) > limit:
                raise _too_large(len(body) + len(chunk), limit)
            body.extend(chunk)

    try:
        await asyncio.wait_for(collect(), timeout)
    except asyncio.TimeoutError:
        raise ApiError(f"the request body did not arrive within {timeout:g} s (--body-timeout); {len(body)} bytes "
                       "came", TIMEOUT) from None
    finally:
        request.state.body_size = len(body)
    request.state.body_read = True
    return body


async def _disconnected(request: Request) -> None:
    """Returns when the client hangs up (after the body, ASGI's receive() waits for http.disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _body_read(request: Request) -> bool:
    """True when the body was read to its end or there is none (the connection can then be kept alive)."""
    if getattr(request.state, "body_read", False):
        return True
    headers = request.headers
    return headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers


def _error_response(error: ApiError, flavor: str, *, close: bool, headers: dict[str, str] | None = None
                    ) -> Response:
    """The error in the route's API shape; `close` when the body was not read (the server must not read it)."""
    body = responses.openai_error(error) if flavor == OPENAI else responses.tei_error(error)
    extra = {**(headers or {}), **error.headers, **({"connection": "close"} if close else {})}
    return Response(body, status_code=error.status, media_type=JSON, headers=extra)


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(f"the request body has {size} bytes, more than the payload limit of {limit} bytes "
                    "(--payload-limit); send fewer or shorter texts per request", PAYLOAD_TOO_LARGE)


def _ms(seconds: float) -> str:
    return str(int(seconds * 1000))
