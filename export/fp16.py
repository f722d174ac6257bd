"""fp16 ONNX: weights and arithmetic in float16, inputs and outputs unchanged."""
from __future__ import annotations

from pathlib import Path

from edgembed.runtime.errors import ExportDependencyError


def convert_fp16(fp32: Path, destination: Path) -> list[Path]:
    try:
        import onnx
        from onnxconverter_common import float16
    except ImportError:
        raise ExportDependencyError("onnxconverter-common") from None
    model = onnx.load(str(fp32))
    converted = float16.convert_float_to_float16(model, keep_io_types=True)
    onnx.save(converted, str(destination))
    return [destination]
