"""Where the CPU goes when 64 single-query clients load `edgembed serve`: per thread of the server, and the client.

Reads each server thread's user and system CPU from /proc (Linux) around one 64-client run and divides by the
requests answered, so the event loop's cost per request stands beside the engine's. The server's engine
threads are the two largest; the event loop is the process's main thread.

    python benchmarks/serve_cpu.py --model minilm --requests 3840
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from http_load import build_request, cpu_seconds, new_event_loop, run_clients  # noqa: E402
from serve import BACKEND, VARIANT, short_queries, start_edgembed, stop  # noqa: E402

CLIENTS = 64


def thread_cpu(pid: int) -> dict[int, tuple[float, float]]:
    """{thread id: (user seconds, system seconds)} of every thread of `pid`."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            found[int(tid)] = cpu_seconds(f"/proc/{pid}/task/{tid}/stat")
        except OSError:  # the thread ended
            continue
    return found


def in_process(export_dir: Path, threads: int, queries: list[str], requests: int) -> dict:
    from edgembed.runtime import Embedder

    model = Embedder.load(export_dir, variant=VARIANT, backend=BACKEND, threads=threads)
    model.encode(queries[:CLIENTS])
    calls = requests // CLIENTS
    before, start = os.times(), time.perf_counter()
    for call in range(calls):
        model.encode([queries[(call * CLIENTS + i) % len(queries)] for i in range(CLIENTS)])
    seconds, after = time.perf_counter() - start, os.times()
    cpu = (after.user + after.system) - (before.user + before.system)
    return {"texts_per_s": calls * CLIENTS / seconds, "cores": cpu / seconds,
            "cpu_us_per_text": 1e6 * cpu / (calls * CLIENTS)}


def measure(export_dir: Path, threads: int, requests: int, logs: Path) -> dict:
    manifest = json.loads((export_dir / "manifest.json").read_text())
    queries = short_queries(export_dir / manifest["tokenizer_file"], 2000)
    reference = in_process(export_dir, threads, queries, requests)
    process, port, model_id = start_edgembed(export_dir, threads, logs / "serve-cpu.log")
    try:
        bodies = [build_request("127.0.0.1", port, "/v1/embeddings",
                                {"input": query, "model": model_id, "encoding_format": "float"}) for query in queries]
        loop = new_event_loop()
        loop.run_until_complete(run_clients("127.0.0.1", port, bodies, 1, CLIENTS, 10))  # warm-up
        before, client_before = thread_cpu(process.pid), os.times()
        run = loop.run_until_complete(run_clients("127.0.0.1", port, bodies, 1, CLIENTS, requests // CLIENTS))
        after, client_after = thread_cpu(process.pid), os.times()
        loop.close()
    finally:
        stop(process)
    answered = run.texts
    rows = []
    for tid, (user, system) in after.items():
        user -= before.get(tid, (0.0, 0.0))[0]
        system -= before.get(tid, (0.0, 0.0))[1]
        if user + system > 0:
            rows.append({"thread": "event loop (main)" if tid == process.pid else f"thread {tid}",
                         "cores": (user + system) / run.seconds, "user_us": 1e6 * user / answered,
                         "system_us": 1e6 * system / answered})
    rows.sort(key=lambda row: -row["cores"])
    others = [row for row in rows if not row["thread"].startswith("event loop")]
    for rank, row in enumerate(others):
        row["thread"] = ("engine stream " if rank < 2 else "other ") + row["thread"]
    client = (client_after.user + client_after.system) - (client_before.user + client_before.system)
    rows.append({"thread": "load client (this process)", "cores": client / run.seconds,
                 "user_us": 1e6 * client / answered, "system_us": None})
    return {"in_process": reference, "texts_per_s": answered / run.seconds, "statuses": run.statuses, "rows": rows,
            "cpu_us_per_request": sum(row["user_us"] + (row["system_us"] or 0) for row in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", choices=("minilm", "modernbert-base"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--requests", type=int, default=3840)
    parser.add_argument("--work-dir", type=Path, default=HERE / ".cache")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args()
    from models import prepare

    prepared = prepare(args.model, args.work_dir, quantize=("fp32", VARIANT))
    logs = args.work_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    result = measure(prepared.export_dir.resolve(), args.threads, args.requests, logs)
    reference = result["in_process"]
    print(f"{args.model} {VARIANT}: in process, encode of {CLIENTS}: {reference['texts_per_s']:.0f} texts/s, "
          f"{reference['cores']:.2f} cores, {reference['cpu_us_per_text']:.0f} us of CPU per text")
    print(f"{CLIENTS} clients: {result['texts_per_s']:.0f} texts/s, answers {result['statuses']}, "
          f"{result['cpu_us_per_request']:.0f} us of CPU per request (server and client)")
    print("| thread | cores | user us/request | system us/request |\n|---|---:|---:|---:|")
    for row in result["rows"]:
        system = "" if row["system_us"] is None else f"{row['system_us']:.0f}"
        print(f"| {row['thread']} | {row['cores']:.3f} | {row['user_us']:.0f} | {system} |")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
