"""Choosing a variant: the request, the default order for this CPU and `auto`, from one order table."""
from __future__ import annotations

import pytest

from edgembed.runtime import backends
from edgembed.runtime.backends import BackendSpec, installed_backends
from edgembed.runtime.cpu import INT8_PATHS, cpu_model
from edgembed.runtime.errors import MissingDependencyError, NoVariantError, UnknownChoiceError
from edgembed.runtime.manifest import Fidelity, FileEntry, Manifest, Speed, Variant
from edgembed.runtime.preference import preference_order
from edgembed.runtime.selection import exported_pairs, runnable_variants, select

VNNI, AVX2 = INT8_PATHS["avx512_vnni"], INT8_PATHS["avx2"]
BOTH = ["onnxruntime", "openvino"]


def _variant(fmt: str, dtype: str, *, cosine: float = 0.999, rate: float | None = None, cpu: str | None = None,
             measured_on: str = "avx512_vnni", portable: bool = True) -> Variant:
    return Variant(format=fmt, dtype=dtype, files=[FileEntry(f"{fmt}/{dtype}", "0" * 64, 1)], portable=portable,
                   fidelity=Fidelity(cosine, cosine, 24, "test", 0.97, cosine >= 0.97, int8_path=measured_on),
                   speed=Speed(rate, cpu or cpu_model()) if rate is not None else None)


def _manifest(*variants: Variant) -> Manifest:
    return Manifest(source={"model": "test"}, architecture="ModernBertModel", model_type="modernbert",
                    hidden_size=64, max_length=256, max_position_embeddings=512, pad_token_id=0,
                    variants=list(variants))


@pytest.fixture()
def full() -> Manifest:
    return _manifest(*(_variant(fmt, dtype, portable=not (fmt == "openvino" and dtype != "fp32"))
                       for fmt in ("onnx", "openvino") for dtype in ("fp32", "fp16", "q8")))


def test_both_named_gives_exactly_that(full):
    chosen = select(full, variant="fp16", backend="openvino", installed=BOTH, int8_path=VNNI)
    assert (chosen.variant.name, chosen.backend, chosen.reason) == ("openvino/fp16", "openvino", "requested")


def test_default_follows_the_order_for_this_cpu(full):
    chosen = select(full, variant=None, backend=None, installed=BOTH, int8_path=VNNI)
    assert (chosen.variant.dtype, chosen.backend) == ("q8", "onnxruntime") and chosen.reason.startswith("default")
    assert select(full, variant=None, backend="openvino", installed=BOTH, int8_path=VNNI).variant.dtype == "q8"
    assert select(full, variant="fp32", backend=None, installed=["openvino"], int8_path=VNNI).backend == "openvino"


def test_fastest_measured_on_this_cpu_wins(full):
    for variant in full.variants:
        variant.speed = Speed(500.0 if variant.name == "onnx/fp32" else 100.0, cpu_model())
    chosen = select(full, variant="auto", backend="auto", installed=BOTH, int8_path=VNNI)
    assert (chosen.variant.dtype, chosen.backend) == ("fp32", "onnxruntime")
    assert "fastest measured on this CPU" in chosen.reason and "500.0 texts/s" in chosen.reason


def test_unfaithful_variants_are_skipped_by_auto(full):
    for name in ("onnx/q8", "openvino/q8"):
        next(v for v in full.variants if v.name == name).fidelity = Fidelity(0.95, 0.95, 24, "t", 0.9, True)
    assert select(full, variant="auto", backend="auto", installed=BOTH, int8_path=VNNI).variant.dtype != "q8"


def test_speed_from_another_cpu_falls_back_to_the_order(full):
    for variant in full.variants:
        variant.speed = Speed(1e6 if variant.name == "onnx/fp32" else 1.0, "some other CPU")
    chosen = select(full, variant="auto", backend="auto", installed=BOTH, int8_path=VNNI)
    assert (chosen.variant.dtype, chosen.backend) == ("q8", "onnxruntime") and "order" in chosen.reason


def test_auto_prefers_variants_shown_on_this_class_of_cpu():
    manifest = _manifest(_variant("onnx", "q8", portable=False, rate=900.0),
                         _variant("openvino", "q8", portable=False, rate=500.0),
                         _variant("onnx", "fp32", rate=100.0))
    on_vnni = select(manifest, variant="auto", backend="auto", installed=BOTH, int8_path=VNNI)
    assert on_vnni.variant.name == "onnx/q8"
    on_avx2 = select(manifest, variant="auto", backend="auto", installed=BOTH, int8_path=AVX2)
    assert on_avx2.variant.name == "onnx/fp32"  # the int8 ones were measured on a VNNI CPU only
    q8_only = _manifest(_variant("onnx", "q8", portable=False))
    unproven = select(q8_only, variant="auto", backend="auto", installed=BOTH, int8_path=AVX2)
    assert unproven.variant.name == "onnx/q8" and "unproven" in unproven.reason


def test_avx2_order_puts_onnxruntime_first(full):
    assert select(full, variant=None, backend=None, installed=BOTH, int8_path=AVX2).backend == "onnxruntime"
    chosen = select(full, variant="fp32", backend=None, installed=BOTH, int8_path=AVX2)
    assert chosen.backend == "onnxruntime"


def test_only_installed_backends(full):
    assert select(full, variant="auto", backend="auto", installed=["openvino"], int8_path=VNNI).backend == "openvino"


def test_gpu_takes_fp16_on_cuda(full):
    chosen = select(full, variant="auto", backend="auto", installed=BOTH, int8_path=VNNI, cuda=True)
    assert (chosen.variant.dtype, chosen.backend) == ("fp16", "onnxruntime")
    assert chosen.providers[0] == "CUDAExecutionProvider"


def test_nothing_faithful_names_the_fix(full):
    for variant in full.variants:
        variant.fidelity = Fidelity(0.5, 0.5, 24, "test", 0.9, False)
    with pytest.raises(NoVariantError, match="at least 0.99.*auto_min_cosine") as info:
        select(full, variant="auto", backend="auto", installed=BOTH, int8_path=VNNI)
    assert "pip install" not in str(info.value)  # both backends are installed: no extra to suggest


def test_auto_suggests_the_extra_only_when_it_is_missing():
    manifest = _manifest(_variant("onnx", "q8", cosine=0.95), _variant("openvino", "q8"))
    with pytest.raises(NoVariantError, match=r'pip install "edgembed\[openvino\]"'):
        select(manifest, variant="auto", backend="auto", installed=["onnxruntime"], int8_path=VNNI)


def test_unknown_names_list_the_options(full):
    with pytest.raises(UnknownChoiceError, match="'q4'; available: 'auto', 'fp16', 'fp32', 'q8'"):
        select(full, variant="q4", backend=None, installed=BOTH, int8_path=VNNI)
    every_backend = ", ".join(repr(name) for name in sorted([*backends.BACKENDS, "auto"]))
    with pytest.raises(UnknownChoiceError, match=f"'tensorrt'; available: {every_backend}"):
        select(full, variant=None, backend="tensorrt", installed=BOTH, int8_path=VNNI)


def test_missing_engine_names_its_extra(full):
    with pytest.raises(MissingDependencyError, match=r'pip install "edgembed\[openvino\]"'):
        select(full, variant="fp32", backend="openvino", installed=["onnxruntime"], int8_path=VNNI)


def test_runnable_variants_are_the_exported_pairs_an_installed_engine_runs(full):
    full.variants.append(_variant("tflite", "fp32"))  # a format no engine of the table runs
    engines = {"onnx": "onnxruntime", "openvino": "openvino"}
    expected = [(dtype, engines[fmt]) for fmt in ("onnx", "openvino") for dtype in ("fp32", "fp16", "q8")
                if engines[fmt] in installed_backends()]
    assert runnable_variants(full) == expected


# The orders measured for each int8 family (docs/speed.md); a change to them is a decision, not a side effect.
# A new (dtype, engine) pair may take any place; these keep their order among themselves.
VNNI_ORDER = [("q8", "onnxruntime"), ("q8", "openvino"), ("q8-static", "openvino"), ("fp32", "onnxruntime"),
              ("fp32", "openvino"), ("fp16", "openvino"), ("fp16", "onnxruntime"), ("q4", "openvino"),
              ("q4", "onnxruntime")]
NO_VNNI_ORDER = [("q8", "onnxruntime"), ("fp32", "onnxruntime"), ("fp32", "openvino"), ("fp16", "openvino"),
                 ("q8", "openvino"), ("q8-static", "openvino"), ("fp16", "onnxruntime"), ("q4", "onnxruntime"),
                 ("q4", "openvino")]


@pytest.mark.parametrize(("family", "expected"), [("vnni", VNNI_ORDER), ("no-vnni", NO_VNNI_ORDER),
                                                  ("arm", NO_VNNI_ORDER), ("unknown", VNNI_ORDER),
                                                  ("a family edgembed has never seen", VNNI_ORDER)])
def test_each_cpu_family_keeps_its_measured_order(family, expected):
    assert [pair for pair in preference_order(family) if pair in expected] == expected


def test_an_engine_that_runs_two_formats_takes_the_file_of_the_one_it_prefers(monkeypatch):
    both = BackendSpec("openvino", ("openvino", "onnx"), "openvino", "openvino", "openvino_backend:OpenVinoBackend")
    monkeypatch.setitem(backends.BACKENDS, "openvino", both)
    manifest = _manifest(_variant("onnx", "fp32"), _variant("onnx", "q4"), _variant("openvino", "fp32"))
    pairs = [(dtype, name, found.name) for dtype, name, found in exported_pairs(manifest) if name in BOTH]
    assert pairs == [("fp32", "onnxruntime", "onnx/fp32"), ("fp32", "openvino", "openvino/fp32"),
                     ("q4", "onnxruntime", "onnx/q4"), ("q4", "openvino", "onnx/q4")]
    chosen = select(manifest, variant="q4", backend="openvino", installed=BOTH, int8_path=VNNI)
    assert (chosen.variant.name, chosen.backend) == ("onnx/q4", "openvino")
