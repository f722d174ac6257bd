"""The turned q8 recipe (`--q8-recipe turned`): MatMul inputs turned by block Hadamard matrices, then per-token int8.

The smoothed recipe (q8_recipe.py) spends its effort on a few loud channels. Its rounding error still falls
more than random error would on the directions in which a domain's texts differ, which costs non-Latin text
its top-10 (docs/q8-recipe.md, twelfth session). Here the input x of a MatMul becomes x R and the weight
becomes R^T W, with R block-diagonal of orthonormal Hadamard blocks of TURN_BLOCK: the product is the same in
float, and a loud channel is spread over its block, so both the per-token activation step and the
per-column weight step get finer. No smoothing and no float outlier path are needed.

1. Calibration as in the smoothed recipe: each MatMul input's Gram matrix G on the calibration feeds.
2. Turned: the inputs fed by a LayerNormalization (attention and FFN input projections) and the down
   projections' (more rows than columns). The attention output projections read their input as it is: turning
   it did not help its top-10 and cost speed. Widths that are not a multiple of TURN_BLOCK stay as they are.
3. Weights: GPTQ int8 per output column of R^T W, rounded against R^T G R.
4. In the graph: Reshape to rows of TURN_BLOCK, one float MatMul by the Hadamard block, Reshape back to the
   input's shape; then every weight MatMul quantizes its (turned) input per token, as the smoothed recipe's
   LayerNorm-fed MatMuls do (the attention output too: one range per tensor there lost top-10 for no speed).
5. int8 word embeddings, Adds before LayerNormalization as Sum, and the uint8 twin: as in the smoothed recipe.

OpenVINO's q8 under this recipe (`write_turned_for_openvino`) takes steps 1-3 and the turns of step 4 in float;
the CPU plugin quantizes the activations itself (export/openvino_variants.py). An export of both formats does
steps 1-3 once: the second conversion finds the first's codes in a `TurnedRounding`.
"""
from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import q8_recipe

TURN_BLOCK = 32  # Hadamard block size: 64 kept more top-10 but cost about twice as much speed (docs/q8-recipe.md)


def hadamard(size: int) -> np.ndarray:
    """The orthonormal (and symmetric) Hadamard matrix of a power-of-two size (Sylvester's construction)."""
    if size < 1 or size & (size - 1):
        raise ValueError(f"a Hadamard block needs a power-of-two size, not {size}")
    matrix = np.ones((1, 1))
    while matrix.shape[0] < size:
        matrix = np.block([[matrix, matrix], [matrix, -matrix]])
    return matrix / np.sqrt(size)


def turn_rows(matrix: np.ndarray, block: int) -> np.ndarray:
    """R^T M for R block-diagonal of Hadamard blocks of `block` (each group of `block` rows mixed by one block)."""
    rows = matrix.shape[0]
    grouped = matrix.reshape(rows // block, block, -1)
    return np.einsum("ij,gjn->gin", hadamard(block), grouped).reshape(matrix.shape)


def turn_gram(gram: np.ndarray, block: int) -> np.ndarray:
    """R^T G R: the Gram matrix of the turned input x R."""
    return turn_rows(turn_rows(gram, block).T, block).T


class TurnedRounding:
    """The GPTQ codes of one export's turned q8, for its other format's q8: each group of weights that read one
    input, found again by the content of its columns (ModernBERT's ONNX Runtime graph reads Wq, Wk and Wv as
    three MatMuls where the graph of standard ops has one Wqkv). A group not found is rounded anew."""

    def __init__(self) -> None:
        self._groups: dict[bytes, tuple[dict[bytes, int], np.ndarray, np.ndarray]] = {}

    def recall(self, parts: list[np.ndarray], turned: bool) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """Each part's int8 codes and column scales, if a group of the same columns read the same way was kept."""
        digests = [_column_digests(part) for part in parts]
        found = self._groups.get(_group_key(digests, turned))
        if found is None:
            return None
        position, codes, scales = found
        columns = [[position[digest] for digest in part] for part in digests]
        return [(np.ascontiguousarray(codes[:, index]), scales[index].copy()) for index in columns]

    def keep(self, parts: list[np.ndarray], turned: bool, results: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Keep the codes and scales `results` of `parts` (the float weights as the graph holds them)."""
        digests = [_column_digests(part) for part in parts]
        position = {digest: column for column, digest in enumerate(d for part in digests for d in part)}
        codes = np.concatenate([values for values, _ in results], axis=1)
        scales = np.concatenate([column_scales for _, column_scales in results])
        self._groups[_group_key(digests, turned)] = (position, codes, scales)


def _column_digests(weight: np.ndarray) -> list[bytes]:
    return [hashlib.blake2b(column.tobytes(), digest_size=16).digest() for column in np.ascontiguousarray(weight.T)]


def _group_key(digests: list[list[bytes]], turned: bool) -> bytes:
    """The same for the same columns in any split and order (GPTQ rounds each column on its own)."""
    columns = b"".join(sorted(set().union(*digests)))
    return hashlib.blake2b((b"turned:" if turned else b"as is:") + columns).digest()


def quantize_q8_turned(fp32: Path, destination: Path, calibration: list[dict[str, np.ndarray]],
                       status: Callable[[str], None] | None = None, *, block: int = TURN_BLOCK,
                       shared: TurnedRounding | None = None) -> list[Path]:
    """Write the turned q8 graph of `fp32` to `destination`, calibrated on `calibration` (one feed per text).
    `shared`: codes another format's q8 of the same export kept (and where this one keeps its own)."""
    onnx, _, _, _ = q8_recipe._imports()
    with tempfile.TemporaryDirectory(prefix="edgembed-q8-") as scratch:
        directory = Path(scratch)
        model, readers, rounded = _turned_and_rounded(fp32, directory, calibration, status, block, shared)
        q8_recipe._quantize_per_token(model, readers, rounded)
        del rounded
        q8_recipe._int8_embedding_rows(model, directory)
        q8_recipe._adds_before_layernorm_as_sum(model)
        onnx.load_external_data_for_model(model, str(directory))  # the norms and biases still in the scratch file
    onnx.save(model, str(destination))
    return [destination]


def write_turned_for_openvino(fp32: Path, destination: Path, calibration: list[dict[str, np.ndarray]],
                              status: Callable[[str], None] | None = None, *, block: int = TURN_BLOCK,
                              shared: TurnedRounding | None = None) -> Path:
    """The same turns and GPTQ int8 codes as `quantize_q8_turned`, each weight read through a DequantizeLinear (one
    scale per output column) and every activation left float: OpenVINO reads such a weight as compressed int8 and
    quantizes the activations itself. The word embeddings stay float, for the IR's own compression."""
    onnx, _, _, _ = q8_recipe._imports()
    with tempfile.TemporaryDirectory(prefix="edgembed-q8-") as scratch:
        directory = Path(scratch)
        model, _, rounded = _turned_and_rounded(fp32, directory, calibration, status, block, shared)
        _dequantized_weights(model, rounded)
        del rounded
        onnx.load_external_data_for_model(model, str(directory))
    onnx.save(model, str(destination))
    return destination


def _turned_and_rounded(fp32: Path, directory: Path, calibration: list[dict[str, np.ndarray]],
                        status: Callable[[str], None] | None, block: int, shared: TurnedRounding | None):
    """The graph of `fp32` with its turns inserted (large initializers in `directory`/weights.bin, read one matrix
    at a time), the names of its weight MatMuls, and each weight's GPTQ int8 codes and column scales (of R^T W
    where its input is turned): those `shared` holds for every weight, or calibrated and rounded here (and kept in
    `shared`)."""
    model = q8_recipe._with_external_weights(fp32, directory)
    q8_recipe._name_unnamed_nodes(model)
    weights = {i.name: i for i in model.graph.initializer}
    matmuls = q8_recipe._weight_matmuls(model, weights)
    widths = {node.input[0]: int(weights[node.input[1]].dims[0]) for node in matmuls}
    turned = _turned_inputs(model, matmuls, weights, block)
    readers = {name: [node.input[1] for node in matmuls if node.input[0] == name] for name in widths}

    def parts(name: str) -> list[np.ndarray]:
        return [q8_recipe.weight_values(weights[weight], directory) for weight in readers[name]]

    rounded = _recalled(shared, readers, parts, turned) if shared is not None else None
    if rounded is not None and status is not None:
        status("GPTQ rounding: the same weights as this export's other q8, whose codes are reused")
    if rounded is None:
        rounded = {}
        stats = q8_recipe._calibrate(model, list(widths), calibration, widths=widths, weights_dir=directory,
                                     status=status)
        for name in widths:  # one input's Gram matrix at a time, dropped once its MatMuls are rounded
            gram = stats.pop(name).gram.astype(np.float64)
            values = parts(name)
            rounding = values
            if name in turned:
                rounding = [turn_rows(part.astype(np.float64), block).astype(np.float32) for part in values]
                gram = turn_gram(gram, block)
            rounded.update(q8_recipe._gptq_side_by_side(readers[name], rounding, None, gram))
            if shared is not None:
                shared.keep(values, name in turned, [rounded[weight] for weight in readers[name]])
            del values, rounding, gram
            if status is not None:
                status(f"GPTQ rounding: {len(rounded)} of {len(matmuls)} weight matrices")
    shapes = {name: (rank, widths[name]) for name, rank in _ranks(model, turned).items()}
    _insert_turns(model, turned, block, {node.name for node in matmuls}, shapes=shapes)
    return model, {node.name for node in matmuls}, rounded


def _recalled(shared: TurnedRounding, readers: dict[str, list[str]], parts: Callable[[str], list[np.ndarray]],
              turned: set[str]) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """Every weight's codes and scales from `shared`, or None if any group of them is not there."""
    rounded = {}
    for name, weights in readers.items():
        found = shared.recall(parts(name), name in turned)
        if found is None:
            return None
        rounded.update(zip(weights, found))
    return rounded


def _dequantized_weights(model, rounded: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Each weight in `rounded` becomes its int8 codes and column scales, read through one DequantizeLinear."""
    from onnx import helper, numpy_helper

    initializers = {i.name: i for i in model.graph.initializer}
    dequantize = []
    for weight, (codes, scales) in rounded.items():
        model.graph.initializer.remove(initializers[weight])
        model.graph.initializer.extend([numpy_helper.from_array(codes.astype(np.int8), f"{weight}_int8"),
                                        numpy_helper.from_array(scales.astype(np.float32), f"{weight}_scale")])
        dequantize.append(helper.make_node("DequantizeLinear", [f"{weight}_int8", f"{weight}_scale"], [weight],
                                           name=f"{weight}_Dequantize", axis=1))
    nodes = [*dequantize, *model.graph.node]  # they read initializers only, so first is in order
    model.graph.ClearField("node")
    model.graph.node.extend(nodes)
    q8_recipe._require_opsets(model, {"": 13})  # DequantizeLinear with an axis


def _turned_inputs(model, matmuls: list, weights: dict, block: int) -> set[str]:
    """The inputs to turn: those of the LayerNorm-fed MatMuls and of the down projections, when `block` divides
    their width."""
    fed_by_layernorm = q8_recipe._layernorm_fed_matmuls(model)
    chosen = set()
    for node in matmuls:
        rows, columns = weights[node.input[1]].dims
        if (node.name in fed_by_layernorm or rows > columns) and rows % block == 0:
            chosen.add(node.input[0])
    return chosen


def _ranks(model, names: set[str]) -> dict[str, int]:
    """The rank of each tensor in `names` that onnx's shape inference knows (the weights stay where they are)."""
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model).graph
    known = {}
    for info in [*inferred.value_info, *inferred.input]:
        if info.name in names and info.type.tensor_type.HasField("shape"):
            known[info.name] = len(info.type.tensor_type.shape.dim)
    return known


def _insert_turns(model, names: set[str], block: int, readers: set[str], *,
                  shapes: dict[str, tuple[int, int]] | None = None) -> None:
    """After each tensor in `names`: Reshape to rows of `block`, MatMul by the Hadamard block, Reshape back to the
    tensor's own shape, as `{name}_turned`; the MatMuls named in `readers` read the turned tensor instead.

    A tensor whose (rank, width) is in `shapes` keeps its leading dimensions through both Reshapes (zeros in
    their target shapes); one of unknown rank takes its shape from a Shape node, one node more for every text.
    """
    from onnx import helper, numpy_helper

    if not names:
        return
    shapes = shapes or {}
    model.graph.initializer.append(numpy_helper.from_array(hadamard(block).astype(np.float32), "turn_block"))
    if not names <= shapes.keys():  # ONNX Runtime warns at every load about an initializer no node reads
        model.graph.initializer.append(numpy_helper.from_array(np.array([-1, block], np.int64), "turn_rows"))
    inserted: dict[str, list] = {}
    for name in sorted(names):
        if name in shapes:
            rank, width = shapes[name]
            model.graph.initializer.extend([
                numpy_helper.from_array(np.array([0] * (rank - 1) + [width // block, block], np.int64),
                                        f"{name}_rows_shape"),
                numpy_helper.from_array(np.array([0] * (rank - 1) + [width], np.int64), f"{name}_shape")])
            rows, shape = [], [f"{name}_rows_shape"]
        else:
            rows = [helper.make_node("Shape", [name], [f"{name}_shape"], name=f"{name}_TurnShape")]
            shape = ["turn_rows"]
        inserted[name] = [
            *rows,
            helper.make_node("Reshape", [name, *shape], [f"{name}_rows"], name=f"{name}_TurnRows"),
            helper.make_node("MatMul", [f"{name}_rows", "turn_block"], [f"{name}_rows_turned"],
                             name=f"{name}_TurnMatMul"),
            helper.make_node("Reshape", [f"{name}_rows_turned", f"{name}_shape"], [f"{name}_turned"],
                             name=f"{name}_TurnBack")]
    nodes = [new for graph_input in model.graph.input for new in inserted.get(graph_input.name, [])]
    for node in model.graph.node:
        if node.name in readers and node.input[0] in names:
            node.input[0] = f"{node.input[0]}_turned"
        nodes.append(node)
        for output in node.output:
            nodes += inserted.get(output, [])
    model.graph.ClearField("node")
    model.graph.node.extend(nodes)
