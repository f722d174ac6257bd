"""The exporter measures the int8/uint8 output ranges: the tiny export carries them and encode uses them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgembed.runtime import Embedder, quantize

pytestmark = pytest.mark.export


def test_tiny_export_carries_ranges_for_every_matryoshka_dim(tiny_export: Path):
    stored = json.loads((tiny_export / "manifest.json").read_text())["embedding_ranges"]
    assert stored["variant"] == "onnx/fp32" and stored["texts"] == 300
    assert stored["source"].startswith("built-in calibration set")
    assert stored["prompts"] == ["document", "query"]
    assert [(r["dim"], r["normalize"]) for r in stored["ranges"]] == [(64, True), (32, True), (16, True)]
    for entry in stored["ranges"]:
        assert all(-1 <= low < high <= 1 for low, high in zip(entry["min"], entry["max"]))


@pytest.mark.parametrize("dtype,backend", [("fp32", "onnxruntime"), ("q8", "openvino")])
def test_encode_int8_on_the_export(tiny_export: Path, parity_texts, dtype: str, backend: str):
    model = Embedder.load(tiny_export, variant=dtype, backend=backend)
    for dim in (None, 32):
        codes = model.encode_document(parity_texts, precision="int8", dim=dim)
        ranges = model.embedding_ranges(dim=dim)
        expected = quantize(model.encode_document(parity_texts, dim=dim), "int8", ranges=ranges)
        assert codes.dtype == np.int8 and codes.shape == (len(parity_texts), dim or 64)
        np.testing.assert_array_equal(codes, expected)
        # texts like the calibration ones fall inside the ranges: few codes sit at the clipped ends
        assert np.isin(codes, (-128, 127)).mean() < 0.05


def test_without_fp32_the_first_float_variant_measures_on_the_users_texts(tiny_model_dir: Path, tmp_path: Path):
    from edgembed.export import ExportRequest, run_export
    from edgembed.export.embedding_ranges import RANGE_MARGIN, USER_SOURCE, widened

    texts = [f"calibration sentence number {n} about files, lists and loops" for n in range(20)]
    out = tmp_path / "out"
    run_export(ExportRequest(model=str(tiny_model_dir), output=out, dtypes=["q8", "fp16"], formats=["onnx"],
                             calibration_texts=texts, eval_queries=0, allow_low_fidelity=True), progress=lambda _: None)
    stored = json.loads((out / "manifest.json").read_text())["embedding_ranges"]
    assert stored["variant"] == "onnx/fp16" and stored["texts"] == 20 and stored["source"] == USER_SOURCE
    model = Embedder.load(out, variant="fp16", backend="onnxruntime")
    vectors = np.concatenate([model.encode_document(texts), model.encode_query(texts)])  # both prompts
    measured = widened(np.stack([vectors.min(axis=0), vectors.max(axis=0)]), RANGE_MARGIN, normalized=True)
    np.testing.assert_allclose(model.embedding_ranges(), measured, atol=2e-3)
