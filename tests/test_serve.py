"""`edgembed serve` as a client sees it: the real server process on a loopback port, the official openai client,
huggingface_hub's InferenceClient and raw httpx. Fast tier: the small real export of fast_model.py."""
from __future__ import annotations

import base64
import concurrent.futures
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from fast_model import MAX_LENGTH, build_fast_export
from serve_process import start_server

from edgembed.runtime import Embedder

SERVED = "served-test"
LOAD = ("--variant", "fp32", "--backend", "onnxruntime")
MAX_CLIENT_BATCH = 8
PAYLOAD_LIMIT = 20_000
TEXTS = ["how do I bake bread?", "the dictionary maps keys to values", "a", "",
         "exceptions propagate up the call stack until a handler catches them"]
LONG_TEXT = " ".join(["generators yield values lazily"] * 40)  # well over the fast model's 64 tokens
ATOL = 2e-6  # batches of other sizes pad differently; the reductions may round differently


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fast_export(tmp_path_factory.mktemp("serve") / "out", openvino=False)


@pytest.fixture(scope="module")
def model(export_dir: Path) -> Embedder:
    return Embedder.load(export_dir, variant="fp32", backend="onnxruntime")


@pytest.fixture(scope="module")
def server(export_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    served = start_server(export_dir, tmp_path_factory.mktemp("log") / "serve.log", *LOAD, "--model-id", SERVED,
                          "--max-client-batch-size", str(MAX_CLIENT_BATCH), "--payload-limit", str(PAYLOAD_LIMIT))
    yield served
    assert served.stop() == 0, served.output()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def test_openai_client_base64_and_float(server, model):
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key="not-needed", max_retries=0)
    expected = model.encode(TEXTS)
    default = client.embeddings.create(input=TEXTS, model=SERVED)  # the client asks for base64 by default
    floats = client.embeddings.create(input=TEXTS, model=SERVED, encoding_format="float")
    for response in (default, floats):
        assert response.model == SERVED and [item.index for item in response.data] == list(range(len(TEXTS)))
        np.testing.assert_allclose(np.array([item.embedding for item in response.data]), expected, atol=ATOL)
        tokens = model.tokenize(TEXTS).token_count
        assert response.usage.prompt_tokens == response.usage.total_tokens == tokens
    single = client.embeddings.create(input=TEXTS[0], model=SERVED, dimensions=16, encoding_format="float")
    np.testing.assert_allclose(single.data[0].embedding, model.encode(TEXTS[0], dim=16), atol=ATOL)
    assert np.isclose(np.linalg.norm(single.data[0].embedding), 1.0, atol=1e-5)  # truncated, then normalized


def test_openai_model_list(server):
    from openai import OpenAI

    assert [model.id for model in OpenAI(base_url=server.url + "/v1", api_key="x").models.list()] == [SERVED]


def test_openai_base64_is_little_endian_float32(http, model):
    answer = http.post("/v1/embeddings", json={"input": TEXTS[:2], "encoding_format": "base64"}).json()
    decoded = np.array([np.frombuffer(base64.b64decode(item["embedding"]), "<f4") for item in answer["data"]])
    np.testing.assert_allclose(decoded, model.encode(TEXTS[:2]), atol=ATOL)
    assert answer["object"] == "list" and answer["data"][0]["object"] == "embedding"
    alias = http.post("/embeddings", json={"input": TEXTS[:2], "encoding_format": "base64"}).json()  # TEI's alias
    assert alias["data"] == answer["data"]


def test_openai_unknown_model_is_404_in_openai_shape(server):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="not-needed", max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(input="x", model="text-embedding-3-small")
    error = caught.value.body
    assert error["code"] == "model_not_found" and error["param"] == "model" and SERVED in error["message"]


def test_huggingface_inference_client(server, model, monkeypatch):
    import huggingface_hub.constants
    from huggingface_hub import InferenceClient
    from huggingface_hub.utils import reset_sessions

    # HF_HUB_OFFLINE (set on machines without hub access) blocks every URL, loopback included
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    reset_sessions()

    client = InferenceClient(base_url=server.url)  # posts TEI's body to POST /
    np.testing.assert_allclose(np.asarray(client.feature_extraction(TEXTS[0])).reshape(-1), model.encode(TEXTS[0]),
                               atol=ATOL)
    query = client.feature_extraction(TEXTS[1], prompt_name="query")
    np.testing.assert_allclose(np.asarray(query).reshape(-1), model.encode(TEXTS[1], prompt_name="query"), atol=ATOL)


def test_tei_embed_options(http, model):
    plain = http.post("/embed", json={"inputs": TEXTS[0]})
    assert plain.status_code == 200 and plain.headers["x-compute-tokens"] == str(model.tokenize(TEXTS[0]).token_count)
    np.testing.assert_allclose(plain.json(), model.encode([TEXTS[0]]), atol=ATOL)  # a list even for one string
    raw = http.post("/embed", json={"inputs": TEXTS, "normalize": False, "dimensions": 16,
                                    "prompt_name": "document", "truncation_direction": "right"}).json()
    np.testing.assert_allclose(raw, model.encode(TEXTS, normalize=False, dim=16, prompt_name="document"), atol=ATOL)
    cut = http.post("/embed", json={"inputs": [LONG_TEXT], "truncate": True}).json()  # the default: cut at the limit
    np.testing.assert_allclose(cut, model.encode([LONG_TEXT]), atol=ATOL)


def test_post_root_is_embed_and_get_root_is_health(http, model):
    np.testing.assert_allclose(http.post("/", json={"inputs": TEXTS[:2]}).json(), model.encode(TEXTS[:2]), atol=ATOL)
    assert http.get("/").status_code == 200


def test_similarity_and_tokenize(http, model):
    scores = http.post("/similarity", json={"inputs": {"source_sentence": TEXTS[0], "sentences": TEXTS[1:3]}}).json()
    np.testing.assert_allclose(scores, model.similarity(model.encode(TEXTS[:1]), model.encode(TEXTS[1:3]))[0],
                               atol=1e-5)
    tokens = http.post("/tokenize", json={"inputs": ["hello world"], "prompt_name": "query"}).json()[0]
    encoding = model.tokenize(["hello world"], prompt_name="query").encodings[0]
    assert [token["id"] for token in tokens] == encoding.ids
    assert tokens[0]["special"] and tokens[0]["start"] is None
    text = model.prompts["query"] + "hello world"
    assert "".join(token["text"] for token in tokens if not token["special"]).replace(" ", "") == \
        text.replace(" ", "")
    bare = http.post("/tokenize", json={"inputs": "hello", "add_special_tokens": False}).json()[0]
    assert not any(token["special"] for token in bare)


def test_info(http, model):
    info = http.get("/info").json()
    assert info["served_model_name"] == SERVED and info["model_id"] == model.model_id
    assert info["max_input_length"] == MAX_LENGTH and info["max_client_batch_size"] == MAX_CLIENT_BATCH
    assert info["backend"] == "onnxruntime" and info["model_dtype"] == info["variant"] == "fp32"
    assert info["int8_path"] and info["version"] and info["dimension"] == model.dimension


def _assert_tei_error(response: httpx.Response, status: int, error_type: str, *words: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type, body
    for word in words:
        assert word in body["error"], body
    return body


def _assert_openai_error(response: httpx.Response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    for word in words:
        assert word in error["message"], error
    return error


def test_empty_input_is_400(http):
    _assert_tei_error(http.post("/embed", json={"inputs": []}), 400, "empty", "empty")
    error = _assert_openai_error(http.post("/v1/embeddings", json={"input": []}), 400, "empty")
    assert error["type"] == "invalid_request_error" and error["param"] == "input"
    _assert_tei_error(http.post("/similarity", json={"inputs": {"source_sentence": "a", "sentences": []}}), 400,
                      "empty")


def test_text_over_the_limit_without_truncation_is_422_naming_index_and_tokens(http, model):
    tokens = len(model.tokenize([LONG_TEXT], truncate=True).encodings[0].ids)
    assert tokens == MAX_LENGTH
    response = http.post("/embed", json={"inputs": ["short", LONG_TEXT], "truncate": False})
    body = _assert_tei_error(response, 422, "validation", "index 1", f"max_length={MAX_LENGTH}")
    count = int(re.search(r"has (\d+) tokens", body["error"]).group(1))
    assert count > MAX_LENGTH


def test_too_many_texts_is_422(http):
    texts = ["t"] * (MAX_CLIENT_BATCH + 1)
    _assert_tei_error(http.post("/embed", json={"inputs": texts}), 422, "validation",
                      f"batch size {MAX_CLIENT_BATCH + 1} > maximum allowed batch size {MAX_CLIENT_BATCH}")
    assert _assert_openai_error(http.post("/v1/embeddings", json={"input": texts}), 422)["code"] == "too_many_inputs"
    sentences = {"source_sentence": "a", "sentences": ["b"] * MAX_CLIENT_BATCH}  # + the source: one too many
    _assert_tei_error(http.post("/similarity", json={"inputs": sentences}), 422, "validation", "batch size")


def test_body_over_the_payload_limit_is_413(http):
    big = {"inputs": ["x" * (PAYLOAD_LIMIT // 2)] * 3}
    _assert_tei_error(http.post("/embed", json=big), 413, "payload_too_large", str(PAYLOAD_LIMIT))
    _assert_openai_error(http.post("/v1/embeddings", json={"input": big["inputs"]}), 413, "payload limit")

    def chunks():  # no Content-Length: the limit holds on the bytes actually read
        yield b'{"inputs": ["'
        for _ in range(30):
            yield b"y" * 1000
        yield b'"]}'

    _assert_tei_error(http.post("/embed", content=chunks()), 413, "payload_too_large")
    assert http.post("/embed", json={"inputs": "still serving"}).status_code == 200


@pytest.mark.parametrize(("body", "words"), [
    ({"inputs": "x", "truncation_direction": "Left"}, ["Left is not supported"]),
    ({"inputs": "x", "truncation_direction": "middle"}, ["truncation_direction"]),
    ({"inputs": "x", "dimensions": 0}, ["dimensions"]),
    ({"inputs": "x", "dimensions": 10_000}, ["dimensions"]),
    ({"inputs": "x", "normalize": "yes"}, ["normalize"]),
    ({"inputs": "x", "truncate": 1}, ["truncate"]),
    ({"inputs": "x", "prompt_name": "nope"}, ["nope", "query"]),
    ({"inputs": [1, 2, 3]}, ["token ids"]),
    ({"inputs": ["a", None]}, ["inputs[1]"]),
    ({"inputs": {"text": "a"}}, ["inputs"]),
    ({"text": "a"}, ["inputs is missing"]),
    (["a"], ["JSON object"]),
])
def test_bad_tei_fields_are_422(http, body, words):
    _assert_tei_error(http.post("/embed", json=body), 422, "validation", *words)


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "x", "dimensions": "16"}, "dimensions"),
    ({"input": [[1, 2], [3]]}, "input"),
    ({"input": 5}, "input"),
])
def test_bad_openai_fields_are_422(http, body, param):
    assert _assert_openai_error(http.post("/v1/embeddings", json=body), 422)["param"] == param


@pytest.mark.parametrize(("path", "body", "words"), [
    ("/similarity", {"inputs": "a"}, ["inputs must be an object"]),
    ("/similarity", {"inputs": {"source_sentence": 3, "sentences": ["b"]}}, ["source_sentence", "3"]),
    ("/similarity", {"inputs": {"source_sentence": "a", "sentences": "b"}}, ["sentences must be a list"]),
    ("/similarity", {"inputs": {"source_sentence": "a", "sentences": ["b"]}, "parameters": [1]}, ["parameters"]),
    ("/similarity", {"inputs": {"source_sentence": "a", "sentences": ["b"]}, "parameters": {"truncate": "no"}},
     ["truncate"]),
    ("/tokenize", {"inputs": "a", "add_special_tokens": "yes"}, ["add_special_tokens"]),
    ("/tokenize", {"inputs": "a", "prompt_name": "nope"}, ["nope", "query"]),
    ("/tokenize", {"inputs": ["a", 7]}, ["inputs[1]", "token ids"]),
])
def test_bad_similarity_and_tokenize_fields_are_422(http, path, body, words):
    _assert_tei_error(http.post(path, json=body), 422, "validation", *words)


@pytest.mark.parametrize(("body", "param"), [
    ({"encoding_format": "float"}, "input"),
    ({"input": ["a", None]}, "input"),
    ({"input": "x", "precision": "int4"}, "precision"),
])
def test_missing_or_bad_openai_input_is_422_naming_the_field(http, body, param):
    assert _assert_openai_error(http.post("/v1/embeddings", json=body), 422)["param"] == param


def test_malformed_requests_never_get_a_500(http):
    _assert_tei_error(http.post("/embed", content=b"{not json"), 400, "validation", "not valid JSON")
    _assert_openai_error(http.post("/v1/embeddings", content=b"\xff\xfe"), 400, "not valid JSON")
    _assert_tei_error(http.get("/embed"), 405, "method_not_allowed")
    _assert_openai_error(http.get("/v1/embeddings"), 405, "GET is not allowed on /v1/embeddings")
    _assert_tei_error(http.get("/no/such/route"), 404, "not_found")
    _assert_openai_error(http.post("/v1/chat/completions", json={}), 404)
    _assert_tei_error(http.post("/tokenize", json={"inputs": []}), 400, "empty")
    lone_surrogate = http.post("/embed", content=b'{"inputs": "\\ud800 is half a character"}')
    assert lone_surrogate.status_code == 400 and lone_surrogate.json()["error_type"] == "validation"
    assert http.post("/embed", json={"inputs": "ok"}).status_code == 200


def test_dozens_of_concurrent_clients_get_their_own_vectors_in_order(server, model):
    """48 clients on their own connections, each sending its own texts (1 to 8 per request), several times."""
    rng = np.random.default_rng(0)
    words = " ".join(TEXTS).split()
    jobs = [[" ".join(rng.choice(words, size=rng.integers(1, 30))) + f" #{client}-{n}"
             for n in range(int(rng.integers(1, MAX_CLIENT_BATCH + 1)))] for client in range(48)]

    def client(texts: list[str]) -> list[np.ndarray]:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            answers = []
            for round_ in range(4):
                if round_ % 2:
                    answers.append(np.array(http.post("/embed", json={"inputs": texts}).raise_for_status().json()))
                else:
                    data = http.post("/v1/embeddings", json={"input": texts}).raise_for_status().json()["data"]
                    answers.append(np.array([item["embedding"] for item in data]))
            return answers

    with concurrent.futures.ThreadPoolExecutor(48) as pool:
        results = list(pool.map(client, jobs))
    for texts, answers in zip(jobs, results):
        expected = model.encode(texts)
        for answer in answers:
            np.testing.assert_allclose(answer, expected, atol=ATOL)
    metrics = httpx.get(server.url + "/metrics").text
    merged = _histogram_count_above(metrics, "te_batch_next_size", MAX_CLIENT_BATCH)
    assert merged > 0, "no batch held more texts than one request can send: requests were never merged"


def _histogram_count_above(metrics: str, name: str, bound: float) -> int:
    """Observations of a histogram above `bound` (its total count minus its count at the bucket le=bound)."""
    total = int(re.search(rf"^{name}_count (\d+)$", metrics, re.M).group(1))
    at_bound = int(re.search(rf'^{name}_bucket{{le="{bound:.6g}"}} (\d+)$', metrics, re.M).group(1))
    return total - at_bound


def test_metrics_use_tei_names(http):
    http.post("/embed", json={"inputs": "count me"})
    http.post("/embed", json={"inputs": []})
    text = http.get("/metrics").text
    for name in ("te_request_count", "te_request_success", "te_request_failure", "te_request_duration",
                 "te_request_tokenization_duration", "te_request_queue_duration", "te_request_inference_duration",
                 "te_request_input_length", "te_batch_next_size", "te_batch_next_tokens", "te_queue_size"):
        assert f"# TYPE {name} " in text, name
    assert re.search(r'^te_request_count\{method="single"\} \d+$', text, re.M)
    assert re.search(r'^te_request_failure\{err="validation"\} \d+$', text, re.M)
    assert re.search(r'^te_request_duration_bucket\{le="\+Inf"\} \d+$', text, re.M)
    assert "te_queue_size 0" in text
