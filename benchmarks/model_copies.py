"""One model with two streams against two copies of it, on the same texts and two threads in all: why two Ray
actors of one CPU are slower than one actor of two (docs/jobs.md, "Two actors of one CPU").

    python benchmarks/model_copies.py EXPORT LINES.txt --texts 20000 > benchmarks/results/jobs/model_copies.json

Layouts: one process with one session and two streams (the single-box job); two processes of one thread, each
embedding half the lines (what two Ray actors do, without Ray); one process with two sessions of one thread
driven by two Python threads (two copies of the weights in one process)."""
from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CALL_ROWS = 1024  # rows per encode call, as the job's chunks


def load(export: str, variant: str, threads: int, streams: int | None):
    from edgembed.runtime import Embedder

    model = Embedder.load(export, variant=variant, threads=threads, streams=streams)
    model.encode(["warm up the engine with a few words"] * 64)
    return model


def embed_all(model, texts: list[str]) -> None:
    for start in range(0, len(texts), CALL_ROWS):
        model.encode(texts[start:start + CALL_ROWS])


def _process(export, variant, texts, threads, streams, barrier, results):
    model = load(export, variant, threads, streams)
    barrier.wait()
    embed_all(model, texts)
    results.put(time.process_time())


def processes(export: str, variant: str, parts: list[list[str]], threads: int, streams: int | None) -> dict:
    """Each part in its own fresh process; wall time from a common start to the last finish."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(len(parts) + 1), context.Queue()
    workers = [context.Process(target=_process, args=(export, variant, part, threads, streams, barrier, results))
               for part in parts]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.perf_counter()
    cpu = sum(results.get() for _ in workers)  # CPU seconds of each process, loading included
    wall = time.perf_counter() - start
    for worker in workers:
        worker.join()
    return {"texts_per_second": round(sum(map(len, parts)) / wall, 1), "process_cpu_seconds": round(cpu, 1)}


def sessions(export: str, variant: str, parts: list[list[str]]) -> dict:
    models = [load(export, variant, 1, 1) for _ in parts]
    start = time.perf_counter()
    with ThreadPoolExecutor(len(parts)) as pool:
        list(pool.map(embed_all, models, parts))
    return {"texts_per_second": round(sum(map(len, parts)) / (time.perf_counter() - start), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export")
    parser.add_argument("lines", type=Path)
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--variant", default="q8")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    texts = args.lines.read_text().splitlines()[:args.texts]
    halves = [texts[0::2], texts[1::2]]
    runs: dict[str, list[dict]] = {"one process, two streams": [], "two processes of one thread": [],
                                   "one process, two sessions of one thread": []}
    for _ in range(args.repeats):  # interleaved, so a change in the machine's load hits every layout
        runs["one process, two streams"].append(processes(args.export, args.variant, [texts], 2, None))
        runs["two processes of one thread"].append(processes(args.export, args.variant, halves, 1, 1))
        runs["one process, two sessions of one thread"].append(sessions(args.export, args.variant, halves))
    from edgembed.runtime.cpu import cpu_model, int8_path

    print(json.dumps({"cpu": cpu_model(), "int8_path": int8_path().name, "variant": args.variant,
                      "texts": len(texts), "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
