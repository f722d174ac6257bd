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


def _q8_checked(format_: str, top10: dict[str, float]):
    from edgembed.runtime.manifest import Fidelity, Variant

    domains = {name: Fidelity(cosine_min=0.999, cosine_mean=0.9995, texts=57, reference="pytorch", top10_overlap=value)
               for name, value in top10.items()}
    return Variant(format=format_, dtype="q8", files=[], evaluation_domains=domains)


def test_export_names_the_turned_recipe_when_a_default_q8_reorders_a_domain():
    from edgembed.export.cli import recipe_note

    variants = [_q8_checked("onnx", {"english-prose": 0.97, "korean": 0.92}),
                _q8_checked("openvino", {"english-prose": 0.96, "persian": 0.94})]
    note = recipe_note(variants, q8_recipe="smoothed")
    assert note is not None and "--q8-recipe turned" in note
    assert "onnx/q8 0.920 (korean)" in note and "openvino/q8 0.940 (persian)" in note


def test_export_stays_quiet_when_every_domain_keeps_its_neighbours_or_the_recipe_is_turned():
    from edgembed.export.cli import recipe_note

    assert recipe_note([_q8_checked("onnx", {"english-prose": 0.97, "korean": 0.95})], q8_recipe="smoothed") is None
    assert recipe_note([_q8_checked("onnx", {"korean": 0.90})], q8_recipe="turned") is None
    assert recipe_note([_q8_checked("onnx", {})], q8_recipe="smoothed") is None  # --eval-size 0 0: no check
