"""The files are what their names say: int8 MatMuls, fp16 weights, int8 OpenVINO constants, honest manifest."""
from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgembed.export.q8_recipe import OUTLIER_SUFFIX

EXPECTED_FILES = [
    "onnx/model.onnx", "onnx/model_fp16.onnx", "onnx/model_quantized.onnx",
    "openvino/openvino_model.xml", "openvino/openvino_model.bin",
    "openvino/openvino_model_fp16.xml", "openvino/openvino_model_fp16.bin",
    "openvino/openvino_model_int8.xml", "openvino/openvino_model_int8.bin",
    "tokenizer.json", "config.json", "modules.json", "1_Pooling/config.json",
    "config_sentence_transformers.json", "sentence_bert_config.json", "manifest.json",
]


def _initializer_bytes_by_type(path: Path) -> Counter:
    model = onnx.load(str(path))
    totals: Counter = Counter()
    for tensor in model.graph.initializer:
        totals[onnx.TensorProto.DataType.Name(tensor.data_type)] += onnx.numpy_helper.to_array(tensor).nbytes
    return totals


def test_layout(tiny_export: Path):
    for name in EXPECTED_FILES:
        assert (tiny_export / name).is_file(), name
    assert not any(p.name.startswith(".") for p in tiny_export.parent.iterdir()), "partial directory left behind"


def test_q8_graph_multiplies_in_int8(tiny_export: Path):
    model = onnx.load(str(tiny_export / "onnx/model_quantized.onnx"))
    ops = Counter(node.op_type for node in model.graph.node)
    float_ops = Counter(node.op_type for node in onnx.load(str(tiny_export / "onnx/model.onnx")).graph.node)
    integer_matmuls = ops["MatMulInteger"] + ops["DynamicQuantizeMatMul"] + ops["MatMulIntegerToFloat"]
    # 4 layers x (Q, K, V, Wo, the two halves of Wi, Wo of the MLP) weight MatMuls (the efficient export
    # splits Wqkv and Wi by rows); the attention-score MatMuls stay float.
    assert integer_matmuls == 28, ops
    # Q, K, V and Wi's halves read a LayerNorm: their inputs are quantized per token (one range per row),
    # one quantizer per LayerNorm output.
    assert ops["MatMulIntegerToFloat"] == 20 and ops["QuantizeLinear"] == 8, ops
    assert ops["RotaryEmbedding"] == 8 and ops["MultiHeadAttention"] == 2, ops
    # Each MLP Wo also multiplies its 8 loudest input channels in float32 beside the int8 product (q8_recipe.py).
    outliers = [node for node in model.graph.node if node.name.endswith(OUTLIER_SUFFIX)]
    assert len(outliers) == 4 and all(node.op_type == "MatMul" for node in outliers), ops
    assert ops["MatMul"] == float_ops["MatMul"] - integer_matmuls + len(outliers)
    int8_bytes = _initializer_bytes_by_type(tiny_export / "onnx/model_quantized.onnx")["INT8"]
    assert int8_bytes > 4 * 64 * (3 * 64 + 64 + 2 * 96 + 96) * 0.99


def test_fp16_file_stores_fp16_weights(tiny_export: Path):
    totals = _initializer_bytes_by_type(tiny_export / "onnx/model_fp16.onnx")
    assert totals["FLOAT16"] > 0.95 * (totals["FLOAT16"] + totals["FLOAT"]), totals
    # The file shrinks by nearly the fp16 weights' size, half their fp32 size (the tiny model's graph is a
    # third of its file, and the fp16 graph gains Cast nodes, so a ratio of file sizes would say little).
    saved = (tiny_export / "onnx/model.onnx").stat().st_size - (tiny_export / "onnx/model_fp16.onnx").stat().st_size
    assert saved > 0.8 * totals["FLOAT16"], (saved, totals)


def _openvino_constant_bytes(xml: Path) -> Counter:
    totals: Counter = Counter()
    for layer in ElementTree.parse(xml).getroot().iter("layer"):
        if layer.get("type") == "Const":
            data = layer.find("data")
            totals[data.get("element_type")] += int(data.get("size"))
    return totals


def test_openvino_fp16_and_int8_weights(tiny_export: Path):
    fp16 = _openvino_constant_bytes(tiny_export / "openvino/openvino_model_fp16.xml")
    assert fp16["f16"] > 0.9 * sum(fp16.values()), fp16
    int8 = _openvino_constant_bytes(tiny_export / "openvino/openvino_model_int8.xml")
    assert int8["u8"] > 0.5 * sum(int8.values()), int8  # INT8_ASYM: unsigned weights, a zero point per channel
    fp32 = _openvino_constant_bytes(tiny_export / "openvino/openvino_model.xml")
    assert fp32["f16"] == 0 and fp32["i8"] == 0, fp32


def test_openvino_q8_carries_its_activation_group(tiny_export: Path):
    """The q8 IR tells the CPU plugin its activation group (half the tiny model's 64-wide rows), and the plugin
    takes it, also in bf16, where AMX CPUs rejected a whole-row group."""
    import openvino as ov

    xml = tiny_export / "openvino/openvino_model_int8.xml"
    option = ElementTree.parse(xml).getroot().find("rt_info/runtime_options/DYNAMIC_QUANTIZATION_GROUP_SIZE")
    assert option is not None and option.get("value") == "32"
    for hint in ("f32", "bf16"):
        compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": hint})
        assert compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE") == 32


def _int8_weight_model(width: int, turn: int | None = None):
    """x [-1, -1, width] -> (x turned by a float block of `turn`) @ (int8 codes x column scales), as the q8 IR has."""
    import openvino as ov
    import openvino.opset13 as opset

    tokens = opset.parameter([-1, -1, width], ov.Type.f32)
    x = tokens.output(0)
    if turn:
        rows = opset.reshape(x, opset.constant(np.array([0, 0, width // turn, turn], np.int64)), True)
        turned = opset.matmul(rows, opset.constant(np.eye(turn, dtype=np.float32)), False, False)
        x = opset.reshape(turned, opset.constant(np.array([0, 0, width], np.int64)), True).output(0)
    codes = opset.convert(opset.constant(np.ones((width, 2 * width), np.int8), dtype=ov.Type.i8), ov.Type.f32)
    weight = opset.multiply(codes, opset.constant(np.full((1, 2 * width), 0.01, np.float32)))
    return ov.Model([opset.matmul(x, weight, False, False)], [tokens])


@pytest.mark.parametrize(("width", "group"), [(768, 128), (1024, 128), (256, 128), (64, 32)])
def test_openvino_activation_group_is_128_unless_rows_are_narrower(width: int, group: int):
    from edgembed.export.openvino_variants import activation_group

    assert activation_group(_int8_weight_model(width)) == group


def test_openvino_activation_group_ignores_the_float_turns():
    """A turn's float MatMul by its 32 x 32 block is not quantized by the plugin, so its width sets no group."""
    from edgembed.export.openvino_variants import activation_group

    assert activation_group(_int8_weight_model(768, turn=32)) == 128


def _bert_embeddings(rng: np.random.Generator):
    """Word, position and token-type tables summed per token, then one float weight, as BERT's IR begins."""
    import openvino as ov
    import openvino.opset13 as opset

    ids = [opset.parameter([-1, -1], ov.Type.i64, name=name) for name in ("input_ids", "position_ids", "type_ids")]
    tables = [("word", 1000), ("position", 64), ("token_type", 2)]
    rows = [opset.gather(opset.constant(rng.normal(size=(count, 64)).astype(np.float32)), index, 0, name=name)
            for (name, count), index in zip(tables, ids)]
    summed = opset.add(opset.add(rows[0], rows[1]), rows[2])
    weight = opset.constant(rng.normal(size=(64, 128)).astype(np.float32))
    return ov.Model([opset.matmul(summed, weight, False, False)], ids)


def _table_types(model) -> dict[str, str]:
    from edgembed.export.openvino_variants import _source

    return {op.get_friendly_name(): _source(op.input(0), ("Convert", "Multiply", "Subtract")).get_output_element_type(0)
            .get_type_name() for op in model.get_ops() if op.get_type_name() == "Gather"}


@pytest.mark.parametrize("matmuls", [True, False])
def test_openvino_q8_keeps_position_and_token_type_tables_float(matmuls: bool):
    """Added to every token, their rounding moves every vector alike: only the vocabulary is int8."""
    from edgembed.export.openvino_variants import _int8_asym_weights

    model = _int8_asym_weights(_bert_embeddings(np.random.default_rng(5)), matmuls=matmuls)
    assert _table_types(model) == {"word": "u8", "position": "f32", "token_type": "f32"}


def test_manifest(tiny_export: Path):
    manifest = json.loads((tiny_export / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["architecture"] == "ModernBertModel" and manifest["model_type"] == "modernbert"
    assert manifest["hidden_size"] == 64 and manifest["max_length"] == 256
    assert manifest["pooling"] == "mean" and manifest["normalize"] is True
    assert manifest["prompts"] == {"query": "search_query: ", "document": "search_document: "}
    assert manifest["matryoshka_dims"] == [64, 32, 16]
    assert sorted((v["format"], v["dtype"]) for v in manifest["variants"]) == sorted(
        (f, d) for f in ("onnx", "openvino") for d in ("fp32", "fp16", "q8"))
    for variant in manifest["variants"]:
        fidelity = variant["fidelity"]
        assert fidelity["passed"] and fidelity["cosine_min"] <= fidelity["cosine_mean"] <= 1.0 + 1e-6
        assert fidelity["texts"] >= 20 and fidelity["int8_path"]
        if variant["format"] == "openvino":
            assert variant["precision_hint"] == ("bf16" if variant["dtype"] == "q8" else "f32")
        for entry in variant["files"]:
            data = (tiny_export / entry["path"]).read_bytes()
            assert len(data) == entry["bytes"]
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]


def test_int8_outputs_differ_from_fp32(embedders):
    """The q8 variants really run quantized arithmetic (their vectors are close to fp32, but not equal)."""
    text = ["a sentence to embed with every variant"]
    fp32 = embedders["fp32", "onnxruntime"].encode(text)
    for backend in ("onnxruntime", "openvino"):
        assert not np.array_equal(embedders["q8", backend].encode(text), fp32)
