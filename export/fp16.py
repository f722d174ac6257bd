"""fp16 ONNX: weights and arithmetic in float16, inputs and outputs unchanged, rotary angles kept in float32.

Plain `convert_float_to_float16` breaks the ModernBERT graph (ONNX Runtime refuses a rotary Cast whose type
it changed). ONNX Runtime's own converter also rewrites Casts to float into Casts to float16; the nodes that
compute the rotary cos/sin tables are blocked so positions and angles stay float32 (an fp16 position is
already wrong past 2048), and Cast(float16)→Cast(float) pairs the converter leaves behind are short-circuited.
MultiHeadAttention and RotaryEmbedding nodes stay float32 too: ONNX Runtime's CPU MultiHeadAttention has no
float16 kernel, and RotaryEmbedding needs its input and its (float32) cos/sin tables in one type.
"""
from __future__ import annotations

from pathlib import Path

from edgembed.runtime.errors import MissingDependencyError

from .converting import ConvertInputs
from .errors import EXPORT_INSTALL


def _rotary_nodes(graph) -> list[str]:  # onnx.GraphProto
    """Names of Cos/Sin and every node that feeds them."""
    producer = {output: node for node in graph.node for output in node.output}
    pending = [node for node in graph.node if node.op_type in ("Cos", "Sin")]
    seen: dict[str, object] = {}
    while pending:
        node = pending.pop()
        if node.name in seen:
            continue
        seen[node.name] = node
        pending.extend(producer[name] for name in node.input if name in producer)
    return list(seen)


def _short_circuit_round_trips(graph, onnx) -> None:
    """Cast(to=float)(Cast(to=float16)(x)) → Cast(to=float)(x): drops a rounding, changes nothing else."""
    producer = {output: node for node in graph.node for output in node.output}

    def target(node) -> int:
        return next(a.i for a in node.attribute if a.name == "to")

    for node in graph.node:
        if node.op_type == "Cast" and target(node) == onnx.TensorProto.FLOAT:
            before = producer.get(node.input[0])
            if before is not None and before.op_type == "Cast" and target(before) == onnx.TensorProto.FLOAT16:
                node.input[0] = before.input[0]
    graph_outputs = {output.name for output in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | graph_outputs
        dead = [node for node in graph.node if not any(output in used for output in node.output)]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)


def convert_fp16(inputs: ConvertInputs) -> list[Path]:
    """Write the fp16 graph of the fp32 one; returns the files written."""
    fp32, destination = inputs.source, inputs.destination
    try:
        import onnx
        from onnxruntime.transformers.onnx_model import OnnxModel
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "onnxruntime", "export", install=EXPORT_INSTALL) from None
    model = onnx.load(str(fp32))
    wrapper = OnnxModel(model)
    fused = [node.name for node in model.graph.node if node.op_type in ("MultiHeadAttention", "RotaryEmbedding")]
    wrapper.convert_float_to_float16(keep_io_types=True, node_block_list=_rotary_nodes(model.graph) + fused)
    _short_circuit_round_trips(wrapper.model.graph, onnx)
    wrapper.topological_sort()  # the converter appends its Cast nodes at the end of the graph
    onnx.save(wrapper.model, str(destination))
    onnx.checker.check_model(str(destination))
    return [destination]
