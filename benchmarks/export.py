"""Wall time and peak memory of `edgembed export` against the peer pipeline (optimum-cli + quantize_dynamic).

    python benchmarks/export.py --models modernbert-base modernbert-large --out benchmarks/results/export

Every command runs as a child process; the process tree's resident memory (the child's RSS plus the memory
only its descendants hold) is sampled every SAMPLE_SECONDS, and the kernel's own high-water mark of the
largest process (ru_maxrss, what /usr/bin/time reports) is read when it ends; the peak is the larger of the two.
Each progress line of the export is timestamped, so the peak and the
memory at the start and end of every step land in the results (the per-step profile of docs/export.md).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from models import MODERNBERT, build_modernbert
from run import OtherLoad, git_state, machine_info, versions

HERE = Path(__file__).resolve().parent
SAMPLE_SECONDS = 0.2
STEP_LINE = re.compile(r"^\[(\d+)/(\d+)\] (.*)")
# What each model is exported with: the README's commands, the retrieval check skipped, and the peer. Runs with
# "-turned" make the q8 with --q8-recipe turned; "-no-eval" skips the retrieval check.
RUNS = {
    "modernbert-base": ("edgembed", "peer"),
    "modernbert-large": ("edgembed", "edgembed-no-eval", "peer"),
}
CHOICES = ("edgembed", "edgembed-no-eval", "edgembed-turned", "edgembed-turned-no-eval", "peer")
QUANTIZE = {"modernbert-base": ("fp32", "q8"), "modernbert-large": ("q8",)}
PEER_QUANTIZE = ("import sys; from onnxruntime.quantization import QuantType, quantize_dynamic; "
                 "quantize_dynamic(sys.argv[1], sys.argv[2], weight_type=QuantType.QInt8, per_channel=True)")


@dataclass
class Step:
    """One progress step of a run: when it started, how long it took, and the memory while it ran."""

    name: str
    start_seconds: float
    seconds: float = 0.0
    rss_at_start_mb: float = 0.0
    peak_rss_mb: float = 0.0


@dataclass
class Measured:
    """One command: its wall time, the peak of its process tree's memory and its steps."""

    command: list[str]
    exit_code: int
    wall_seconds: float
    peak_tree_rss_mb: float  # sampled: the process's RSS plus its descendants' unique memory
    max_process_rss_mb: float  # the kernel's high-water mark of the largest single process
    log: str
    steps: list[Step] = field(default_factory=list)

    @property
    def peak_rss_mb(self) -> float:
        return max(self.peak_tree_rss_mb, self.max_process_rss_mb)


def tree_rss(psutil, process) -> int:
    """Resident bytes of `process` plus the memory only its descendants hold (their unique set size).

    A plain sum of RSS would count twice the pages a forked child shares with its parent: OpenVINO's
    telemetry forks the exporting process (gigabytes) for every event it sends.
    """
    try:
        total = process.memory_info().rss
        children = process.children(recursive=True)
    except psutil.Error:
        return 0
    for child in children:
        try:
            total += child.memory_full_info().uss
        except psutil.Error:
            pass
    return total


def measure(command: Sequence[str], log_path: Path, env: dict[str, str] | None = None,
            label: str | None = None) -> Measured:
    """Run `command`, its stdout and stderr into `log_path` with elapsed seconds; sample its tree's memory."""
    import psutil

    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    child = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, **(env or {})}, bufsize=1)
    process = psutil.Process(child.pid)
    samples: list[tuple[float, int]] = []
    lines: list[tuple[float, str]] = []

    def read() -> None:
        with log_path.open("w") as log:
            log.write(f"$ {shlex.join(command)}\n")
            for line in child.stdout:
                moment = time.monotonic() - started
                lines.append((moment, line.rstrip("\n")))
                log.write(f"[{moment:8.1f}s] {line}")
                log.flush()
                if label:
                    print(f"  {label} [{moment:7.1f}s] {line.rstrip()}", file=sys.stderr, flush=True)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    status = None
    while status is None:
        samples.append((time.monotonic() - started, tree_rss(psutil, process)))
        time.sleep(SAMPLE_SECONDS)
        waited = os.wait4(child.pid, os.WNOHANG)
        if waited[0] == child.pid:
            status, usage = waited[1], waited[2]
    wall = time.monotonic() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    return Measured(command=list(command), exit_code=child.returncode, wall_seconds=round(wall, 1),
                    peak_tree_rss_mb=round(max(rss for _, rss in samples) / 2**20, 1),
                    max_process_rss_mb=round(usage.ru_maxrss / 1024, 1), log=str(log_path),
                    steps=steps_of(lines, samples, wall))


def steps_of(lines: list[tuple[float, str]], samples: list[tuple[float, int]], wall: float) -> list[Step]:
    """The `[n/N] ...` steps of an export's progress, with the tree's memory at their start and their peak."""
    steps: list[Step] = []
    for moment, line in lines:
        found = STEP_LINE.match(line.strip())
        if found:
            steps.append(Step(name=found.group(3), start_seconds=round(moment, 1)))
    for number, step in enumerate(steps):
        end = steps[number + 1].start_seconds if number + 1 < len(steps) else wall
        step.seconds = round(end - step.start_seconds, 1)
        before = [rss for moment, rss in samples if moment <= step.start_seconds] or [0]
        inside = [rss for moment, rss in samples if step.start_seconds <= moment <= end]
        step.rss_at_start_mb = round(before[-1] / 2**20, 1)
        step.peak_rss_mb = round(max(inside + before[-1:]) / 2**20, 1)
    return steps


def edgembed_command(checkpoint: Path, out: Path, quantize: Sequence[str], run: str) -> list[str]:
    command = [sys.executable, "-m", "edgembed", "export", str(checkpoint), "-o", str(out),
               "--quantize", *quantize, "--overwrite"]
    command += ["--q8-recipe", "turned"] if "-turned" in run else []
    return command + (["--eval-size", "0", "0"] if run.endswith("-no-eval") else [])


def peer_commands(checkpoint: Path, out: Path) -> list[list[str]]:
    """optimum-cli's ONNX export (with its own atol check), then ONNX Runtime's per-channel dynamic int8."""
    cli = Path(sys.executable).with_name("optimum-cli")
    return [[str(cli), "export", "onnx", "--model", str(checkpoint), "--task", "feature-extraction", str(out)],
            [sys.executable, "-c", PEER_QUANTIZE, str(out / "model.onnx"), str(out / "model_quantized.onnx")]]


def run_model(name: str, runs: Sequence[str], work_dir: Path, logs: Path) -> dict:
    checkpoint = work_dir / name / "checkpoint"
    if not (checkpoint / "modules.json").is_file():
        print(f"{name}: building the random-weight checkpoint in {checkpoint}", file=sys.stderr, flush=True)
        build_modernbert(checkpoint, MODERNBERT[name])
    results = {}
    for run in runs:
        out = work_dir / name / f"out-{run}"
        shutil.rmtree(out, ignore_errors=True)
        load = OtherLoad()
        if run == "peer":
            parts = [measure(command, logs / f"{name}-peer-{number}.log", label=f"{name} peer")
                     for number, command in enumerate(peer_commands(checkpoint, out))]
        else:
            command = edgembed_command(checkpoint, out, QUANTIZE[name], run)
            parts = [measure(command, logs / f"{name}-{run}.log", label=f"{name} {run}")]
        results[run] = summary(parts, load.cores(), out)
        print(f"{name} {run}: {results[run]['wall_seconds']:.0f} s, peak RSS {results[run]['peak_rss_mb']:.0f} MB",
              file=sys.stderr, flush=True)
    return results


def summary(parts: list[Measured], other_load: float | None, out: Path) -> dict:
    """One run of one or more commands in sequence: their summed time and their highest peak."""
    manifest = out / "manifest.json"
    variants = {}
    if manifest.is_file():
        for variant in json.loads(manifest.read_text())["variants"]:
            fidelity, evaluation = variant.get("fidelity") or {}, variant.get("evaluation") or {}
            variants[f"{variant['format']}/{variant['dtype']}"] = {
                "cosine_min": fidelity.get("cosine_min"), "cosine_mean": fidelity.get("cosine_mean"),
                "retrieval_cosine_min": evaluation.get("cosine_min"), "top10_overlap": evaluation.get("top10_overlap")}
    return {"commands": [shlex.join(p.command) for p in parts], "exit_codes": [p.exit_code for p in parts],
            "wall_seconds": round(sum(p.wall_seconds for p in parts), 1),
            "peak_rss_mb": max(p.peak_rss_mb for p in parts), "other_load_cores": other_load,
            "parts": [asdict(p) for p in parts], "variants": variants}


def markdown(results: dict) -> str:
    machine = results["machine"]
    flags = ", ".join(flag for flag, present in machine["flags"].items() if present)
    lines = [f"# Export: wall time and peak RSS ({results['date']})", "",
             f"{machine['cpu']} ({flags}), {machine['cores']} cores, {machine.get('memory_gb')} GB. "
             f"Git {results['git']}. Command: `{results['command']}`"
             + (f" with PYTHONPATH={results['python_path']}" if results.get("python_path") else "") + ".",
             *([results["note"]] if results.get("note") else []), "",
             "| model | run | wall | peak RSS (tree) | vs peer | other load | exit |",
             "|---|---|---:|---:|---:|---:|---|"]
    for model, runs in results["models"].items():
        peer = runs.get("peer", {}).get("peak_rss_mb")
        for run, entry in runs.items():
            ratio = f"{entry['peak_rss_mb'] / peer:.2f}x" if peer else "-"
            minutes, seconds = divmod(entry["wall_seconds"], 60)
            lines.append(f"| {model} | {run} | {minutes:.0f} min {seconds:.0f} s "
                         f"| {entry['peak_rss_mb'] / 1024:.2f} GB "
                         f"| {ratio} | {entry['other_load_cores']} | {entry['exit_codes']} |")
    lines += ["", "Commands:", ""]
    for model, runs in results["models"].items():
        for run, entry in runs.items():
            lines += [f"- {model} {run}: " + " && ".join(f"`{c}`" for c in entry["commands"])]
    lines += ["", "## Steps", "", "| model | run | step | seconds | RSS at start | peak RSS |",
              "|---|---|---|---:|---:|---:|"]
    for model, runs in results["models"].items():
        for run, entry in runs.items():
            for part in entry["parts"]:
                for step in part["steps"]:
                    lines.append(f"| {model} | {run} | {step['name']} | {step['seconds']:.0f} | "
                                 f"{step['rss_at_start_mb'] / 1024:.2f} GB | {step['peak_rss_mb'] / 1024:.2f} GB |")
    lines += ["", "## Fidelity (cosine to PyTorch on the validation texts; retrieval check when run)", "",
              "| model | run | variant | cos min | cos mean | retrieval cos min | top-10 |",
              "|---|---|---|---:|---:|---:|---:|"]
    for model, runs in results["models"].items():
        for run, entry in runs.items():
            for variant, figures in entry["variants"].items():
                lines.append(f"| {model} | {run} | {variant} | {figures['cosine_min']} | {figures['cosine_mean']} | "
                             f"{figures['retrieval_cosine_min']} | {figures['top10_overlap']} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--runs", nargs="+", choices=CHOICES,
                        help="these runs (default: the model's runs in RUNS)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "export")
    parser.add_argument("--work-dir", type=Path, default=HERE / ".cache")
    parser.add_argument("--note", default="", help="a line for the report, e.g. which edgembed code ran (PYTHONPATH)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"command": shlex.join(["python", "benchmarks/export.py", *(argv if argv is not None else sys.argv[1:])]),
               "date": datetime.date.today().isoformat(), "git": git_state(), "machine": machine_info(),
               "versions": versions(), "note": args.note, "python_path": os.environ.get("PYTHONPATH", ""), "models": {}}
    for name in args.models:
        runs = args.runs or list(RUNS[name])
        results["models"][name] = run_model(name, runs, args.work_dir, args.out / "logs")
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
