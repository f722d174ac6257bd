"""`edgembed serve` under pressure and at the edges: API key (401), environment variables, overload (429),
SIGTERM with requests in flight, a hung engine (/health 503), and an install without the server extra."""
from __future__ import annotations

import concurrent.futures
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from fast_model import build_fast_export
from serve_process import FailingEmbedder, GatedEmbedder, serve_in_thread, start_server

from edgembed.runtime import Embedder

REPO = Path(__file__).resolve().parents[1]
KEY = "s3cret-key"
LOAD = ("--variant", "fp32", "--backend", "onnxruntime")
ATOL = 2e-6


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fast_export(tmp_path_factory.mktemp("limits") / "out", openvino=False)


@pytest.fixture(scope="module")
def model(export_dir: Path) -> Embedder:
    return Embedder.load(export_dir, variant="fp32", backend="onnxruntime")


def test_api_key_and_environment_variables(export_dir, model, tmp_path):
    """Every setting from EDGEMBED_* (the model directory too); a flag on the command line wins over its variable."""
    env = {"EDGEMBED_MODEL_DIR": str(export_dir), "EDGEMBED_API_KEY": KEY, "EDGEMBED_MODEL_ID": "env-name",
           "EDGEMBED_VARIANT": "fp32", "EDGEMBED_BACKEND": "onnxruntime", "EDGEMBED_PAYLOAD_LIMIT": "12345",
           "EDGEMBED_MAX_CLIENT_BATCH_SIZE": "4"}
    server = start_server(None, tmp_path / "serve.log", "--max-client-batch-size", "6", env=env)
    try:
        url = server.url
        similarity = {"inputs": {"source_sentence": "x", "sentences": ["y"]}}
        for method, path, body in (("POST", "/embed", {"inputs": "x"}), ("POST", "/", {"inputs": "x"}),
                                   ("POST", "/v1/embeddings", {"input": "x"}), ("POST", "/embeddings", {"input": "x"}),
                                   ("GET", "/v1/models", None), ("POST", "/tokenize", {"inputs": "x"}),
                                   ("POST", "/similarity", similarity), ("GET", "/info", None)):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
                response = httpx.request(method, url + path, json=body, headers=headers)
                assert response.status_code == 401, (path, headers, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
                error = response.json()
                if "embeddings" in path or path == "/v1/models":
                    assert error["error"]["code"] == "invalid_api_key", path
                else:
                    assert error["error_type"] == "unauthorized", path
        assert httpx.get(url + "/health").status_code == 200  # open, for probes
        assert httpx.get(url + "/").status_code == 200  # TEI's health check at the root, open too
        assert "te_request_failure" in httpx.get(url + "/metrics").text  # open, for scrapers
        # Without the key nothing about the body is answered: not its size, not its syntax.
        assert httpx.post(url + "/embed", content=b"x" * 20_000).status_code == 401
        assert httpx.post(url + "/embed", content=b"{not json").status_code == 401
        assert 'te_request_failure{err="unauthorized"}' in httpx.get(url + "/metrics").text

        import openai

        good = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        answer = good.embeddings.create(input=["with the key"], model="env-name")
        np.testing.assert_allclose(answer.data[0].embedding, model.encode("with the key"), atol=ATOL)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).embeddings.create(input="x",
                                                                                                   model="env-name")
        info = httpx.get(url + "/info", headers={"Authorization": f"Bearer {KEY}"}).json()
        assert info["served_model_name"] == "env-name" and info["payload_limit"] == 12345
        assert info["max_client_batch_size"] == 6  # the flag beat EDGEMBED_MAX_CLIENT_BATCH_SIZE=4
    finally:
        assert server.stop() == 0, server.output()


def test_bad_environment_value_is_a_usage_error(export_dir):
    result = subprocess.run([sys.executable, "-m", "edgembed", "serve", str(export_dir)], capture_output=True,
                            text=True, env={**_environment(), "EDGEMBED_PORT": "eighty"}, timeout=120)
    assert result.returncode == 2 and "--port" in result.stderr and "eighty" in result.stderr


def test_overload_is_429_with_retry_after(export_dir, model, tmp_path):
    server = start_server(export_dir, tmp_path / "serve.log", *LOAD, "--max-concurrent-requests", "1")
    texts = [f"request number {n} asks for its own vector " * 3 for n in range(32)]
    try:
        statuses: list[int] = []
        for _ in range(10):  # rounds of 32 simultaneous clients until one finds the single slot taken
            barrier = threading.Barrier(len(texts))

            def client(text: str, path: str, barrier: threading.Barrier = barrier) -> httpx.Response:
                with httpx.Client(base_url=server.url, timeout=60) as http:
                    http.get("/health")  # connect first, so the requests leave together
                    barrier.wait()
                    body = {"input": [text] * 4} if path == "/v1/embeddings" else {"inputs": [text] * 4}
                    return http.post(path, json=body)

            paths = ["/embed", "/v1/embeddings"] * (len(texts) // 2)
            with concurrent.futures.ThreadPoolExecutor(len(texts)) as pool:
                responses = list(pool.map(client, texts, paths))
            for text, path, response in zip(texts, paths, responses):
                statuses.append(response.status_code)
                assert response.status_code in (200, 429), response.text
                if response.status_code == 429:
                    assert response.headers["retry-after"] == "1"
                    body = response.json()
                    if path == "/embed":
                        assert body["error_type"] == "overloaded" and "max-concurrent-requests" in body["error"]
                    else:
                        assert body["error"]["type"] == "rate_limit_error"
                else:
                    vectors = response.json() if path == "/embed" else [d["embedding"] for d in
                                                                          response.json()["data"]]
                    np.testing.assert_allclose(vectors, model.encode([text] * 4), atol=ATOL)
            if 429 in statuses:
                break
        assert 429 in statuses and 200 in statuses, statuses
        assert 'te_request_failure{err="overloaded"}' in httpx.get(server.url + "/metrics").text
    finally:
        assert server.stop() == 0, server.output()


def test_sigterm_answers_requests_in_flight_then_exits_0(export_dir, model, tmp_path):
    """Requests whose bodies are half sent when SIGTERM arrives are in flight for certain: the server must stop
    accepting connections, wait for the rest of those bodies, answer each, and exit 0."""
    server = start_server(export_dir, tmp_path / "serve.log", *LOAD)
    host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
    texts = [[f"drained request {n}", "a second text"] for n in range(3)]
    pending = []
    for n, batch in enumerate(texts):
        path = "/v1/embeddings" if n == 0 else "/embed"
        body = json.dumps({"input": batch} if n == 0 else {"inputs": batch}).encode()
        sock = socket.create_connection((host, port))
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
        pending.append((sock, body[10:], path))
    time.sleep(0.5)  # the server has read the heads and waits for the bodies
    server.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the listening socket closes at once...
        try:
            socket.create_connection((host, port), timeout=1).close()
            time.sleep(0.05)
        except ConnectionRefusedError:
            break
    else:
        pytest.fail("the server still accepts connections after SIGTERM")
    assert server.process.poll() is None, "the server exited with requests in flight"  # ...the process stays
    for (sock, rest, path), batch in zip(pending, texts):
        sock.sendall(rest)
        status, body = _read_response(sock)
        assert status == 200, body
        answer = json.loads(body)
        vectors = [d["embedding"] for d in answer["data"]] if path == "/v1/embeddings" else answer
        np.testing.assert_allclose(vectors, model.encode(batch), atol=ATOL)
        sock.close()
    assert server.process.wait(30) == 0, server.output()
    assert "SIGTERM" in server.output()


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ")[1]), body


def test_health_is_503_while_a_batch_hangs(export_dir, model):
    gated = GatedEmbedder.load(export_dir, variant="fp32", backend="onnxruntime")
    try:
        with serve_in_thread(gated, health_timeout=0.3) as url:
            assert httpx.get(url + "/health").status_code == 200
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                waiting = pool.submit(httpx.post, url + "/embed", json={"inputs": ["stuck", "batch"]}, timeout=60)
                assert gated.entered.wait(10)
                time.sleep(0.5)  # past the 0.3 s health timeout
                response = httpx.get(url + "/health")
                assert response.status_code == 503
                assert response.json()["error_type"] == "unhealthy" and "hung" in response.json()["error"]
                gated.gate.set()
                answer = waiting.result(60)
            assert answer.status_code == 200
            np.testing.assert_allclose(answer.json(), model.encode(["stuck", "batch"]), atol=ATOL)
            assert httpx.get(url + "/health").status_code == 200
    finally:
        gated.gate.set()


def test_base_install_pulls_no_web_framework():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    frameworks = ("starlette", "uvicorn", "granian", "fastapi", "httptools", "uvloop", "orjson")
    assert not [dep for dep in project["dependencies"] if dep.startswith(frameworks)]
    assert {dep.split(">")[0].split(";")[0] for dep in project["optional-dependencies"]["server"]} >= {
        "granian", "starlette", "orjson"}
    probe = ("import sys; from edgembed.cli import build_parser; build_parser(); "
             f"print(sorted(m for m in {frameworks!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_serve_without_the_server_extra_says_what_to_install(export_dir):
    """granian made unimportable: one line naming the extra, exit 1, before any model is loaded."""
    probe = ("import sys; sys.modules['granian'] = None; from edgembed.cli import main; "
             f"sys.exit(main(['serve', {str(export_dir)!r}]))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert 'pip install "edgembed[server]"' in result.stderr and "Traceback" not in result.stderr


def _environment() -> dict[str, str]:
    import os

    return {name: value for name, value in os.environ.items() if not name.startswith("EDGEMBED_")}


def test_an_engine_failure_is_424_in_each_shape_and_the_server_goes_on(export_dir, model):
    failing = FailingEmbedder.load(export_dir, variant="fp32", backend="onnxruntime")
    with serve_in_thread(failing) as url:
        failed = httpx.post(url + "/embed", json={"inputs": "first"}, timeout=60)
        assert failed.status_code == 424, failed.text
        assert failed.json()["error_type"] == "backend" and "ran out of memory" in failed.json()["error"]
        failing.failures = 1
        failed = httpx.post(url + "/v1/embeddings", json={"input": "first"}, timeout=60)
        assert failed.status_code == 424 and "ran out of memory" in failed.json()["error"]["message"]
        answer = httpx.post(url + "/embed", json={"inputs": "second"}, timeout=60)
        assert answer.status_code == 200
        np.testing.assert_allclose(answer.json()[0], model.encode("second"), atol=ATOL)
        assert httpx.get(url + "/health").status_code == 200
