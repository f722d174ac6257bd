"""The `edgembed` command on the fast export: output formats, truncation notes, verify, version, --debug."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from edgembed import __version__
from edgembed.runtime import Embedder

CLI = [sys.executable, "-m", "edgembed"]


def _run(*words: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *words], input=stdin, capture_output=True, text=True, timeout=120)


def test_version():
    result = _run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"edgembed {__version__}" and __version__


def test_embed_json_matches_the_api(fast_export):
    result = _run("embed", str(fast_export), "--variant", "fp32", "--backend", "openvino", "first", "--dim", "16",
                  "second")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    expected = Embedder.load(fast_export, variant="fp32", backend="openvino").encode(["first", "second"], dim=16)
    assert payload["dimension"] == 16 and payload["variant"] == "fp32" and payload["backend"] == "openvino"
    np.testing.assert_allclose(np.array(payload["embeddings"], np.float32), expected, atol=1e-6)


def test_embed_jsonl_and_summary_from_stdin(fast_export):
    lines = _run("embed", str(fast_export), "--format", "jsonl", stdin="one\ntwo\n").stdout.splitlines()
    assert [json.loads(line)["index"] for line in lines] == [0, 1]
    summary = _run("embed", str(fast_export), "--format", "summary", "Edge servers need fast embeddings.")
    assert summary.returncode == 0 and summary.stdout.startswith("1 text(s) -> 32 dimensions")
    assert "norm 1.000" in summary.stdout


def test_cut_texts_are_reported_on_stderr(fast_export):
    result = _run("embed", str(fast_export), "short", "word " * 300)
    assert result.returncode == 0
    assert "1 of 2 texts had more than max_length=64 tokens and were cut" in result.stderr


def test_auto_says_what_it_took(fast_export):
    result = _run("embed", str(fast_export), "--variant", "auto", "--backend", "auto", "x")
    assert result.returncode == 0 and "using fp32 on" in result.stderr and "auto:" in result.stderr


def test_verify_reports_each_variant_and_fails_on_damage(fast_copy):
    good = _run("verify", str(fast_copy))
    assert good.returncode == 0 and "2 of 2 variants verified (sha256" in good.stdout
    data = bytearray((fast_copy / "onnx/model.onnx").read_bytes())
    data[len(data) // 2] ^= 1
    (fast_copy / "onnx/model.onnx").write_bytes(bytes(data))
    bad = _run("verify", str(fast_copy))
    assert bad.returncode == 1 and "FAILED  onnx/fp32" in bad.stdout and "sha256 differs" in bad.stdout
    assert "ok      openvino/fp32" in bad.stdout


def test_debug_keeps_the_traceback(fast_export):
    plain = _run("embed", str(fast_export), "--dim", "0", "x")
    debug = _run("embed", str(fast_export), "--dim", "0", "x", "--debug")
    assert "Traceback" not in plain.stderr and "Traceback" in debug.stderr


def test_eval_without_fp32_is_a_clear_error(fast_copy):
    data = json.loads((fast_copy / "manifest.json").read_text())
    for variant in data["variants"]:
        variant["dtype"] = "fp16"
    (fast_copy / "manifest.json").write_text(json.dumps(data))
    result = _run("eval", str(fast_copy), "--passes", "1")
    assert result.returncode == 1 and "has no fp32 variant" in result.stderr and "Traceback" not in result.stderr
