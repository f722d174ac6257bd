"""Long documents: time and peak memory to embed one document of 512 to 8192 tokens.

    python benchmarks/long_documents.py --model modernbert-base --lengths 128 512 2048 8192 --threads 2

Every (engine, length) runs in a fresh interpreter, so its peak RSS (model + activations) is its own: the
PyTorch reference, and edgembed's q8 and fp32 variants on both backends from the efficient export (the default)
and from `--attention standard` (the before). Time is the median of the repeats after one warm-up call. The
ratio column is the PyTorch reference's time over the engine's, at the same length, in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = ("q8", "fp32")
BACKENDS = {"onnxruntime": "ort", "openvino": "ov"}
TIME_BUDGET_S = 30.0  # per (engine, length): stop repeating once the timed calls add up to this


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="modernbert-base", choices=("modernbert-base", "modernbert-large"))
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 2048, 8192])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed calls per (engine, length) after a warm-up; fewer once 30 s are spent")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--work-dir", type=Path, default=HERE / ".cache")
    parser.add_argument("--child", nargs=3, metavar=("SPEC", "LENGTH", "REPEATS"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def document(tokenizer_file: Path, length: int) -> str:
    """Real prose with more than `length` tokens; every engine truncates it to exactly `length`."""
    from texts import prose_paragraphs
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_truncation()
    paragraphs, text, count = prose_paragraphs(), "", 0
    while count <= length:  # paragraph by paragraph: a much longer text would make tokenizing the cost
        for paragraph in paragraphs:
            text += paragraph + " "
            count += len(tokenizer.encode(paragraph).ids)
            if count > length:
                break
    return text


def child(spec_json: str, length: int, repeats: int) -> None:
    """Load one engine, embed one document `1 + repeats` times, print seconds and peak RSS as JSON."""
    from engines import EngineSpec, load_engine

    spec = EngineSpec(**json.loads(spec_json))
    text = document(Path(spec.export_dir) / "tokenizer.json", length)
    engine = load_engine(spec)
    vector = engine.encode([text], 1)  # warm-up: first-call allocations and kernel choices
    times: list[float] = []
    while len(times) < repeats and sum(times) < TIME_BUDGET_S:
        started = time.perf_counter()
        engine.encode([text], 1)
        times.append(time.perf_counter() - started)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    print("LONGDOC " + json.dumps({"seconds": statistics.median(times), "all_seconds": times,
                                   "peak_rss_mb": round(peak_mb, 1), "dim": int(vector.shape[-1])}), flush=True)


def measure(spec, length: int, repeats: int) -> dict:
    command = [sys.executable, __file__, "--child", json.dumps(spec.to_dict()), str(length), str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=HERE)
    for line in done.stdout.splitlines():
        if line.startswith("LONGDOC "):
            return json.loads(line[len("LONGDOC "):])
    return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1][:300]}


def specs(prepared: dict, threads: int, length: int, variants: Sequence[str]) -> list:
    """The reference, then each variant x backend from the efficient and the standard export."""
    from engines import REFERENCE, EngineSpec

    efficient = prepared["efficient"]
    common = dict(threads=threads, max_length=length, hidden_size=int(efficient.manifest["hidden_size"]))
    found = [EngineSpec(REFERENCE, "pytorch", str(efficient.source_dir), str(efficient.export_dir), **common)]
    for attention, model in prepared.items():
        for variant in variants:
            for backend, short in BACKENDS.items():
                found.append(EngineSpec(f"{short}-{variant} {attention}", "edgembed", str(model.source_dir),
                                        str(model.export_dir), backend=backend, variant=variant, **common))
    return found


def markdown(results: dict) -> str:
    lengths = results["lengths"]
    head = " | ".join(f"{n} tokens: s / MB / x" for n in lengths)
    cpu = results.get("machine", {}).get("cpu", "unknown CPU")
    lines = [f"Long documents, {results['model']}, {results['threads']} threads on {cpu}, one document per call; "
             "time is the median of the repeats, MB is the process's peak RSS, x is PyTorch's time over the "
             "engine's at the same length.", "", f"| engine | {head} |", "|---" * (len(lengths) + 1) + "|"]
    for name, rows in results["engines"].items():
        cells = []
        for n in lengths:
            row, ref = rows.get(str(n), {}), results["engines"]["pytorch"].get(str(n), {})
            if "seconds" not in row:
                cells.append(row.get("error", "-")[:60])
                continue
            ratio = f"{ref['seconds'] / row['seconds']:.2f}x" if "seconds" in ref else "-"
            cells.append(f"{row['seconds']:.3f} / {row['peak_rss_mb']:.0f} / {ratio}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nCommand: `{results['command']}`\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(HERE))
    from run import log, machine_info, pin_threads, versions

    pin_threads(args.threads)
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return 0
    from models import prepare

    prepared = {attention: prepare(args.model, args.work_dir, log, attention, tuple(args.variants))
                for attention in ("efficient", "standard")}
    results = {"command": "python benchmarks/long_documents.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "model": args.model, "threads": args.threads, "lengths": args.lengths, "repeats": args.repeats,
               "machine": machine_info(), "versions": versions(), "engines": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    for length in args.lengths:
        for spec in specs(prepared, args.threads, length, args.variants):
            log(f"{spec.name} at {length} tokens")
            row = measure(spec, length, args.repeats)
            results["engines"].setdefault(spec.name, {})[str(length)] = row
            log(f"  {json.dumps(row)}")
            (args.out / "long_documents.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "long_documents.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
