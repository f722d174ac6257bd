"""Which HTTP server for `edgembed serve`: the HTTP cost alone, without a model.

One route that parses an OpenAI-style body and answers a fixed 384-float embedding (orjson), the shape of a MiniLM
answer, as a Starlette app (the stack `edgembed serve` ships) or a bare ASGI callable, under each server of
http_servers.py; a fresh server process per row, the lean keep-alive client of http_load.py on the same machine.
Prints p50/p99 of one client, the requests/s of 64 clients and the CPU per request of the server (its process tree)
and of the client under 64 clients.

    python benchmarks/serve_frameworks.py --requests 3000 --out benchmarks/results/serve/frameworks.json
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_load import build_request, cpu_seconds, new_event_loop, percentile, run_clients  # noqa: E402
from http_servers import SERVERS, server_command  # noqa: E402

STACKS = ("starlette", "bare-asgi")

APP = '''
import orjson, numpy as np
VECTOR = np.random.default_rng(0).standard_normal(384).astype(np.float32)

def answer(payload):
    texts = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
    data = [{"object": "embedding", "index": i, "embedding": VECTOR} for i in range(len(texts))]
    return orjson.dumps({"object": "list", "data": data, "model": "m",
                         "usage": {"prompt_tokens": 1, "total_tokens": 1}},
                        option=orjson.OPT_SERIALIZE_NUMPY)

async def bare(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    content = answer(orjson.loads(body))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]})
    await send({"type": "http.response.body", "body": content})


def starlette_app():
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def embeddings(request):
        return Response(answer(orjson.loads(await request.body())), media_type="application/json")

    return Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"])])


def bare_asgi_app():
    return bare
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(stack: str, server: str, port: int, work: Path) -> subprocess.Popen:
    (work / "fixed_answer.py").write_text(APP)
    command = server_command(server, port, f"fixed_answer:{stack.replace('-', '_')}_app")
    process = subprocess.Popen(command, cwd=work, env={**os.environ, "PYTHONPATH": str(work)})
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
    """CPU seconds of a process and its children (Granian's CLI serves from a worker process)."""
    total = sum(cpu_seconds(f"/proc/{pid}/stat"))
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        total += sum(process_cpu(int(child)) for child in children.read_text().split())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--stacks", nargs="+", choices=STACKS, default=list(STACKS))
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "edgembed-serve-frameworks"
    work.mkdir(parents=True, exist_ok=True)
    rows = [measure(stack, server, args.requests, work) for server in args.servers for stack in args.stacks]
    print("| stack | server | 1 client p50 ms | p99 ms | 64 clients req/s | server CPU us/req | client CPU us/req |\n"
          "|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['stack']} | {row['server']} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} | {row['rps_64']:.0f} "
              f"| {row['server_cpu_us']:.0f} | {row['client_cpu_us']:.0f} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
