"""Benchmark edgembed against PyTorch, sentence-transformers and fastembed in one run.

    python benchmarks/run.py --models minilm modernbert-base modernbert-large --threads 2 --out benchmarks/results

See benchmarks/README.md for what is measured and how to read the table.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from models import QUANTIZE

if TYPE_CHECKING:  # imported for real in main(), after the thread variables are set
    from engines import EngineSpec
    from texts import TextSet
    from workloads import Settings

HERE = Path(__file__).resolve().parent
MODEL_NAMES = ("minilm", "modernbert-base", "modernbert-large")
WORKLOAD_NAMES = ("query", "batch", "corpus", "cold")
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
PACKAGES = ("edgembed", "torch", "transformers", "sentence-transformers", "optimum", "optimum-onnx",
            "onnxruntime", "openvino", "fastembed", "tokenizers", "numpy")
_START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="for every engine (default: all cores)")
    parser.add_argument("--engines", nargs="+", metavar="PATTERN",
                        help="only engines matching these names or globs, e.g. 'edgembed-ort-*' st-torch "
                             "(the pytorch reference always runs)")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOAD_NAMES, default=list(WORKLOAD_NAMES))
    parser.add_argument("--quantize", nargs="+", metavar="VARIANT", default=list(QUANTIZE),
                        help="edgembed variants to export and measure (default: %(default)s; fewer export faster)")
    parser.add_argument("--quick", action="store_true", help="few repeats and a 200-text corpus, for smoke tests")
    parser.add_argument("--corpus-size", type=int, help="texts in the corpus workload (default: 2000, --quick 200)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--work-dir", type=Path, default=HERE / ".cache",
                        help="where checkpoints and exports are built once and reused")
    return parser.parse_args(argv)


def pin_threads(threads: int) -> None:
    """Cap the thread pools that read environment variables (BLAS, OpenMP, the tokenizers' Rayon pool).

    Set before numpy or any engine is imported; cold-start children inherit them.
    """
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # children exec at once; no fork hazard


def machine_info() -> dict:
    """CPU model, the ISA flags that matter for int8/bf16 kernels, cores, memory, load."""
    cpu, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and cpu is None:
                cpu = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    cpu = cpu or platform.processor() or "unknown"
    info = {"cpu": cpu, "flags": {flag: flag in flags for flag in CPU_FLAGS}, "cores": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version()}
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    if hasattr(os, "getloadavg"):
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def git_state() -> str:
    try:
        head = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(HERE), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class OtherLoad:
    """Average number of cores used by other processes (and the hypervisor) since creation.

    Machine-wide busy CPU time minus this process's and its waited children's, over wall time:
    a benchmark on a busy machine is visible in its results instead of silently slow.
    """

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            import psutil
        except ImportError:
            return None
        times = psutil.cpu_times()
        busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
        own = os.times()
        return busy, own.user + own.system + own.children_user + own.children_system, time.monotonic()

    def cores(self) -> float | None:
        end = self._sample()
        if self._start is None or end is None or end[2] <= self._start[2]:
            return None
        other = (end[0] - self._start[0]) - (end[1] - self._start[1])
        return round(max(other, 0.0) / (end[2] - self._start[2]), 2)


def error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= 1500 else text[:1500] + " ..."


def run_engine(spec: EngineSpec, texts: TextSet, settings: Settings, workloads: list[str],
               reference: dict) -> dict:
    """Load one engine and run the in-process workloads; failures are recorded, never raised."""
    from engines import REFERENCE, load_engine
    from workloads import cosine_min, measure_batch, measure_corpus, measure_query

    log(f"  {spec.name}: loading")
    started, load = time.perf_counter(), OtherLoad()
    try:
        engine = load_engine(spec)
    except Exception as exc:  # any library, any failure: record it and go on
        log(f"  {spec.name}: failed to load: {error_text(exc)[:200]}")
        return {"error": error_text(exc)}
    entry: dict = {"load_s": time.perf_counter() - started}
    vectors = {}
    steps = {"query": lambda: (measure_query(engine, texts.query, settings), None),
             "batch": lambda: measure_batch(engine, texts.passages, settings),
             "corpus": lambda: measure_corpus(engine, texts.corpus, settings)}
    for workload in [w for w in WORKLOAD_NAMES if w in workloads and w in steps]:
        try:
            entry[workload], vectors[workload] = steps[workload]()
            log(f"  {spec.name}: {workload} " + ", ".join(f"{k} {v:.4g}" for k, v in entry[workload].items()
                                                           if isinstance(v, float)))
        except Exception as exc:
            log(f"  {spec.name}: {workload} failed: {error_text(exc)[:200]}")
            entry[workload] = {"error": error_text(exc)}
    if spec.name == REFERENCE:
        reference.update(vectors)
    for workload in ("corpus", "batch"):
        mine, ref = vectors.get(workload), reference.get(workload)
        if mine is not None and ref is not None:
            if mine.shape == ref.shape:
                entry["cosine_min"] = cosine_min(mine, ref)
            else:
                entry["shape_mismatch"] = f"{workload}: {mine.shape} vs the reference's {ref.shape}"
            entry["cosine_on"] = workload
            break
    entry["other_load_cores"] = load.cores()
    engine = None  # the model goes before the next engine loads (the steps' closures share this name)
    gc.collect()
    return entry


def run_model(name: str, args: argparse.Namespace, settings: Settings, results: dict,
              save: Callable[[], None]) -> None:
    """Prepare one model, then measure every engine on it; results[models][name] fills as it goes."""
    from engines import engine_specs
    from models import prepare
    from texts import build_texts
    from workloads import measure_cold

    log(f"{name}: preparing")
    try:
        prepared = prepare(name, args.work_dir, log, quantize=tuple(args.quantize))
        manifest = prepared.manifest
    except Exception as exc:
        log(f"{name}: {error_text(exc)}")
        results["models"][name] = {"error": error_text(exc)}
        return
    texts = build_texts(prepared.export_dir / manifest.get("tokenizer_file", "tokenizer.json"), settings.corpus_size)
    model: dict = {
        "source_dir": str(prepared.source_dir), "export_dir": str(prepared.export_dir),
        "random_weights": prepared.random_weights, "max_length": manifest["max_length"],
        "hidden_size": manifest["hidden_size"],
        "fidelity": {f"{v['format']}/{v['dtype']}": (v.get("fidelity") or {}).get("cosine_min")
                     for v in manifest["variants"]},
        "texts": {"query": texts.query, "token_counts": texts.token_counts}, "engines": {}}
    results["models"][name] = model
    log(f"{name}: texts {json.dumps(texts.token_counts)}")
    specs = engine_specs(str(prepared.source_dir), str(prepared.export_dir), manifest, args.threads, args.engines)
    reference: dict = {}
    for spec in specs:
        model["engines"][spec.name] = run_engine(spec, texts, settings, args.workloads, reference)
        save()
    if "cold" not in args.workloads:
        return
    for spec in specs:
        entry = model["engines"][spec.name]
        if "error" in entry:
            continue  # it did not load in this process either
        log(f"  {spec.name}: cold start x{settings.cold_repeats}")
        try:
            entry["cold"] = measure_cold(spec, texts.query, settings)
            log(f"  {spec.name}: cold {entry['cold']['median_s']:.3f} s")
        except Exception as exc:
            entry["cold"] = {"error": error_text(exc)}
            log(f"  {spec.name}: cold failed: {error_text(exc)[:200]}")
        save()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    pin_threads(args.threads)
    sys.path.insert(0, str(HERE))
    import report
    from workloads import FULL, QUICK

    settings = QUICK if args.quick else FULL
    if args.corpus_size:
        settings = dataclasses.replace(settings, corpus_size=args.corpus_size)
    args.out.mkdir(parents=True, exist_ok=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "command": shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(["run.py", *argv]),
        "cwd": os.getcwd(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "threads": args.threads, "quick": args.quick, "settings": vars(settings), "workloads": args.workloads,
        "engine_filter": args.engines, "machine": machine_info(), "versions": versions(),
        "edgembed_git": git_state(), "models": {}}
    json_path = args.out / "results.json"
    run_load = OtherLoad()

    def save() -> None:
        results["machine"]["other_load_cores"] = run_load.cores()
        json_path.write_text(json.dumps(results, indent=1) + "\n")

    for name in args.models:
        run_model(name, args, settings, results, save)
        save()
    results["duration_s"] = round(time.perf_counter() - _START, 1)
    if hasattr(os, "getloadavg"):
        results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    save()
    (args.out / "results.md").write_text(report.markdown(results) + "\n")
    try:
        report.chart(results, args.out / "speedup.png")
    except Exception as exc:  # matplotlib missing or broken: the tables still stand
        log(f"chart not written: {error_text(exc)}")
    print(report.terminal(results))
    log(f"wrote {json_path}, {args.out / 'results.md'}, {args.out / 'speedup.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
