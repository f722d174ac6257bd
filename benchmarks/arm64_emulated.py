"""Does ONNX Runtime give the same q8 vectors on ARM64 CPUs as on an x86 CPU with VNNI? Measured under qemu-user.

The q8 ONNX file multiplies u8 activations by s8 weights at full range (MatMulInteger, MatMulIntegerToFloat). On
x86 without VNNI, MLAS sums pairs of those products in saturating 16-bit lanes, so edgembed ships a uint8 twin for
those CPUs. This script runs the same export natively (the reference: this x86 host) and as each emulated ARM64
CPU, and prints, per CPU: what the CPU reports, the int8 path edgembed detects, the file it loads, whether a bare
u8 x s8 MatMulInteger returns exact int32 sums, and how far the q8 and fp32 vectors are from the native ones.
qemu runs the real aarch64 wheels instruction by instruction, so integer results are what the hardware gives;
timings are meaningless and not reported. See docs/arm64.md for the setup and the measured table.

Needs (see docs/arm64.md): a qemu-user for aarch64 that knows the CPU models (QEMU >= 8.1 for neoverse-v1; 10.0
also emulates /proc/cpuinfo, which edgembed reads for i8mm), an arm64 Debian root file system with python3 and
onnxruntime, numpy and tokenizers for aarch64 under ROOTFS/opt/site, and, on this host, onnx plus the same
onnxruntime version. edgembed itself is taken from this source tree for both sides.

    python benchmarks/arm64_emulated.py --rootfs /work/arm64/rootfs --export /work/arm64/tiny-export \\
        --qemu /work/arm64/qemu-aarch64-10 [--cpus cortex-a72 neoverse-v1] [--texts corpus --count 300] \\
        [--x86-control] [--json benchmarks/results/arm64_emulated.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# qemu CPU model -> the machines it stands for.
ARM_CPUS = {
    "cortex-a53": "Raspberry Pi 3 / Zero 2 W (no dot product)",
    "cortex-a72": "Raspberry Pi 4 (no dot product)",
    "cortex-a76": "Raspberry Pi 5 (dot product)",
    "neoverse-n1": "AWS Graviton 2 (dot product)",
    "neoverse-v1": "AWS Graviton 3 (i8mm, SVE 256-bit)",
    "neoverse-n2": "Armv9 with SVE2 and i8mm (as Graviton 4's Neoverse-V2)",
    "max": "every feature this qemu has, SME included",
}
DEFAULT_CPUS = ("cortex-a53", "cortex-a72", "cortex-a76", "neoverse-n1", "neoverse-v1", "neoverse-n2", "max")
ARM_FLAGS = ("asimddp", "i8mm", "sve", "svei8mm", "sve2", "sme")  # from /proc/cpuinfo, which QEMU >= 8.2 emulates
X86_FEATURES = ("AVX2", "AVX512BW", "AVX512VNNI")  # from numpy (CPUID): qemu-x86_64 shows the host's /proc/cpuinfo
PROBE_SHAPE = (64, 768, 96)  # M, K, N of the bare MatMulInteger: a BERT-base projection's K

WORKER = r'''
import json, platform, re, sys, time
import numpy as np
import onnxruntime as ort
from edgembed.runtime import Embedder, Manifest, int8_path

job = json.load(open(sys.argv[1]))
started = time.time()
try:
    from numpy._core._multiarray_umath import __cpu_features__ as features
except ImportError:
    from numpy.core._multiarray_umath import __cpu_features__ as features
flags = []
for line in open("/proc/cpuinfo"):
    if line.startswith(("Features", "flags")):
        flags = line.split(":", 1)[1].split()
        break
out = {"machine": platform.machine(), "onnxruntime": ort.__version__, "numpy": np.__version__,
       "int8_path": int8_path().name, "numpy_features": sorted(k for k, v in features.items() if v),
       "cpuinfo_flags": flags, "variants": {}}

# A bare u8 x s8 MatMulInteger, weights constant (prepacked, as in the model) and as an input (not prepacked).
probe = np.load(job["probe_data"])
a, b = probe["a"], probe["b"]
exact = a.astype(np.int64) @ b.astype(np.int64)
options = ort.SessionOptions()
options.intra_op_num_threads = job["threads"]
session = ort.InferenceSession(job["probe_model"], options, providers=["CPUExecutionProvider"])
packed, unpacked = session.run(None, {"a": a, "b_input": b})
out["probe"] = {name: {"mismatches": int((got != exact).sum()), "max_error": int(np.abs(got - exact).max()),
                       "entries": int(exact.size)}
                for name, got in (("constant_b", packed), ("input_b", unpacked))}

texts = json.load(open(job["texts"]))
for variant in job["variants"]:
    model = Embedder.load(job["export"], variant=variant, backend=job["backend"], threads=job["threads"], streams=1)
    vectors = model.encode(texts, batch_size=8)
    np.save(f"{job['out_prefix']}-{variant}.npy", vectors)
    describe = model.describe()
    chosen = re.search(r" from (\S+) \(", describe)
    out["variants"][variant] = {
        "describe": describe,
        "file": chosen.group(1) if chosen else Manifest.read(job["export"]).find(job["format"], variant).model_file}
out["seconds"] = round(time.time() - started, 1)
print("RESULT " + json.dumps(out))
'''


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rootfs", type=Path, required=True, help="arm64 root file system with python3")
    parser.add_argument("--site", nargs="+", default=["/opt/site"],
                        help="aarch64 site-packages, paths inside the rootfs (add /opt/site-ov for OpenVINO)")
    parser.add_argument("--backend", choices=["onnxruntime", "openvino"], default="onnxruntime")
    parser.add_argument("--export", type=Path, required=True, help="an edgembed export with fp32 and q8")
    parser.add_argument("--qemu", default=shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static"))
    parser.add_argument("--cpus", nargs="+", default=list(DEFAULT_CPUS), help="qemu -cpu models")
    parser.add_argument("--variants", nargs="+", default=["q8", "fp32"])
    parser.add_argument("--texts", choices=["sentences", "corpus"], default="sentences",
                        help="sentences: 40 pydoc sentences + 4 long paragraphs; corpus: evaluation documents")
    parser.add_argument("--count", type=int, default=300, help="documents for --texts corpus")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--x86-control", action="store_true",
                        help="also run qemu-x86_64 -cpu Haswell (AVX2, no VNNI): with the uint8 twin edgembed "
                             "picks there, and forced onto the u8 x s8 file")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args(argv)
    if not args.qemu or not Path(args.qemu).exists():
        parser.error("no qemu-aarch64 found: pass --qemu (see docs/arm64.md)")
    python = args.rootfs / "usr/bin/python3"
    if not python.exists():
        parser.error(f"{python} does not exist: prepare the rootfs first (docs/arm64.md)")

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="arm64-emulated-"))
    work.mkdir(parents=True, exist_ok=True)
    package_root = _lay_out_package(work / "pkg")
    texts = _texts(args.texts, args.count)
    (work / "texts.json").write_text(json.dumps(texts))
    _write_probe(work)
    print(f"{len(texts)} texts, export {args.export}, work dir {work}", flush=True)

    runs = [("x86 native", [sys.executable], {})]
    runs += [(cpu, [args.qemu, "-L", str(args.rootfs), "-cpu", cpu, str(python)], {}) for cpu in args.cpus]
    if args.x86_control:  # the yardsticks: an exact x86 path off by float rounding only, and saturation
        qemu_x86 = shutil.which("qemu-x86_64") or shutil.which("qemu-x86_64-static")
        if qemu_x86 is None:
            parser.error("--x86-control needs qemu-x86_64 (apt-get install qemu-user)")
        haswell = [qemu_x86, "-cpu", "Haswell"]
        runs.append(("x86 Haswell (AVX2), uint8 twin", [*haswell, sys.executable], {}))
        runs.append(("x86 Haswell (AVX2), u8xs8 file forced", [*haswell, sys.executable],
                     {"EDGEMBED_INT8_PATH": "avx512_vnni"}))

    results = {}
    for index, (name, prefix, extra_env) in enumerate(runs):
        job = {"export": str(args.export.resolve()), "variants": args.variants, "threads": args.threads,
               "backend": args.backend, "format": "onnx" if args.backend == "onnxruntime" else "openvino",
               "texts": str(work / "texts.json"), "probe_model": str(work / "probe.onnx"),
               "probe_data": str(work / "probe.npz"), "out_prefix": str(work / f"run{index}")}
        (work / f"job{index}.json").write_text(json.dumps(job))
        (work / "worker.py").write_text(WORKER)
        python_path = [str(package_root)] + ([] if name.startswith("x86") else args.site)
        env = {key: value for key, value in os.environ.items() if key != "EDGEMBED_INT8_PATH"}
        env.update(extra_env, PYTHONPATH=os.pathsep.join(python_path), OMP_NUM_THREADS=str(args.threads))
        print(f"running {name} ...", flush=True)
        started = time.time()
        command = [*prefix, str(work / "worker.py"), str(work / f"job{index}.json")]
        done = subprocess.run(command, env=env, check=False, capture_output=True, text=True, timeout=6 * 3600)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            print(f"  {name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}", flush=True)
            continue
        result = json.loads(lines[-1][len("RESULT "):])
        result["warnings"] = [line for line in done.stderr.splitlines()
                              if "warning" in line.lower() and "TCG doesn't support" not in line][:5]
        result["wall_seconds"] = round(time.time() - started, 1)
        result["vectors"] = {v: np.load(f"{job['out_prefix']}-{v}.npy") for v in args.variants}
        results[name] = result
        print(f"  done in {result['wall_seconds']} s: int8 path {result['int8_path']}", flush=True)

    if "x86 native" not in results:
        sys.exit("the native run failed: nothing to compare with")
    rows = _compare(results, args.variants)
    print(f"\n{args.backend}, {len(texts)} texts, {_qemu_version(args.qemu)}")
    print(_table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"texts": len(texts), "export": str(args.export), "qemu": _qemu_version(
            args.qemu), "rows": rows}, indent=1))
        print(f"\nwrote {args.json}")


def _lay_out_package(root: Path) -> Path:
    """edgembed as installed (cli/ -> edgembed, runtime/ -> edgembed.runtime), copied from this source tree."""
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(REPO / "cli", root / "edgembed", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "runtime", root / "edgembed" / "runtime", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _texts(kind: str, count: int) -> list[str]:
    from edgembed.evaluation.corpus import documentation_paragraphs, evaluation_set

    if kind == "corpus":
        return evaluation_set()[1][:count]
    from edgembed.export.synthetic import real_sentences


    long_ones = sorted(documentation_paragraphs(), key=len, reverse=True)[:4]  # past 256 tokens: truncated
    return real_sentences(40) + long_ones


def _write_probe(work: Path) -> None:
    """A u8 x s8 MatMulInteger at full range, with a row of 255s against columns of +127/-128 (pair sums up to
    +-65,280: past int16, so a 16-bit pair-sum kernel must saturate)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = PROBE_SHAPE
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(m, k), dtype=np.uint8)
    b = rng.integers(-128, 128, size=(k, n), dtype=np.int8)
    a[0, :] = 255
    b[:, 0], b[:, 1] = 127, -128
    np.savez(work / "probe.npz", a=a, b=b)
    nodes = [helper.make_node("MatMulInteger", ["a", "b_const"], ["constant_b"]),
             helper.make_node("MatMulInteger", ["a", "b_input"], ["input_b"])]
    graph = helper.make_graph(
        nodes, "probe",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k]),
         helper.make_tensor_value_info("b_input", TensorProto.INT8, [k, n])],
        [helper.make_tensor_value_info(name, TensorProto.INT32, [m, n]) for name in ("constant_b", "input_b")],
        initializer=[numpy_helper.from_array(b, "b_const")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8),
              str(work / "probe.onnx"))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _compare(results: dict, variants: list[str]) -> list[dict]:
    native = results["x86 native"]["vectors"]
    rows = []
    for name, result in results.items():
        flags = set(result["cpuinfo_flags"])
        row = {"run": name, "stands_for": ARM_CPUS.get(name, ""), "machine": result["machine"],
               "onnxruntime": result["onnxruntime"], "int8_path": result["int8_path"],
               "numpy_asimddp": "ASIMDDP" in result["numpy_features"], "numpy_sve": "SVE" in result["numpy_features"],
               "features": [flag for flag in ARM_FLAGS if flag in flags] if result["machine"] == "aarch64" else [
                   name.lower() for name in X86_FEATURES if name in result["numpy_features"]],
               "probe": result["probe"], "warnings": result["warnings"], "wall_seconds": result["wall_seconds"]}
        for variant in variants:
            vectors = result["vectors"][variant]
            row[variant] = {"file": result["variants"][variant]["file"],
                            "describe": result["variants"][variant]["describe"],
                            "max_abs_vs_native": float(np.abs(vectors - native[variant]).max()),
                            "cos_min_vs_native": float(_cosines(vectors, native[variant]).min())}
            if variant != "fp32" and "fp32" in native:
                row[variant]["cos_min_vs_native_fp32"] = float(_cosines(vectors, native["fp32"]).min())
                row[variant]["cos_mean_vs_native_fp32"] = float(_cosines(vectors, native["fp32"]).mean())
        rows.append(row)
    return rows


def _table(rows: list[dict]) -> str:
    head = ("| run | CPU features seen | int8 path | q8 file loaded | MatMulInteger exact (const B / input B) "
            "| q8 vs x86 q8: max abs diff, cos min | fp32 vs x86 fp32: max abs diff, cos min "
            "| q8 vs x86 fp32: cos min | wall s |")
    lines = [head, "|" + " --- |" * 9]
    for row in rows:
        probe = " / ".join("exact" if p["mismatches"] == 0 else f"{p['mismatches']} wrong (max {p['max_error']})"
                           for p in row["probe"].values())
        q8, fp32 = row.get("q8", {}), row.get("fp32", {})
        seen = ", ".join(row["features"]) or "-"
        lines.append(
            f"| {row['run']} | {seen} | {row['int8_path']} | {q8.get('file', '-')} | {probe} "
            f"| {q8.get('max_abs_vs_native', float('nan')):.2e}, {q8.get('cos_min_vs_native', float('nan')):.7f} "
            f"| {fp32.get('max_abs_vs_native', float('nan')):.2e}, {fp32.get('cos_min_vs_native', float('nan')):.7f} "
            f"| {q8.get('cos_min_vs_native_fp32', float('nan')):.5f} | {row['wall_seconds']:.0f} |")
    return "\n".join(lines)


def _qemu_version(qemu: str) -> str:
    done = subprocess.run([qemu, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0] if done.stdout else "unknown"


if __name__ == "__main__":
    main()
