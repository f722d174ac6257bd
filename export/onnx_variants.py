"""ONNX graphs: fp32 straight from optimum's exporter, and the 4-bit variant derived from it."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from edgembed.runtime.errors import MissingDependencyError
from edgembed.runtime.manifest import EXTERNAL_DATA_SUFFIX

from .converting import ConvertInputs
from .errors import EXPORT_INSTALL, ExportError

EXTERNAL_MIN_BYTES = 1024  # with --external-data, initializers from this size up move to the data file


def data_file(graph: Path) -> Path:
    """Where a graph's external weights live: FILE.onnx_data beside FILE.onnx."""
    return graph.with_name(graph.name + EXTERNAL_DATA_SUFFIX)


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError("onnx", "export", install=EXPORT_INSTALL) from None
    return onnx


def export_fp32(model, destination: Path, opset: int | None = None) -> list[Path]:
    """Export the loaded transformers model's `last_hidden_state` graph with optimum; returns the files written."""
    try:
        from optimum.exporters.onnx import onnx_export_from_model
    except ImportError:
        raise MissingDependencyError("optimum-onnx", "export", install=EXPORT_INSTALL) from None
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgembed-onnx-") as scratch:
        try:
            onnx_export_from_model(model, output=scratch, task="feature-extraction", opset=opset,
                                   do_validation=False)
        except Exception as exc:  # optimum raises ValueError/KeyError/RuntimeError by architecture
            raise ExportError(f"optimum could not export {type(model).__name__} to ONNX: {exc}") from exc
        written = Path(scratch) / "model.onnx"
        if not written.is_file():
            written_names = sorted(p.name for p in Path(scratch).iterdir())
            raise ExportError(f"optimum wrote no model.onnx (it wrote {written_names})")
        files = [destination]
        shutil.move(str(written), destination)
        data = Path(scratch) / "model.onnx_data"
        if data.is_file():  # weights over 2 GB live beside the graph
            files.append(data_file(destination))
            shutil.move(str(data), files[-1])
    return files


def keep_fp32(inputs: ConvertInputs) -> list[Path]:
    """The exported graph itself (and its external weights, past 2 GB)."""
    data = data_file(inputs.source)
    return [inputs.source] + ([data] if data.is_file() else [])


def convert_q4(inputs: ConvertInputs) -> list[Path]:
    """4-bit weights in blocks (ONNX Runtime's MatMulNBits), dequantized inside the kernel."""
    fp32, destination, block_size = inputs.source, inputs.destination, inputs.q4_block_size
    onnx = _import_onnx()
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError as exc:  # it also needs onnx-ir
        raise MissingDependencyError(exc.name or "onnxruntime", "export", install=EXPORT_INSTALL) from None
    quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=4, block_size=block_size, is_symmetric=True,
                                     op_types_to_quantize=("MatMul",))
    quantizer.process()
    quantizer.model.save_model_to_file(str(destination), use_external_data_format=False)
    return [destination]


def weights_beside(paths: list[Path]) -> list[Path]:
    """Each graph in `paths` rewritten with its weights in FILE.onnx_data beside it (ONNX Runtime maps that file
    rather than reading it into memory); returns the files, each graph followed by its data file."""
    onnx = _import_onnx()
    written: list[Path] = []
    for path in paths:
        written.append(path)
        data = data_file(path)
        if path.suffix != ".onnx" or data in paths:
            continue
        model = onnx.load(str(path))
        data.unlink(missing_ok=True)  # onnx appends to an existing data file
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=EXTERNAL_MIN_BYTES)
        del model
        data.chmod(path.stat().st_mode & 0o777)  # onnx creates it readable by its owner only
        written.append(data)
    return written


def graph_inputs(path: Path) -> list[str]:
    """Names of the inputs the graph declares."""
    onnx = _import_onnx()
    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]
