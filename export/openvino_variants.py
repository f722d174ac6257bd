"""OpenVINO IR variants, converted from the fp32 ONNX graph."""
from __future__ import annotations

from pathlib import Path

from edgembed.runtime.errors import ExportDependencyError

# sentence-transformers keeps OpenVINO files under openvino/.
OPENVINO_FILES = {
    "fp32": "openvino/openvino_model.xml",
    "fp16": "openvino/openvino_model_fp16.xml",
    "q8": "openvino/openvino_model_int8.xml",
}
Q8_DESCRIPTION = "nncf.compress_weights INT8_SYM: int8 weights per output channel, float activations"
# Run every variant in f32 arithmetic: without the hint, CPUs with AMX or avx512_bf16 run bf16.
PRECISION_HINT = "f32"


def _import_openvino():
    try:
        import openvino as ov
    except ImportError:
        raise ExportDependencyError("openvino") from None
    return ov


def convert(onnx_fp32: Path, dtype: str, destination: Path) -> list[Path]:
    """Write the IR (.xml + .bin) of `dtype` converted from the fp32 ONNX file; returns both paths."""
    ov = _import_openvino()
    model = ov.convert_model(str(onnx_fp32))
    if dtype == "q8":
        try:
            import nncf
        except ImportError:
            raise ExportDependencyError("nncf") from None
        model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_SYM)
    destination.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(destination), compress_to_fp16=(dtype == "fp16"))
    return [destination, destination.with_suffix(".bin")]
