"""Response bodies in each API's shape; orjson writes the float32 arrays directly (no Python floats in between)."""
from __future__ import annotations

import base64

import numpy as np
import orjson
from tokenizers import Encoding

from .errors import OVERLOADED, UNAUTHORIZED, ApiError

JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def dumps(value: object) -> bytes:
    return orjson.dumps(value, option=JSON_OPTIONS)


def tei_error(error: ApiError) -> bytes:
    """TEI's error body: {"error": message, "error_type": kind}."""
    return dumps({"error": error.message, "error_type": error.error_type})


def openai_error(error: ApiError) -> bytes:
    """OpenAI's error body: {"error": {"message", "type", "param", "code"}}."""
    if error.error_type == UNAUTHORIZED:
        kind = "authentication_error"
    elif error.error_type == OVERLOADED:
        kind = "rate_limit_error"
    elif error.status >= 500 or error.status == 424:
        kind = "server_error"
    else:
        kind = "invalid_request_error"
    code = error.code or (error.error_type if error.error_type in (OVERLOADED, UNAUTHORIZED) else None)
    return dumps({"error": {"message": error.message, "type": kind, "param": error.param, "code": code}})


def openai_embeddings(vectors: np.ndarray, *, encoding_format: str, model: str, tokens: int) -> bytes:
    """The OpenAI list of embeddings; base64 is the little-endian float32 bytes, as the openai client decodes.
    Integer codes (the precision extension) go out as lists of integers."""
    vectors = _wire_array(vectors)
    if encoding_format == "base64":
        rows = [base64.b64encode(row.tobytes()).decode("ascii") for row in vectors]
    else:
        rows = list(vectors)
    data = [{"object": "embedding", "index": index, "embedding": row} for index, row in enumerate(rows)]
    return dumps({"object": "list", "data": data, "model": model,
                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def tei_embeddings(vectors: np.ndarray) -> bytes:
    """TEI's /embed answer: a list of vectors (or integer codes), one per input, also for a single string."""
    return dumps(_wire_array(vectors))


def _wire_array(vectors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype="<f4" if vectors.dtype.kind == "f" else None)


def tokens(encodings: list[Encoding], texts: list[str], *, add_special_tokens: bool) -> bytes:
    """TEI's /tokenize answer: per text, its tokens as {id, text, special, start, stop} (character offsets)."""
    out = []
    for encoding, text in zip(encodings, texts):
        items = []
        for token_id, token, (start, stop), special in zip(encoding.ids, encoding.tokens, encoding.offsets,
                                                           encoding.special_tokens_mask):
            if special:
                if add_special_tokens:
                    items.append({"id": token_id, "text": token, "special": True, "start": None, "stop": None})
            else:
                items.append({"id": token_id, "text": text[start:stop], "special": False, "start": start,
                              "stop": stop})
        out.append(items)
    return dumps(out)
