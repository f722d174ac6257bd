"""Loading checks every path the manifest names, the files' sizes or checksums, and the graph against the manifest."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from edgembed.runtime import ChecksumError, Embedder, ManifestError, ModelFileError
from edgembed.runtime.backends import BACKENDS
from edgembed.runtime.loading import verify_files
from edgembed.runtime.manifest import Manifest


def _edit_manifest(root: Path, change) -> None:
    data = json.loads((root / "manifest.json").read_text())
    change(data)
    (root / "manifest.json").write_text(json.dumps(data))


def _flip_a_byte_in_the_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_loads_and_matches_the_numpy_reference(fast_export):
    from fast_model import reference_vectors

    texts = ["hello world", "a longer sentence about tokenizers and graphs", ""]
    for backend in BACKENDS:  # every engine of the table, on whichever of its formats the export holds
        vectors = Embedder.load(fast_export, variant="fp32", backend=backend).encode(texts)
        np.testing.assert_allclose(vectors, reference_vectors(fast_export, texts), atol=1e-5)


@pytest.mark.parametrize("field", ["tokenizer_file", "files"])
@pytest.mark.parametrize("path", ["../outside/tokenizer.json", "/etc/passwd", "onnx/../../escape.onnx"])
def test_a_path_outside_the_directory_is_refused(fast_copy, tmp_path, field, path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "tokenizer.json").write_text((fast_copy / "tokenizer.json").read_text())

    def change(data):
        if field == "tokenizer_file":
            data["tokenizer_file"] = path
        else:
            data["variants"][0]["files"][0]["path"] = path

    _edit_manifest(fast_copy, change)
    with pytest.raises(ModelFileError, match="outside the model directory|relative path inside"):
        Embedder.load(fast_copy, variant="fp32", backend="onnxruntime", verify="none")


def test_a_symlink_out_of_the_directory_is_refused(fast_copy, tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text((fast_copy / "tokenizer.json").read_text())
    (fast_copy / "tokenizer.json").unlink()
    os.symlink(target, fast_copy / "tokenizer.json")
    with pytest.raises(ModelFileError, match="outside the model directory"):
        Embedder.load(fast_copy, variant="fp32", backend="onnxruntime")


@pytest.mark.parametrize("backend,name", [("onnxruntime", "onnx/model.onnx"),
                                          ("openvino", "openvino/openvino_model.bin")])
def test_a_flipped_byte_passes_the_size_check_and_fails_sha256(fast_copy, backend, name):
    _flip_a_byte_in_the_middle(fast_copy / name)
    Embedder.load(fast_copy, variant="fp32", backend=backend)  # same size: the default check cannot tell
    with pytest.raises(ChecksumError, match=f"{Path(name).name}: its sha256 differs"):
        Embedder.load(fast_copy, variant="fp32", backend=backend, verify="sha256")


def test_verify_modes(fast_copy):
    variant = Manifest.read(fast_copy).find("onnx", "fp32")
    for mode in ("none", "size", "sha256"):
        verify_files(fast_copy, variant, mode)
    (fast_copy / "onnx/model.onnx").write_bytes(b"short")
    verify_files(fast_copy, variant, "none")
    with pytest.raises(ModelFileError, match="is 5 bytes but manifest.json records"):
        verify_files(fast_copy, variant, "size")
    with pytest.raises(ValueError, match="verify='md5' is not valid: expected 'size' or 'sha256' or 'none'"):
        Embedder.load(fast_copy, variant="fp32", backend="onnxruntime", verify="md5")


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_manifest_that_disagrees_with_its_graph_is_refused_at_load(fast_copy, backend):
    _edit_manifest(fast_copy, lambda data: data.update(hidden_size=64, matryoshka_dims=[]))
    with pytest.raises(ModelFileError, match="puts out 32 values per token but manifest.json says hidden_size 64"):
        Embedder.load(fast_copy, variant="fp32", backend=backend)


def test_an_unknown_format_version_is_refused(fast_copy):
    _edit_manifest(fast_copy, lambda data: data.update(format_version=2))
    with pytest.raises(ManifestError, match="format_version 2 is not supported.*re-export"):
        Embedder.load(fast_copy)


def test_unknown_fields_from_a_newer_exporter_are_ignored(fast_copy):
    _edit_manifest(fast_copy, lambda data: (data.update(future_field={"x": 1}),
                                            data["variants"][0].update(future_variant_field=3)))
    assert Embedder.load(fast_copy, variant="fp32", backend="onnxruntime").encode("x").shape == (32,)


@pytest.mark.parametrize("change,message", [
    (lambda d: d.pop("hidden_size"), "missing or malformed field"),
    (lambda d: d.update(hidden_size="64"), "hidden_size must be a positive integer"),
    (lambda d: d.update(max_length=4096), "max_length 4096 exceeds max_position_embeddings 128"),
    (lambda d: d.update(pooling="weightedmean"), "pooling 'weightedmean' is not one of"),
    (lambda d: d.update(variants={"a": 1}), "variants must be a list"),
    (lambda d: d["variants"][0].update(files=[]), "lists no files"),
    (lambda d: d["variants"][0]["files"][0].update(bytes="12"), "malformed file entry"),
    (lambda d: d["variants"][0].update(alternates={"no-vnni": "onnx/other.onnx"}), "must name files"),
])
def test_malformed_manifests_name_the_problem(fast_copy, change, message):
    _edit_manifest(fast_copy, change)
    with pytest.raises(ManifestError, match=message):
        Embedder.load(fast_copy)


def test_a_truncated_graph_names_the_file_and_the_fix(fast_copy):
    path = fast_copy / "onnx/model.onnx"
    path.write_bytes(path.read_bytes()[:200])
    _edit_manifest(fast_copy, lambda data: data["variants"][0]["files"][0].update(bytes=200))
    with pytest.raises(ModelFileError, match="model.onnx: onnxruntime cannot load it.*re-export or re-copy it"):
        Embedder.load(fast_copy, variant="fp32", backend="onnxruntime")


@pytest.mark.parametrize(("text", "line"), [
    ("Exception from src/inference/src/cpp/core.cpp:117:\nException from src/plugin.cpp:54:\nCheck 'K' failed\n\n",
     "Check 'K' failed"),
    ("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF\nmore", "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF"),
    ("", "RuntimeError"),
])
def test_an_engine_error_is_reported_by_its_telling_line(text, line):
    from edgembed.runtime.backends import first_line

    assert first_line(RuntimeError(text)) == line
