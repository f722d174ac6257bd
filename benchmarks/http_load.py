"""A lean HTTP/1.1 load generator for the serving benchmarks: keep-alive connections, requests serialized once.

The client shares the 2 cores with the server it measures, so it must cost as little as possible: each
connection writes a prebuilt request and reads the response by its Content-Length (or chunks), on one asyncio
loop (uvloop when installed). A general-purpose client (httpx, aiohttp) costs several times more per request.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path


def cpu_seconds(stat_file: str) -> tuple[float, float]:
    """(user, system) CPU seconds so far of a process or thread, from its /proc stat file (Linux)."""
    fields = Path(stat_file).read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


@dataclass
class Response:
    status: int
    body: bytes


@dataclass
class LoadResult:
    """Latencies (seconds) of the requests that completed, and the statuses seen."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    texts: int = 0
    seconds: float = 0.0

    def add(self, status: int, latency: float, texts: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == 200:
            self.latencies.append(latency)
            self.texts += texts

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500)


def build_request(host: str, port: int, path: str, payload: object, headers: dict[str, str] | None = None) -> bytes:
    body = json.dumps(payload).encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Connection: keep-alive"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    """One keep-alive connection; send() returns the whole response."""

    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        connection = cls(host, port)
        await connection._connect()
        return connection

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(*self._address)

    async def send(self, request: bytes) -> Response:
        if self._reader.at_eof():  # the server closed the idle connection (keep-alive timeout): reconnect, as
            self._writer.close()   # pooling clients do
            await self._connect()
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self._reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._read_chunks()
        else:
            body = await self._reader.read()
        return Response(status, body)

    async def _read_chunks(self) -> bytes:
        parts = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)

    def close(self) -> None:
        self._writer.close()


async def run_clients(host: str, port: int, requests: list[bytes], texts_per_request: int, clients: int,
                      per_client: int, warmup: int = 2) -> LoadResult:
    """`clients` connections, each sending `per_client` requests back to back (after `warmup` untimed ones),
    cycling through `requests` from its own offset."""
    connections = [await Connection.open(host, port) for _ in range(clients)]
    result = LoadResult()

    async def client(number: int, connection: Connection) -> None:
        for step in range(warmup):
            await connection.send(requests[(number + step) % len(requests)])
        await barrier.wait()
        for step in range(per_client):
            request = requests[(number * per_client + step) % len(requests)]
            start = time.perf_counter()
            try:
                response = await connection.send(request)
                status = response.status
            except (ConnectionError, asyncio.IncompleteReadError):
                status = 599  # the connection broke: counted as a server error
            result.add(status, time.perf_counter() - start, texts_per_request)

    barrier = asyncio.Barrier(clients + 1)
    tasks = [asyncio.create_task(client(number, connection)) for number, connection in enumerate(connections)]
    await barrier.wait()
    start = time.perf_counter()
    await asyncio.gather(*tasks)
    result.seconds = time.perf_counter() - start
    for connection in connections:
        connection.close()
    return result


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation, like numpy's default."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
