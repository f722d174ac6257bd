"""HTTP/1.1 on the wire: raw sockets against the real server process, for what general-purpose clients never send
(pipelining, chunked bodies, Expect: 100-continue, malformed heads); on a server in this process, the idle
timeout, a client that goes away and a bug of ours (500); a taken port. Hostile clients: test_serve_hostile.py."""
from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from serve_process import GatedEmbedder, serve_in_thread, start_server

from edgembed.runtime import Embedder

LOAD = ("--variant", "fp32", "--backend", "onnxruntime")
PAYLOAD_LIMIT = 5_000
ATOL = 2e-6


@pytest.fixture(scope="module")
def model(fast_export: Path) -> Embedder:
    return Embedder.load(fast_export, variant="fp32", backend="onnxruntime")


@pytest.fixture(scope="module")
def address(fast_export: Path, tmp_path_factory: pytest.TempPathFactory):
    served = start_server(fast_export, tmp_path_factory.mktemp("log") / "serve.log", *LOAD,
                          "--payload-limit", str(PAYLOAD_LIMIT))
    host, port = served.url.removeprefix("http://").split(":")
    yield host, int(port)
    assert served.stop() == 0, served.output()


def embed_request(texts: list[str], *, close: bool = False, version: str = "1.1") -> bytes:
    body = json.dumps({"inputs": texts}).encode()
    head = (f"POST /embed HTTP/{version}\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n")
    return head.encode() + body


class Wire:
    """A raw connection that reads responses one by one (by Content-Length)."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=30)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, value in
                   (line.split(":", 1) for line in lines[1:])}
        status = int(lines[0].split(" ")[1])
        if status == 100:
            return status, headers, b""
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def closed_by_server(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def test_pipelined_requests_are_answered_in_order_on_one_connection(address, model):
    wire = Wire(address)
    batches = [[f"pipelined request {n}"] * (n % 3 + 1) for n in range(6)]
    wire.send(b"".join(embed_request(batch) for batch in batches))
    for batch in batches:
        status, headers, body = wire.response()
        assert status == 200 and "connection" not in headers
        np.testing.assert_allclose(json.loads(body), model.encode(batch), atol=ATOL)
    wire.send(embed_request(["the same connection, later"]))  # keep-alive
    assert wire.response()[0] == 200
    wire.close()


def test_dozens_of_pipelined_requests_are_all_answered_in_order(address, model):
    wire = Wire(address)
    texts = [f"request number {n} of many" for n in range(48)]
    wire.send(b"".join(embed_request([text]) for text in texts))
    expected = model.encode(texts)
    for row, text in enumerate(texts):
        status, _, body = wire.response()
        assert status == 200, text
        np.testing.assert_allclose(json.loads(body), expected[row:row + 1], atol=ATOL)
    wire.send(embed_request(["read after reading resumed"]))
    assert wire.response()[0] == 200
    wire.close()


def test_chunked_body_and_expect_100_continue_are_read(address, model):
    wire = Wire(address)
    body = json.dumps({"inputs": ["sent in chunks", "two texts"]}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:7], body[7:20], body[20:])) + b"0\r\n\r\n"
    wire.send(b"POST /embed HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
    status, _, answer = wire.response()
    assert status == 200
    np.testing.assert_allclose(json.loads(answer), model.encode(["sent in chunks", "two texts"]), atol=ATOL)
    body = json.dumps({"inputs": "after a continue"}).encode()
    wire.send(b"POST /embed HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
    assert wire.response()[0] == 100  # the client may send the body now
    wire.send(body)
    status, _, answer = wire.response()
    assert status == 200
    np.testing.assert_allclose(json.loads(answer), model.encode(["after a continue"]), atol=ATOL)
    wire.close()


def test_a_body_over_the_limit_is_413_before_it_is_sent_when_the_client_expects_100(address):
    wire = Wire(address)
    wire.send(b"POST /embed HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
              % (PAYLOAD_LIMIT + 1))
    status, headers, body = wire.response()
    assert status == 413 and headers["connection"] == "close"
    assert json.loads(body)["error_type"] == "payload_too_large" and str(PAYLOAD_LIMIT) in json.loads(body)["error"]
    assert wire.closed_by_server()


def test_a_chunked_body_over_the_limit_is_413_and_the_connection_closes(address):
    wire = Wire(address)
    wire.send(b"POST /v1/embeddings HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(PAYLOAD_LIMIT // 1000 + 2):
        wire.send(b"3e8\r\n" + b"x" * 1000 + b"\r\n")
    status, headers, body = wire.response()
    assert status == 413 and headers["connection"] == "close"
    assert "payload limit" in json.loads(body)["error"]["message"]  # in the route's shape (OpenAI here)
    wire.send(b"0\r\n\r\n")
    assert wire.closed_by_server()


@pytest.mark.parametrize(("raw", "status"), [
    (b"NOT AN HTTP REQUEST\r\n\r\n", 400),
    (b"POST /embed HTTP/1.1\r\nContent-Length: twelve\r\n\r\n", 400),
    (b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 256_000 + b"\r\n\r\n", 431),
])
def test_a_request_that_does_not_parse_is_answered_then_closed(address, raw, status):
    wire = Wire(address)
    wire.send(raw)
    assert wire.response()[0] == status
    assert wire.closed_by_server()
    assert httpx.get(f"http://{address[0]}:{address[1]}/health").status_code == 200  # the server goes on


def test_head_gets_the_get_head_without_a_body_and_http10_closes(address):
    wire = Wire(address)
    wire.send(b"HEAD /info HTTP/1.1\r\nHost: test\r\n\r\n")
    wire.sock.settimeout(2)
    head = b""
    while b"\r\n\r\n" not in head:
        head += wire.sock.recv(65536)
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in lines if line.lower().startswith(b"content-length")))
    assert length > 100  # the GET body's length, and no body follows:
    wire.send(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
    assert wire.response()[0] == 200
    wire.close()
    old = Wire(address)
    old.send(embed_request(["an HTTP/1.0 client"], version="1.0"))
    assert old.response()[0] == 200
    assert old.closed_by_server()


def test_connection_close_is_honoured(address):
    wire = Wire(address)
    wire.send(embed_request(["the last one"], close=True))
    status, headers, _ = wire.response()
    assert status == 200 and headers["connection"] == "close"
    assert wire.closed_by_server()


def test_an_idle_connection_is_closed_after_the_header_timeout(model):
    with serve_in_thread(model, header_timeout=0.5) as url:
        host, port = url.removeprefix("http://").split(":")
        wire = Wire((host, int(port)))
        wire.send(embed_request(["then silence"]))
        assert wire.response()[0] == 200
        started = time.monotonic()
        assert wire.closed_by_server()
        assert time.monotonic() - started < 5


def test_a_client_that_goes_away_leaves_the_queue_and_the_others_are_answered(fast_export, model):
    import concurrent.futures

    gated = GatedEmbedder.load(fast_export, variant="fp32", backend="onnxruntime")
    try:
        with serve_in_thread(gated) as url:
            host, port = url.removeprefix("http://").split(":")
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                busy = pool.submit(httpx.post, url + "/embed", json={"inputs": "holds the engine"}, timeout=60)
                assert gated.entered.wait(10)
                leaving = Wire((host, int(port)))
                leaving.send(embed_request(["queued, then its client leaves"]))
                time.sleep(0.3)  # read and queued behind the running batch
                leaving.close()
                time.sleep(0.3)
                gated.gate.set()
                assert busy.result(60).status_code == 200
            staying = httpx.post(url + "/embed", json={"inputs": "after"}, timeout=60)
            assert staying.status_code == 200
            np.testing.assert_allclose(staying.json(), model.encode(["after"]), atol=ATOL)
            assert 'te_request_failure{err="dropped"} 1' in httpx.get(url + "/metrics").text
    finally:
        gated.gate.set()


def test_head_on_a_post_only_route_is_405(address):
    host, port = address
    response = httpx.head(f"http://{host}:{port}/embed")
    assert response.status_code == 405 and response.content == b""


class _BuggyEmbedder(Embedder):
    """A real Embedder with a bug, once `broken`, in a property the /info route reads."""

    broken = False

    @property
    def max_length(self) -> int:
        if self.broken:
            raise KeyError("a bug of ours")
        return super().max_length


def test_a_bug_of_ours_is_a_500_in_the_apis_shape_and_the_server_goes_on(fast_export, model):
    buggy = _BuggyEmbedder.load(fast_export, variant="fp32", backend="onnxruntime")
    with serve_in_thread(buggy) as url:
        buggy.broken = True
        failed = httpx.get(url + "/info", timeout=60)
        assert failed.status_code == 500, failed.text
        assert "KeyError" in failed.json()["error"] and failed.json()["error_type"] == "backend"
        answer = httpx.post(url + "/embed", json={"inputs": "still served"}, timeout=60)
        buggy.broken = False
        assert answer.status_code == 200
        np.testing.assert_allclose(answer.json(), model.encode(["still served"]), atol=ATOL)
        assert httpx.get(url + "/info", timeout=60).status_code == 200


def test_a_port_already_taken_is_one_line_and_exit_1(fast_export):
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "edgembed", "serve", str(fast_export), "--port", str(port),
                                 *LOAD], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr
    assert "Traceback" not in result.stderr
