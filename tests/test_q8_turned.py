"""The turned q8 recipe (`--q8-recipe turned`, export/q8_turned.py): the turn is exact in float, and the exported
graphs (ONNX and OpenVINO) hold it, run through the runtime on every CPU and keep the tiny model's vectors."""
from __future__ import annotations

import json
from collections import Counter
from xml.etree import ElementTree

import numpy as np
import onnx
import pytest
from conftest import TINY_THRESHOLDS, cosines
from emulation import embed_q8, needs_qemu

from edgembed.export.q8_turned import TURN_BLOCK, hadamard, turn_gram, turn_rows
from edgembed.runtime import Embedder


def _block_diagonal(width: int, block: int) -> np.ndarray:
    rotation = np.zeros((width, width))
    for start in range(0, width, block):
        rotation[start:start + block, start:start + block] = hadamard(block)
    return rotation


def test_hadamard_blocks_are_orthonormal():
    for size in (1, 2, 32, 64):
        matrix = hadamard(size)
        np.testing.assert_allclose(matrix @ matrix.T, np.eye(size), atol=1e-12)


def test_hadamard_block_size_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power-of-two size, not 48"):
        hadamard(48)


def test_turning_input_and_weight_keeps_the_product():
    rng = np.random.default_rng(0)
    x, weight = rng.normal(size=(5, 96)), rng.normal(size=(96, 40))
    rotation = _block_diagonal(96, TURN_BLOCK)
    np.testing.assert_allclose(turn_rows(weight, TURN_BLOCK), rotation.T @ weight, atol=1e-12)
    np.testing.assert_allclose((x @ rotation) @ turn_rows(weight, TURN_BLOCK), x @ weight, atol=1e-10)


def test_turned_gram_is_the_gram_of_the_turned_input():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 64)) * np.linspace(0.1, 20, 64)  # loud channels, as a MatMul input has
    rotation = _block_diagonal(64, TURN_BLOCK)
    np.testing.assert_allclose(turn_gram(x.T @ x, TURN_BLOCK), (x @ rotation).T @ (x @ rotation), rtol=1e-10,
                               atol=1e-8)


def test_rounding_is_found_again_for_the_same_columns_split_otherwise():
    """ModernBERT's ONNX Runtime graph reads Wq, Wk and Wv as three MatMuls where the standard ops' graph has one."""
    from edgembed.export.q8_turned import TurnedRounding

    rng = np.random.default_rng(4)
    whole = rng.normal(size=(64, 96)).astype(np.float32)
    codes = rng.integers(-127, 128, size=(64, 96)).astype(np.int8)
    scales = rng.random(96).astype(np.float32)
    shared = TurnedRounding()
    shared.keep([whole], True, [(codes, scales)])
    found = shared.recall([whole[:, 64:], whole[:, :32], whole[:, 32:64]], True)
    assert found is not None
    for (values, column_scales), columns in zip(found, [slice(64, 96), slice(0, 32), slice(32, 64)]):
        np.testing.assert_array_equal(values, codes[:, columns])
        np.testing.assert_array_equal(column_scales, scales[columns])
    assert shared.recall([whole], False) is None  # the same weights, not turned: other codes
    changed = whole.copy()
    changed[5, 7] += 1e-3
    assert shared.recall([changed], True) is None


@pytest.fixture(scope="module")
def turned_export(tiny_model_dir, tmp_path_factory):
    """The tiny model's turned q8 in both formats, and how often the export calibrated."""
    from edgembed.cli import main
    from edgembed.export import q8_recipe

    calibrate = q8_recipe._calibrate
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return calibrate(*args, **kwargs)

    out = tmp_path_factory.mktemp("turned") / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(q8_recipe, "_calibrate", counted)
        assert main(["export", str(tiny_model_dir), "-o", str(out), "--quantize", "q8", "--format", "onnx",
                     "openvino", "--q8-recipe", "turned", "--eval-size", "0", "0"]) == 0
    out.with_name("calibrations").write_text(str(len(calls)))  # beside the export, not in it
    return out


def _int8_columns(matrices) -> Counter:
    return Counter(column.tobytes() for matrix in matrices for column in np.ascontiguousarray(matrix.T))


def test_both_formats_turned_q8_calibrate_and_round_once(turned_export):
    """OpenVINO's turned q8 takes the GPTQ codes of ONNX Runtime's from the same export: the same int8 columns."""
    import openvino as ov

    assert turned_export.with_name("calibrations").read_text() == "1"
    graph = onnx.load(str(turned_export / "onnx" / "model_quantized.onnx")).graph
    onnx_codes = [onnx.numpy_helper.to_array(i) for i in graph.initializer if i.name.endswith("_quantized")]
    ir = ov.Core().read_model(turned_export / "openvino" / "openvino_model_int8.xml")
    ir_codes = [op.get_data() for op in ir.get_ops()
                if op.get_type_name() == "Constant" and op.get_output_element_type(0) == ov.Type.i8]
    assert len(onnx_codes) == 28 and len(ir_codes) == 20  # Wq, Wk, Wv apart for ONNX Runtime, one Wqkv in the IR
    assert _int8_columns(onnx_codes) == _int8_columns(ir_codes)


def test_turned_export_says_so_in_the_manifest(turned_export):
    variants = {v["format"]: v for v in json.loads((turned_export / "manifest.json").read_text())["variants"]
                if v["dtype"] == "q8"}
    assert "turned by block Hadamard matrices of 32" in variants["onnx"]["quantization"]
    assert variants["onnx"]["alternates"] == {"no-vnni": "onnx/model_uint8.onnx"}
    assert "turned by float block Hadamard matrices of 32" in variants["openvino"]["quantization"]


def test_turned_graph_has_turns_and_no_smoothing_or_float_outliers(turned_export):
    graph = onnx.load(str(turned_export / "onnx" / "model_quantized.onnx")).graph
    names = [node.name for node in graph.node]
    assert not [name for name in names if name.endswith(("_SmoothingMul", "_OutlierMatMul"))]
    turns = [name for name in names if name.endswith("_TurnMatMul")]
    per_token = [node for node in graph.node if node.name.endswith("_PerToken")]
    reading_turned = [node for node in per_token if "_turned_per_token" in node.input[0]]
    # tiny ModernBERT, 4 layers: every weight MatMul per token (Q, K, V, attention output, GeGLU's two, down); the
    # inputs of Q, K, V, of GeGLU and of the down projection turned, the attention output's not
    assert (len(turns), len(per_token), len(reading_turned)) == (12, 28, 24)
    assert not [name for name in names if name.endswith("_TurnShape")]  # the hidden states' rank is known
    assert "turn_rows" not in {i.name for i in graph.initializer}


def test_turned_q8_matches_pytorch(turned_export, parity_texts, parity_reference, report):
    vectors = Embedder.load(turned_export, variant="q8", backend="onnxruntime").encode(parity_texts)
    sims = cosines(vectors, parity_reference)
    report(f"tiny ModernBERT   q8/onnxruntime turned: cosine to PyTorch min {sims.min():.6f} mean {sims.mean():.6f}")
    assert sims.min() >= TINY_THRESHOLDS["q8"]


def test_turned_openvino_q8_has_int8_weights_float_turns_and_its_group(turned_export):
    """The weights are the GPTQ codes (signed int8, one scale per column), the word embeddings nncf's (unsigned), and
    the turns' Hadamard block stays float32; the activation group is half the tiny model's 64-wide rows."""
    root = ElementTree.parse(turned_export / "openvino" / "openvino_model_int8.xml").getroot()
    constants = [layer.find("data") for layer in root.iter("layer") if layer.get("type") == "Const"]
    count = Counter(data.get("element_type") for data in constants)
    # 4 layers of Wqkv, the attention output, GeGLU's two halves and the down projection
    assert count["i8"] == 20, count
    assert count["u8"] == 2, count  # the word embeddings and their zero points
    float_matrices = Counter(data.get("shape") for data in constants  # f32 constants of no dimension of 1 or 0
                             if data.get("element_type") == "f32" and data.get("shape")
                             and "1" not in data.get("shape").split(", "))
    assert float_matrices == {f"{TURN_BLOCK}, {TURN_BLOCK}": 12}, float_matrices  # Q/K/V, GeGLU and down inputs
    group = root.find("rt_info/runtime_options/DYNAMIC_QUANTIZATION_GROUP_SIZE")
    assert group is not None and group.get("value") == "32"


def test_turned_openvino_q8_matches_pytorch(turned_export, parity_texts, parity_reference, report):
    vectors = Embedder.load(turned_export, variant="q8", backend="openvino").encode(parity_texts)
    sims = cosines(vectors, parity_reference)
    report(f"tiny ModernBERT   q8/openvino    turned: cosine to PyTorch min {sims.min():.6f} mean {sims.mean():.6f}")
    assert sims.min() >= TINY_THRESHOLDS["q8"]


@needs_qemu
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_turned_q8_on_an_emulated_avx2_cpu_matches_pytorch(turned_export, parity_texts, parity_reference, report,
                                                          tmp_path, backend):
    seen = embed_q8(turned_export, backend, parity_texts, tmp_path / "avx2.npy", emulate=True)
    assert seen["int8_path"] == "avx2"
    if backend == "onnxruntime":
        assert "model_uint8.onnx" in seen["describe"]
    sims = cosines(np.load(tmp_path / "avx2.npy"), parity_reference)
    report(f"tiny ModernBERT   q8/{backend:<11} turned: cosine to PyTorch min {sims.min():.6f} mean {sims.mean():.6f} "
           f"on an emulated AVX2 CPU (qemu Haswell)")
    assert sims.min() >= TINY_THRESHOLDS["q8"]


def test_unknown_q8_recipe_names_the_recipes(tmp_path, capsys):
    from edgembed.cli import main
    from edgembed.export.pipeline import ExportRequest, run_export
    from edgembed.runtime.errors import UnknownChoiceError

    with pytest.raises(UnknownChoiceError, match="--q8-recipe value 'rotated'; available: 'smoothed', 'turned'"):
        run_export(ExportRequest(model="unused", output=tmp_path / "o", dtypes=["q8"], q8_recipe="rotated"))
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "unused", "-o", str(tmp_path / "o"), "--quantize", "q8", "--q8-recipe", "rotated"])
    assert exit_info.value.code == 2 and "choose from 'smoothed', 'turned'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_q8_recipe_without_a_q8_says_it_has_nothing_to_make(tmp_path):
    from edgembed.export.errors import ExportError
    from edgembed.export.pipeline import ExportRequest, run_export

    lines: list[str] = []
    with pytest.raises(ExportError, match="is not a local directory"):  # the note comes before the model is sought
        run_export(ExportRequest(model=str(tmp_path / "missing"), output=tmp_path / "o", dtypes=["fp32", "fp16"],
                                 q8_recipe="turned"), progress=lines.append)
    assert "note: --q8-recipe turned makes the q8 variants, which this export does not write" in lines


def _one_matmul(weight: np.ndarray):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="project")], "turn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(turn_rows(weight.astype(np.float64), TURN_BLOCK).astype(np.float32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_turn_nodes_keep_a_graphs_output(tmp_path):
    """The inserted Reshape, MatMul and Reshape give x R of any rank, so R^T W after them gives x W again."""
    import onnxruntime

    from edgembed.export.q8_turned import _insert_turns

    rng = np.random.default_rng(2)
    weight = rng.normal(size=(64, 8)).astype(np.float32)
    model = _one_matmul(weight)
    _insert_turns(model, {"x"}, TURN_BLOCK, {"project"})
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for shape in [(3, 64), (2, 5, 64), (2, 2, 3, 64)]:
        x = rng.normal(size=shape).astype(np.float32)
        np.testing.assert_allclose(session.run(None, {"x": x})[0], x @ weight, rtol=1e-4, atol=1e-4)


def test_turn_of_a_known_rank_needs_no_shape_node():
    """With the rank known, both Reshapes keep the leading dimensions by zeros: one node fewer per turn."""
    import onnxruntime

    from edgembed.export.q8_turned import _insert_turns

    rng = np.random.default_rng(3)
    weight = rng.normal(size=(64, 8)).astype(np.float32)
    model = _one_matmul(weight)
    _insert_turns(model, {"x"}, TURN_BLOCK, {"project"}, shapes={"x": (3, 64)})
    assert [node.op_type for node in model.graph.node] == ["Reshape", "MatMul", "Reshape", "MatMul"]
    assert "turn_rows" not in {i.name for i in model.graph.initializer}  # no initializer left for no node
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for shape in [(2, 5, 64), (1, 1, 64)]:
        x = rng.normal(size=shape).astype(np.float32)
        np.testing.assert_allclose(session.run(None, {"x": x})[0], x @ weight, rtol=1e-4, atol=1e-4)
