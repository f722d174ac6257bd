"""The ONNX q8 recipe: calibrated smoothing of outlier channels, GPTQ-rounded int8 weights, dynamic int8 MatMuls.

ONNX Runtime's dynamic int8 MatMul quantizes each activation tensor with one range, and in BERT-style
encoders one token ([CLS]) holds channels several times larger than every other token's, so its range
coarsens all the others. Measured on all-MiniLM-L6-v2 (docs/q8-recipe.md), this recipe keeps the
retrieval results of fp32 and most of the speed of plain dynamic int8:

1. Calibration: run the fp32 graph on the calibration feeds and record, for the input of every weight
   MatMul, each channel's absolute maximum and the Gram matrix X^T X.
2. Targeted smoothing of the inputs of the MatMuls after a LayerNormalization (attention and FFN input
   projections) and of the down projections (FFN output): a channel whose maximum exceeds
   `threshold` x the 90th percentile of the channel maxima is divided by s = (max / (threshold p90))^alpha
   (never s < 1) through an inserted Mul, and the matching weight row is multiplied by s (exact in fp32).
   The 8 input channels of largest calibration maximum of each down projection leave its int8 product: they
   are gathered from the unsmoothed input and multiplied by their weight rows in float32 beside it.
3. Per-token int8 for the MatMuls fed by a LayerNormalization (attention and FFN input projections): each
   token's row gets its own range (blocked QuantizeLinear + com.microsoft.MatMulIntegerToFloat), so [CLS]
   sets only its own step there. ONNX Runtime dynamic quantization (one range per tensor) for the rest. All
   weights are int8, symmetric per output channel, GPTQ-rounded (error-compensating rounding using the Gram
   matrix) in place of ONNX Runtime's own rounding.
4. The word-embedding table becomes int8 with one scale per row (no measurable loss, a third of the file).
5. The residual Adds feeding a LayerNormalization become Sum, which keeps ONNX Runtime from fusing them
   into SkipLayerNormalization (slower than the unfused pair on the CPUs measured).
6. A uint8 twin of the graph (`write_uint8_twin`): the same integers stored as uint8 with zero point 128, for
   x86 CPUs without VNNI. There ONNX Runtime's u8 x s8 kernel adds pairs of products in saturating 16-bit
   lanes (VPMADDUBSW) and the q8's full-range activations and weights overflow them; its u8 x u8 kernel widens
   to 16 bits first and is exact. Both files give the same integers, so the same vectors, on every CPU
   (docs/q8-on-every-cpu.md).

The MatMuls are selected by graph structure, never by name, so BERT and ModernBERT graphs both work.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgembed.runtime.errors import MissingDependencyError

from .converting import ConvertInputs
from .errors import EXPORT_INSTALL

THRESHOLD = 0.5  # channels above THRESHOLD x p90 of the channel maxima are smoothed
ALPHA = 0.7  # how much of the excess each smoothed channel loses
GPTQ_DAMPING = 0.01  # share of the mean Hessian diagonal added to it
GPTQ_BLOCK = 64  # rows rounded before the later rows get their update in one product
GRAM_TOKENS = 16384  # calibration tokens for the Gram matrices (the maxima use all of them)
ACTIVATION_BYTES = 256 * 2**20  # MatMul inputs held at once while the Grams are gathered (fetched, then again pending)
EXTERNAL_BYTES = 1024  # initializers from this size up live in the scratch weight file during quantization
# Ops that pass a tensor through unchanged when looking for the LayerNormalization before a MatMul.
PASS_THROUGH = ("Identity", "Cast")
SCALE_FLOOR = 1e-12  # per-token scales never go below this (an all-zero row would divide by zero)
OUTLIER_CHANNELS = 8  # input channels of each down projection multiplied in float32 beside its int8 product
OUTLIER_SUFFIX = "_OutlierMatMul"


@dataclass
class Statistics:
    """Per-channel absolute maximum (float64) and Gram matrix (float32) of one MatMul input, over the calibration
    tokens."""

    absmax: np.ndarray
    gram: np.ndarray


def _imports():
    try:
        import onnx
        import onnxruntime
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "onnxruntime", "export", install=EXPORT_INSTALL) from None
    return onnx, onnxruntime, QuantType, quantize_dynamic


def convert_q8(inputs: ConvertInputs) -> list[Path]:
    """The q8 graph of the chosen recipe (smoothed, or turned: q8_turned.py), then its uint8 twin at each of the
    recipe's alternates (the no-vnni family's file)."""
    from .q8_turned import quantize_q8_turned

    if inputs.q8_recipe == "turned":
        primary = quantize_q8_turned(inputs.source, inputs.destination, inputs.calibration or [],
                                     status=inputs.status, shared=inputs.turned_rounding)
    else:
        primary = quantize_q8(inputs.source, inputs.destination, inputs.calibration or [], status=inputs.status)
    return primary + [twin for path in inputs.alternates.values() for twin in write_uint8_twin(primary[0], path)]


def quantize_q8(fp32: Path, destination: Path, calibration: list[dict[str, np.ndarray]],
                status: Callable[[str], None] | None = None) -> list[Path]:
    """Write the q8 graph of `fp32` to `destination`, calibrated on `calibration` (one feed dict per text).

    One copy of the weights at a time: the float weights move to a scratch file and are read from it one
    matrix at a time, and ONNX Runtime's quantizer gets only the MatMuls it quantizes (the per-token ones and
    the embedding table are already int8). `status` hears how far calibration and rounding got.
    """
    onnx, _, QuantType, quantize_dynamic = _imports()
    with tempfile.TemporaryDirectory(prefix="edgembed-q8-") as scratch:
        directory = Path(scratch)
        model = _with_external_weights(fp32, directory)
        _name_unnamed_nodes(model)
        per_token = _layernorm_fed_matmuls(model)
        rounded = smooth(model, calibration, weights_dir=directory, status=status)
        done = _quantize_per_token(model, per_token, rounded)
        _int8_embedding_rows(model, directory)
        if status is not None:
            status("ONNX Runtime dynamic quantization of the other MatMuls")
        excluded = sorted(per_token | _outlier_matmuls(model))
        onnx.save(model, str(directory / "smoothed.onnx"))
        del model  # a protobuf keeps every byte it ever held until it is dropped whole
        quantize_dynamic(directory / "smoothed.onnx", directory / "dynamic.onnx", weight_type=QuantType.QInt8,
                         per_channel=True, op_types_to_quantize=["MatMul"], nodes_to_exclude=excluded,
                         # onnx cannot infer types through the contrib ops already in the graph; they are float
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        quantized = onnx.load(str(directory / "dynamic.onnx"))
    _overwrite_weights(quantized, {weight: r for weight, r in rounded.items() if weight not in done})
    del rounded
    _adds_before_layernorm_as_sum(quantized)
    onnx.save(quantized, str(destination))
    return [destination]


def smooth(model, calibration: list[dict[str, np.ndarray]], threshold: float = THRESHOLD,
           alpha: float = ALPHA, *, weights_dir: Path | None = None,
           status: Callable[[str], None] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Insert the smoothing Muls into `model`; return the GPTQ int8 values and per-column scales of every
    weight MatMul, rounded from its smoothed weight (rows multiplied by s), by weight name.

    The float weights in `model` stay as they are: every one of them is replaced by its rounded values
    afterwards. `weights_dir` holds the model's external weight file, if it has one.
    """
    weights = {i.name: i for i in model.graph.initializer}
    matmuls = _weight_matmuls(model, weights)
    inputs = list(dict.fromkeys(node.input[0] for node in matmuls))
    widths = {node.input[0]: int(weights[node.input[1]].dims[0]) for node in matmuls}
    stats = _calibrate(model, inputs, calibration, widths=widths, weights_dir=weights_dir, status=status)
    outliers = _down_projection_outliers(model, matmuls, weights, stats)
    scales = {}
    for name in _smoothing_targets(model, matmuls, weights):
        scale = _smoothing_scale(stats[name].absmax, threshold, alpha)
        if name in outliers:
            scale[outliers[name]] = np.inf  # these channels leave the int8 product: 1/s = 0, weight rows 0
        if not np.all(scale == 1.0):
            scales[name] = scale
    rounded, outlier_rows = {}, {}
    for name in inputs:  # one input's Gram matrix at a time, dropped once its MatMuls are rounded
        gram = stats.pop(name).gram.astype(np.float64)
        if name in scales:
            gram /= np.outer(scales[name], scales[name])
        readers = [node for node in matmuls if node.input[0] == name]
        parts = [weight_values(weights[node.input[1]], weights_dir) for node in readers]
        if name in scales and name in outliers:
            for node, part in zip(readers, parts):
                outlier_rows[node.name] = (name, outliers[name], part[outliers[name]].astype(np.float32))
        rounded.update(_gptq_side_by_side([node.input[1] for node in readers], parts, scales.get(name), gram))
        del parts, gram
        if status is not None:
            status(f"GPTQ rounding: {len(rounded)} of {len(matmuls)} weight matrices")
    _insert_smoothing(model, scales)
    _insert_outlier_paths(model, outlier_rows)
    return rounded


def _gptq_side_by_side(names: list[str], parts: list[np.ndarray], scale: np.ndarray | None,
                       gram: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """GPTQ of the weights that read one input, as one matrix of their columns side by side: GPTQ rounds each
    column on its own, so this gives each weight's own result, with one Hessian inverse instead of several."""
    stacked = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    if scale is not None:  # an infinite scale marks a channel taken out of the int8 product: its rows are 0
        stacked = (stacked * np.where(np.isfinite(scale), scale, 0.0)[:, None]).astype(np.float32)
    values, column_scales = gptq_int8(stacked, gram)
    result, start = {}, 0
    for name, part in zip(names, parts):
        end = start + part.shape[1]
        result[name] = (np.ascontiguousarray(values[:, start:end]), column_scales[start:end].copy())
        start = end
    return result


def weight_values(tensor, directory: Path | None) -> np.ndarray:
    """An initializer's values; external data is read from `directory` without being loaded into the model
    (whose protobuf would keep that copy as long as the model lives)."""
    from onnx import external_data_helper, helper, numpy_helper

    if not external_data_helper.uses_external_data(tensor):
        return numpy_helper.to_array(tensor)
    if directory is None:
        raise ValueError(f"{tensor.name}: external data, and no directory to read it from")
    info = external_data_helper.ExternalDataInfo(tensor)
    count = int(np.prod(tensor.dims, dtype=np.int64))
    with open(directory / info.location, "rb") as handle:
        handle.seek(info.offset or 0)
        values = np.fromfile(handle, dtype=helper.tensor_dtype_to_np_dtype(tensor.data_type), count=count)
    return values.reshape(tuple(tensor.dims))


def _with_external_weights(fp32: Path, directory: Path):  # -> onnx.ModelProto
    """The graph of `fp32`, its large initializers moved to `directory`/weights.bin (read back one at a time)."""
    onnx, _, _, _ = _imports()
    model = onnx.load(str(fp32))
    onnx.save_model(model, str(directory / "fp32.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=EXTERNAL_BYTES)
    del model
    return onnx.load(str(directory / "fp32.onnx"), load_external_data=False)


def _down_projection_outliers(model, matmuls: list, weights: dict, stats: dict[str, Statistics],
                              count: int = OUTLIER_CHANNELS) -> dict[str, np.ndarray]:
    """The `count` input channels of largest calibration maximum of each down projection's input, by input name.

    Those channels are multiplied in float32 beside the int8 product (_insert_outlier_paths): smoothing alone
    has to trade their range against the weights' precision, and the down projections were the q8's largest
    error on non-Latin text (docs/q8-recipe.md, eighth session). Inputs narrower than 4 x count are left alone.
    """
    producers = _producers(model)
    found = {}
    for node in matmuls:
        rows, columns = weights[node.input[1]].dims
        if count and rows > columns and rows >= 4 * count and not _fed_by_layernorm(node, producers):
            found[node.input[0]] = np.sort(np.argsort(stats[node.input[0]].absmax)[-count:])
    return found


def _insert_outlier_paths(model, outlier_rows: dict[str, tuple[str, np.ndarray, np.ndarray]]) -> None:
    """Beside each MatMul of `outlier_rows` (node name -> its input, the channels, their weight rows): Gather the
    channels from the unsmoothed input, multiply them by their rows in float32 (a MatMul named *OUTLIER_SUFFIX,
    left out of quantization) and add that to the int8 product."""
    onnx, _, _, _ = _imports()
    from onnx import numpy_helper

    nodes, gathered = [], set()
    for node in model.graph.node:
        nodes.append(node)
        if node.name not in outlier_rows:
            continue
        x, channels, rows = outlier_rows[node.name]
        y = node.output[0]
        node.output[0] = f"{y}_int8_part"
        if x not in gathered:
            gathered.add(x)
            model.graph.initializer.append(numpy_helper.from_array(channels.astype(np.int64), f"{x}_outlier_channels"))
            nodes.append(onnx.helper.make_node("Gather", [x, f"{x}_outlier_channels"], [f"{x}_outliers"], axis=-1,
                                               name=f"{x}_OutlierGather"))
        model.graph.initializer.append(numpy_helper.from_array(rows, f"{node.input[1]}_outlier_rows"))
        nodes += [onnx.helper.make_node("MatMul", [f"{x}_outliers", f"{node.input[1]}_outlier_rows"],
                                        [f"{y}_outlier_part"], name=f"{node.name}{OUTLIER_SUFFIX}"),
                  onnx.helper.make_node("Add", [f"{y}_int8_part", f"{y}_outlier_part"], [y],
                                        name=f"{node.name}_OutlierAdd")]
    model.graph.ClearField("node")
    model.graph.node.extend(nodes)


def _outlier_matmuls(model) -> set[str]:
    return {node.name for node in model.graph.node if node.name.endswith(OUTLIER_SUFFIX)}


def _weight_matmuls(model, weights: dict) -> list:
    """MatMul nodes whose second input is a 2-D float initializer."""
    return [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights
            and len(weights[n.input[1]].dims) == 2 and weights[n.input[1]].data_type == 1]


def _smoothing_targets(model, matmuls: list, weights: dict) -> list[str]:
    """Inputs of the MatMuls fed by a LayerNormalization, and of the down projections (more rows than columns)."""
    producers = _producers(model)

    def down_projection(node) -> bool:
        rows, columns = weights[node.input[1]].dims
        return rows > columns

    targets = [node.input[0] for node in matmuls if _fed_by_layernorm(node, producers) or down_projection(node)]
    return list(dict.fromkeys(targets))


def _layernorm_fed_matmuls(model) -> set[str]:
    """Names of the weight MatMuls that read a LayerNormalization's output (attention and FFN inputs)."""
    producers = _producers(model)
    weights = {i.name: i for i in model.graph.initializer}
    return {node.name for node in _weight_matmuls(model, weights) if _fed_by_layernorm(node, producers)}


def _fed_by_layernorm(node, producers: dict) -> bool:
    source = producers.get(node.input[0])
    while source is not None and source.op_type in PASS_THROUGH:
        source = producers.get(source.input[0])
    return source is not None and source.op_type == "LayerNormalization"


def _producers(model) -> dict:
    return {out: node for node in model.graph.node for out in node.output}


def _name_unnamed_nodes(model) -> None:
    """Give every node a name, so MatMuls can be told apart (and excluded) by name."""
    taken = {node.name for node in model.graph.node}
    for number, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{number}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def _smoothing_scale(absmax: np.ndarray, threshold: float, alpha: float) -> np.ndarray:
    reference = threshold * np.percentile(absmax, 90)
    if reference <= 0:
        return np.ones_like(absmax)
    return np.maximum(1.0, absmax / reference) ** alpha


def _calibrate(model, inputs: list[str], feeds: list[dict[str, np.ndarray]], gram_tokens: int = GRAM_TOKENS, *,
               widths: dict[str, int], weights_dir: Path | None = None, activation_bytes: int = ACTIVATION_BYTES,
               status: Callable[[str], None] | None = None) -> dict[str, Statistics]:
    """Absolute maxima (all tokens) and Gram matrices (the first `gram_tokens`) of `inputs`, one text at a time.

    Each feed is one unpadded text. The maxima are reduced inside the graph, so a text adds only one value per
    channel; the inputs themselves are fetched only for the Gram tokens, at most `activation_bytes` per run
    (a long text runs once per group of inputs) and folded into float32 Grams every `activation_bytes` of rows.
    Memory: the Grams and twice `activation_bytes`, whatever the number and length of the texts.
    """
    session, maxima = _probe_session(model, inputs, widths, weights_dir)
    absmax: dict[str, np.ndarray] = {}
    grams = {name: np.zeros((widths[name], widths[name]), np.float32) for name in inputs}
    pending: dict[str, list[np.ndarray]] = {name: [] for name in inputs}
    pending_bytes = 0
    kept = 0
    for number, feed in enumerate(feeds):
        mask = feed.get("attention_mask")
        if mask is not None and not mask.all():
            raise ValueError("calibration feeds must be one unpadded text each")
        tokens = int(next(iter(feed.values())).size)
        take = min(tokens, gram_tokens - kept)
        groups = _input_groups(inputs, widths, tokens, activation_bytes) if take > 0 else [[]]
        for index, group in enumerate(groups):
            names = (maxima if index == 0 else []) + group
            values = dict(zip(names, session.run(names, feed)))
            if index == 0:
                for name, found in zip(inputs, maxima):
                    absmax[name] = np.maximum(absmax.get(name, 0.0), values.pop(found))
            for name in group:
                pending[name].append(values.pop(name).reshape(-1, widths[name])[:take].copy())
                pending_bytes += pending[name][-1].nbytes
            del values
            if pending_bytes >= activation_bytes:
                _fold(grams, pending)
                pending_bytes = 0
        kept += tokens
        if status is not None:
            status(f"calibration: {number + 1} of {len(feeds)} texts")
    _fold(grams, pending)
    del session
    return {name: Statistics(absmax[name].astype(np.float64), grams.pop(name)) for name in inputs}


def _fold(grams: dict[str, np.ndarray], pending: dict[str, list[np.ndarray]]) -> None:
    """Add the pending rows of every input to its Gram matrix, then forget them."""
    for name, rows in pending.items():
        if rows:
            matrix = np.concatenate(rows) if len(rows) > 1 else rows[0]
            grams[name] += matrix.T @ matrix
            rows.clear()


def _input_groups(inputs: list[str], widths: dict[str, int], tokens: int, budget: int) -> list[list[str]]:
    """`inputs` in groups of at most `budget` bytes for a text of `tokens` tokens (one input at least)."""
    groups: list[list[str]] = [[]]
    size = 0
    for name in inputs:
        cost = 4 * tokens * widths[name]
        if groups[-1] and size + cost > budget:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += cost
    return groups


def _probe_session(model, inputs: list[str], widths: dict[str, int], weights_dir: Path | None):
    """An ONNX Runtime session of `model` that can return every input in `inputs` and, per input, its
    channels' absolute maxima over the text (Abs and ReduceMax added to the graph); returns the session and
    the names of the maxima, in the order of `inputs`."""
    onnx, onnxruntime, _, _ = _imports()
    from onnx import helper, numpy_helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)  # cheap: the weights are external
    opset = next((o.version for o in probe.opset_import if o.domain in ("", "ai.onnx")), 13)
    known = {o.name for o in probe.graph.output}
    maxima = []
    for width in sorted(set(widths.values())):
        probe.graph.initializer.append(numpy_helper.from_array(np.array([-1, width], np.int64),
                                                               f"calibration_rows_{width}"))
    probe.graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "calibration_axis_0"))
    for number, name in enumerate(inputs):
        rows, absolute, found = (f"calibration_{number}_rows", f"calibration_{number}_abs",
                                 f"calibration_{number}_absmax")
        reduce = (helper.make_node("ReduceMax", [absolute, "calibration_axis_0"], [found], keepdims=0) if opset >= 18
                  else helper.make_node("ReduceMax", [absolute], [found], axes=[0], keepdims=0))
        probe.graph.node.extend([helper.make_node("Reshape", [name, f"calibration_rows_{widths[name]}"], [rows]),
                                 helper.make_node("Abs", [rows], [absolute]), reduce])
        maxima.append(found)
    probe.graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                              for name in inputs + maxima if name not in known)
    directory = weights_dir or Path(tempfile.mkdtemp(prefix="edgembed-probe-"))
    path = directory / "calibration-probe.onnx"
    onnx.save(probe, str(path))
    del probe
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.enable_cpu_mem_arena = False  # buffers go back when a run ends: texts differ in length
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # numpy folds Grams between runs
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    if weights_dir is None:
        shutil.rmtree(directory, ignore_errors=True)
    return session, maxima


def gptq_int8(weight: np.ndarray, gram: np.ndarray, damping: float = GPTQ_DAMPING,
              block: int = GPTQ_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-column int8 of `weight` (K x N) rounded row by row, each row's error pushed onto later rows.

    Returns the int8 values and the per-column scales. The rounding minimises the output error on inputs
    whose Gram matrix is `gram` (GPTQ, Frantar et al. 2022), processed in blocks of `block` rows.
    """
    w = weight.astype(np.float64).copy()
    scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0
    hessian = gram.astype(np.float64).copy()
    dead = np.diag(hessian) == 0
    hessian[dead, dead] = 1.0
    w[dead] = 0.0
    hessian += damping * np.mean(np.diag(hessian)) * np.eye(len(hessian))
    upper = _inverse_upper_factor(hessian)
    q = np.zeros(w.shape, dtype=np.int8)
    size = len(w)
    for start in range(0, size, block):
        end = min(start + block, size)
        errors = np.zeros((end - start, w.shape[1]))
        for k in range(start, end):
            q[k] = np.clip(np.round(w[k] / scale), -127, 127)
            error = (w[k] - q[k] * scale) / upper[k, k]
            w[k + 1:end] -= np.outer(upper[k, k + 1:end], error)
            errors[k - start] = error
        w[end:] -= upper[start:end, end:].T @ errors
    return q, scale.astype(np.float32)


def _inverse_upper_factor(hessian: np.ndarray) -> np.ndarray:
    """The upper triangular U with U^T U = inverse(hessian), without forming the inverse: with P the reversal,
    P H P = L L^T gives U = P L^-1 P (one Cholesky and one triangular inverse: about a third of the work)."""
    try:
        from scipy.linalg import lapack
    except ImportError:
        raise MissingDependencyError("scipy", "export", install=EXPORT_INSTALL) from None
    lower = np.linalg.cholesky(np.ascontiguousarray(hessian[::-1, ::-1]))
    inverse, info = lapack.dtrtri(np.asfortranarray(lower), lower=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"the Cholesky factor of the Hessian is singular at row {info}")
    return np.ascontiguousarray(inverse[::-1, ::-1])


def _insert_smoothing(model, smoothed: dict[str, np.ndarray]) -> None:
    """A Mul by 1/s in front of every MatMul reading a smoothed tensor (one Mul per tensor)."""
    onnx, _, _, _ = _imports()
    from onnx import numpy_helper

    nodes, done = [], set()
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[0] in smoothed:
            name = node.input[0]
            scaled = f"{name}_smoothed"
            if scaled not in done:
                done.add(scaled)
                model.graph.initializer.append(
                    numpy_helper.from_array((1.0 / smoothed[name]).astype(np.float32), f"{name}_smoothing"))
                nodes.append(onnx.helper.make_node("Mul", [name, f"{name}_smoothing"], [scaled],
                                                   name=f"{name}_SmoothingMul"))
            node.input[0] = scaled
        nodes.append(node)
    model.graph.ClearField("node")
    model.graph.node.extend(nodes)


def _quantize_per_token(model, names: set[str], rounded: dict[str, tuple[np.ndarray, np.ndarray]]) -> set[str]:
    """The MatMuls in `names` quantize their input with one range per token (row) instead of one per tensor.

    Per input x (shared by the MatMuls that read it): scale = max(|x|) per row / 127 (at least SCALE_FLOOR;
    max(|x|) as max(max x, -min x): two reads and no written |x|, faster than Abs),
    then uint8 = round(x / scale) + 128 by a blocked QuantizeLinear (opset 21, one block per row). Per MatMul:
    com.microsoft.MatMulIntegerToFloat with the GPTQ int8 weights and their column scales, then a Mul by the
    row scales. [CLS]'s outlier channels then set only [CLS]'s own step, and a text's result no longer depends
    on the other texts in its batch in these MatMuls. One zero-point tensor (128s, shaped like the first
    scale) serves every input: they all have the (batch, length) rows of the hidden states (a graph where
    they did not would fail the exporter's validation, not pass silently). Returns the weights it quantized.
    """
    onnx, _, _, _ = _imports()
    from onnx import helper, numpy_helper

    weights = {i.name: i for i in model.graph.initializer}
    chosen = [node for node in model.graph.node if node.name in names]
    if not chosen:
        return set()
    model.graph.initializer.extend([
        numpy_helper.from_array(np.array([-1], np.int64), "per_token_axes"),
        numpy_helper.from_array(np.array(SCALE_FLOOR * 127.0, np.float32), "per_token_floor"),
        numpy_helper.from_array(np.array(1.0 / 127.0, np.float32), "per_token_step"),
        numpy_helper.from_array(np.array(128, np.uint8), "per_token_zero"),
        numpy_helper.from_array(np.array(1.0, np.float32), "per_token_one")])
    replaced: dict[str, list] = {}
    quantized_inputs: dict[str, str] = {}  # input -> name prefix of its uint8 rows and row scales
    for node in chosen:
        x, weight, y = node.input[0], node.input[1], node.output[0]
        values, column_scale = rounded[weight]
        new = []
        if x not in quantized_inputs:
            new = _row_quantizer(x, f"{x}_per_token", int(values.shape[0]), first=not quantized_inputs)
            quantized_inputs[x] = f"{x}_per_token"
        prefix = quantized_inputs[x]
        model.graph.initializer.remove(weights[weight])
        model.graph.initializer.extend([numpy_helper.from_array(values, f"{weight}_quantized"),
                                        numpy_helper.from_array(column_scale, f"{weight}_scale")])
        new += [helper.make_node("MatMulIntegerToFloat", [f"{prefix}_uint8", f"{weight}_quantized", "per_token_one",
                                                          f"{weight}_scale", "per_token_zero"],
                                 [f"{y}_unscaled"], domain="com.microsoft", name=f"{node.name}_PerToken"),
                helper.make_node("Mul", [f"{y}_unscaled", f"{prefix}_scale"], [y], name=f"{node.name}_RowScale")]
        replaced[node.name] = new
    nodes = []
    for node in model.graph.node:
        nodes.extend(replaced.get(node.name, [node]))
    model.graph.ClearField("node")
    model.graph.node.extend(nodes)
    _require_opsets(model, {"": 21, "com.microsoft": 1})
    return {node.input[1] for node in chosen}


def _row_quantizer(x: str, prefix: str, channels: int, first: bool) -> list:
    """Nodes writing `{prefix}_scale` (one per row of x) and `{prefix}_uint8`; the first also makes the zeros."""
    from onnx import helper

    nodes = [helper.make_node("ReduceMax", [x, "per_token_axes"], [f"{prefix}_max"], keepdims=1,
                              name=f"{prefix}_ReduceMax"),
             helper.make_node("ReduceMin", [x, "per_token_axes"], [f"{prefix}_min"], keepdims=1,
                              name=f"{prefix}_ReduceMin"),
             helper.make_node("Neg", [f"{prefix}_min"], [f"{prefix}_negmin"], name=f"{prefix}_Neg"),
             helper.make_node("Max", [f"{prefix}_max", f"{prefix}_negmin", "per_token_floor"],
                              [f"{prefix}_floored"], name=f"{prefix}_Floor"),
             helper.make_node("Mul", [f"{prefix}_floored", "per_token_step"], [f"{prefix}_scale"],
                              name=f"{prefix}_Scale")]
    if first:  # one zero-point tensor of 128s, shaped (batch, length, 1), for every quantized input
        nodes += [helper.make_node("Shape", [f"{prefix}_scale"], ["per_token_rows"], name="per_token_Shape"),
                  helper.make_node("Expand", ["per_token_zero", "per_token_rows"], ["per_token_zeros"],
                                   name="per_token_Zeros")]
    nodes.append(helper.make_node("QuantizeLinear", [x, f"{prefix}_scale", "per_token_zeros"], [f"{prefix}_uint8"],
                                  axis=-1, block_size=channels, name=f"{prefix}_Quantize"))
    return nodes


def _require_opsets(model, needed: dict[str, int]) -> None:
    """Raise the model's opset imports to at least `needed` (21 for blocked QuantizeLinear)."""
    onnx, _, _, _ = _imports()
    current = {o.domain: o.version for o in model.opset_import}
    for domain, version in needed.items():
        current[domain] = max(current.get(domain, 0), version)
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(domain, version) for domain, version in current.items())


def _overwrite_weights(model, rounded: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Put the GPTQ integers and scales in place of the ones ONNX Runtime derived (same names and shapes)."""
    from onnx import numpy_helper

    initializers = {i.name: i for i in model.graph.initializer}
    for weight, (values, scale) in rounded.items():
        target, target_scale = initializers[f"{weight}_quantized"], initializers[f"{weight}_scale"]
        if tuple(target.dims) != values.shape or tuple(target_scale.dims) != scale.shape:
            raise ValueError(f"{weight}: onnxruntime quantized it to another layout than expected")
        target.CopyFrom(numpy_helper.from_array(values, target.name))
        target_scale.CopyFrom(numpy_helper.from_array(scale, target_scale.name))


def _int8_embedding_rows(model, weights_dir: Path | None = None) -> None:
    """The Gather reading a float table by a graph input (the token ids) reads int8 rows and one scale per row."""
    onnx, _, _, _ = _imports()
    from onnx import numpy_helper

    graph_inputs = {i.name for i in model.graph.input}
    initializers = {i.name: i for i in model.graph.initializer}
    candidates = [(position, node) for position, node in enumerate(model.graph.node)
                  if node.op_type == "Gather" and node.input[0] in initializers and node.input[1] in graph_inputs
                  and len(initializers[node.input[0]].dims) == 2 and initializers[node.input[0]].data_type == 1]
    if not candidates:
        return
    position, node = max(candidates, key=lambda item: initializers[item[1].input[0]].dims[0])  # the vocabulary
    table = initializers[node.input[0]]
    values = weight_values(table, weights_dir)
    scale = np.maximum(np.abs(values).max(axis=1, keepdims=True), 1e-12) / 127.0
    name, ids, out = table.name, node.input[1], node.output[0]
    model.graph.initializer.remove(table)
    model.graph.initializer.extend([
        numpy_helper.from_array(np.round(values / scale).astype(np.int8), f"{name}_int8"),
        numpy_helper.from_array(scale.astype(np.float32), f"{name}_row_scale")])
    replacement = [
        onnx.helper.make_node("Gather", [f"{name}_int8", ids], [f"{out}_int8"], name=f"{node.name}_int8"),
        onnx.helper.make_node("Cast", [f"{out}_int8"], [f"{out}_float"], to=onnx.TensorProto.FLOAT,
                              name=f"{node.name}_cast"),
        onnx.helper.make_node("Gather", [f"{name}_row_scale", ids], [f"{out}_scale"], name=f"{node.name}_scale"),
        onnx.helper.make_node("Mul", [f"{out}_float", f"{out}_scale"], [out], name=f"{node.name}_dequantize")]
    model.graph.node.remove(node)
    for offset, new in enumerate(replacement):
        model.graph.node.insert(position + offset, new)


def write_uint8_twin(source: Path, destination: Path) -> list[Path]:
    """Write `source` with every int8 weight of an integer MatMul stored as uint8 (value + 128, zero point 128)."""
    onnx, _, _, _ = _imports()
    from onnx import numpy_helper

    model = onnx.load(str(source))
    initializers = {i.name: i for i in model.graph.initializer}
    converted: dict[str, str] = {}  # int8 weight -> name of its uint8 zero points
    for node in model.graph.node:
        if node.op_type not in ("MatMulInteger", "MatMulIntegerToFloat") or node.input[1] not in initializers:
            continue
        weight = initializers[node.input[1]]
        if weight.data_type != onnx.TensorProto.INT8:
            continue
        if weight.name not in converted:
            values = numpy_helper.to_array(weight).astype(np.int16) + 128
            weight.CopyFrom(numpy_helper.from_array(values.astype(np.uint8), weight.name))
            zero_points = f"{weight.name}_uint8_zero_point"
            model.graph.initializer.append(
                numpy_helper.from_array(np.full(values.shape[-1], 128, np.uint8), zero_points))
            converted[weight.name] = zero_points
        position = 3 if node.op_type == "MatMulInteger" else 5  # b_zero_point in each op's inputs
        while len(node.input) <= position:
            node.input.append("")
        node.input[position] = converted[weight.name]
    used = {name for node in model.graph.node for name in node.input}
    for unused in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(unused)  # the int8 zero points the twin no longer reads
    onnx.save(model, str(destination))
    return [destination]


def _adds_before_layernorm_as_sum(model) -> None:
    """Rewrite Add -> LayerNormalization as Sum: the same sum, without ONNX Runtime's SkipLayerNormalization."""
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    for node in model.graph.node:
        if node.op_type == "Add" and "LayerNormalization" in consumers.get(node.output[0], []):
            node.op_type = "Sum"
