"""The variant recipes: one row per (format, dtype), each naming its converter; and the file formats, each
naming the fp32 graph its converters read. Adding a dtype is one RECIPES row plus its converter (and its rank in
runtime/preference.py).

The exporter's lists (dtypes, formats, what each format holds, default thresholds), the manifest's
descriptions and precision hints, the CLI help and the README's variants table all come from these tables.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import fp16, onnx_variants, openvino_variants, q8_recipe
from .converting import DEFAULT_Q4_BLOCK_SIZE, DEFAULT_Q8_RECIPE, Converter


@dataclass(frozen=True)
class FileFormat:
    """A file format the exporter writes: the README column of its files, and which fp32 ONNX graph its
    converters read. `onnxruntime_ops`: the graph with ONNX Runtime's fused attention and RoPE ops (with efficient
    attention); otherwise one of standard ONNX ops only, which other engines can read."""

    name: str
    column: str
    onnxruntime_ops: bool


FILE_FORMATS = {spec.name: spec for spec in (
    FileFormat("onnx", "ONNX Runtime file", onnxruntime_ops=True),
    FileFormat("openvino", "OpenVINO file", onnxruntime_ops=False),
)}


@dataclass(frozen=True)
class Recipe:
    """How one variant is made and what the manifest says about it.

    `precision_hint`: OpenVINO's INFERENCE_PRECISION_HINT (without one, CPUs with AMX or avx512_bf16 run an f32 IR
    in bf16). `portable`: its numbers do not depend on the CPU's int8 path. `description` may name
    {q4_block_size} and {q8_recipe} (the chosen q8 recipe's line of Q8_RECIPE_DESCRIPTIONS for its format).
    `needs_calibration`: True, or the q8 recipes (--q8-recipe) that calibrate it.
    """

    format: str
    dtype: str
    file: str
    convert: Converter  # a function of ConvertInputs (export/converting.py) that writes this variant's files
    description: str
    min_cosine: float
    use: str  # when to pick this dtype, for the README's table (the first row of a dtype is used)
    precision_hint: str | None = None
    needs_calibration: bool | tuple[str, ...] = False
    portable: bool = True
    alternates: dict[str, str] | None = None  # int8 family -> a file with the same numbers for that family
    @property
    def name(self) -> str:
        return f"{self.format}/{self.dtype}"

    def describe(self, *, q4_block_size: int = DEFAULT_Q4_BLOCK_SIZE, q8_recipe: str = DEFAULT_Q8_RECIPE) -> str:
        return self.description.format(q4_block_size=q4_block_size,
                                       q8_recipe=Q8_RECIPE_DESCRIPTIONS[q8_recipe][self.format])

    def calibrates(self, q8_recipe: str) -> bool:
        """Whether this variant needs the calibration feeds when made by `q8_recipe`."""
        if isinstance(self.needs_calibration, bool):
            return self.needs_calibration
        return q8_recipe in self.needs_calibration


# What each q8 recipe (--q8-recipe) does in each format, for the manifest.
Q8_RECIPE_DESCRIPTIONS = {
    "smoothed": {
        "onnx": "calibrated smoothing of outlier channels, GPTQ-rounded int8 weights per output channel, activations "
                "quantized at run time (per token where a LayerNorm feeds the MatMul), each down projection's 8 "
                "largest input channels in float32 (export/q8_recipe.py)",
        "openvino": "nncf.compress_weights INT8_ASYM: int8 weights with a zero point per output channel (position "
                    "and token-type tables float)",
    },
    "turned": {
        "onnx": "the inputs of the LayerNorm-fed MatMuls and of the down projections turned by block Hadamard "
                "matrices of 32, GPTQ-rounded int8 weights of the turned weights per output channel, every "
                "activation quantized per token at run time (export/q8_turned.py)",
        "openvino": "the inputs of the LayerNorm-fed MatMuls and of the down projections turned by float block "
                    "Hadamard matrices of 32, GPTQ-rounded int8 weights of the turned weights per output channel "
                    "(export/q8_turned.py), int8 word embeddings (nncf INT8_ASYM)",
    },
}
Q8_RECIPES = tuple(Q8_RECIPE_DESCRIPTIONS)  # --q8-recipe's choices


# File names: transformers.js under onnx/, sentence-transformers under openvino/.
RECIPES = [
    Recipe("onnx", "fp32", "onnx/model.onnx", onnx_variants.keep_fp32, "the exported graph, float32", 0.9999,
           "you want the PyTorch model's numbers exactly"),
    Recipe("onnx", "fp16", "onnx/model_fp16.onnx", fp16.convert_fp16,
           "float16 weights and arithmetic; rotary tables, attention and RoPE kernels stay float32", 0.999,
           "half the disk, the same vectors (slower than fp32 on CPUs)"),
    Recipe("onnx", "q8", "onnx/model_quantized.onnx", q8_recipe.convert_q8,
           "int8 MatMuls: {q8_recipe}; int8 word embeddings; "
           "the same integers as uint8 in onnx/model_uint8.onnx for x86 CPUs without VNNI",
           0.97, "CPU serving: the default", needs_calibration=True,
           alternates={"no-vnni": "onnx/model_uint8.onnx"}),  # transformers.js' name for uint8 weights
    Recipe("onnx", "q4", "onnx/model_q4.onnx", onnx_variants.convert_q4,
           "MatMulNBits: 4-bit symmetric weights in blocks of {q4_block_size}, float activations", 0.9,
           "download size matters more than fidelity"),
    Recipe("openvino", "fp32", "openvino/openvino_model.xml", openvino_variants.convert_fp32, "the IR, float32",
           0.9999, "you want the PyTorch model's numbers exactly", precision_hint="f32"),
    Recipe("openvino", "fp16", "openvino/openvino_model_fp16.xml", openvino_variants.convert_fp16,
           "float16 weights (rotary frequencies kept float32), float32 arithmetic", 0.999,
           "half the disk, the same vectors", precision_hint="f32"),
    Recipe("openvino", "q8", "openvino/openvino_model_int8.xml", openvino_variants.convert_q8,
           "{q8_recipe}; the CPU plugin quantizes activations at run time in groups of 128 channels per token (or, "
           "with AMX, runs bf16); float parts in bf16 where the CPU has it", 0.97,
           "CPU serving: the default", precision_hint="bf16", needs_calibration=("turned",), portable=False),
    Recipe("openvino", "q8-static", "openvino/openvino_model_qint8_quantized.xml", openvino_variants.convert_q8_static,
           "nncf.quantize, transformer preset (SmoothQuant): int8 weights and activations, calibrated", 0.97,
           "fastest on VNNI CPUs, if its fidelity suffices", precision_hint="f32",
           needs_calibration=True, portable=False),
    Recipe("openvino", "q4", "openvino/openvino_model_int4.xml", openvino_variants.convert_q4,
           "nncf.compress_weights INT4_SYM, group 32 (embeddings and last layer int8)", 0.9,
           "download size matters more than fidelity", precision_hint="f32", portable=False),
]
DTYPES = tuple(dict.fromkeys(recipe.dtype for recipe in RECIPES))
FORMATS = tuple(FILE_FORMATS)
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

    columns = " | ".join(spec.column for spec in FILE_FORMATS.values())
    lines = [f"| variant | {columns} | pick it when |", "|---|" + "---|" * len(FILE_FORMATS) + "---|"]
    for dtype in DTYPES:
        found = {r.format: r for r in RECIPES if r.dtype == dtype}
        first = next(r for r in RECIPES if r.dtype == dtype)
        cells = " | ".join(cell(found.get(fmt)) for fmt in FILE_FORMATS)
        lines.append(f"| {dtype} | {cells} | {first.use} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
