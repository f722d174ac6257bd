"""The variant recipes: one row per (format, dtype). Adding a dtype is one row here plus its converter.

The exporter's lists (dtypes, formats, what each format holds, default thresholds), the manifest's
descriptions and precision hints, the CLI help and the README's variants table all come from RECIPES.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_Q4_BLOCK_SIZE = 32
# The ONNX q8's uint8 twin, for x86 CPUs without VNNI (transformers.js' name for uint8 weights).
Q8_UINT8_TWIN = "onnx/model_uint8.onnx"


@dataclass(frozen=True)
class ConvertInputs:
    """What a converter gets: the fp32 ONNX graph of its format, where to write, and the shared settings."""

    source: Path
    destination: Path
    calibration: list[dict[str, np.ndarray]] | None
    q4_block_size: int = DEFAULT_Q4_BLOCK_SIZE
    status: Callable[[str], None] | None = None  # hears where a long conversion is, for the progress heartbeat


@dataclass(frozen=True)
class Recipe:
    """How one variant is made and what the manifest says about it.

    `precision_hint`: OpenVINO's INFERENCE_PRECISION_HINT (without one, CPUs with AMX or avx512_bf16 run an f32 IR
    in bf16). `portable`: its numbers do not depend on the CPU's int8 path. `description` may name
    {q4_block_size}.
    """

    format: str
    dtype: str
    file: str
    convert: Callable[[ConvertInputs], list[Path]]
    description: str
    min_cosine: float
    use: str  # when to pick this dtype, for the README's table (the first row of a dtype is used)
    precision_hint: str | None = None
    needs_calibration: bool = False
    portable: bool = True
    alternates: dict[str, str] | None = None  # int8 family -> a file with the same numbers for that family
    @property
    def name(self) -> str:
        return f"{self.format}/{self.dtype}"

    def describe(self, q4_block_size: int = DEFAULT_Q4_BLOCK_SIZE) -> str:
        return self.description.format(q4_block_size=q4_block_size)


def _onnx_fp32(inputs: ConvertInputs) -> list[Path]:
    """The exported graph itself (and its external weights, past 2 GB)."""
    data = inputs.source.with_name(inputs.source.name + "_data")
    return [inputs.source] + ([data] if data.is_file() else [])


def _onnx_fp16(inputs: ConvertInputs) -> list[Path]:
    from .fp16 import convert_fp16

    return convert_fp16(inputs.source, inputs.destination)


def _onnx_q8(inputs: ConvertInputs) -> list[Path]:
    from .q8_recipe import quantize_q8, write_uint8_twin

    primary = quantize_q8(inputs.source, inputs.destination, inputs.calibration or [], status=inputs.status)
    twin = inputs.destination.with_name(Q8_UINT8_TWIN.rsplit("/", 1)[-1])
    return primary + write_uint8_twin(primary[0], twin)


def _onnx_q4(inputs: ConvertInputs) -> list[Path]:
    from .onnx_variants import quantize_q4

    return quantize_q4(inputs.source, inputs.destination, inputs.q4_block_size)


def _openvino(dtype: str) -> Callable[[ConvertInputs], list[Path]]:
    def convert(inputs: ConvertInputs) -> list[Path]:
        from .openvino_variants import convert as convert_ir

        return convert_ir(inputs.source, dtype, inputs.destination, inputs.calibration, status=inputs.status)

    return convert


# File names: transformers.js under onnx/, sentence-transformers under openvino/.
RECIPES = [
    Recipe("onnx", "fp32", "onnx/model.onnx", _onnx_fp32, "the exported graph, float32", 0.9999,
           "you want the PyTorch model's numbers exactly"),
    Recipe("onnx", "fp16", "onnx/model_fp16.onnx", _onnx_fp16,
           "float16 weights and arithmetic; rotary tables, attention and RoPE kernels stay float32", 0.999,
           "half the disk, the same vectors (slower than fp32 on CPUs)"),
    Recipe("onnx", "q8", "onnx/model_quantized.onnx", _onnx_q8,
           "int8 MatMuls (export/q8_recipe.py): calibrated smoothing of outlier channels, GPTQ-rounded int8 weights "
           "per output channel, activations quantized at run time (per token where a LayerNorm feeds the MatMul), "
           "each down projection's 8 largest input channels in float32; "
           "int8 word embeddings; the same integers as uint8 in onnx/model_uint8.onnx for x86 CPUs without VNNI",
           0.97, "CPU serving: the default", needs_calibration=True, alternates={"no-vnni": Q8_UINT8_TWIN}),
    Recipe("onnx", "q4", "onnx/model_q4.onnx", _onnx_q4,
           "MatMulNBits: 4-bit symmetric weights in blocks of {q4_block_size}, float activations", 0.9,
           "download size matters more than fidelity"),
    Recipe("openvino", "fp32", "openvino/openvino_model.xml", _openvino("fp32"), "the IR, float32", 0.9999,
           "you want the PyTorch model's numbers exactly", precision_hint="f32"),
    Recipe("openvino", "fp16", "openvino/openvino_model_fp16.xml", _openvino("fp16"),
           "float16 weights (rotary frequencies kept float32), float32 arithmetic", 0.999,
           "half the disk, the same vectors", precision_hint="f32"),
    Recipe("openvino", "q8", "openvino/openvino_model_int8.xml", _openvino("q8"),
           "nncf.compress_weights INT8_ASYM: int8 weights with a zero point per output channel; the CPU plugin "
           "quantizes activations at run time in groups of 128 channels per token (or, with AMX, runs bf16); float "
           "parts in bf16 where the CPU has it", 0.97,
           "CPU serving: the default", precision_hint="bf16", portable=False),
    Recipe("openvino", "q8-static", "openvino/openvino_model_qint8_quantized.xml", _openvino("q8-static"),
           "nncf.quantize, transformer preset (SmoothQuant): int8 weights and activations, calibrated", 0.97,
           "fastest on VNNI CPUs, if its fidelity suffices", precision_hint="f32",
           needs_calibration=True, portable=False),
    Recipe("openvino", "q4", "openvino/openvino_model_int4.xml", _openvino("q4"),
           "nncf.compress_weights INT4_SYM, group 32 (embeddings and last layer int8)", 0.9,
           "download size matters more than fidelity", precision_hint="f32", portable=False),
]
DTYPES = tuple(dict.fromkeys(recipe.dtype for recipe in RECIPES))
FORMATS = tuple(dict.fromkeys(recipe.format for recipe in RECIPES))
SUPPORTED = {fmt: tuple(r.dtype for r in RECIPES if r.format == fmt) for fmt in FORMATS}
DEFAULT_MIN_COSINE = {recipe.dtype: recipe.min_cosine for recipe in RECIPES}


def find_recipe(fmt: str, dtype: str) -> Recipe:
    return next(r for r in RECIPES if r.format == fmt and r.dtype == dtype)


def markdown_table() -> str:
    """The README's variants table: files per engine, whether the vectors are the same on every CPU, when to pick."""
    def cell(recipe: Recipe | None) -> str:
        if recipe is None:
            return "-"
        extra = "".join(f" (+ `{path}`, {family})" for family, path in (recipe.alternates or {}).items())
        return f"`{recipe.file}`{extra}" + ("" if recipe.portable else " *")

    lines = ["| variant | ONNX Runtime file | OpenVINO file | pick it when |", "|---|---|---|---|"]
    for dtype in DTYPES:
        found = {r.format: r for r in RECIPES if r.dtype == dtype}
        first = next(r for r in RECIPES if r.dtype == dtype)
        lines.append(f"| {dtype} | {cell(found.get('onnx'))} | {cell(found.get('openvino'))} | {first.use} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
