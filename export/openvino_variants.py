"""OpenVINO IR variants, converted from the fp32 ONNX graph."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgembed.runtime.errors import ExportDependencyError

# sentence-transformers keeps OpenVINO files under openvino/.
OPENVINO_FILES = {
    "fp32": "openvino/openvino_model.xml",
    "fp16": "openvino/openvino_model_fp16.xml",
    "q8": "openvino/openvino_model_int8.xml",
    "q8-static": "openvino/openvino_model_qint8_quantized.xml",  # sentence-transformers' name for it
    "q4": "openvino/openvino_model_int4.xml",
}
DESCRIPTIONS = {
    "q8": "nncf.compress_weights INT8_SYM: int8 weights per output channel; the CPU plugin quantizes the "
          "activations at run time, one range per group of 128 channels of each token",
    "q8-static": "nncf.quantize, transformer preset (SmoothQuant): int8 weights and activations, calibrated",
    "q4": "nncf.compress_weights INT4_SYM, group 32 (embeddings and last layer int8): int4 weights",
}
# Every variant but q8 runs in f32 arithmetic: without the hint, CPUs with AMX or avx512_bf16 run bf16.
# q8 asks for bf16: its int8 projections quantize their activations at run time either way, and the float
# rest (attention, LayerNorm, GELU) in bf16 made all-MiniLM-L6-v2's q8 1.92-2.06x fp32 instead of
# 1.69-1.75x (32 x 128 tokens) with the same fidelity (cos min 0.99497 against 0.99468, top-10 0.959
# against 0.961), ModernBERT-base 2.13-2.26x instead of 1.92-1.95x, and its 8192-token document 5.7 s
# instead of 6.8 s. CPUs without native bf16 ignore the hint and run f32, as before.
PRECISION_HINTS = {"q8": "bf16"}
DEFAULT_PRECISION_HINT = "f32"
# Activation group of the CPU plugin's dynamic quantization for the q8 IR, stored in the IR's
# rt_info/runtime_options so that whoever loads the file gets it. The plugin's default, 32, made MiniLM's q8
# 1.58x fp32 (32 x 128 tokens, 2 threads); 64 1.66-1.74x, 128 1.70-1.79x, 256 and 384 slower again;
# ModernBERT-base 1.94x with 128 against 1.69x. Fidelity with 128 still meets the q8 goal
# (benchmarks/q8_fidelity.md, fourth session).
Q8_ACTIVATION_GROUP = 128
# Constants smaller than this stay float32 in the fp16 IR: among them the rotary inverse frequencies,
# whose rounding to fp16 shifts every rotation angle in proportion to the position.
FP16_MIN_ELEMENTS = 1024


def precision_hint(dtype: str) -> str:
    """The INFERENCE_PRECISION_HINT the manifest records for the IR of `dtype`."""
    return PRECISION_HINTS.get(dtype, DEFAULT_PRECISION_HINT)


def _import_openvino():
    try:
        import openvino as ov
    except ImportError:
        raise ExportDependencyError("openvino") from None
    return ov


def _import_nncf():
    try:
        import nncf
    except ImportError:
        raise ExportDependencyError("nncf") from None
    logging.getLogger("nncf").setLevel(logging.WARNING)  # its per-layer tables drown the export's progress
    return nncf


def _activation_matmuls(model) -> list[str]:
    """Names of the MatMuls whose inputs are both computed (attention scores and context), not weights."""
    def computed(port) -> bool:
        node = port.get_source_output().get_node()
        while node.get_type_name() == "Convert":
            node = node.input_value(0).get_node()
        return node.get_type_name() != "Constant"

    return [op.get_friendly_name() for op in model.get_ops()
            if op.get_type_name() == "MatMul" and all(computed(port) for port in op.inputs())]


def convert(onnx_fp32: Path, dtype: str, destination: Path,
            calibration: list[dict[str, np.ndarray]] | None = None) -> list[Path]:
    """Write the IR (.xml + .bin) of `dtype` converted from the fp32 ONNX file; returns both paths.

    `calibration` (one feed dict per text) is needed for q8-static only.
    """
    ov = _import_openvino()
    model = ov.convert_model(str(onnx_fp32))
    if dtype == "q8":
        nncf = _import_nncf()
        model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_SYM)
        model.set_rt_info(str(Q8_ACTIVATION_GROUP), ["runtime_options", "DYNAMIC_QUANTIZATION_GROUP_SIZE"])
    elif dtype == "q4":
        nncf = _import_nncf()
        model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_SYM, group_size=32, ratio=1.0)
    elif dtype == "q8-static":
        nncf = _import_nncf()
        if not calibration:
            raise ValueError("q8-static needs calibration feeds")
        # Attention products stay float: the sliding-window scores carry a float32-min mask that no int8
        # range survives (cosine min 0.79 on the tiny model with them quantized, 0.98 without).
        model = nncf.quantize(model, nncf.Dataset(calibration), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(calibration),
                              ignored_scope=nncf.IgnoredScope(names=_activation_matmuls(model), validate=False))
    if dtype == "fp16":
        _store_weights_as_fp16(ov, model)
    destination.parent.mkdir(parents=True, exist_ok=True)
    # compress_to_fp16 would also round the small constants (it defaults to True: always pass it).
    ov.save_model(model, str(destination), compress_to_fp16=False)
    return [destination, destination.with_suffix(".bin")]


def _store_weights_as_fp16(ov, model) -> None:
    """Replace every large f32 Constant by an f16 Constant and a Convert back to f32 (decompressed at load)."""
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
