"""variant/backend "auto": fastest faithful installed variant, with the reason said."""
from __future__ import annotations

import copy

import pytest

from edgembed.runtime import Embedder
from edgembed.runtime.auto import choose
from edgembed.runtime.cpu import cpu_model
from edgembed.runtime.errors import EdgembedError
from edgembed.runtime.manifest import Fidelity, Manifest, Speed


@pytest.fixture()
def manifest(tiny_export) -> Manifest:
    return copy.deepcopy(Manifest.read(tiny_export))


def _set(manifest: Manifest, fmt: str, dtype: str, cosine: float | None = None, rate: float | None = None,
         cpu: str | None = None) -> None:
    variant = manifest.find(fmt, dtype)
    if cosine is not None:
        variant.fidelity = Fidelity(cosine, cosine, 24, "test", 0.9, cosine >= 0.9)
    if rate is not None:
        variant.speed = Speed(rate, None, cpu or cpu_model())


def test_fastest_measured_on_this_cpu_wins(manifest):
    _set(manifest, "onnx", "fp32", rate=500.0)
    for fmt, dtype in [("onnx", "fp16"), ("onnx", "q8"), ("openvino", "fp32"), ("openvino", "fp16"),
                       ("openvino", "q8")]:
        _set(manifest, fmt, dtype, rate=100.0)
    choice = choose(manifest, "auto", "auto", ["onnxruntime", "openvino"], cuda_available=False)
    assert (choice.variant, choice.backend) == ("fp32", "onnxruntime")
    assert "fastest measured on this CPU" in choice.reason and "500.0 texts/s" in choice.reason


def test_unfaithful_variants_are_skipped(manifest):
    for fmt, dtype in [("onnx", "q8"), ("openvino", "q8")]:
        _set(manifest, fmt, dtype, cosine=0.95, rate=10_000.0)
    choice = choose(manifest, "auto", "auto", ["onnxruntime", "openvino"], cuda_available=False)
    assert choice.variant != "q8"


def test_speed_from_another_cpu_falls_back_to_the_static_order(manifest):
    for variant in manifest.variants:
        variant.speed = Speed(1.0, None, "some other CPU")
    _set(manifest, "onnx", "fp32", rate=1e6, cpu="some other CPU")
    choice = choose(manifest, "auto", "auto", ["onnxruntime", "openvino"], cuda_available=False)
    assert (choice.variant, choice.backend) == ("q8", "openvino")
    assert "preference order" in choice.reason


def test_only_installed_backends(manifest):
    choice = choose(manifest, "auto", "auto", ["onnxruntime"], cuda_available=False)
    assert choice.backend == "onnxruntime"


def test_fixed_variant_auto_backend(manifest):
    choice = choose(manifest, "fp16", "auto", ["onnxruntime", "openvino"], cuda_available=False)
    assert choice.variant == "fp16"


def test_gpu_takes_fp16_on_cuda(manifest):
    choice = choose(manifest, "auto", "auto", ["onnxruntime", "openvino"], cuda_available=True)
    assert (choice.variant, choice.backend) == ("fp16", "onnxruntime")
    assert choice.providers[0] == "CUDAExecutionProvider"


def test_nothing_faithful_is_an_error(manifest):
    for variant in manifest.variants:
        variant.fidelity = Fidelity(0.5, 0.5, 24, "test", 0.9, False)
    with pytest.raises(EdgembedError, match="auto found no variant with recorded cosine >= 0.99"):
        choose(manifest, "auto", "auto", ["onnxruntime", "openvino"], cuda_available=False)


def test_load_auto_describes_its_choice(tiny_export):
    model = Embedder.load(tiny_export, variant="auto", backend="auto")
    text = model.describe()
    assert text.startswith(f"{model.variant} on {model.backend} (auto: ")
    assert "cosine to PyTorch min" in text
    assert model.encode(["hello"]).shape == (1, 64)


def test_export_records_speed(tiny_export):
    for variant in Manifest.read(tiny_export).variants:
        assert variant.speed is not None and variant.speed.texts_per_second > 0
        assert variant.speed.cpu == cpu_model()
