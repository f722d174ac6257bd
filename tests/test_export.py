"""Exporter behaviour: fidelity gate, hub path, reading sentence-transformers files, refusing what it cannot do."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgembed.export import ExportRequest, run_export
from edgembed.export.errors import ExportError, FidelityError, UnsupportedModelError
from edgembed.export.source import read_embedding_spec, read_pooling, resolve
from edgembed.runtime import Embedder


def _quiet(_: str) -> None:
    pass


def test_low_fidelity_fails_and_writes_nothing(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    request = ExportRequest(model=str(tiny_model_dir), output=out, dtypes=["q8"], formats=["onnx"],
                            min_cosine={"q8": 1.01}, eval_queries=0)
    with pytest.raises(FidelityError, match=r"variant onnx/q8: cosine min 0\.9\d+ is below the threshold 1\.01"):
        run_export(request, progress=_quiet)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no partial directory either


def test_allow_low_fidelity_keeps_and_marks(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    request = ExportRequest(model=str(tiny_model_dir), output=out, dtypes=["q8"], formats=["onnx"],
                            min_cosine={"q8": 1.01}, allow_low_fidelity=True, eval_queries=0)
    run_export(request, progress=_quiet)
    variant = json.loads((out / "manifest.json").read_text())["variants"][0]
    assert variant["fidelity"]["passed"] is False and variant["fidelity"]["threshold"] == 1.01
    assert not (out / "onnx/model.onnx").exists()  # fp32 was only an intermediate
    with pytest.warns(UserWarning, match="allow-low-fidelity"):
        Embedder.load(out, variant="q8", backend="onnxruntime")


def test_prompts_and_overwrite(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    request = ExportRequest(model=str(tiny_model_dir), output=out, formats=["openvino"],
                            prompts={"query": "Q: ", "passage": "P: "}, overwrite=True, eval_queries=0)
    run_export(request, progress=_quiet)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["prompts"] == {"query": "Q: ", "document": "search_document: ", "passage": "P: "}
    assert not (out / "old.txt").exists()


@pytest.mark.export
def test_plain_checkpoint_without_sentence_transformers_files(tmp_path):
    from edgembed.export.synthetic import build_tiny_modernbert

    model_dir = build_tiny_modernbert(tmp_path / "plain", seed=1, sentence_transformers_files=False)
    out = tmp_path / "out"
    run_export(ExportRequest(model=str(model_dir), output=out, formats=["onnx"], eval_queries=0), progress=_quiet)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pooling"] == "mean" and manifest["normalize"] is True and manifest["prompts"] == {}
    assert manifest["max_length"] == 512  # the model's own limit without sentence_bert_config.json
    assert not (out / "modules.json").exists()


def test_hub_id_goes_through_the_hub_cache(tiny_model_dir, tmp_path, monkeypatch, request):
    """The real hub code path (huggingface_hub.snapshot_download), served offline from a cache we fill."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-embed"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants
    from huggingface_hub.utils import reset_sessions

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    # huggingface_hub caches its HTTP session, built offline now: later tests (the server's clients) need a new one
    request.addfinalizer(reset_sessions)
    source = resolve("acme/tiny-embed", revision="main")
    with pytest.raises(ExportError, match="'acme/missing' is not a local directory and could not be fetched"):
        resolve("acme/missing")
    assert source.revision == commit and source.spec.prompts["query"] == "search_query: "


def test_revision_on_a_local_directory_is_refused(tiny_model_dir):
    with pytest.raises(ExportError, match="--revision 'v1' applies to hub ids only"):
        resolve(str(tiny_model_dir), revision="v1")


def _pooling_file(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("config,mode", [
    ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}, "mean"),
    ({"pooling_mode_cls_token": True}, "cls"),
    ({"pooling_mode_max_tokens": True}, "max"),
    ({"pooling_mode": "mean"}, "mean"),
    ({"pooling_mode": "cls", "include_prompt": True}, "cls"),
    ({"pooling_mode": ["max"]}, "max"),
    ({"word_embedding_dimension": 8}, "mean"),
])
def test_pooling_config_both_formats(tmp_path, config, mode):
    assert read_pooling(_pooling_file(tmp_path, config)) == mode


@pytest.mark.parametrize("config", [
    {"pooling_mode": "lasttoken"},
    {"pooling_mode": ["mean", "max"]},
    {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True},
    {"pooling_mode": "mean", "include_prompt": False},
])
def test_unsupported_pooling_is_refused(tmp_path, config):
    with pytest.raises(UnsupportedModelError):
        read_pooling(_pooling_file(tmp_path, config))


def test_dense_module_is_refused(tmp_path):
    modules = [{"path": "", "type": "sentence_transformers.models.Transformer"},
               {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UnsupportedModelError, match="Dense"):
        read_embedding_spec(tmp_path)


def test_no_normalize_module_means_no_normalization(tmp_path):
    modules = [{"path": "", "type": "sentence_transformers.models.Transformer"},
               {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    assert read_embedding_spec(tmp_path).normalize is False


def test_pickle_only_weights_are_refused(tiny_model_dir, tmp_path):
    copy = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, copy)
    (copy / "model.safetensors").rename(copy / "pytorch_model.bin")
    with pytest.raises(UnsupportedModelError, match="--allow-pickle-weights"):
        resolve(str(copy))


def test_steps_reach_a_log_as_they_happen_with_their_time(tiny_model_dir, tmp_path):
    """stderr redirected to a file (not a terminal) still gets each step when it starts and its time when it ends."""
    log = tmp_path / "export.log"
    with log.open("w") as handle:
        process = subprocess.Popen([sys.executable, "-m", "edgembed", "export", str(tiny_model_dir), "-o",
                                    str(tmp_path / "out"), "--format", "onnx", "--eval-size", "0", "0"],
                                   stdout=subprocess.DEVNULL, stderr=handle)
        seen_before_the_end = ""
        while process.poll() is None:
            seen_before_the_end = log.read_text()
            if "[3/" in seen_before_the_end:
                break
            time.sleep(0.2)
        assert process.wait(timeout=600) == 0
    assert "[1/5] loading" in seen_before_the_end and "done in" in seen_before_the_end
    lines = log.read_text().splitlines()
    steps = [line.split("]")[0] for line in lines if re.match(r"\[\d+/\d+\] ", line)]
    assert steps == [f"[{n}/5" for n in range(1, 6)]
    done = [line for line in lines if "done in" in line]
    assert len(done) == 5 and all(re.search(r"CPU \d+ s; RSS [\d.]+ GB, peak [\d.]+ GB", line) for line in done)


@pytest.mark.export
@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_other_tools_speak_only_with_verbose(tiny_model_dir, tmp_path, verbose):
    """The q8 recipe (ONNX Runtime's quantizer), optimum's exporter and nncf's progress bars say nothing by
    default: stderr holds our progress lines only, stdout the summary; --verbose lets them through."""
    command = [sys.executable, "-m", "edgembed", "export", str(tiny_model_dir), "-o", str(tmp_path / "out"),
               "--quantize", "fp32", "q8", "--eval-size", "0", "0"] + (["--verbose"] if verbose else [])
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    ours = [line for line in result.stderr.splitlines() if re.match(r"(\[\d+/\d+\] |      |note)", line)]
    others = [line for line in result.stderr.splitlines() if line not in ours]
    if verbose:
        assert any("Please consider to run pre-processing" in line for line in others), others
        assert "Applying Weight Compression" in result.stdout
    else:
        assert others == [] and not [line for line in ours if line.startswith("note")], result.stderr
        assert all(line.startswith(("onnx/", "openvino/", "wrote ")) for line in result.stdout.splitlines())
