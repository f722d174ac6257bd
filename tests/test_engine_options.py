"""Each engine owns its options: ONNX Runtime its providers, OpenVINO the precision hint its variant records."""
from __future__ import annotations

import pytest

from edgembed.runtime import Embedder, InvalidTypeError, UnknownChoiceError
from edgembed.runtime.backends import BackendOptions, compile_graph, engine_options
from edgembed.runtime.backends.onnxruntime_backend import OnnxRuntimeOptions
from edgembed.runtime.backends.openvino_backend import OpenVinoOptions
from edgembed.runtime.manifest import Manifest

GPU_FIRST = ("CUDAExecutionProvider", "CPUExecutionProvider")


def test_each_engine_takes_its_own_settings_and_leaves_the_others(fast_export):
    manifest = Manifest.read(fast_export)
    onnx, ir = manifest.find("onnx", "fp32"), manifest.find("openvino", "fp32")
    assert engine_options("onnxruntime", onnx, {"providers": GPU_FIRST}) == OnnxRuntimeOptions(GPU_FIRST)
    assert not engine_options("onnxruntime", onnx, {"providers": GPU_FIRST}).on_cpu
    assert engine_options("onnxruntime", onnx, {"providers": None}).on_cpu
    hinted = engine_options("openvino", ir, {"providers": GPU_FIRST})
    assert hinted == OpenVinoOptions(precision_hint=ir.precision_hint) and ir.precision_hint == "f32"


def test_load_passes_the_providers_keyword_to_onnxruntime_only(fast_export):
    seen = []

    def recording(name, path, output, options):
        seen.append((name, options.engine))
        return compile_graph(name, path, output, options)

    Embedder.load(fast_export, variant="fp32", backend="onnxruntime", providers=["CPUExecutionProvider"],
                  compile=recording)
    Embedder.load(fast_export, variant="fp32", backend="openvino", providers=["CPUExecutionProvider"],
                  compile=recording)
    assert seen == [("onnxruntime", OnnxRuntimeOptions(("CPUExecutionProvider",))),
                    ("openvino", OpenVinoOptions(precision_hint="f32"))]


def test_a_setting_no_engine_takes_names_the_ones_they_do(fast_export):
    variant = Manifest.read(fast_export).find("onnx", "fp32")
    with pytest.raises(UnknownChoiceError, match="'device'; available: 'providers'"):
        engine_options("onnxruntime", variant, {"device": "GPU"})


def test_providers_must_be_names(fast_export):
    variant = Manifest.read(fast_export).find("onnx", "fp32")
    with pytest.raises(InvalidTypeError, match="providers is str.*execution provider names"):
        engine_options("onnxruntime", variant, {"providers": "CUDAExecutionProvider"})


def test_a_backend_refuses_another_engines_options(fast_export):
    variant = Manifest.read(fast_export).find("onnx", "fp32")
    with pytest.raises(InvalidTypeError, match="expected OnnxRuntimeOptions for backend 'onnxruntime'"):
        compile_graph("onnxruntime", fast_export / variant.model_file, variant.output,
                      BackendOptions(engine=OpenVinoOptions()))
