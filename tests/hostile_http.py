"""Hostile HTTP clients, on raw sockets, against a real `edgembed serve` process: each scenario returns an
Outcome (passed, what was seen). Shared by tests/test_serve_hostile.py and benchmarks/hostile_clients.py."""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

MiB = 1 << 20


@dataclass
class Target:
    host: str
    port: int
    pid: int
    export_path: str = ""  # an absolute path that must never appear in an answer
    api_key: str | None = None
    rss_at_start: float = 0.0

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port


@dataclass
class Outcome:
    passed: bool
    seen: str

    def __str__(self) -> str:
        return ("held: " if self.passed else "FAILED: ") + self.seen


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def connect(target: Target, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(target.address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: test"]
    head += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method == "POST":
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def embed_request(texts: list[str] | str, *, path: str = "/embed", extra: dict | None = None,
                  headers: dict[str, str] | None = None) -> bytes:
    body = json.dumps({"inputs": texts, **(extra or {})}).encode()
    return request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})


def read_response(sock: socket.socket, buffer: bytearray | None = None) -> tuple[int, dict[str, str], bytes]:
    """One response (status, lowercase headers, body); ConnectionError when the server closes first."""
    data = buffer if buffer is not None else bytearray()
    while b"\r\n\r\n" not in data:
        _fill(sock, data)
    end = data.index(b"\r\n\r\n")
    lines = bytes(data[:end]).decode("latin-1").split("\r\n")
    del data[:end + 4]
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines[1:])}
    status = int(lines[0].split(" ")[1])
    length = int(headers.get("content-length", "0"))
    while len(data) < length:
        _fill(sock, data)
    body = bytes(data[:length])
    del data[:length]
    return status, headers, body


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes the connection (EOF or reset) within `seconds`, answers read and dropped."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if sock.recv(65536) == b"":
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def health_seconds(target: Target, timeout: float = 30.0) -> float:
    started = time.perf_counter()
    with connect(target, timeout) as sock:
        sock.sendall(request("GET", "/health"))
        status, _, _ = read_response(sock)
    if status != 200:
        raise AssertionError(f"/health answered {status}")
    return time.perf_counter() - started


def embed_seconds(target: Target, timeout: float = 30.0) -> tuple[int, float]:
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else None
    with connect(target, timeout) as sock:
        sock.sendall(embed_request(["a normal request"], headers=headers))
        status, _, _ = read_response(sock)
    return status, time.perf_counter() - started


def warm_up(target: Target) -> None:
    """One text and two texts (the engine's latency path and its batch streams), as `edgembed serve` does before
    its first client: allocations of first use are not charged to a scenario."""
    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else None
    with connect(target) as sock:
        for texts in (["warm up"], ["warm up", "the second stream"]):
            sock.sendall(embed_request(texts, headers=headers))
            read_response(sock)


def _fill(sock: socket.socket, data: bytearray) -> None:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("the server closed the connection")
    data += chunk


def _send_until_closed(sock: socket.socket, chunks, *, pause: float = 0.0) -> int:
    """Send chunks until the server closes or answers; returns the bytes it took."""
    sent = 0
    sock.settimeout(5)
    for chunk in chunks:
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            return sent
        sent += len(chunk)
        if pause:
            time.sleep(pause)
        try:
            sock.setblocking(False)
            if sock.recv(1, socket.MSG_PEEK) is not None:
                return sent  # an answer (or EOF) arrived: the server stopped reading this request
        except (BlockingIOError, InterruptedError):
            pass
        except (ConnectionResetError, BrokenPipeError):
            return sent
        finally:
            sock.setblocking(True)
            sock.settimeout(5)
    return sent


# --- the fault classes ------------------------------------------------------------------------------------------


def endless_header_line(target: Target, *, total: int = 32 * MiB) -> Outcome:
    """A header line that never ends: the server must stop reading it early, without buffering it."""
    before = rss_mb(target.pid)
    sock = connect(target)
    sock.sendall(b"POST /embed HTTP/1.1\r\nHost: test\r\nX-Endless: ")
    piece = b"a" * (64 * 1024)
    sent = _send_until_closed(sock, (piece for _ in range(total // len(piece))))
    grown = rss_mb(target.pid) - before
    sock.close()
    # kernel buffers on both ends take a few MiB of what is "sent" before the server reads it
    return Outcome(sent < 8 * MiB and grown < 16, f"{sent / MiB:.1f} MiB taken before the server stopped reading, "
                                                   f"RSS {grown:+.1f} MB")


def slow_headers(target: Target, *, clients: int = 200, interval: float = 1.0, limit: float = 5.0) -> Outcome:
    """Slowloris: every connection sends one header line per `interval`; all must be closed within `limit` s."""
    socks = []
    for _ in range(clients):
        sock = connect(target)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n")
        socks.append(sock)
    open_ = set(range(clients))
    started = time.monotonic()
    while open_ and time.monotonic() - started < limit + 3 * interval:
        for index in list(open_):
            try:
                socks[index].sendall(b"X-Slow: 1\r\n")
            except OSError:
                open_.discard(index)
        time.sleep(interval)
        for index in list(open_):
            if closed_within(socks[index], 0.001):
                open_.discard(index)
    took = time.monotonic() - started
    for sock in socks:
        sock.close()
    return Outcome(not open_, f"{clients - len(open_)} of {clients} trickling heads closed within {took:.1f} s "
                              f"(limit {limit:g} s)")


def slow_body(target: Target, *, rate: float = 5.0, limit: float = 5.0) -> Outcome:
    """A body trickled at `rate` bytes/s must get its answer (408) or be closed within `limit` s."""
    body = json.dumps({"inputs": ["x" * 2000]}).encode()
    sock = connect(target)
    sock.sendall(request("POST", "/embed", b"", {"Content-Type": "application/json"}).replace(
        b"Content-Length: 0", f"Content-Length: {len(body)}".encode()))
    started = time.monotonic()
    status = None
    for start in range(0, len(body), max(1, int(rate))):
        if time.monotonic() - started > limit + 5:
            break
        try:
            sock.sendall(body[start:start + max(1, int(rate))])
        except OSError:
            break
        if not closed_within_or_answer(sock, 1.0):
            continue
        status = _peek_status(sock)
        break
    took = time.monotonic() - started
    sock.close()
    return Outcome(took <= limit + 2, f"answered {status or 'by closing'} after {took:.1f} s of a {rate:g} B/s body "
                                      f"(limit {limit:g} s)")


def closed_within_or_answer(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1, socket.MSG_PEEK) is not None
    except TimeoutError:
        return False
    except OSError:
        return True


def _peek_status(sock: socket.socket) -> str | None:
    sock.settimeout(1)
    try:
        data = sock.recv(64, socket.MSG_PEEK)
    except OSError:
        return None
    return data.split(b" ")[1].decode() if data.startswith(b"HTTP/") else None


def never_reading_pipeliners(target: Target, *, clients: int = 8, requests: int = 3000,
                             grown_limit: float = 30.0) -> Outcome:
    """Clients that pipeline thousands of small requests and never read: memory must stay bounded."""
    before = rss_mb(target.pid)
    one = embed_request(["pipelined request that is never read"])
    socks, threads = [], []

    def flood(sock: socket.socket) -> None:
        sock.settimeout(20)
        try:
            for _ in range(requests // 50):
                sock.sendall(one * 50)
        except OSError:
            pass

    for _ in range(clients):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(target.address)
        socks.append(sock)
        threads.append(threading.Thread(target=flood, args=(sock,), daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(25)
    time.sleep(1.0)
    grown = rss_mb(target.pid) - before
    for sock in socks:
        sock.close()
    return Outcome(grown < grown_limit, f"{clients} clients x {requests} pipelined requests never read: RSS "
                                         f"{grown:+.1f} MB (limit {grown_limit:g})")


def deep_json(target: Target) -> Outcome:
    """Deeply nested JSON in every field that echoes its value: 4xx, never 5xx."""
    nested = Raw("[" * 1000 + '"x"' + "]" * 1000)
    cases = [("/embed", {"inputs": nested}), ("/embed", {"inputs": ["a"], "normalize": nested}),
             ("/embed", {"inputs": ["a"], "dimensions": nested}), ("/embed", {"inputs": ["a"], "precision": nested}),
             ("/v1/embeddings", {"input": "a", "model": nested}),
             ("/v1/embeddings", {"input": "a", "encoding_format": nested}),
             ("/similarity", {"inputs": {"source_sentence": nested, "sentences": ["a"]}}),
             ("/embed", {"inputs": ["a"], "truncate": nested}), ("/tokenize", {"inputs": nested})]
    statuses = []
    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    for path, body in cases:
        with connect(target) as sock:
            sock.sendall(request("POST", path, _dumps(body).encode(), {"Content-Type": "application/json",
                                                                      **headers}))
            statuses.append(read_response(sock)[0])
    server_errors = [s for s in statuses if s >= 500]
    return Outcome(not server_errors and all(400 <= s < 500 for s in statuses),
                   f"{len(cases)} nested bodies answered {sorted(set(statuses))}")


def path_leak(target: Target) -> Outcome:
    """No answer carries the export's absolute path: the model list, an embedding's model, an unknown model."""
    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    bodies = []
    with connect(target) as sock:
        buffer = bytearray()
        sock.sendall(request("GET", "/v1/models", headers=headers))
        bodies.append(read_response(sock, buffer)[2])
        for body in ({"input": "a"}, {"input": "a", "model": "no-such-model"}):
            sock.sendall(request("POST", "/v1/embeddings", json.dumps(body).encode(),
                                 {"Content-Type": "application/json", **headers}))
            bodies.append(read_response(sock, buffer)[2])
        sock.sendall(request("GET", "/info", headers=headers))
        bodies.append(read_response(sock, buffer)[2])
    leaked = [b[:120] for b in bodies if target.export_path and target.export_path.encode() in b]
    return Outcome(not leaked, f"{len(bodies)} answers, {len(leaked)} with the path {target.export_path!r}")


def huge_text_stall(target: Target, *, megabytes: int = 8, clients: int = 3) -> Outcome:
    """Clients sending megabytes of text with truncate=false: /health and a normal request stay fast."""
    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    text = ("abcdefghij" * 30 + " ") * (megabytes * MiB // 301)
    body = json.dumps({"inputs": [text], "truncate": False}).encode()
    statuses: list[int] = []

    def send_huge() -> None:
        try:
            with connect(target, 60) as sock:
                sock.sendall(request("POST", "/embed", body, {"Content-Type": "application/json", **headers}))
                statuses.append(read_response(sock)[0])
        except OSError:
            statuses.append(0)

    threads = [threading.Thread(target=send_huge, daemon=True) for _ in range(clients)]
    worst = 0.0
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        worst = max(worst, health_seconds(target), embed_seconds(target)[1])
        time.sleep(0.02)
    return Outcome(worst < 0.5 and all(400 <= s < 500 for s in statuses),
                   f"{clients} clients x {megabytes} MB texts answered {sorted(set(statuses))}; the slowest "
                   f"/health or normal /embed meanwhile {worst * 1000:.0f} ms")


def chunk_extension(target: Target, *, size: int = 4 * MiB) -> Outcome:
    """A chunked body whose chunk extension runs for megabytes: refused before it is read whole."""
    sock = connect(target)
    sock.sendall(b"POST /embed HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n5;ext=")
    piece = b"e" * (64 * 1024)
    sent = _send_until_closed(sock, (piece for _ in range(size // len(piece))))
    sock.close()
    return Outcome(sent < size, f"{sent / MiB:.2f} MiB of a {size / MiB:.0f} MiB chunk extension taken")


def refused_chunked_body(target: Target, *, limit: int) -> Outcome:
    """A chunked body over the payload limit: 413, then the server stops reading and closes."""
    sock = connect(target)
    sock.sendall(b"POST /embed HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    piece = b"%x\r\n%s\r\n" % (16384, b"a" * 16384)
    sent = _send_until_closed(sock, (piece for _ in range(4 * limit // 16384 + 64)))
    status = _peek_status(sock)  # kernel buffers on both ends take several MiB beyond what the server read
    after = 0
    try:
        for _ in range(64):
            sock.sendall(piece)
            after += len(piece)
    except OSError:
        pass
    closed = closed_within(sock, 3.0) or after < 64 * len(piece)
    sock.close()
    return Outcome(status in ("413", None) and closed and sent < limit + 16 * MiB,
                   f"answered {status} after {sent / 1024:.0f} KiB (limit {limit / 1024:.0f} KiB); closed after: "
                   f"{closed}")


def unauthenticated_upload(target: Target, *, size: int = 40 * MiB) -> Outcome:
    """Without the key, a large upload is answered 401 before it is read."""
    sock = connect(target)
    sock.sendall(f"POST /embed HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {size}\r\n\r\n".encode())
    piece = b"a" * (64 * 1024)
    sent = _send_until_closed(sock, (piece for _ in range(size // len(piece))))
    status = _peek_status(sock)
    sock.close()
    return Outcome(sent < 4 * MiB and status in ("401", "413", None),
                   f"answered {status} after {sent / MiB:.2f} MiB of {size / MiB:.0f} MiB")


def pipelined_continue(target: Target) -> Outcome:
    """A pipelined request with Expect: 100-continue: its 100 Continue never comes before the previous answer."""
    first = embed_request(["first"])
    body = json.dumps({"inputs": ["second"]}).encode()
    second = (f"POST /embed HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
              f"Content-Length: {len(body)}\r\n\r\n").encode()
    with connect(target) as sock:
        sock.sendall(first + second)
        time.sleep(0.5)
        sock.sendall(body)
        data = bytearray()
        deadline = time.monotonic() + 10
        while data.count(b"HTTP/1.1 200") < 2 and time.monotonic() < deadline:
            try:
                _fill(sock, data)
            except OSError:
                break
    first_answer = data.find(b"HTTP/1.1 200")
    continued = data.find(b"HTTP/1.1 100")
    ordered = first_answer != -1 and (continued == -1 or continued > first_answer)
    return Outcome(ordered and data.count(b"HTTP/1.1 200") == 2,
                   f"100 Continue at byte {continued}, first answer at byte {first_answer}, "
                   f"{data.count(b'HTTP/1.1 200')} answers")


SMUGGLING = {
    "content-length and chunked": b"POST /embed HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                                  b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    "two content-lengths": b"POST /embed HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{}",
    "chunked, then identity": b"POST /embed HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
                              b"0\r\n\r\n",
    "bare LF": b"GET /health HTTP/1.1\nHost: t\n\n",
    "NUL in a header": b"GET /health HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "TLS client hello": bytes.fromhex("16030100a5010000a10303") + os.urandom(64),
}


def smuggling(target: Target) -> Outcome:
    """Ambiguous framing and other protocols: never a 5xx, never a second request smuggled through, and the
    server goes on."""
    seen = []
    for name, raw in SMUGGLING.items():
        with connect(target, 5) as sock:
            sock.sendall(raw)
            data = bytearray()
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                try:
                    sock.settimeout(max(0.05, deadline - time.monotonic()))
                    chunk = sock.recv(65536)
                except OSError:
                    break
                if not chunk:
                    break
                data += chunk
            statuses = [int(line.split(b" ")[1]) for line in bytes(data).split(b"\r\n")
                        if line.startswith(b"HTTP/1.") and len(line.split(b" ")) > 1 and line.split(b" ")[1].isdigit()]
            seen.append((name, statuses))
    bad = [(name, s) for name, s in seen if any(code >= 500 for code in s) or s.count(404) > 0]
    health_seconds(target)
    return Outcome(not bad, "; ".join(f"{name}: {s or 'closed'}" for name, s in seen))


def key_path_tricks(target: Target) -> Outcome:
    """With --api-key, no spelling of a guarded path answers 200 without the key."""
    paths = ["/embed", "//embed", "/embed/", "/./embed", "/x/../embed", "/EMBED", "/embed?x=1", "/embed%2f",
             "/%65mbed", "/v1/embeddings", "/v1//embeddings", "/v1/embeddings/.."]
    answered = []
    body = json.dumps({"inputs": ["x"], "input": "x"}).encode()
    for path in paths:
        with connect(target) as sock:
            sock.sendall(request("POST", path, body, {"Content-Type": "application/json"}))
            try:
                answered.append((path, read_response(sock)[0]))
            except ConnectionError:
                answered.append((path, 0))
    leaked = [p for p, status in answered if status == 200]
    return Outcome(not leaked, f"{len(paths)} spellings answered {sorted({s for _, s in answered})}")


def under_siege(target: Target, *, slow_clients: int = 200, pipeliners: int = 8) -> Outcome:
    """200 slow-header clients and 8 never-reading pipeliners at once: a normal request answers within 0.5 s."""
    stop = threading.Event()
    socks: list[socket.socket] = []

    def trickle() -> None:
        while not stop.is_set():
            for sock in list(socks[:slow_clients]):
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    pass
            stop.wait(1.0)

    def flood(sock: socket.socket) -> None:
        one = embed_request(["pipelined, never read"])
        try:
            while not stop.is_set():
                sock.sendall(one * 20)
        except OSError:
            pass

    for _ in range(slow_clients):
        sock = connect(target)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n")
        socks.append(sock)
    threads = [threading.Thread(target=trickle, daemon=True)]
    for _ in range(pipeliners):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(target.address)
        sock.settimeout(5)
        socks.append(sock)
        threads.append(threading.Thread(target=flood, args=(sock,), daemon=True))
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    timings = []
    for _ in range(20):
        status, seconds = embed_seconds(target)
        timings.append(seconds if status == 200 else float("inf"))
        time.sleep(0.1)
    stop.set()
    for sock in socks:
        sock.close()
    worst = max(timings)
    return Outcome(worst < 0.5, f"20 normal requests under {slow_clients} slow-header clients and {pipeliners} "
                                f"never-reading pipeliners: slowest {worst * 1000:.0f} ms, median "
                                f"{sorted(timings)[10] * 1000:.0f} ms")


Scenario = Callable[[Target], Outcome]


class Raw(str):
    """JSON text placed as it is (json.dumps of a list nested 1,000 deep overflows Python's own stack)."""


def _dumps(value: object) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_dumps(v) for v in value) + "]"
    return json.dumps(value)
