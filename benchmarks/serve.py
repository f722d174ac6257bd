"""How much HTTP and batching cost: in-process `encode` vs `edgembed serve` vs infinity on the same q8 ONNX file.

One run, same threads for every engine, loopback, keep-alive clients (http_load.py). Workloads: 1, 8 and 64
concurrent clients each sending one short query per request (OpenAI /v1/embeddings, encoding_format float), and
1 and 4 clients sending 32-passage batches; p50/p99 latency and texts/s. In process, "N clients" is encode() of N
queries at once (the batched throughput the server should approach). Then a fresh edgembed server takes 10,000
mixed requests and its peak RSS is read after 1,000 and after 10,000. Every non-200 answer is counted.

    python benchmarks/serve.py --models minilm modernbert-base --threads 2 --out benchmarks/results/serve

infinity runs from its own virtual environment (--infinity-python, default .venv-infinity/bin/python, see
benchmarks/README.md); without it the infinity rows are skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from http_load import build_request, new_event_loop, percentile, run_clients  # noqa: E402
from http_servers import SERVERS, server_command  # noqa: E402
from run import OtherLoad, git_state, machine_info, pin_threads  # noqa: E402

MODELS = ("minilm", "modernbert-base")
VARIANT, BACKEND = "q8", "onnxruntime"  # the file infinity's optimum engine also runs: onnx/model_quantized.onnx
QUERY_CLIENTS = (1, 8, 64)
INTERLEAVED_ROUNDS = 5
BATCH_CLIENTS = (1, 4)
PASSAGES = 32
RSS_CHECKPOINTS = (1_000, 10_000)
RSS_BATCH_EVERY = 100  # one 32-passage batch among this many requests in the RSS phase (new shapes for the arena)


def log(message: str) -> None:
    print(f"[serve-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def short_queries(tokenizer_file: Path, count: int) -> list[str]:
    """Distinct prose sentences of 8-12 tokens (special tokens included), in a fixed order."""
    from texts import QUERY_TOKENS, prose_paragraphs
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    seen, found = set(), []
    for paragraph in prose_paragraphs():
        for sentence in (paragraph + " ").split(". "):
            sentence = sentence.strip()
            if sentence in seen or not sentence[:1].isupper():
                continue
            seen.add(sentence)
            if QUERY_TOKENS[0] <= len(tokenizer.encode(sentence).ids) <= QUERY_TOKENS[1]:
                found.append(sentence)
                if len(found) == count:
                    return found
    return found


def summary(latencies: list[float], texts: int, seconds: float) -> dict:
    return {"p50_ms": round(1e3 * percentile(latencies, 50), 3), "p99_ms": round(1e3 * percentile(latencies, 99), 3),
            "texts_per_s": round(texts / seconds, 1) if seconds else None, "requests": len(latencies)}


def in_process(export_dir: Path, threads: int, queries: list[str], passages: list[str], plan: dict) -> dict:
    from edgembed.runtime import Embedder

    model = Embedder.load(export_dir, variant=VARIANT, backend=BACKEND, threads=threads)
    model.encode(queries[:2])
    results = {"reference": model.encode(passages), "model": model}
    for clients in QUERY_CLIENTS:
        results[f"query x{clients}"] = encode_queries(model, queries, clients, plan["query_requests"])
    # The server runs the engine on a worker thread; the same call timed on one (inside it, no hand-off counted).
    # On a busy 2-core machine the two differ widely (docs/serve.md), so both are kept.
    from concurrent.futures import ThreadPoolExecutor

    def timed(text: str) -> float:
        began = time.perf_counter()
        model.encode([text])
        return time.perf_counter() - began

    with ThreadPoolExecutor(1) as worker:
        start = time.perf_counter()
        latencies = [worker.submit(timed, queries[call % len(queries)]).result()
                     for call in range(plan["query_requests"])]
        results["query x1 (worker thread)"] = summary(latencies, len(latencies), time.perf_counter() - start)
    latencies, start = [], time.perf_counter()
    for _ in range(plan["batch_requests"]):
        began = time.perf_counter()
        model.encode(passages)
        latencies.append(time.perf_counter() - began)
    row = summary(latencies, plan["batch_requests"] * PASSAGES, time.perf_counter() - start)
    for clients in BATCH_CLIENTS:
        results[f"batch32 x{clients}"] = row  # one caller: concurrency adds nothing in process
    return results


def encode_queries(model, queries: list[str], clients: int, requests: int) -> dict:
    """In process, "N clients" is one encode of N queries at a time."""
    calls = requests // clients
    latencies, start = [], time.perf_counter()
    for call in range(calls):
        chunk = [queries[(call * clients + i) % len(queries)] for i in range(clients)]
        began = time.perf_counter()
        model.encode(chunk)
        latencies.append(time.perf_counter() - began)
    return summary(latencies, calls * clients, time.perf_counter() - start)


def start_process(command: list[str], ready: re.Pattern | None, log_path: Path, cwd: Path | None = None,
                  env: dict | None = None, timeout: float = 300) -> tuple[subprocess.Popen, str | None]:
    handle = log_path.open("w")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd,
                               env={**os.environ, **(env or {})})
    if ready is None:  # the caller polls the process's HTTP port itself
        return process, None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        found = ready.search(log_path.read_text(errors="replace"))
        if found:
            return process, found.group(1)
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{command[:4]} did not start: " + log_path.read_text(errors="replace")[-2000:])


def wait_until_serving(host: str, port: int, path: str, body: dict, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.post(f"http://{host}:{port}{path}", json=body, timeout=30).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"nothing answered on {host}:{port}{path}")


def start_edgembed(export_dir: Path, threads: int, log_path: Path, server: str = "edgembed"
                   ) -> tuple[subprocess.Popen, int, str]:
    """`edgembed serve`, or (`server` another of http_servers.SERVERS) the same app under that server's CLI."""
    if server == "edgembed":
        command = [sys.executable, "-m", "edgembed", "serve", str(export_dir), "--variant", VARIANT, "--backend",
                   BACKEND, "--threads", str(threads), "--port", "0", "--max-client-batch-size", str(PASSAGES)]
        process, url = start_process(command, re.compile(r"listening on (http://[\d.]+:\d+)"), log_path)
        port = int(url.rsplit(":", 1)[1])
    else:
        from edgembed.serve.servers import free_port

        port = free_port("127.0.0.1")
        env = {"EDGEMBED_MODEL_DIR": str(export_dir), "EDGEMBED_VARIANT": VARIANT, "EDGEMBED_BACKEND": BACKEND,
               "EDGEMBED_THREADS": str(threads), "EDGEMBED_MAX_CLIENT_BATCH_SIZE": str(PASSAGES)}
        process, _ = start_process(server_command(server, port, "edgembed.serve.app:app_from_environment"), None,
                                   log_path, env=env)
    wait_until_serving("127.0.0.1", port, "/v1/embeddings", {"input": "ready?"})
    import httpx

    served = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["data"][0]["id"]  # what a client looks up
    return process, port, served


def infinity_view(export_dir: Path) -> Path:
    """A directory of links for infinity: the q8 ONNX file at its root, the tokenizer and configs beside it.

    infinity passes the ONNX path it found (e.g. onnx/model_quantized.onnx) as optimum's `file_name`, and
    optimum-onnx 0.1 matches `file_name` against base names only, so the file must sit at the model's root;
    infinity is then started in that directory with --model-id . (a path with a directory part fails the same way).
    """
    view = export_dir.parent / "infinity-view"
    view.mkdir(exist_ok=True)
    for entry in export_dir.iterdir():
        if entry.name in ("onnx", "openvino", "manifest.json", "eval"):
            continue
        link = view / entry.name
        if not link.exists():
            link.symlink_to(entry.resolve())
    onnx_link = view / "model_quantized.onnx"
    if not onnx_link.exists():
        onnx_link.symlink_to((export_dir / "onnx" / "model_quantized.onnx").resolve())
    return view


def start_infinity(python: Path, export_dir: Path, threads: int, port: int, log_path: Path) -> subprocess.Popen:
    view = infinity_view(export_dir)
    pooling = json.loads((export_dir / "manifest.json").read_text())["pooling"]  # infinity's "auto" may pick cls
    command = [str(python.absolute()), "-m", "infinity_emb.cli", "v2", "--model-id", ".", "--engine", "optimum",
               "--device", "cpu", "--batch-size", str(PASSAGES), "--host", "127.0.0.1", "--port", str(port),
               "--pooling-method", pooling,
               "--url-prefix", "/v1", "--onnx-disable-optimize", "--log-level", "warning",
               "--no-lengths-via-tokenize"]
    env = {"HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0",
           "OMP_NUM_THREADS": str(threads), "RAYON_NUM_THREADS": str(threads)}
    process, _ = start_process(command, None, log_path, cwd=view, env=env)
    wait_until_serving("127.0.0.1", port, "/v1/embeddings", {"input": ["ready?"], "model": "."})
    return process


def server_runs(port: int, model: str, queries: list[str], passages: list[str], plan: dict) -> dict:
    host = "127.0.0.1"
    query_requests = [build_request(host, port, "/v1/embeddings", {"input": q, "model": model,
                                                                   "encoding_format": "float"}) for q in queries]
    batch_request = [build_request(host, port, "/v1/embeddings", {"input": passages, "model": model,
                                                                  "encoding_format": "float"})]
    loop = new_event_loop()
    results, statuses = {}, {}
    try:
        for clients in QUERY_CLIENTS:
            run = loop.run_until_complete(run_clients(host, port, query_requests, 1, clients,
                                                      max(1, plan["query_requests"] // clients)))
            results[f"query x{clients}"] = summary(run.latencies, run.texts, run.seconds)
            _merge(statuses, run.statuses)
        for clients in BATCH_CLIENTS:
            run = loop.run_until_complete(run_clients(host, port, batch_request, PASSAGES, clients,
                                                      max(1, plan["batch_requests"] // clients), warmup=1))
            results[f"batch32 x{clients}"] = summary(run.latencies, run.texts, run.seconds)
            _merge(statuses, run.statuses)
    finally:
        loop.close()
    results["statuses"] = statuses
    return results


def agreement(port: int, model: str, passages: list[str], reference) -> float:
    """Least cosine between a server's vectors for the 32 passages and in-process encode's (same model check)."""
    import httpx
    import numpy as np

    data = httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", json={"input": passages, "model": model},
                      timeout=300).json()["data"]
    served = np.array([item["embedding"] for item in data], dtype=np.float32)
    served /= np.linalg.norm(served, axis=1, keepdims=True)
    return round(float((served * reference).sum(axis=1).min()), 6)


def rss_phase(port: int, pid: int, model: str, queries: list[str], passages: list[str]) -> dict:
    """Peak and current RSS of the server after each checkpoint of mixed traffic (8 clients)."""
    host = "127.0.0.1"
    requests = [build_request(host, port, "/v1/embeddings", {"input": q, "model": model, "encoding_format": "float"})
                for q in queries]
    batch = build_request(host, port, "/v1/embeddings", {"input": passages, "model": model,
                                                         "encoding_format": "float"})
    mixed = [batch if index % RSS_BATCH_EVERY == 0 else requests[index % len(requests)]
             for index in range(10 * RSS_BATCH_EVERY)]
    clients, done, out, statuses = 8, 0, {}, {}
    loop = new_event_loop()
    try:
        for checkpoint in RSS_CHECKPOINTS:
            per_client = (checkpoint - done) // clients
            run = loop.run_until_complete(run_clients(host, port, mixed, 1, clients, per_client, warmup=0))
            done += per_client * clients
            _merge(statuses, run.statuses)
            out[str(checkpoint)] = {"requests": done, **memory(pid)}
    finally:
        loop.close()
    first, last = out[str(RSS_CHECKPOINTS[0])], out[str(RSS_CHECKPOINTS[-1])]
    out["peak_growth_percent"] = round(100 * (last["peak_rss_mb"] / first["peak_rss_mb"] - 1), 2)
    out["statuses"] = statuses
    return out


def memory(pid: int) -> dict:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"peak_rss_mb": round(int(fields["VmHWM"].split()[0]) / 1024, 1),
            "rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024, 1)}


def _merge(into: dict, statuses: dict) -> None:
    for status, count in statuses.items():
        into[str(status)] = into.get(str(status), 0) + count


def stop(process: subprocess.Popen) -> int:
    process.terminate()
    try:
        return process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(10)


def run_model(name: str, args: argparse.Namespace, plan: dict) -> dict:
    from models import prepare

    prepared = prepare(name, args.work_dir, log=log, quantize=("fp32", VARIANT))
    export_dir = prepared.export_dir.resolve()
    manifest = json.loads((export_dir / "manifest.json").read_text())
    queries = short_queries(export_dir / manifest["tokenizer_file"], plan["distinct_queries"])
    from texts import build_texts

    passages = build_texts(export_dir / manifest["tokenizer_file"], corpus_size=1, passages=PASSAGES).passages
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    result = {"export": str(prepared.export_dir), "queries": len(queries), "engines": {}}
    log(f"{name}: in-process encode ({VARIANT} on {BACKEND})")
    result["engines"]["in-process"] = in_process(export_dir, args.threads, queries, passages, plan)
    reference = result["engines"]["in-process"].pop("reference")
    local_model = result["engines"]["in-process"].pop("model")

    log(f"{name}: edgembed serve")
    process, port, model_id = start_edgembed(export_dir, args.threads, logs / f"{name}-edgembed.log")
    try:
        runs = server_runs(port, model_id, queries, passages, plan)
        runs["after_runs"] = memory(process.pid)
        runs["cosine_min_to_in_process"] = agreement(port, model_id, passages, reference)
        log(f"{name}: 64 clients against in-process encode of 64, interleaved")
        result["x64_interleaved"] = interleaved_x64(port, model_id, local_model, queries, plan)
    finally:
        runs_exit = stop(process)
    runs["exit_code"] = runs_exit
    result["engines"]["edgembed serve"] = runs

    for server in args.http_servers:
        if server == "edgembed":
            continue
        log(f"{name}: the same app under {server}")
        process, port, model_id = start_edgembed(export_dir, args.threads, logs / f"{name}-{server}.log", server)
        try:
            runs = server_runs(port, model_id, queries, passages, plan)
            runs["cosine_min_to_in_process"] = agreement(port, model_id, passages, reference)
            runs["x64_interleaved"] = interleaved_x64(port, model_id, local_model, queries, plan)
        finally:
            runs["exit_code"] = stop(process)
        result["engines"][f"app under {server}"] = runs
    del local_model

    if plan["rss"]:
        log(f"{name}: edgembed serve, RSS after {' and '.join(map(str, RSS_CHECKPOINTS))} requests (fresh server)")
        process, port, model_id = start_edgembed(export_dir, args.threads, logs / f"{name}-edgembed-rss.log")
        try:
            result["rss"] = rss_phase(port, process.pid, model_id, queries, passages)
        finally:
            result["rss"]["exit_code"] = stop(process)

    if args.infinity_python and Path(args.infinity_python).exists() and not args.skip_infinity:
        log(f"{name}: infinity (optimum engine, same file)")
        port = args.infinity_port
        try:
            process = start_infinity(Path(args.infinity_python), export_dir, args.threads, port,
                                     logs / f"{name}-infinity.log")
        except RuntimeError as exc:
            result["engines"]["infinity"] = {"error": str(exc)[-1500:]}
        else:
            try:
                runs = server_runs(port, ".", queries, passages, plan)
                runs["after_runs"] = memory(process.pid)
                runs["cosine_min_to_in_process"] = agreement(port, ".", passages, reference)
            finally:
                stop(process)
            result["engines"]["infinity"] = runs
    else:
        result["engines"]["infinity"] = {"error": f"not run: no infinity Python at {args.infinity_python}"}
    result["targets"] = targets(result)
    return result


def interleaved_x64(port: int, model: str, local_model, queries: list[str], plan: dict) -> dict:
    """Rounds of in-process encode of 64 queries, then 64 clients on the server, one after the other: the
    machine's speed drifts by 10% over minutes, so the ratio of the two is taken within each round."""
    host = "127.0.0.1"
    requests = [build_request(host, port, "/v1/embeddings", {"input": q, "model": model, "encoding_format": "float"})
                for q in queries]
    loop = new_event_loop()
    rounds = []
    try:
        for _ in range(INTERLEAVED_ROUNDS):
            local = encode_queries(local_model, queries, 64, plan["query_requests"])
            run = loop.run_until_complete(run_clients(host, port, requests, 1, 64,
                                                      max(1, plan["query_requests"] // 64)))
            rounds.append({"in_process_texts_per_s": local["texts_per_s"],
                           "serve_texts_per_s": round(run.texts / run.seconds, 1),
                           "serve_non_200": sum(n for status, n in run.statuses.items() if status != 200)})
    finally:
        loop.close()
    ratios = sorted(r["serve_texts_per_s"] / r["in_process_texts_per_s"] for r in rounds)
    return {"rounds": rounds, "ratio_median": round(ratios[len(ratios) // 2], 3)}


def targets(result: dict) -> dict:
    engines = result["engines"]
    local, served, infinity = engines["in-process"], engines["edgembed serve"], engines.get("infinity", {})
    local_p50 = min(local["query x1"]["p50_ms"], local["query x1 (worker thread)"]["p50_ms"])
    out = {"http_cost_p50_ms": round(served["query x1"]["p50_ms"] - local_p50, 3),
           "x64_vs_in_process_batched": round(served["query x64"]["texts_per_s"]
                                              / local["query x64"]["texts_per_s"], 3),
           "edgembed_non_200": sum(n for s, n in served["statuses"].items() if s != "200")}
    if "x64_interleaved" in result:
        out["x64_interleaved_median"] = result["x64_interleaved"]["ratio_median"]
        out["edgembed_non_200"] += sum(r["serve_non_200"] for r in result["x64_interleaved"]["rounds"])
    if "query x64" in infinity:
        out["x64_vs_infinity"] = round(served["query x64"]["texts_per_s"] / infinity["query x64"]["texts_per_s"], 2)
        out["x1_p50_vs_infinity"] = round(served["query x1"]["p50_ms"] / infinity["query x1"]["p50_ms"], 3)
        out["x1_p99_vs_infinity"] = round(served["query x1"]["p99_ms"] / infinity["query x1"]["p99_ms"], 3)
        out["infinity_non_200"] = sum(n for s, n in infinity["statuses"].items() if s != "200")
    if "rss" in result:
        out["rss_growth_percent"] = result["rss"]["peak_growth_percent"]
        out["rss_non_200"] = sum(n for s, n in result["rss"]["statuses"].items() if s != "200")
    return out


WORKLOADS = ["query x1 (worker thread)", *(f"query x{c}" for c in QUERY_CLIENTS),
             *(f"batch32 x{c}" for c in BATCH_CLIENTS)]


def markdown(results: dict) -> str:
    machine = results["machine"]
    flags = ", ".join(flag for flag, present in machine.get("flags", {}).items() if present)
    lines = [f"# edgembed serve benchmark ({results['date']})", "",
             f"Command: `{results['command']}`", "",
             f"Machine: {machine['cpu']} ({flags}), {machine['cores']} cores; threads {results['threads']} for every "
             f"engine; other load during the run: {results['other_load_cores']} cores. Git: {results['git']}.", "",
             f"Engines: in-process `Embedder.encode` ({VARIANT} on {BACKEND}); `edgembed serve` (same variant and "
             "backend); infinity (optimum engine, the same `onnx/model_quantized.onnx`). Query workloads: N clients "
             "each sending one 8-12-token query per request (in process: encode of N queries at once). batch32: "
             "clients sending 32 passages of ~128 tokens per request. Latency per request, texts/s over the run.", ""]
    for name, model in results["models"].items():
        engines = model["engines"]
        lines += [f"## {name}", "", "| workload | " + " | ".join(
            f"{engine} p50 / p99 ms | {engine} texts/s" for engine in engines) + " |",
                  "|---|" + "---|---|" * len(engines)]
        for workload in WORKLOADS:
            cells = []
            for engine in engines.values():
                row = engine.get(workload)
                cells += ([f"{row['p50_ms']:.2f} / {row['p99_ms']:.2f}", f"{row['texts_per_s']:.0f}"] if row
                          else ["n/a", "n/a"])
            lines.append(f"| {workload} | " + " | ".join(cells) + " |")
        lines.append("")
        for engine, data in engines.items():
            if "error" in data:
                lines.append(f"- {engine}: {data['error'][:300]}")
        t = model["targets"]
        lines.append(f"- HTTP cost, 1 client p50: serve - in-process (the faster of main and worker thread) = "
                     f"{t['http_cost_p50_ms']:.3f} ms (target <= 1 ms)")
        lines.append("- 64 clients: serve texts/s / in-process encode of 64 = "
                     f"{100 * t['x64_vs_in_process_batched']:.1f}% (the table's runs, minutes apart); median of "
                     f"{INTERLEAVED_ROUNDS} interleaved rounds {100 * t.get('x64_interleaved_median', 0):.1f}% "
                     "(target >= 85%)")
        for engine, data in engines.items():
            if "x64_interleaved" in data:
                lines.append(f"- {engine}: 64 clients, median of {INTERLEAVED_ROUNDS} interleaved rounds against "
                             f"in-process encode of 64: {100 * data['x64_interleaved']['ratio_median']:.1f}%")
        if "x64_vs_infinity" in t:
            lines.append(f"- vs infinity: 64 clients texts/s {t['x64_vs_infinity']:.2f}x (target >= 2x); 1 client p50 "
                         f"{t['x1_p50_vs_infinity']:.2f}x and p99 {t['x1_p99_vs_infinity']:.2f}x of infinity's "
                         "(target < 1)")
        if "rss" in model:
            rss = model["rss"]
            first, last = (rss[str(c)] for c in RSS_CHECKPOINTS)
            lines.append(f"- server peak RSS: {first['peak_rss_mb']} MB after {first['requests']} requests, "
                         f"{last['peak_rss_mb']} MB after {last['requests']} ({rss['peak_growth_percent']:+.2f}%, "
                         "target <= 10%)")
        cosines = {engine: data["cosine_min_to_in_process"] for engine, data in engines.items()
                   if "cosine_min_to_in_process" in data}
        lines.append(f"- same vectors: least cosine to in-process encode on the 32 passages {cosines}")
        non_200 = {k: v for k, v in t.items() if k.endswith("non_200")}
        lines.append(f"- answers other than 200: {non_200}")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--threads", type=int, default=None, help="for every engine (default: the physical cores)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "serve")
    parser.add_argument("--work-dir", type=Path, default=HERE / ".cache")
    parser.add_argument("--infinity-python", default=str(HERE.parent / ".venv-infinity" / "bin" / "python"))
    parser.add_argument("--infinity-port", type=int, default=7997)
    parser.add_argument("--skip-infinity", action="store_true")
    parser.add_argument("--no-rss", action="store_true", help="skip the 10,000-request RSS phase")
    parser.add_argument("--http-servers", nargs="+", choices=SERVERS, default=["edgembed"],
                        help="also run the same app under these servers' own CLIs (edgembed: `edgembed serve`)")
    parser.add_argument("--query-requests", type=int, default=1920, help="single-query requests per workload")
    parser.add_argument("--batch-requests", type=int, default=24, help="32-passage requests per workload")
    parser.add_argument("--quick", action="store_true", help="few requests: a smoke test of the script")
    args = parser.parse_args()
    if args.threads is None:
        from edgembed.runtime.cpu import physical_cores

        args.threads = physical_cores()
    pin_threads(args.threads)
    plan = {"query_requests": 128 if args.quick else args.query_requests,
            "batch_requests": 4 if args.quick else args.batch_requests,
            "distinct_queries": 500, "rss": not args.no_rss and not args.quick}
    args.out.mkdir(parents=True, exist_ok=True)
    load = OtherLoad()
    results = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(["python", *sys.argv]),
               "threads": args.threads, "git": git_state(), "machine": machine_info(), "plan": plan, "models": {}}
    for name in args.models:
        results["models"][name] = run_model(name, args, plan)
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    results["other_load_cores"] = load.cores()
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report = markdown(results)
    (args.out / "results.md").write_text(report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
