"""OpenVINO IR variants, converted from the fp32 ONNX graph: one converter per dtype."""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edgembed.runtime.errors import MissingDependencyError

from . import q8_turned
from .converting import ConvertInputs
from .errors import EXPORT_INSTALL

# Activation group of the CPU plugin's dynamic quantization for the q8 IR, stored in the IR's
# rt_info/runtime_options so that whoever loads the file gets it (128 measured fastest: docs/q8-recipe.md).
Q8_ACTIVATION_GROUP = 128
# Constants smaller than this stay float32 in the fp16 IR: among them the rotary inverse frequencies,
# whose rounding to fp16 shifts every rotation angle in proportion to the position.
FP16_MIN_ELEMENTS = 1024


def _import_openvino():
    try:
        import openvino as ov
    except ImportError:
        raise MissingDependencyError("openvino", "export", install=EXPORT_INSTALL) from None
    return ov


def _import_nncf():
    try:
        import nncf
    except ImportError:
        raise MissingDependencyError("nncf", "export", install=EXPORT_INSTALL) from None
    logging.getLogger("nncf").setLevel(logging.WARNING)  # its per-layer tables drown the export's progress
    return nncf


def _source(port, through: tuple[str, ...]):
    """The node a MatMul input comes from, past the node types in `through` (each followed by its first input)."""
    node = port.get_source_output().get_node()
    while node.get_type_name() in through:
        node = node.input_value(0).get_node()
    return node


def _computed(port) -> bool:
    """Whether a MatMul input is computed at run time rather than a (possibly converted) weight."""
    return _source(port, ("Convert",)).get_type_name() != "Constant"


def _activation_matmuls(model) -> list[str]:
    """Names of the MatMuls whose inputs are both computed (attention scores and context), not weights."""
    return [op.get_friendly_name() for op in model.get_ops()
            if op.get_type_name() == "MatMul" and all(_computed(port) for port in op.inputs())]


def _integer_weight(port) -> bool:
    """Whether a MatMul input is an integer Constant read through its decompression (Convert, Subtract, Multiply)."""
    node = _source(port, ("Convert", "Subtract", "Multiply", "Reshape"))
    return node.get_type_name() == "Constant" and node.get_output_element_type(0).is_integral()


def activation_group(model) -> int:
    """128, or half the narrowest input of a MatMul with integer weights (whose activations the CPU plugin quantizes)
    if narrower: a group never spans a whole row.

    A whole-row group is per-token quantization, another kernel path: on AMX it is a fused MLP kernel that
    fails to compile widths not a multiple of 64 (docs/q8-recipe.md, the tiny test model hit it).
    """
    widths = []
    for op in model.get_ops():
        if op.get_type_name() != "MatMul" or not _integer_weight(op.input(1)):
            continue
        shape = op.input(0).get_partial_shape()
        last = shape[shape.rank.get_length() - 1]
        if last.is_static:
            widths.append(last.get_length())
    return min([Q8_ACTIVATION_GROUP] + [width // 2 for width in widths if width >= 2])


def convert_fp32(inputs: ConvertInputs) -> list[Path]:
    """The IR of the fp32 graph as it is."""
    return _write_ir(inputs, "preparing the IR", lambda model: model)


def convert_fp16(inputs: ConvertInputs) -> list[Path]:
    """Large weights stored as f16 and widened at load; arithmetic stays f32."""
    return _write_ir(inputs, "storing the weights as fp16", _weights_as_fp16)


def convert_q8(inputs: ConvertInputs) -> list[Path]:
    """int8 weights, activations quantized by the CPU plugin at run time. The smoothed recipe: nncf INT8_ASYM on the
    fp32 graph. The turned one: its turns and GPTQ int8 weights (export/q8_turned.py), int8 word embeddings."""
    if inputs.q8_recipe != "turned":
        return _write_ir(inputs, "nncf: q8 compression", _int8_asym_weights)
    if not inputs.calibration:
        raise ValueError("the turned q8 needs calibration feeds")
    with tempfile.TemporaryDirectory(prefix="edgembed-openvino-q8-") as scratch:
        turned = q8_turned.write_turned_for_openvino(inputs.source, Path(scratch) / "turned.onnx",
                                                     inputs.calibration, inputs.status,
                                                     shared=inputs.turned_rounding)
        return _write_ir(replace(inputs, source=turned), "nncf: int8 word embeddings",
                         partial(_int8_asym_weights, matmuls=False))


def convert_q8_static(inputs: ConvertInputs) -> list[Path]:
    """int8 weights and activations, calibrated on the calibration feeds."""
    if not inputs.calibration:
        raise ValueError("q8-static needs calibration feeds")
    return _write_ir(inputs, "nncf: q8-static quantization", partial(_int8_static, calibration=inputs.calibration))


def convert_q4(inputs: ConvertInputs) -> list[Path]:
    """4-bit symmetric weights in groups of 32."""
    return _write_ir(inputs, "nncf: q4 compression", _int4_sym_weights)


def _write_ir(inputs: ConvertInputs, step: str, change: Callable[[Any], Any]) -> list[Path]:
    """Read the fp32 ONNX graph into OpenVINO, apply this dtype's `change`, write the IR; returns .xml and .bin."""
    ov = _import_openvino()
    inputs.say("reading the ONNX graph into OpenVINO")
    model = ov.convert_model(str(inputs.source))
    inputs.say(step)
    model = change(model)
    inputs.destination.parent.mkdir(parents=True, exist_ok=True)
    inputs.say("writing the IR")
    # compress_to_fp16 would also round the small constants (it defaults to True: always pass it).
    ov.save_model(model, str(inputs.destination), compress_to_fp16=False)
    return [inputs.destination, inputs.destination.with_suffix(".bin")]


def _other_tables(model) -> list[str]:
    """Names of the Gathers that read a float table smaller than the largest (the vocabulary): position and
    token-type embeddings, added to every token, so that their rounding moves every vector alike."""
    tables = {}
    for op in model.get_ops():
        if op.get_type_name() != "Gather":
            continue
        source = _source(op.input(0), ("Convert",))
        shape = source.get_output_partial_shape(0)
        if (source.get_type_name() == "Constant" and not source.get_output_element_type(0).is_integral()
                and shape.rank.get_length() == 2 and shape.is_static):
            tables[op.get_friendly_name()] = shape[0].get_length()
    largest = max(tables.values(), default=0)
    return sorted(name for name, rows in tables.items() if rows < largest)


def _int8_asym_weights(model, *, matmuls: bool = True):
    """nncf INT8_ASYM weights and the activation group; the position and token-type tables stay float (int8 there
    cost MiniLM's turned q8 0.02 of top-10 on korean, docs/q8-recipe.md, sixteenth session). `matmuls=False`: the
    word embeddings only, for the turned recipe, whose MatMuls are int8 already and whose Hadamard blocks stay float
    (in int8 the plugin would round their input as well: a second rounding of the same activations)."""
    nncf = _import_nncf()
    # Asymmetric: a zero point per output channel; far closer to fp32 than INT8_SYM on non-Latin text at the
    # same speed (docs/q8-recipe.md, eighth session).
    ignored = nncf.IgnoredScope(names=_other_tables(model), types=[] if matmuls else ["MatMul"], validate=False)
    model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM, ignored_scope=ignored)
    model.set_rt_info(str(activation_group(model)), ["runtime_options", "DYNAMIC_QUANTIZATION_GROUP_SIZE"])
    return model


def _int8_static(model, *, calibration: list[dict[str, np.ndarray]]):
    nncf = _import_nncf()
    # Attention products stay float: the sliding-window scores carry a float32-min mask that no int8
    # range survives (cosine min 0.79 on the tiny model with them quantized, 0.98 without).
    return nncf.quantize(model, nncf.Dataset(calibration), model_type=nncf.ModelType.TRANSFORMER,
                         subset_size=len(calibration),
                         ignored_scope=nncf.IgnoredScope(names=_activation_matmuls(model), validate=False))


def _int4_sym_weights(model):
    nncf = _import_nncf()
    return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_SYM, group_size=32, ratio=1.0)


def _weights_as_fp16(model):
    """Replace every large f32 Constant by an f16 Constant and a Convert back to f32 (decompressed at load)."""
    ov = _import_openvino()
    import openvino.opset13 as opset

    for node in model.get_ordered_ops():
        if node.get_type_name() != "Constant" or node.get_output_element_type(0) != ov.Type.f32:
            continue
        values = node.get_data()
        if values.size < FP16_MIN_ELEMENTS:
            continue
        half = opset.constant(values.astype(np.float16), dtype=ov.Type.f16)
        widened = opset.convert(half, ov.Type.f32)
        widened.get_rt_info()["decompression"] = ""  # the mark OpenVINO's own fp16 IRs carry
        widened.set_friendly_name(node.get_friendly_name())
        for consumer in list(node.output(0).get_target_inputs()):
            consumer.replace_source_output(widened.output(0))
    return model
