"""The `edgembed` command: embed prints JSON, export reports bad arguments without a traceback."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from conftest import cosines

from edgembed.runtime import Embedder

CLI = [sys.executable, "-m", "edgembed"]


def test_embed_arguments(tiny_export):
    result = subprocess.run([*CLI, "embed", str(tiny_export), "--variant", "q8", "--backend", "openvino",
                             "first text", "second text"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["variant"] == "q8" and payload["backend"] == "openvino" and payload["dimension"] == 64
    vectors = np.array(payload["embeddings"], dtype=np.float32)
    expected = Embedder.load(tiny_export, variant="q8", backend="openvino").encode(["first text", "second text"])
    assert cosines(vectors, expected).min() > 0.99999


def test_embed_stdin_with_prompt_and_dim(tiny_export):
    result = subprocess.run([*CLI, "embed", str(tiny_export), "--variant", "fp32", "--backend", "onnxruntime",
                             "--prompt-name", "query", "--dim", "32"],
                            input="line one\nline two\n", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    vectors = np.array(json.loads(result.stdout)["embeddings"], dtype=np.float32)
    expected = Embedder.load(tiny_export, variant="fp32", backend="onnxruntime").encode_query(
        ["line one", "line two"], dim=32)
    assert vectors.shape == (2, 32)
    assert cosines(vectors, expected).min() > 0.99999


def test_embed_unknown_variant_is_a_clean_error(tiny_export):
    result = subprocess.run([*CLI, "embed", str(tiny_export), "--variant", "q4", "x"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "unknown variant" in result.stderr and "Traceback" not in result.stderr


def test_export_bad_quantize_is_a_clean_error(tiny_model_dir, tmp_path):
    result = subprocess.run([*CLI, "export", str(tiny_model_dir), "-o", str(tmp_path / "o"), "--quantize", "q3"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "unknown --quantize value 'q3'; available: 'fp16', 'fp32', 'q4', 'q8', 'q8-static'" in result.stderr
    assert not (tmp_path / "o").exists()


def test_export_refuses_to_overwrite(tiny_model_dir, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    result = subprocess.run([*CLI, "export", str(tiny_model_dir), "-o", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "--overwrite" in result.stderr
    assert (out / "keep.txt").read_text() == "precious"
