"""Hostile clients against the same app under each HTTP server: which fault classes each one closes.

Every server runs `edgembed.serve.app` (the same routes, the same body limits and auth checks in the app) with the
timeouts it has of its own set alike (3 s for heads, keep-alive and the drain); the scenarios of
tests/hostile_http.py run one after the other against a fresh process of each, then SIGTERM while a client trickles
a body. Prints one table (fault class x server) and writes results.json and results.md.

    python benchmarks/hostile_clients.py --export minilm-edge --out benchmarks/results/serve/hostile

Servers: edgembed (`edgembed serve`: Granian embedded), granian (its CLI, one worker process), uvicorn
(httptools), hypercorn (h11). The last three run the app factory `edgembed.serve.app:app_from_environment`.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import hostile_http as hostile  # noqa: E402
from http_servers import SERVERS, server_command  # noqa: E402
from run import OtherLoad, git_state, machine_info  # noqa: E402

LIMIT = 3  # seconds: head, body, keep-alive and drain timeouts where a server has them
PAYLOAD_LIMIT = 40_000_000
FACTORY = "edgembed.serve.app:app_from_environment"
SCENARIOS = {
    "a head line that never ends (32 MiB)": hostile.endless_header_line,
    "200 heads trickled a line a second": lambda t: hostile.slow_headers(t, clients=200, interval=1.0, limit=LIMIT),
    "a body trickled at 5 B/s": lambda t: hostile.slow_body(t, rate=5, limit=LIMIT),
    "8 pipeliners that never read": hostile.never_reading_pipeliners,
    "JSON nested 1,000 deep in 9 fields": hostile.deep_json,
    "the export's path in an answer": hostile.path_leak,
    "3 clients x 8 MB texts, truncate=false": hostile.huge_text_stall,
    "a 4 MiB chunk extension": hostile.chunk_extension,
    "a chunked body past the limit": lambda t: hostile.refused_chunked_body(t, limit=PAYLOAD_LIMIT),
    "a pipelined Expect: 100-continue": hostile.pipelined_continue,
    "framing: CL+TE, two CLs, TE lists, bare LF, NUL, h2, TLS": hostile.smuggling,
    "a request under 200 slow heads + 8 pipeliners": hostile.under_siege,
}


def commands(name: str, export: Path, port: int) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start `name` on `port` with the app on `export`."""
    env = {"EDGEMBED_MODEL_DIR": str(export), "EDGEMBED_VARIANT": "fp32", "EDGEMBED_BACKEND": "onnxruntime",
           "EDGEMBED_BODY_TIMEOUT": str(LIMIT), "EDGEMBED_PAYLOAD_LIMIT": str(PAYLOAD_LIMIT)}
    if name == "edgembed":  # the product's own command line
        return [sys.executable, "-m", "edgembed", "serve", "--port", str(port), "--header-timeout", str(LIMIT),
                "--graceful-timeout", str(LIMIT)], env
    return server_command(name, port, FACTORY, limit=LIMIT), env


PROCESS_RSS_MB = hostile.rss_mb


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and its children (Granian's CLI serves from a worker process)."""
    total = PROCESS_RSS_MB(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        for child in children.read_text().split():
            total += tree_rss_mb(int(child))
    return total


def run_server(name: str, export: Path, log_dir: Path) -> dict:
    from edgembed.serve.servers import free_port

    port = free_port("127.0.0.1")
    command, env = commands(name, export, port)
    log_path = log_dir / f"{name}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})
    target = hostile.Target("127.0.0.1", port, process.pid, export_path=str(export.resolve()))
    deadline = time.monotonic() + 120
    while True:
        try:
            hostile.health_seconds(target, timeout=2)
            break
        except (OSError, AssertionError):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{name} did not start: {log_path.read_text()[-2000:]}") from None
            time.sleep(0.2)
    hostile.warm_up(target)
    hostile.rss_mb = tree_rss_mb  # the scenarios measure the whole tree
    results: dict = {"rss_start_mb": round(tree_rss_mb(process.pid), 1), "scenarios": {}}
    try:
        for title, scenario in SCENARIOS.items():
            started = time.monotonic()
            try:
                outcome = scenario(target)
            except Exception as exc:  # a server that breaks a probe has failed it
                outcome = hostile.Outcome(False, f"probe error: {type(exc).__name__}: {exc}")
            results["scenarios"][title] = {"held": outcome.passed, "seen": outcome.seen,
                                           "seconds": round(time.monotonic() - started, 1)}
            print(f"  {name:10s} {title:58s} {outcome}", flush=True)
            if process.poll() is not None:
                results["scenarios"][title]["seen"] += " (the server process died)"
                break
        results["rss_end_mb"] = round(tree_rss_mb(process.pid), 1) if process.poll() is None else None
    finally:
        hostile.rss_mb = PROCESS_RSS_MB
    results["sigterm"] = sigterm_with_trickler(process, target)
    print(f"  {name:10s} {'SIGTERM while a body trickles':58s} {results['sigterm']}", flush=True)
    return results


def sigterm_with_trickler(process: subprocess.Popen, target: hostile.Target) -> str:
    if process.poll() is not None:
        return "the server had died"
    trickler = hostile.connect(target)
    trickler.sendall(b"POST /embed HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n{")
    time.sleep(0.3)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        status = process.wait(30)
        outcome = f"exit {status} after {time.monotonic() - started:.1f} s"
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        outcome = "still running 30 s after SIGTERM (killed)"
    trickler.close()
    return outcome


def markdown(results: dict, servers: list[str]) -> str:
    lines = ["| fault class | " + " | ".join(servers) + " |", "|---|" + "---|" * len(servers)]
    for title in SCENARIOS:
        cells = []
        for name in servers:
            found = results[name]["scenarios"].get(title)
            cells.append("-" if found is None else ("held" if found["held"] else "**failed**") + ": " + found["seen"])
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines.append("| SIGTERM while a body trickles (drain 3 s) | " + " | ".join(results[n]["sigterm"] for n in servers)
                 + " |")
    lines.append("| RSS start -> end, MB (x) | " + " | ".join(_rss(results[n]) for n in servers) + " |")
    return "\n".join(lines)


def _rss(result: dict) -> str:
    start, end = result["rss_start_mb"], result.get("rss_end_mb")
    return f"{start:.0f} -> {end:.0f} ({end / start:.2f}x)" if end else f"{start:.0f} -> died"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, required=True, help="an export holding an fp32 ONNX variant")
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    other = OtherLoad()
    results = {"machine": machine_info(), "git": git_state(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "command": " ".join(sys.argv)}
    for name in args.servers:
        print(f"{name}:", flush=True)
        results[name] = run_server(name, args.export, args.out)
    results["other_load_cores"] = other.cores()
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    table = markdown(results, args.servers)
    machine = results["machine"]
    (args.out / "results.md").write_text(f"Command: `{results['command']}`\n\nCommit {results['git']}, "
                                         f"{results['started']}; machine: {json.dumps(machine)}; other load "
                                         f"{results['other_load_cores']} cores\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
