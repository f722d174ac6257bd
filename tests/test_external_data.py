"""`export --external-data`: each ONNX graph's weights live beside it in FILE.onnx_data, listed and checked like
every other file, and the runtime gives the same vectors as from the single-file graphs."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgembed.export import ExportRequest, run_export
from edgembed.export.onnx_variants import EXTERNAL_MIN_BYTES
from edgembed.runtime import Embedder
from edgembed.runtime.errors import ModelFileError

TEXTS = ["a short query", "ModernBERT reads long documents " * 40, "Привет, мир", "数据库的索引"]


@pytest.fixture(scope="module")
def external_export(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("external") / "out"
    run_export(ExportRequest(model=str(tiny_model_dir), output=out, dtypes=["fp32", "q8"], formats=["onnx"],
                             external_data=True, eval_queries=0), progress=lambda line: None)
    return out


def test_each_onnx_graph_is_listed_with_its_data_file(external_export):
    import onnx

    variants = {v["dtype"]: v for v in json.loads((external_export / "manifest.json").read_text())["variants"]}
    assert [f["path"] for f in variants["fp32"]["files"]] == ["onnx/model.onnx", "onnx/model.onnx_data"]
    assert [f["path"] for f in variants["q8"]["files"]] == [
        "onnx/model_quantized.onnx", "onnx/model_quantized.onnx_data", "onnx/model_uint8.onnx",
        "onnx/model_uint8.onnx_data"]
    for name in ("model.onnx", "model_quantized.onnx", "model_uint8.onnx"):
        graph = onnx.load(str(external_export / "onnx" / name), load_external_data=False)
        inline = [t.name for t in graph.graph.initializer
                  if t.data_location != onnx.TensorProto.EXTERNAL and len(t.raw_data) >= EXTERNAL_MIN_BYTES]
        assert inline == []  # every weight from the threshold up moved to the data file


@pytest.mark.parametrize("dtype", ["fp32", "q8"])
def test_external_data_gives_the_vectors_of_the_single_file_graph(external_export, tiny_export, dtype):
    with Embedder.load(external_export, variant=dtype, backend="onnxruntime") as split, \
            Embedder.load(tiny_export, variant=dtype, backend="onnxruntime") as single:
        np.testing.assert_allclose(split.encode(TEXTS), single.encode(TEXTS), atol=1e-6)


def test_size_counts_the_loaded_graph_and_its_data_file_only(external_export):
    files = {f["path"]: f["bytes"] for v in json.loads((external_export / "manifest.json").read_text())["variants"]
             if v["dtype"] == "q8" for f in v["files"]}
    with Embedder.load(external_export, variant="q8", backend="onnxruntime") as model:
        # the CPU picks one graph (the uint8 twin where there is no VNNI); its data file counts, the other's not
        assert model.size_bytes in {files[graph] + files[graph + "_data"]
                                    for graph in ("onnx/model_quantized.onnx", "onnx/model_uint8.onnx")}


def test_a_missing_data_file_is_named_at_load(external_export, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(external_export, copy)
    (copy / "onnx" / "model_quantized.onnx_data").unlink()
    with pytest.raises(ModelFileError, match="model_quantized.onnx_data"):
        Embedder.load(copy, variant="q8", backend="onnxruntime")
