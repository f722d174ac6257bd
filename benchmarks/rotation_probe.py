"""Would rotating each MatMul's input (block Hadamard, QuaRot-style) lift q8's top-10? The probe behind the recipe.

The recipe it led to is export/q8_turned.py (`edgembed export --q8-recipe turned`, `real@32+unturnedattn` here).

    python benchmarks/rotation_probe.py fidelity EXPORT --domains korean russian english-prose \
        --candidates plain+act rot@64+act rot@32+act --out benchmarks/results/fidelity/rotation
    python benchmarks/rotation_probe.py speed EXPORT --blocks 64 32 16

`fidelity` simulates int8 in float (fake quantization) on the export's fp32 ONNX graph, so it measures rounding
alone, not a kernel: every weight MatMul gets GPTQ int8 weights per output channel (the recipe's `gptq_int8`, on
the recipe's calibration set, without smoothing); `rot@B` first turns each weight's input dimension by a
block-diagonal Hadamard matrix of blocks of B (W -> R^T W, its Hessian R^T H R) and the activation by R;
`rotdown@B` only the down projections'; `+act` also rounds every MatMul's input to int8 per token (symmetric,
as the recipe's per-token quantizer). Figures per domain against the fp32 variant.

Real graphs: `real@B` turns every weight MatMul's input in the graph (Reshape, float MatMul by one Hadamard
block, Reshape back) and runs it through the recipe's per-token quantizer against GPTQ int8 codes of R^T W (int8
word embeddings; no smoothing, no outlier path); `+tensor` quantizes the inputs no LayerNorm feeds per tensor
instead, `+attntensor` only the attention outputs', `+unturnedattn` leaves the attention outputs' input unturned.
`realdown@B` is the shipped recipe with only the down projections turned. `ov@B` is the OpenVINO q8 recipe
(nncf INT8_ASYM) on the turned fp32 graph, written to EXPORT/peers/. `ovgptq@B` is the exporter's
OpenVINO q8 with blocks of B: the turned recipe's turns (in float) and GPTQ int8 codes of R^T W per output column
as the IR's compressed weights (commit 94b8970 also had `ovgptq@0`, `+all` and int8 turns). `--keep DIR` keeps
each ONNX candidate's export, for benchmarks/q8_speed.py.

`speed` times the shipped q8 graph against the same graph with a rotation inserted (a float MatMul on a
[..., K/B, B] reshape) before the inputs a rotated recipe would turn at run time: the LayerNorm-fed inputs and
the down projections' (the attention output's turn can be folded into the value weights, per head). Its vectors
are wrong on purpose: it times the extra nodes only.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import fidelity
import numpy as np

from edgembed.export.q8_turned import hadamard

HERE = Path(__file__).resolve().parent
FLOOR = 1e-12  # per-token scales never reach zero


def block_rotation(width: int, block: int) -> np.ndarray:
    rotation = np.zeros((width, width))
    for start in range(0, width, block):
        rotation[start:start + block, start:start + block] = hadamard(block)
    return rotation


SIMULATED = {"plain", "rot", "rotdown"}  # float rounding; "+act" adds the activations
# real graphs and their options
REAL = {"real": ("", "tensor", "attntensor", "unturnedattn"), "realdown": ("",), "ov": ("",), "ovgptq": ("",)}


def parse(candidate: str) -> tuple[str, int | None, str]:
    """'rot@64+act' -> ('rot', 64, 'act')."""
    body, _, extra = candidate.partition("+")
    kind, _, block = body.partition("@")
    allowed = ("", "act") if kind in SIMULATED else REAL.get(kind, ())
    if extra not in allowed or (kind != "plain") != bool(block):
        raise SystemExit(f"candidate {candidate!r}: expected plain, rot@B or rotdown@B, optionally +act; real@B, "
                         "optionally +tensor, +attntensor or +unturnedattn; realdown@B; ov@B; or ovgptq@B")
    return kind, int(block) if block else None, extra


def rounded_weights(model, calibration: list[dict], candidate: str) -> tuple[dict, dict]:
    """Every weight MatMul's GPTQ-rounded weight back in float, by weight name; each input's rotation (or None)."""
    from onnx import numpy_helper

    from edgembed.export import q8_recipe

    kind, block, _ = parse(candidate)
    weights = {i.name: i for i in model.graph.initializer}
    matmuls = q8_recipe._weight_matmuls(model, weights)
    inputs = list(dict.fromkeys(node.input[0] for node in matmuls))
    widths = {node.input[0]: int(weights[node.input[1]].dims[0]) for node in matmuls}
    stats = q8_recipe._calibrate(model, inputs, calibration, widths=widths)
    widest = max(widths.values())  # the down projections read the FFN's wide input
    rounded, rotations = {}, {}
    for name in inputs:
        readers = [node for node in matmuls if node.input[0] == name]
        weight = np.concatenate([numpy_helper.to_array(weights[n.input[1]]) for n in readers], axis=1)
        weight, gram = weight.astype(np.float64), stats[name].gram.astype(np.float64)
        turn = kind == "rot" or (kind == "rotdown" and widths[name] == widest)
        rotations[name] = block_rotation(widths[name], block) if turn and block else None
        if rotations[name] is not None:
            weight, gram = rotations[name].T @ weight, rotations[name].T @ gram @ rotations[name]
        codes, scales = q8_recipe.gptq_int8(weight.astype(np.float32), gram)
        back = codes.astype(np.float64) * scales[None, :]
        if rotations[name] is not None:
            back = rotations[name] @ back
        start = 0
        for node in readers:
            end = start + int(weights[node.input[1]].dims[1])
            rounded[node.input[1]] = back[:, start:end].astype(np.float32)
            start = end
    return rounded, rotations


def round_activations(model, rotations: dict) -> None:
    """Before every weight MatMul: x -> (int8 per token of x R) R^T, in float."""
    from onnx import helper, numpy_helper

    constants = {"probe_axis": np.array([-1], np.int64), "probe_levels": np.array(127.0, np.float32),
                 "probe_floor": np.array(FLOOR, np.float32)}
    model.graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items())
    replaced: dict[str, str] = {}
    nodes = []
    for node in model.graph.node:
        source = node.input[0] if node.op_type == "MatMul" else None
        if source in rotations:
            if source not in replaced:
                prefix, current = f"probe{len(replaced)}", source
                rotation = rotations[source]
                if rotation is not None:
                    model.graph.initializer.extend([
                        numpy_helper.from_array(rotation.astype(np.float32), f"{prefix}_R"),
                        numpy_helper.from_array(rotation.T.astype(np.float32), f"{prefix}_RT")])
                    nodes.append(helper.make_node("MatMul", [current, f"{prefix}_R"], [f"{prefix}_turned"]))
                    current = f"{prefix}_turned"
                nodes += [helper.make_node("Abs", [current], [f"{prefix}_abs"]),
                          helper.make_node("ReduceMax", [f"{prefix}_abs", "probe_axis"], [f"{prefix}_max"], keepdims=1),
                          helper.make_node("Div", [f"{prefix}_max", "probe_levels"], [f"{prefix}_step0"]),
                          helper.make_node("Max", [f"{prefix}_step0", "probe_floor"], [f"{prefix}_step"]),
                          helper.make_node("Div", [current, f"{prefix}_step"], [f"{prefix}_steps"]),
                          helper.make_node("Round", [f"{prefix}_steps"], [f"{prefix}_codes"]),
                          helper.make_node("Mul", [f"{prefix}_codes", f"{prefix}_step"], [f"{prefix}_rounded"])]
                current = f"{prefix}_rounded"
                if rotation is not None:
                    nodes.append(helper.make_node("MatMul", [current, f"{prefix}_RT"], [f"{prefix}_back"]))
                    current = f"{prefix}_back"
                replaced[source] = current
            node.input[0] = replaced[source]
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def insert_turns(model, widths: dict[str, int], block: int, readers: list, *, three_dimensional: bool = True) -> None:
    """Turn each input of `widths` (name -> width) by R in the graph: a Reshape to (..., width / block, block), a
    float MatMul by one Hadamard block, a Reshape back, as `{name}_turned`; `readers` (nodes) read that instead."""
    from onnx import helper, numpy_helper

    matrix = hadamard(block).astype(np.float32)
    # three-dimensional, so the recipe does not take the rotation for a weight MatMul of the model
    model.graph.initializer.append(numpy_helper.from_array(matrix[None] if three_dimensional else matrix,
                                                           "rotation_block"))
    inserted: dict[str, list] = {}
    for number, (name, width) in enumerate(widths.items()):
        model.graph.initializer.extend([
            numpy_helper.from_array(np.array([0, 0, width // block, block], np.int64), f"rotation{number}_blocks"),
            numpy_helper.from_array(np.array([0, 0, width], np.int64), f"rotation{number}_rows")])
        inserted[name] = [helper.make_node("Reshape", [name, f"rotation{number}_blocks"], [f"{name}_blocks"]),
                          helper.make_node("MatMul", [f"{name}_blocks", "rotation_block"], [f"{name}_blocks_turned"],
                                           name=f"{name}_RotationMatMul"),
                          helper.make_node("Reshape", [f"{name}_blocks_turned", f"rotation{number}_rows"],
                                           [f"{name}_turned"])]
    for node in readers:
        node.input[:] = [f"{value}_turned" if value in inserted else value for value in node.input]
    nodes = []
    for node in model.graph.node:
        nodes.append(node)
        for output in node.output:
            nodes += inserted.get(output, [])
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def rotated_int8_graph(model, calibration: list[dict], block: int, *, per_tensor: str | None = None,
                       turn_attention: bool = True):
    """A real int8 graph: every weight MatMul reads its input turned by R (a Reshape, a float MatMul by one
    Hadamard block, a Reshape back), quantized per token by the recipe's quantizer, times GPTQ int8 codes of
    R^T W; int8 word embeddings as in the recipe; no smoothing, no float outlier path. `per_tensor` "all": the
    MatMuls no LayerNorm feeds quantize their input per tensor instead (ONNX Runtime's dynamic quantization);
    "attention": only the attention output projections do (the down projections stay per token).
    `turn_attention` False: the attention output projections read their input as it is (still per token)."""
    from onnx import numpy_helper

    from edgembed.export import q8_recipe

    q8_recipe._name_unnamed_nodes(model)
    weights = {i.name: i for i in model.graph.initializer}
    matmuls = q8_recipe._weight_matmuls(model, weights)
    inputs = list(dict.fromkeys(node.input[0] for node in matmuls))
    widths = {node.input[0]: int(weights[node.input[1]].dims[0]) for node in matmuls}
    fed_by_layernorm = q8_recipe._layernorm_fed_matmuls(model)  # before the turns sit between them
    down = {node.name for node in matmuls if widths[node.input[0]] == max(widths.values())}
    unturned = set() if turn_attention else {node.input[0] for node in matmuls
                                             if node.name not in fed_by_layernorm | down}
    stats = q8_recipe._calibrate(model, inputs, calibration, widths=widths)
    rounded = {}
    for name in inputs:
        readers = [node for node in matmuls if node.input[0] == name]
        parts = [numpy_helper.to_array(weights[node.input[1]]) for node in readers]
        rotation = np.eye(widths[name]) if name in unturned else block_rotation(widths[name], block)
        turned = rotation.T @ np.concatenate(parts, axis=1).astype(np.float64)
        gram = rotation.T @ stats.pop(name).gram.astype(np.float64) @ rotation
        codes, scales = q8_recipe.gptq_int8(turned.astype(np.float32), gram)
        start = 0
        for node, part in zip(readers, parts):
            end = start + part.shape[1]
            rounded[node.input[1]] = (np.ascontiguousarray(codes[:, start:end]), scales[start:end].copy())
            start = end
    insert_turns(model, {name: widths[name] for name in inputs if name not in unturned}, block,
                 [node for node in matmuls if node.input[0] not in unturned])
    per_token = {"all": fed_by_layernorm, "attention": fed_by_layernorm | down}.get(
        per_tensor or "", {node.name for node in matmuls})
    if per_tensor:  # the float weights the dynamic quantizer lays out: R^T W (its codes are replaced by GPTQ's)
        for node in matmuls:
            if node.name not in per_token:
                values, scales = rounded[node.input[1]]
                weights[node.input[1]].CopyFrom(numpy_helper.from_array(
                    (values.astype(np.float32) * scales[None, :]).astype(np.float32), node.input[1]))
    done = q8_recipe._quantize_per_token(model, per_token, rounded)
    q8_recipe._int8_embedding_rows(model)
    if per_tensor:
        rotations = [node.name for node in model.graph.node if node.name.endswith("_RotationMatMul")]
        model = dynamic_rest(model, sorted(per_token) + rotations, {w: r for w, r in rounded.items() if w not in done})
    q8_recipe._adds_before_layernorm_as_sum(model)
    return model


def recipe_with_turned_down_projections(model, calibration: list[dict], block: int):
    """The shipped recipe, except that each down projection reads its input turned by R (weights R^T W),
    quantized per token, without smoothing or the float outlier path."""
    import onnx
    from onnx import numpy_helper

    from edgembed.export import q8_recipe

    q8_recipe._name_unnamed_nodes(model)
    weights = {i.name: i for i in model.graph.initializer}
    producers = q8_recipe._producers(model)
    down = [node for node in q8_recipe._weight_matmuls(model, weights)
            if weights[node.input[1]].dims[0] > weights[node.input[1]].dims[1]
            and not q8_recipe._fed_by_layernorm(node, producers)]
    widths = {node.input[0]: int(weights[node.input[1]].dims[0]) for node in down}
    for node in down:
        weight = numpy_helper.to_array(weights[node.input[1]]).astype(np.float64)
        weights[node.input[1]].CopyFrom(numpy_helper.from_array(
            (block_rotation(widths[node.input[0]], block).T @ weight).astype(np.float32), node.input[1]))
    insert_turns(model, widths, block, down)
    turned = {node.name for node in down}
    patched = {"_layernorm_fed_matmuls": lambda m, original=q8_recipe._layernorm_fed_matmuls: original(m) | turned,
               "_smoothing_targets": lambda m, matmuls, w, original=q8_recipe._smoothing_targets: [
                   name for name in original(m, matmuls, w) if not name.endswith("_turned")],
               "_outlier_matmuls": lambda m, original=q8_recipe._outlier_matmuls: original(m) | {
                   node.name for node in m.graph.node if node.name.endswith("_RotationMatMul")},
               "_down_projection_outliers": lambda *a, original=q8_recipe._down_projection_outliers, **k: {
                   name: channels for name, channels in original(*a, **k).items() if not name.endswith("_turned")}}
    saved = {name: getattr(q8_recipe, name) for name in patched}
    with tempfile.TemporaryDirectory(prefix="edgembed-rotation-") as scratch:
        onnx.save(model, f"{scratch}/turned.onnx")
        try:
            for name, function in patched.items():
                setattr(q8_recipe, name, function)
            q8_recipe.quantize_q8(Path(scratch) / "turned.onnx", Path(scratch) / "q8.onnx", calibration)
        finally:
            for name, function in saved.items():
                setattr(q8_recipe, name, function)
        return onnx.load(f"{scratch}/q8.onnx")


def dynamic_rest(model, excluded: list[str], rounded: dict):
    """ONNX Runtime's dynamic quantization (per tensor) of the MatMuls not in `excluded`, with GPTQ's codes."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgembed.export import q8_recipe

    with tempfile.TemporaryDirectory(prefix="edgembed-rotation-") as scratch:
        onnx.save(model, f"{scratch}/turned.onnx")
        quantize_dynamic(f"{scratch}/turned.onnx", f"{scratch}/dynamic.onnx", weight_type=QuantType.QInt8,
                         per_channel=True, op_types_to_quantize=["MatMul"], nodes_to_exclude=excluded,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        quantized = onnx.load(f"{scratch}/dynamic.onnx")
    q8_recipe._overwrite_weights(quantized, rounded)
    return quantized


def candidate_export(export: Path, work: Path, candidate: str, calibration: list[dict]) -> Path:
    """A copy of the export's ONNX variants whose q8 file is the candidate's float graph."""
    import onnx
    from onnx import numpy_helper

    target = work / candidate.replace("@", "-").replace("+", "-")
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(export, target, ignore=shutil.ignore_patterns("peers", "openvino"))
    model = onnx.load(str(export / "onnx" / "model.onnx"))
    kind, block, activations = parse(candidate)  # activations: "act", "tensor" or ""
    if kind == "real":
        per_tensor = {"tensor": "all", "attntensor": "attention"}.get(activations)
        model = rotated_int8_graph(model, calibration, block, per_tensor=per_tensor,
                                   turn_attention=activations != "unturnedattn")
    elif kind == "realdown":
        model = recipe_with_turned_down_projections(model, calibration, block)
    else:
        rounded, rotations = rounded_weights(model, calibration, candidate)
        for initializer in model.graph.initializer:
            if initializer.name in rounded:
                initializer.CopyFrom(numpy_helper.from_array(rounded[initializer.name], initializer.name))
        if activations:
            round_activations(model, rotations)
    path = target / "onnx" / "model_quantized.onnx"
    onnx.save(model, str(path))
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["variants"] = [v for v in manifest["variants"] if v["format"] == "onnx"]
    for variant in manifest["variants"]:
        variant["alternates"] = {}
        variant["files"] = [f for f in variant["files"] if f["path"] != "onnx/model_uint8.onnx"]
        for entry in variant["files"]:
            if entry["path"] == "onnx/model_quantized.onnx":
                entry.update(sha256=hashlib.sha256(path.read_bytes()).hexdigest(), bytes=path.stat().st_size)
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return target


def openvino_candidate(export: Path, block: int) -> dict:
    """The export's OpenVINO q8 recipe (nncf INT8_ASYM weights, the manifest's precision hint) on the fp32 graph
    with every weight MatMul's input turned by R and its weight R^T W, written to EXPORT/peers/; its spec."""
    import onnx
    import openvino
    from onnx import numpy_helper

    from edgembed.export import openvino_variants, q8_recipe
    from edgembed.runtime.manifest import Manifest

    model = onnx.load(str(export / "onnx" / "model.onnx"))
    q8_recipe._name_unnamed_nodes(model)
    weights = {i.name: i for i in model.graph.initializer}
    matmuls = q8_recipe._weight_matmuls(model, weights)
    widths = {node.input[0]: int(weights[node.input[1]].dims[0]) for node in matmuls}
    for node in matmuls:
        rotation = block_rotation(widths[node.input[0]], block)
        weight = numpy_helper.to_array(weights[node.input[1]]).astype(np.float64)
        weights[node.input[1]].CopyFrom(numpy_helper.from_array((rotation.T @ weight).astype(np.float32),
                                                                node.input[1]))
    insert_turns(model, widths, block, matmuls)
    target = export / "peers" / f"rotation-openvino-q8-{block}.xml"
    target.parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgembed-rotation-") as scratch:
        onnx.save(model, f"{scratch}/turned.onnx")
        compressed = openvino_variants._int8_asym_weights(openvino.convert_model(f"{scratch}/turned.onnx"))
        openvino.save_model(compressed, str(target), compress_to_fp16=False)
    hint = Manifest.read(export).find("openvino", "q8").precision_hint
    return {"format": "openvino", "file": str(target.relative_to(export)), "hint": hint}


def openvino_gptq_candidate(export: Path, block: int, calibration: list[dict]) -> dict:
    """The exporter's OpenVINO q8 (export/q8_turned.py's turns and GPTQ codes, float turns) with blocks of `block`,
    written to EXPORT/peers/; its spec."""
    import openvino

    from edgembed.export import openvino_variants, q8_turned
    from edgembed.runtime.manifest import Manifest

    target = export / "peers" / f"gptq-openvino-q8-{block}.xml"
    target.parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgembed-rotation-") as scratch:
        turned = q8_turned.write_turned_for_openvino(export / "onnx" / "model.onnx", Path(scratch) / "turned.onnx",
                                                     calibration, block=block)
        compressed = openvino_variants._int8_asym_weights(openvino.convert_model(str(turned)), matmuls=False)
        openvino.save_model(compressed, str(target), compress_to_fp16=False)
    hint = Manifest.read(export).find("openvino", "q8").precision_hint
    return {"format": "openvino", "file": str(target.relative_to(export)), "hint": hint}


def run_fidelity(args: argparse.Namespace) -> dict:
    from edgembed.evaluation.domains import evaluation_suite
    from edgembed.export import onnx_variants
    from edgembed.export.pipeline import _calibration_feeds
    from edgembed.runtime.manifest import Manifest

    calibration = _calibration_feeds(args.export, Manifest.read(args.export),
                                     onnx_variants.graph_inputs(args.export / "onnx" / "model.onnx"), None)
    suite = evaluation_suite(domains=args.domains)
    texts = suite.flatten()
    reference = fidelity.embed(args.export, {"format": "onnx", "dtype": "fp32"}, texts, args.threads)
    rows = {"edgembed onnx q8 (shipped)": fidelity.figures_of(
        fidelity.embed(args.export, {"format": "onnx", "dtype": "q8"}, texts, args.threads), reference, suite)}
    with tempfile.TemporaryDirectory(prefix="edgembed-rotation-") as work:
        for candidate in args.candidates:
            kind, block, _ = parse(candidate)
            if kind in ("ov", "ovgptq"):
                spec = (openvino_candidate(args.export, block or 0) if kind == "ov" else
                        openvino_gptq_candidate(args.export, block or 0, calibration))
                rows[candidate] = fidelity.figures_of(fidelity.embed(args.export, spec, texts, args.threads),
                                                      reference, suite)
                print(candidate, json.dumps(rows[candidate]["domains"]), file=sys.stderr, flush=True)
                continue
            export = candidate_export(args.export, Path(work), candidate, calibration)
            vectors = fidelity.embed(export, {"format": "onnx", "dtype": "q8"}, texts, args.threads)
            rows[candidate] = fidelity.figures_of(vectors, reference, suite)
            if args.keep:
                shutil.copytree(export, args.keep / export.name, dirs_exist_ok=True)
            shutil.rmtree(export)
            print(candidate, json.dumps(rows[candidate]["domains"]), file=sys.stderr, flush=True)
    return rows


def with_rotations(source: Path, fp32: Path, block: int, destination: Path) -> Path:
    """`source` (a q8 graph) with a block rotation before every LayerNorm-fed and down-projection input."""
    import onnx

    from edgembed.export import q8_recipe

    reference = onnx.load(str(fp32))
    weights = {i.name: i for i in reference.graph.initializer}
    matmuls = q8_recipe._weight_matmuls(reference, weights)
    fed_by_layernorm = q8_recipe._layernorm_fed_matmuls(reference)
    widths = {node.input[0]: int(weights[node.input[1]].dims[0]) for node in matmuls}
    widest = max(widths.values())
    targets = {n.input[0] for n in matmuls if n.name in fed_by_layernorm or widths[n.input[0]] == widest}
    model = onnx.load(str(source))
    insert_turns(model, {name: widths[name] for name in sorted(targets)}, block, list(model.graph.node),
                 three_dimensional=False)
    onnx.save(model, str(destination))
    return destination


def run_speed(args: argparse.Namespace) -> dict:
    import onnxruntime

    shipped = args.export / "onnx" / "model_quantized.onnx"
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    with tempfile.TemporaryDirectory(prefix="edgembed-rotation-") as work:
        paths = {"shipped": shipped, **{f"rotation blocks of {b}": with_rotations(
            shipped, args.export / "onnx" / "model.onnx", b, Path(work) / f"rot{b}.onnx") for b in args.blocks}}
        sessions = {name: onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                    for name, path in paths.items()}
    names = {i.name for i in sessions["shipped"].get_inputs()}
    rng = np.random.default_rng(0)
    rows: dict[str, dict] = {}
    for label, (count, length, repeats) in {"batch 32 x 128 tokens": (32, 128, 5),
                                            "query 1 x 16 tokens": (1, 16, 200)}.items():
        ids = rng.integers(1000, 20000, (count, length)).astype(np.int64)
        feeds = {k: v for k, v in {"input_ids": ids, "attention_mask": np.ones_like(ids),
                                   "token_type_ids": np.zeros_like(ids)}.items() if k in names}
        best = dict.fromkeys(sessions, float("inf"))
        for _ in range(args.rounds):  # the graphs take turns, so a change in the machine's load hits each alike
            for name, session in sessions.items():
                session.run(None, feeds)
                started = time.perf_counter()
                for _ in range(repeats):
                    session.run(None, feeds)
                best[name] = min(best[name], (time.perf_counter() - started) / repeats)
        rows[label] = {name: {"ms": seconds * 1000, "ratio": seconds / best["shipped"]}
                       for name, seconds in best.items()}
        print(label, {name: f"{row['ms']:.2f} ms ({row['ratio']:.3f}x)" for name, row in rows[label].items()},
              file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["fidelity", "speed"])
    parser.add_argument("export", type=Path, help="an export with fp32 and q8 ONNX variants")
    parser.add_argument("--domains", nargs="+", default=["korean", "russian", "english-prose"])
    parser.add_argument("--candidates", nargs="+", default=["plain+act", "rot@64+act", "rot@32+act"])
    parser.add_argument("--blocks", nargs="+", type=int, default=[64, 32, 16])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--keep", type=Path, help="fidelity: copy each candidate's export here (for q8_speed.py)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "fidelity" / "rotation")
    args = parser.parse_args(argv)
    for candidate in args.candidates:
        parse(candidate)
    started = time.perf_counter()
    from edgembed.runtime.cpu import cpu_model

    rows = run_fidelity(args) if args.mode == "fidelity" else run_speed(args)
    results = {"command": "python benchmarks/rotation_probe.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "cpu": cpu_model(), "isa": fidelity.isa(), "threads": args.threads,
               "seconds": round(time.perf_counter() - started, 1), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.mode}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
