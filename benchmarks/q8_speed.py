"""q8 speed before and after a recipe change, in one run: the same documents through each export's variants in turns.

    flock /work/coord/measure.lock python benchmarks/q8_speed.py --exports before=DIR1 after=DIR2 \\
        --out benchmarks/results/fidelity/speed-minilm.json

Every (export, variant, backend) runs one timed pass over the suite's speed documents (up to 3,000, the domains
taking turns, as `edgembed eval` times them) per round, the order reversing every round, one model loaded at a
time; each keeps its best pass. With --queries N, each also embeds N suite queries one at a time per round (the
latency path of a server's lone query) and keeps its best median and the median of its rounds. Printed: texts per
second and query latency, each q8 against its own export's fp32 on the same backend, and each export's against the
first export's. Lone queries wander by 10-15% between rounds: give them many rounds, and name one export twice
(`--exports a=DIR a2=DIR`) to see the run's noise beside the difference (docs/q8-recipe.md, fifteenth session).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exports", nargs="+", required=True, metavar="NAME=DIR")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--documents", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=["fp32", "q8"])
    parser.add_argument("--backends", nargs="+", default=["onnxruntime", "openvino"])
    parser.add_argument("--queries", type=int, default=0, help="also time N queries, one text per call")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from fidelity import isa

    from edgembed.evaluation.domains import evaluation_suite
    from edgembed.evaluation.evaluate import documents_per_second
    from edgembed.runtime import Embedder

    exports = dict(item.split("=", 1) for item in args.exports)
    suite = evaluation_suite(100, 1000)
    documents = suite.speed_documents(args.documents)
    queries = [query for group in zip(*(q for q, _ in suite.domains.values())) for query in group][:args.queries]
    runs = [(name, variant, backend) for name in exports for backend in args.backends
            for variant in args.variants]
    best = dict.fromkeys(runs, 0.0)
    latency: dict[tuple[str, str, str], list[float]] = {run: [] for run in runs}  # each round's median
    load = Path("/proc/loadavg").read_text().split()[:3]
    started = time.perf_counter()
    for number in range(args.rounds):
        for run in runs if number % 2 == 0 else runs[::-1]:
            name, variant, backend = run
            model = Embedder.load(exports[name], variant=variant, backend=backend, threads=args.threads)
            best[run] = max(best[run], documents_per_second(model, documents))
            if queries:
                latency[run].append(median_query_ms(model, queries))
            del model
        print(f"round {number + 1}: " + ", ".join(f"{'/'.join(r)} {v:.0f}" for r, v in best.items()), file=sys.stderr)
    first = next(iter(exports))
    rows = []
    for name, variant, backend in runs:
        rate = best[(name, variant, backend)]
        rows.append({"export": name, "variant": variant, "backend": backend, "texts_per_second": round(rate, 1),
                     "vs_fp32": round(rate / best[(name, "fp32", backend)], 3) if "fp32" in args.variants else None,
                     f"vs_{first}": round(rate / best[(first, variant, backend)], 3)})
        if queries:
            mine, theirs = latency[(name, variant, backend)], latency[(first, variant, backend)]
            rows[-1].update(query_ms=round(min(mine), 2), query_vs_first=round(min(mine) / min(theirs), 3),
                            query_ms_median_of_rounds=round(statistics.median(mine), 2),
                            query_median_vs_first=round(statistics.median(mine) / statistics.median(theirs), 3))
    result = {"isa": isa(), "loadavg_before": " ".join(load), "loadavg_after": " ".join(
              Path("/proc/loadavg").read_text().split()[:3]), "documents": len(documents), "rounds": args.rounds,
              "queries": len(queries), "threads": args.threads, "seconds": round(time.perf_counter() - started),
              "rows": rows}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


def median_query_ms(model, queries: list[str]) -> float:
    """Median milliseconds of embedding each query alone (after one warm-up call)."""
    model.encode(queries[:1], prompt="")
    times = []
    for query in queries:
        started = time.perf_counter()
        model.encode([query], prompt="", normalize=True)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


if __name__ == "__main__":
    sys.exit(main())
