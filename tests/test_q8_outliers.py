"""The q8 recipe multiplies each down projection's largest input channels in float32 beside its int8 product."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgembed.export import q8_recipe

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
WIDTH, HIDDEN = 32, 128
LOUD = [7, 40, 99]  # hidden channels far louder than the others, as in trained encoders' FFNs


def block(path: Path, rng: np.random.Generator) -> Path:
    """Relu -> a few channels made loud -> MatMul down: the down projection of a transformer FFN, alone."""
    from onnx import TensorProto, helper, numpy_helper

    down = (rng.normal(size=(HIDDEN, WIDTH)) / np.sqrt(HIDDEN)).astype(np.float32)
    loudness = np.where(np.isin(np.arange(HIDDEN), LOUD), 60.0, 1.0).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["relu"], name="relu"),
         helper.make_node("Mul", ["relu", "loudness"], ["active"], name="loud"),
         helper.make_node("MatMul", ["active", "down"], ["y"], name="down_proj")],
        "ffn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "length", HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "length", WIDTH])],
        [numpy_helper.from_array(down, "down"), numpy_helper.from_array(loudness, "loudness")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def run(path: Path, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("q8_outliers")
    calibration = [{"x": rng.normal(size=(1, 24, HIDDEN)).astype(np.float32)} for _ in range(16)]
    test = rng.normal(size=(4, 24, HIDDEN)).astype(np.float32)
    return block(folder / "fp32.onnx", rng), calibration, test, folder


def test_the_loudest_channels_go_through_a_float_matmul(setting):
    fp32, calibration, _, folder = setting
    q8 = q8_recipe.quantize_q8(fp32, folder / "q8.onnx", calibration)[0]
    nodes = {node.name: node for node in onnx.load(str(q8)).graph.node}
    beside = [node for name, node in nodes.items() if name.endswith(q8_recipe.OUTLIER_SUFFIX)]
    assert [node.op_type for node in beside] == ["MatMul"]  # the down projection only, never quantized
    gather = next(node for node in nodes.values() if node.op_type == "Gather" and node.output[0] == beside[0].input[0])
    channels = next(i for i in onnx.load(str(q8)).graph.initializer if i.name == gather.input[1])
    chosen = onnx.numpy_helper.to_array(channels)
    assert len(chosen) == q8_recipe.OUTLIER_CHANNELS and set(LOUD) <= set(chosen.tolist())


def test_float_outlier_channels_bring_the_int8_block_closer_to_fp32(setting, monkeypatch):
    fp32, calibration, test, folder = setting
    exact = run(fp32, test)
    with_outliers = run(q8_recipe.quantize_q8(fp32, folder / "with.onnx", calibration)[0], test)
    monkeypatch.setattr(q8_recipe, "OUTLIER_CHANNELS", 0)
    monkeypatch.setattr(q8_recipe._down_projection_outliers, "__defaults__", (0,))
    without = run(q8_recipe.quantize_q8(fp32, folder / "without.onnx", calibration)[0], test)
    error_with, error_without = (np.linalg.norm(v - exact) / np.linalg.norm(exact) for v in (with_outliers, without))
    assert error_with < 0.7 * error_without, (error_with, error_without)
