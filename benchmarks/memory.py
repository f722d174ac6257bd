"""What a loaded model costs in memory, beside its graph file and its speed, measured in one run (docs/memory.md).

    python benchmarks/memory.py /work/coord/exports/modernbert-base /work/coord/exports/modernbert-large \
        --threads 2 --baseline /tmp/edgembed-main --out benchmarks/results/memory

Every (variant, backend) pair of each export that this machine can run is measured in a fresh process: RSS after
the import, after `Embedder.load`, after the first query, after a batch of 64 passages, after 1,000 mixed calls,
after the 64 passages as one batch (one run of 8,192 tokens with streams=1) and after `close()`; in the same
process the query latency, the batch's texts/s and the mixed calls' time.
`--baseline SRC` measures another source tree of edgembed (a checkout of main) the same way, interleaved with
this one, so "before" and "after" come from one run on one machine.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CALLS = 1000
PASSAGES = 64
QUERY_REPEATS = 50
BATCH_REPEATS = 3
# The mixed calls: most are one short text (a search query), some a few documents, a few a batch of documents.
SINGLE_SHARE, FEW_SHARE = 0.80, 0.15
FEW_TEXTS, MANY_TEXTS = (2, 8), (16, 32)
SEED = 29
MB = 1 << 20


# ---- the measuring child: only the standard library until the stage it measures --------------------------------

def _rss() -> dict[str, float]:
    """This process's resident memory in MB: total, anonymous (heap, arenas) and file-backed (code, mmapped files)."""
    fields = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return {"rss": round(fields["VmRSS"], 1), "anon": round(fields.get("RssAnon", 0.0), 1),
            "file": round(fields.get("RssFile", 0.0) + fields.get("RssShmem", 0.0), 1),
            "peak": round(fields.get("VmHWM", 0.0), 1)}


def _import_edgembed(source: str | None):
    """edgembed.runtime from this environment, or from the source tree `source` (its folders map to the package
    as pyproject.toml's package-dir says: cli/ is `edgembed`, the other folders its subpackages)."""
    if source:
        import importlib.util

        root = Path(source)
        spec = importlib.util.spec_from_file_location("edgembed", root / "cli" / "__init__.py",
                                                      submodule_search_locations=[str(root / "cli"), str(root)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["edgembed"] = module
        spec.loader.exec_module(module)
    import edgembed.runtime

    return edgembed.runtime


def child(spec: dict) -> dict:
    """One configuration, measured from a fresh interpreter; returns the figures."""
    texts = json.loads(Path(spec["texts"]).read_text())
    stages = {"start": _rss()}
    runtime = _import_edgembed(spec.get("source"))
    __import__(spec["engine_module"])  # the engine's own import is part of what a user pays
    stages["import"] = _rss()
    start = time.perf_counter()
    model = runtime.Embedder.load(spec["export"], variant=spec["variant"], backend=spec["backend"],
                                  threads=spec["threads"], **spec["load"])
    load_s = time.perf_counter() - start
    stages["load"] = _rss()
    start = time.perf_counter()
    model.encode(texts["query"])
    first_query_ms = (time.perf_counter() - start) * 1000
    stages["query"] = _rss()
    samples = []
    for _ in range(QUERY_REPEATS):
        start = time.perf_counter()
        model.encode(texts["query"])
        samples.append((time.perf_counter() - start) * 1000)
    model.encode(texts["passages"])
    stages["batch"] = _rss()
    batch_s = []
    for _ in range(BATCH_REPEATS):
        start = time.perf_counter()
        model.encode(texts["passages"])
        batch_s.append(time.perf_counter() - start)
    start = time.perf_counter()
    for call in texts["calls"]:
        model.encode(call if len(call) > 1 else call[0])
    calls_s = time.perf_counter() - start
    stages["calls"] = _rss()
    # The passages as one batch where the configuration allows it (streams=1): what a large batch leaves behind.
    start = time.perf_counter()
    model.encode(texts["passages"], batch_size=len(texts["passages"]), max_batch_tokens=1 << 16)
    large_s = time.perf_counter() - start
    stages["large"] = _rss()
    describe = model.describe()
    size_bytes = model.size_bytes
    close = getattr(model, "close", None)  # a tree from before close() existed: `del` is all it has
    closed_with = "close()" if close is not None else "del"
    if close is not None:
        close()
    del model, close
    import gc

    gc.collect()
    stages["close"] = _rss()
    return {"stages": stages, "load_s": round(load_s, 2), "first_query_ms": round(first_query_ms, 1),
            "query_p50_ms": round(statistics.median(samples), 2),
            "batch_texts_per_s": round(len(texts["passages"]) / statistics.median(batch_s), 1),
            "calls_s": round(calls_s, 2), "large_batch_s": round(large_s, 2), "graph_mb": round(size_bytes / MB, 1),
            "describe": describe,
            "closed_with": closed_with}


# ---- the parent: texts, the configurations, the report ----------------------------------------------------------

def mixed_calls(corpus: list[str], query_pool: list[str], count: int, seed: int = SEED) -> list[list[str]]:
    """`count` encode calls: SINGLE_SHARE one query, FEW_SHARE a few corpus texts, the rest a batch of them."""
    rng = random.Random(seed)
    calls = []
    for _ in range(count):
        draw = rng.random()
        if draw < SINGLE_SHARE:
            calls.append([rng.choice(query_pool)])
        else:
            size = rng.randint(*(FEW_TEXTS if draw < SINGLE_SHARE + FEW_SHARE else MANY_TEXTS))
            calls.append(rng.sample(corpus, size))
    return calls


def build_texts(export: Path, calls: int) -> dict:
    """The query, the 64 passages (~128 tokens) and the mixed calls, from the benchmark prose."""
    sys.path.insert(0, str(HERE))
    from texts import build_texts as cut

    texts = cut(export / "tokenizer.json", 300, passages=PASSAGES)
    queries = [" ".join(text.split()[:rng_words]) for text, rng_words in
               zip(texts.corpus, random.Random(SEED).choices(range(3, 14), k=len(texts.corpus)))]
    return {"query": texts.query, "passages": texts.passages,
            "calls": mixed_calls(texts.corpus, [texts.query, *queries], calls),
            "token_counts": texts.token_counts}


def shape_name(export: Path, manifest: dict) -> str:
    """'22x768' (layers x hidden size) from the config.json the export carries, else the export's folder name."""
    try:
        config = json.loads((export / "config.json").read_text())
        return f"{config['num_hidden_layers']}x{config['hidden_size']}"
    except (OSError, ValueError, KeyError):
        return export.name


def installed_pairs(manifest: dict, variants: list[str] | None) -> list[tuple[str, str]]:
    import importlib.util

    engines = {"onnx": ("onnxruntime", "onnxruntime"), "openvino": ("openvino", "openvino")}
    pairs = []
    for entry in manifest["variants"]:
        backend, module = engines.get(entry["format"], (None, None))
        if backend and importlib.util.find_spec(module) and (not variants or entry["dtype"] in variants):
            pairs.append((entry["dtype"], backend))
    return pairs


def weights_layout(manifest: dict, variant: str, backend: str) -> str:
    """", external data" when the variant's ONNX graphs keep their weights in FILE.onnx_data (export
    --external-data), which changes what loading costs."""
    if backend != "onnxruntime":
        return ""
    files = [f["path"] for entry in manifest["variants"] if entry["format"] == "onnx" and entry["dtype"] == variant
             for f in entry["files"]]
    return ", external data" if any(path.endswith(".onnx_data") for path in files) else ""


def run_child(spec: dict, env: dict[str, str]) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                            text=True, env={**os.environ, **env}, timeout=7200)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else
                f"exit {result.returncode}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def median_run(runs: list[dict]) -> dict:
    """The run with the median mixed-calls time (all its figures together), plus the spread of the speeds."""
    good = [run for run in runs if "error" not in run]
    if not good:
        return runs[0]
    chosen = sorted(good, key=lambda run: run["calls_s"])[len(good) // 2]
    return {**chosen, "repeats": len(good),
            "query_p50_ms_all": [run["query_p50_ms"] for run in good],
            "batch_texts_per_s_all": [run["batch_texts_per_s"] for run in good],
            "calls_s_all": [run["calls_s"] for run in good]}


def target_mb(graph_mb: float) -> float:
    """The issue's bound on RSS after the mixed calls: 1.5x the loaded graph file + 120 MB."""
    return 1.5 * graph_mb + 120


def table(rows: list[dict], calls: int) -> str:
    head = ("| shape | variant | backend | tree | options | graph MB | import | load | load peak | 1 query | "
            f"64 passages | {calls:,} calls | target | large batch | close - import | query p50 ms | "
            "batch texts/s | calls s |")
    lines = [head, "|" + "---|" * 4 + "---|" + "---:|" * 13]
    for row in rows:
        result = row["result"]
        label = [row["shape"], row["variant"], row["backend"], row["tree"], row["options"]]
        if "error" in result:
            lines.append("| " + " | ".join(label) + f" | error: {result['error'][:120]} |" + " |" * 12)
            continue
        stage = result["stages"]
        graph = result["graph_mb"]
        calls = stage["calls"]["rss"]
        ok = "**" if calls > target_mb(graph) else ""
        lines.append("| " + " | ".join(label) + " | " + " | ".join([
            f"{graph:.0f}", f"{stage['import']['rss']:.0f}", f"{stage['load']['rss']:.0f}",
            f"{stage['load']['peak']:.0f}",
            f"{stage['query']['rss']:.0f}", f"{stage['batch']['rss']:.0f}",
            f"{ok}{calls:.0f} ({calls / graph:.1f}x){ok}", f"{target_mb(graph):.0f}", f"{stage['large']['rss']:.0f}",
            f"{stage['close']['rss'] - stage['import']['rss']:+.0f}", f"{result['query_p50_ms']:.2f}",
            f"{result['batch_texts_per_s']:.1f}", f"{result['calls_s']:.1f}"]) + " |")
    return "\n".join(lines)


def speed_ratios(rows: list[dict]) -> list[str]:
    """This tree's speed against the baseline's for each configuration measured by both (>1: this tree faster)."""
    out = []
    baseline = {(r["shape"], r["variant"], r["backend"]): r["result"] for r in rows
                if r["tree"] == "baseline" and "error" not in r["result"]}
    for row in rows:
        key = (row["shape"], row["variant"], row["backend"])
        if row["tree"] == "baseline" or key not in baseline or "error" in row["result"]:
            continue
        old, new = baseline[key], row["result"]
        out.append(f"- {row['shape']} {row['variant']} {row['backend']} [{row['options']}]: query "
                   f"{old['query_p50_ms'] / new['query_p50_ms']:.3f}x, batch "
                   f"{new['batch_texts_per_s'] / old['batch_texts_per_s']:.3f}x, mixed calls "
                   f"{old['calls_s'] / new['calls_s']:.3f}x, RSS after the calls "
                   f"{new['stages']['calls']['rss'] / old['stages']['calls']['rss']:.2f}x the baseline's")
    return out


def parse_config(text: str) -> tuple[str, dict]:
    """LABEL=JSON, the JSON an object with optional "load" (Embedder.load keywords), "env" (variables) and
    "backends" (the backends it applies to; default all)."""
    label, _, body = text.partition("=")
    value = json.loads(body) if body else {}
    unknown = set(value) - {"load", "env", "backends"}
    if unknown:
        raise SystemExit(f"--config {label}: unknown keys {sorted(unknown)}; use \"load\", \"env\", \"backends\"")
    return label, {"load": value.get("load", {}), "env": value.get("env", {}), "backends": value.get("backends")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("exports", nargs="*", type=Path, help="export directories (edgembed export's output)")
    parser.add_argument("--variants", nargs="+", help="variants to measure (default: every one exported)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per configuration (median kept)")
    parser.add_argument("--baseline", type=Path, help="another edgembed source tree to measure the same way")
    parser.add_argument("--source", type=Path,
                        help="the source tree of the 'this' rows (default: the installed edgembed); a snapshot "
                             "(git archive) keeps a long run from seeing later edits")
    parser.add_argument("--config", action="append", default=[], metavar="LABEL=JSON",
                        help='extra configurations of this tree, e.g. \'streams1={"load": {"streams": 1}}\'')
    parser.add_argument("--out", type=Path, help="directory for memory.json and memory.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    sys.path.insert(0, str(HERE))
    from run import OtherLoad, git_state, machine_info, versions

    configs = [("default", {"load": {}, "env": {}}), *map(parse_config, args.config)]
    trees = ([("baseline", str(args.baseline.resolve()))] if args.baseline else []) + [
        ("this", str(args.source.resolve()) if args.source else None)]
    other = OtherLoad()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for export in args.exports:
            manifest = json.loads((export / "manifest.json").read_text())
            texts = build_texts(export, args.calls)
            texts_file = Path(scratch) / f"{export.name}.json"
            texts_file.write_text(json.dumps(texts))
            for variant, backend in installed_pairs(manifest, args.variants):
                plan = [(tree, source, label, config) for label, config in configs for tree, source in trees
                        if (tree == "this" or label == "default")
                        and backend in (config.get("backends") or [backend])]
                runs: dict[int, list[dict]] = {index: [] for index in range(len(plan))}
                for _ in range(args.repeats):  # interleaved: a change in the machine's load hits every row
                    for index, (tree, source, label, config) in enumerate(plan):
                        spec = {"export": str(export.resolve()), "variant": variant, "backend": backend,
                                "threads": args.threads, "load": config["load"], "texts": str(texts_file),
                                "source": source, "engine_module": backend}
                        print(f"{export.name} {variant} {backend} {tree} {label} ...", file=sys.stderr, flush=True)
                        runs[index].append(run_child(spec, config["env"]))
                layout = weights_layout(manifest, variant, backend)
                for index, (tree, _, label, config) in enumerate(plan):
                    rows.append({"export": str(export), "shape": shape_name(export, manifest), "variant": variant,
                                 "backend": backend, "tree": tree, "options": label + layout, "config": config,
                                 "result": median_run(runs[index])})
                print(table(rows[-len(plan):], args.calls), file=sys.stderr, flush=True)
    info = machine_info()
    results = {"command": "python " + " ".join([Path(__file__).relative_to(HERE.parent).as_posix(),
                                                *(argv if argv is not None else sys.argv[1:])]),
               "machine": info, "versions": versions(), "git": git_state(), "threads": args.threads,
               "calls": args.calls, "other_load_cores": other.cores(), "rows": rows}
    report = markdown(results)
    print(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "memory.json").write_text(json.dumps(results, indent=1))
        (args.out / "memory.md").write_text(report)
    return 0


def markdown(results: dict) -> str:
    info = results["machine"]
    flags = ", ".join(flag for flag, present in info["flags"].items() if present)
    lines = ["# edgembed memory", "", f"`{results['command']}`", "",
             f"{info['cpu']} · {info['cores']} cores · flags: {flags} · {results['threads']} threads · "
             f"git {results['git']} · other processes used {results['other_load_cores']} cores on average", "",
             "RSS in MB of one process (VmRSS; `load peak`: VmHWM after load). `target` = 1.5x graph + 120 MB, "
             "the bound on RSS after the "
             f"{results['calls']:,} mixed calls (bold: over it); `close - import` = RSS after close() (or `del` "
             "where there is no close) minus RSS after the import, before load.", "",
             table(results["rows"], results["calls"]), ""]
    ratios = speed_ratios(results["rows"])
    if ratios:
        lines += ["Speed of this tree against the baseline in the same run (>1: faster):", "", *ratios, ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
