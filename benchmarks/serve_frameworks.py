"""Which HTTP stack for `edgembed serve`: the HTTP cost alone, without a model.

Each stack serves one route that parses an OpenAI-style body and answers with a fixed 384-float embedding
(orjson), the shape of a MiniLM answer; a fresh server process per stack, the lean keep-alive client of
http_load.py on the same machine. Prints p50/p99 of one client, the requests/s of 64 clients and the CPU per
request of the server and of the client under 64 clients. The "httptools-protocol" row is not an ASGI stack: a
minimal HTTP/1.1 protocol on httptools and uvloop (keep-alive, one write per response, no error handling), the
floor a hand-written server could reach; "edgembed-http" is edgembed's own server (serve/http.py) with the same
route. The ASGI rows need `pip install uvicorn starlette fastapi` and are skipped without them.

    python benchmarks/serve_frameworks.py --requests 3000
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_load import build_request, cpu_seconds, new_event_loop, percentile, run_clients  # noqa: E402

STACKS = ("bare-asgi", "starlette", "fastapi", "httptools-protocol", "edgembed-http")
# Stacks that run their own server instead of uvicorn.
OWN_SERVER = {"httptools-protocol", "edgembed-http"}
SERVERS = ("httptools+uvloop", "h11+asyncio")

APP = '''
import orjson, numpy as np
VECTOR = np.random.default_rng(0).standard_normal(384).astype(np.float32)

def answer(payload):
    texts = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
    data = [{"object": "embedding", "index": i, "embedding": VECTOR} for i in range(len(texts))]
    return orjson.dumps({"object": "list", "data": data, "model": "m",
                         "usage": {"prompt_tokens": 1, "total_tokens": 1}},
                        option=orjson.OPT_SERIALIZE_NUMPY)

STACK = "STACK_NAME"
if STACK == "bare-asgi":
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        content = answer(orjson.loads(body))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(content)).encode())]})
        await send({"type": "http.response.body", "body": content})
elif STACK == "httptools-protocol":
    import asyncio, sys, httptools, uvloop

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.parser, self.body = transport, httptools.HttpRequestParser(self), []

        def data_received(self, data):
            self.parser.feed_data(data)

        def on_body(self, chunk):
            self.body.append(chunk)

        def on_message_complete(self):
            body, self.body = b"".join(self.body), []
            asyncio.get_running_loop().create_task(self.respond(body))

        async def respond(self, body):
            content = answer(orjson.loads(body))
            head = b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\ncontent-length: %d\\r\\n\\r\\n"
            self.transport.write(head % len(content) + content)

    async def main(port):
        server = await asyncio.get_running_loop().create_server(Protocol, "127.0.0.1", port)
        await server.serve_forever()

    if __name__ == "__main__":
        uvloop.run(main(int(sys.argv[1])))
elif STACK == "edgembed-http":
    import contextlib, sys
    from edgembed.serve.http import HttpServer
    from edgembed.serve.routing import App, Response

    async def embeddings(request):
        return Response(answer(orjson.loads(request.body)), media_type="application/json")

    async def missing(request):
        return Response(b"", 404)

    @contextlib.asynccontextmanager
    async def nothing():
        yield

    if __name__ == "__main__":
        app = App({"/v1/embeddings": {"POST": embeddings}}, not_found=missing, not_allowed=missing)
        HttpServer(app, host="127.0.0.1", port=int(sys.argv[1]), payload_limit=2_000_000, lifespan=nothing).run()
elif STACK == "starlette":
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def embeddings(request):
        return Response(answer(orjson.loads(await request.body())), media_type="application/json")

    app = Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"])])
else:
    from typing import Union
    from fastapi import FastAPI
    from fastapi.responses import Response
    from pydantic import BaseModel

    class EmbeddingRequest(BaseModel):
        input: Union[str, list[str]]
        model: str = "m"
        encoding_format: str = "float"

    app = FastAPI()

    @app.post("/v1/embeddings")
    async def embeddings(request: EmbeddingRequest):
        return Response(answer(request.model_dump()), media_type="application/json")
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(stack: str, server: str, port: int, work: Path) -> subprocess.Popen:
    module = work / f"app_{stack.replace('-', '_')}.py"
    module.write_text(APP.replace("STACK_NAME", stack))
    http, loop = ("httptools", "uvloop") if server == "httptools+uvloop" else ("h11", "asyncio")
    command = [sys.executable, "-m", "uvicorn", f"{module.stem}:app", "--port", str(port), "--http", http,
               "--loop", loop, "--no-access-log", "--log-level", "warning", "--app-dir", str(work)]
    if stack in OWN_SERVER:
        command = [sys.executable, str(module), str(port)]
    process = subprocess.Popen(command)
    deadline = time.time() + 30
    while time.time() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{stack} on {server} did not start")


def measure(stack: str, server: str, requests: int, work: Path) -> dict:
    port = free_port()
    process = start(stack, server, port, work)
    try:
        body = [build_request("127.0.0.1", port, "/v1/embeddings",
                              {"input": "how do I bake bread at home?", "model": "m",
                               "encoding_format": "float"})]
        loop = new_event_loop()
        one = loop.run_until_complete(run_clients("127.0.0.1", port, body, 1, 1, requests, warmup=200))
        loop.run_until_complete(run_clients("127.0.0.1", port, body, 1, 64, 10))  # warm-up
        server_before, client_before = process_cpu(process.pid), process_cpu(os.getpid())
        many = loop.run_until_complete(run_clients("127.0.0.1", port, body, 1, 64, max(1, requests // 64)))
        server_cpu, client_cpu = process_cpu(process.pid) - server_before, process_cpu(os.getpid()) - client_before
        loop.close()
    finally:
        process.terminate()
        process.wait(10)
    return {"stack": stack, "server": server, "p50_ms": 1e3 * percentile(one.latencies, 50),
            "p99_ms": 1e3 * percentile(one.latencies, 99), "rps_64": many.texts / many.seconds,
            "server_cpu_us": 1e6 * server_cpu / many.texts, "client_cpu_us": 1e6 * client_cpu / many.texts}


def process_cpu(pid: int) -> float:
    return sum(cpu_seconds(f"/proc/{pid}/stat"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--stacks", nargs="+", choices=STACKS, default=list(STACKS))
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    needs = {"bare-asgi": ["uvicorn"], "starlette": ["uvicorn", "starlette"], "fastapi": ["uvicorn", "fastapi"]}
    for stack, modules in needs.items():
        missing = [module for module in modules if importlib.util.find_spec(module) is None]
        if stack in args.stacks and missing:
            print(f"skipping {stack}: not installed (pip install {' '.join(missing)})", file=sys.stderr)
            args.stacks.remove(stack)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "edgembed-serve-frameworks"
    work.mkdir(parents=True, exist_ok=True)
    rows = [measure(stack, server, args.requests, work) for server in SERVERS for stack in args.stacks
            if not (stack in OWN_SERVER and server != "httptools+uvloop")]
    print("| stack | server | 1 client p50 ms | p99 ms | 64 clients req/s | server CPU us/req | client CPU us/req |\n"
          "|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['stack']} | {row['server']} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} | {row['rps_64']:.0f} "
              f"| {row['server_cpu_us']:.0f} | {row['client_cpu_us']:.0f} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
