"""Bad input gets a clear error naming the value, the options and the fix; odd input gets a sane answer."""
from __future__ import annotations

import builtins
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgembed.runtime import (
    Embedder,
    InputTooLongError,
    ManifestError,
    MissingDependencyError,
    ModelFileError,
    UnknownChoiceError,
)


def test_unknown_variant_lists_the_available_ones(tiny_export):
    with pytest.raises(UnknownChoiceError) as info:
        Embedder.load(tiny_export, variant="q4", backend="onnxruntime")
    message = str(info.value)
    assert "'q4'" in message and "'fp16', 'fp32', 'q8'" in message


def test_unknown_backend_lists_the_available_ones(tiny_export):
    with pytest.raises(UnknownChoiceError, match="'tensorrt'.*'onnxruntime', 'openvino'"):
        Embedder.load(tiny_export, backend="tensorrt")


def test_variant_only_on_the_other_backend_is_named(tiny_export, tmp_path):
    copy = tmp_path / "onnx_only"
    shutil.copytree(tiny_export, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["variants"] = [v for v in manifest["variants"] if not (v["format"] == "onnx" and v["dtype"] == "q8")]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UnknownChoiceError, match=r"other backends have: .*q8 \(openvino\)"):
        Embedder.load(copy, variant="q8", backend="onnxruntime")


@pytest.mark.parametrize("backend,module,extra", [("onnxruntime", "onnxruntime", "onnx"),
                                                  ("openvino", "openvino", "openvino")])
def test_missing_backend_package_names_the_extra(tiny_export, monkeypatch, backend, module, extra):
    real_import = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name == module or name.startswith(module + "."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
    with pytest.raises(MissingDependencyError,
                       match=rf"'{module}' package is not installed; install the '{extra}' extra: "
                             rf'pip install "edgembed\[{extra}\]"') as info:
        Embedder.load(tiny_export, variant="fp32", backend=backend)
    assert (info.value.module, info.value.extra, info.value.name) == (module, extra, module)


def _cli_without(module: str, *arguments: str) -> subprocess.CompletedProcess:
    """`edgembed ARGUMENTS` in a fresh interpreter where `module` cannot be imported."""
    probe = (f"import sys; sys.modules[{module!r}] = None; from edgembed.cli import main; "
             f"sys.exit(main({list(arguments)!r}))")
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)


def test_export_without_torch_names_the_cpu_install_line(tmp_path):
    """The exporter's extra needs torch's CPU build named in the same pip command (a bare torch pulls CUDA)."""
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    (checkpoint / "model.safetensors").write_bytes(b"")
    result = _cli_without("torch", "export", str(checkpoint), "-o", str(tmp_path / "out"))
    assert result.returncode == 1, result.stderr
    assert "'torch' package is not installed; install the 'export' extra: " \
           'pip install torch==2.13.0 "edgembed[export]"' in result.stderr
    assert "Traceback" not in result.stderr


def test_embed_file_on_ray_without_ray_names_the_extra(fast_export, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("one\ntwo\n")
    result = _cli_without("ray", "embed-file", str(fast_export), str(texts), "-o", str(tmp_path / "vectors"), "--ray")
    assert result.returncode == 1, result.stderr
    assert "'ray' package is not installed; install the 'ray' extra: " 'pip install "edgembed[ray]"' in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="manifest.json.*not found"):
        Embedder.load(tmp_path)


def test_corrupt_manifest(tiny_export, tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(tiny_export, copy)
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="manifest.json.*JSON"):
        Embedder.load(copy)


def test_missing_model_file(tiny_export, tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(tiny_export, copy)
    (copy / "onnx/model_quantized.onnx").unlink()
    with pytest.raises(ModelFileError, match="model_quantized.onnx: not found"):
        Embedder.load(copy, variant="q8", backend="onnxruntime")


@pytest.mark.parametrize("backend,name", [("onnxruntime", "onnx/model.onnx"),
                                          ("openvino", "openvino/openvino_model.bin")])
def test_corrupt_model_file(tiny_export, tmp_path, backend, name):
    copy = tmp_path / "m"
    shutil.copytree(tiny_export, copy)
    target = copy / name
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match=f"{Path(name).name}.*manifest.json records"):
        Embedder.load(copy, variant="fp32", backend=backend)


def test_garbage_model_file_of_the_right_size(tiny_export, tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(tiny_export, copy)
    target = copy / "onnx/model.onnx"
    target.write_bytes(b"\x00" * target.stat().st_size)
    with pytest.raises(ModelFileError, match="model.onnx: onnxruntime cannot load it"):
        Embedder.load(copy, variant="fp32", backend="onnxruntime")


@pytest.mark.parametrize("content", [None, "{ broken"])
def test_missing_or_corrupt_tokenizer(tiny_export, tmp_path, content):
    copy = tmp_path / "m"
    shutil.copytree(tiny_export, copy)
    if content is None:
        (copy / "tokenizer.json").unlink()
    else:
        (copy / "tokenizer.json").write_text(content)
    with pytest.raises(ModelFileError, match="tokenizer.json"):
        Embedder.load(copy, variant="fp32", backend="onnxruntime")


def test_non_string_names_its_index(embedders):
    with pytest.raises(TypeError, match=r"texts\[2\] is int \(3\), expected str"):
        embedders["fp32", "onnxruntime"].encode(["a", "b", 3])


def test_lone_surrogate_names_its_index(embedders):
    with pytest.raises(ValueError,
                       match=r"texts\[1\]=.* is not valid: expected valid Unicode text; surrogates not allowed"):
        embedders["fp32", "onnxruntime"].encode(["fine", "bad \ud800 text"])


def test_empty_list(embedders):
    model = embedders["q8", "openvino"]
    assert model.encode([]).shape == (0, 64)
    assert model.encode([], dim=16).shape == (0, 16)
    assert model.encode([]).dtype == np.float32


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_or_whitespace_gives_a_finite_unit_vector(embedders, text):
    for model in embedders.values():
        vector = model.encode([text])[0]
        assert np.isfinite(vector).all()
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_too_long_without_truncation_names_index_and_count(embedders, parity_texts):
    model = embedders["fp32", "onnxruntime"]
    long_text = " ".join(parity_texts[:40])
    with pytest.raises(InputTooLongError, match=r"index 1 has \d+ tokens, more than max_length=256") as info:
        model.encode(["short", long_text], truncate=False)
    assert info.value.tokens > 256
    assert model.encode(["short", long_text]).shape == (2, 64)  # truncated by default


@pytest.mark.parametrize("dim", [0, 65, -1, 2.5])
def test_bad_dim(embedders, dim):
    with pytest.raises((ValueError, TypeError),
                       match="dim.* expected an integer from 1 to 64; this model was trained for"):
        embedders["fp32", "onnxruntime"].encode(["x"], dim=dim)


def test_unknown_prompt_name(embedders):
    with pytest.raises(UnknownChoiceError, match="'passage'.*'document', 'query'"):
        embedders["fp32", "onnxruntime"].encode(["x"], prompt_name="passage")


def test_bad_max_length(tiny_export):
    with pytest.raises(ValueError, match="max_length=100000 is not valid: expected an integer from 1 to 512"):
        Embedder.load(tiny_export, variant="fp32", backend="onnxruntime", max_length=100000)


def test_bad_batch_size(embedders):
    with pytest.raises(ValueError, match="batch_size=0 is not valid: expected an integer of at least 1"):
        embedders["fp32", "onnxruntime"].encode(["x"], batch_size=0)


def test_file_outside_model_directory_is_refused(tiny_export, tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(tiny_export, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for variant in manifest["variants"]:
        if variant["format"] == "onnx" and variant["dtype"] == "fp32":
            variant["files"][0]["path"] = "../../etc/passwd"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="outside the model directory"):
        Embedder.load(copy, variant="fp32", backend="onnxruntime")
