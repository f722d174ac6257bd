"""The `precision` extension of the embedding routes: a real server process answers with the codes encode() gives."""
from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from serve_process import start_server

from edgembed.runtime import Embedder

LOAD = ("--variant", "fp32", "--backend", "onnxruntime")
TEXTS = ["how do I bake bread?", "the dictionary maps keys to values", "a",
         "exceptions propagate up the call stack until a handler catches them"]


@pytest.fixture(scope="module")
def model(ranged_export: Path) -> Embedder:
    return Embedder.load(ranged_export, variant="fp32", backend="onnxruntime")


@pytest.fixture(scope="module")
def http(ranged_export: Path, tmp_path_factory: pytest.TempPathFactory):
    served = start_server(ranged_export, tmp_path_factory.mktemp("log") / "serve.log", *LOAD)
    with httpx.Client(base_url=served.url, timeout=30) as client:
        yield client
    assert served.stop() == 0, served.output()


def close_codes(answer: np.ndarray, expected: np.ndarray, precision: str) -> None:
    """Equal codes, but for a component that sits on a step boundary in one batch and not in another (the
    server batches texts with other requests' texts, so its floats may differ from encode()'s in the last bit)."""
    if precision in ("binary", "ubinary"):
        assert (np.unpackbits(answer.astype(np.uint8)) != np.unpackbits(expected.astype(np.uint8))).mean() < 0.01
    else:
        assert np.abs(answer.astype(np.int16) - expected.astype(np.int16)).max() <= 1
        assert (answer == expected).mean() > 0.99


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_tei_embed_answers_with_the_codes_of_encode(http, model, precision):
    answer = http.post("/embed", json={"inputs": TEXTS, "precision": precision})
    assert answer.status_code == 200, answer.text
    codes = np.asarray(answer.json())
    expected = model.encode(TEXTS, precision=precision)
    assert codes.shape == expected.shape and codes.dtype.kind == "i"
    close_codes(codes, expected, precision)


def test_matryoshka_codes_and_openai_float_lists(http, model):
    answer = http.post("/v1/embeddings", json={"input": TEXTS, "precision": "int8", "dimensions": 16,
                                               "encoding_format": "float"})
    assert answer.status_code == 200, answer.text
    codes = np.asarray([item["embedding"] for item in answer.json()["data"]])
    close_codes(codes, model.encode(TEXTS, dim=16, precision="int8"), "int8")
    assert all(isinstance(value, int) for value in answer.json()["data"][0]["embedding"])


def test_openai_client_passes_precision_as_an_extra_field(http, model):
    from openai import OpenAI

    client = OpenAI(base_url=str(http.base_url) + "/v1", api_key="not-needed", max_retries=0)
    served = client.models.list().data[0].id
    response = client.embeddings.create(input=TEXTS, model=served, encoding_format="float",
                                        extra_body={"precision": "binary"})
    close_codes(np.asarray([item.embedding for item in response.data]), model.encode(TEXTS, precision="binary"),
                "binary")


@pytest.mark.parametrize("path,body,message", [
    ("/embed", {"inputs": "x", "precision": "int4"},
     "precision must be one of 'float32', 'int8', 'uint8', 'binary', 'ubinary'"),
    ("/embed", {"inputs": "x", "precision": "int8", "dimensions": 8},
     "needs the int8 ranges measured at export for 8 dimensions"),
    ("/embed", {"inputs": "x", "precision": "uint8", "normalize": False},
     "(normalize=False), and this export has none there"),
    ("/v1/embeddings", {"input": "x", "precision": "int8", "encoding_format": "base64"},
     "OpenAI clients decode base64 as float32; send encoding_format 'float' with it"),
])
def test_a_precision_the_server_cannot_give_is_a_422_naming_the_fix(http, path, body, message):
    answer = http.post(path, json=body)
    assert answer.status_code == 422
    assert message in answer.text, answer.text
