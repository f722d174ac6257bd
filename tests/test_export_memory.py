"""The exporter's bounded-memory paths give the numbers of the straightforward ones: calibration statistics
gathered text by text in groups, the PyTorch reference batched by length; and its progress and quiet output."""
from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from edgembed.export.progress import Progress, Steps
from edgembed.export.quiet import quiet_tools


@pytest.fixture(scope="module")
def q8_inputs(tiny_export: Path, tmp_path_factory):
    """The tiny export's fp32 graph with its weights external (as the q8 recipe holds it), its weight MatMul
    inputs and widths, and calibration feeds of texts from 1 to 256 tokens."""
    from edgembed.evaluation.corpus import calibration_texts
    from edgembed.export import q8_recipe
    from edgembed.runtime import Manifest
    from edgembed.runtime.backends import build_feeds
    from edgembed.runtime.tokenization import TextTokenizer

    directory = tmp_path_factory.mktemp("q8-inputs")
    model = q8_recipe._with_external_weights(tiny_export / "onnx/model.onnx", directory)
    weights = {i.name: i for i in model.graph.initializer}
    matmuls = q8_recipe._weight_matmuls(model, weights)
    inputs = list(dict.fromkeys(node.input[0] for node in matmuls))
    widths = {node.input[0]: int(weights[node.input[1]].dims[0]) for node in matmuls}
    manifest = Manifest.read(tiny_export)
    tokenizer = TextTokenizer(tiny_export / manifest.tokenizer_file, manifest.max_length, manifest.pad_token_id)
    texts = calibration_texts(40) + [" ".join(calibration_texts(40))]  # the last one is cut at 256 tokens
    declared = {"input_ids": np.dtype(np.int64), "attention_mask": np.dtype(np.int64)}
    feeds = [build_feeds(declared, tokenizer.pad(tokenizer.tokenize([t]).encodings)) for t in texts]
    return model, directory, inputs, widths, feeds


def _numpy_statistics(model, directory: Path, inputs: list[str], feeds, gram_tokens: int):
    """Every input of every text fetched at once, as the recipe did before it bounded its memory."""
    import onnx
    import onnxruntime

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in inputs)
    path = directory / "plain-probe.onnx"
    onnx.save(probe, str(path))
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL  # as the recipe's probe
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    values = [dict(zip(inputs, session.run(inputs, feed))) for feed in feeds]
    result = {}
    for name in inputs:
        rows = np.concatenate([v[name].reshape(-1, v[name].shape[-1]) for v in values])
        result[name] = (np.abs(rows).max(axis=0), rows[:gram_tokens].astype(np.float64))
    return result


@pytest.mark.parametrize("budget", [256 * 2**20, 64 * 1024], ids=["one-run-per-text", "grouped-and-folded"])
def test_calibration_statistics_match_all_inputs_at_once(q8_inputs, budget):
    from edgembed.export import q8_recipe

    model, directory, inputs, widths, feeds = q8_inputs
    gram_tokens = 1500  # ends inside a text, so a text is cut
    expected = _numpy_statistics(model, directory, inputs, feeds, gram_tokens)
    seen = []
    stats = q8_recipe._calibrate(model, inputs, feeds, gram_tokens, widths=widths, weights_dir=directory,
                                 activation_bytes=budget, status=seen.append)
    assert seen[-1] == f"calibration: {len(feeds)} of {len(feeds)} texts"
    for name in inputs:
        absmax, rows = expected[name]
        np.testing.assert_array_equal(stats[name].absmax, absmax.astype(np.float64))
        gram = rows.T @ rows
        np.testing.assert_allclose(stats[name].gram, gram, rtol=1e-4, atol=1e-3 * np.abs(gram).max())


def test_padded_calibration_feeds_are_refused(q8_inputs):
    from edgembed.export import q8_recipe

    model, directory, inputs, widths, feeds = q8_inputs
    padded = {"input_ids": np.array([[2, 40, 3, 0]]), "attention_mask": np.array([[1, 1, 1, 0]])}
    with pytest.raises(ValueError, match="unpadded"):
        q8_recipe._calibrate(model, inputs, [padded], widths=widths, weights_dir=directory)


def test_long_texts_run_in_groups_of_inputs():
    from edgembed.export.q8_recipe import _input_groups

    widths = {"a": 64, "b": 64, "c": 96}
    assert _input_groups(list(widths), widths, tokens=10, budget=10**6) == [["a", "b", "c"]]
    assert _input_groups(list(widths), widths, tokens=1000, budget=4 * 1000 * 128) == [["a", "b"], ["c"]]
    assert _input_groups(list(widths), widths, tokens=10**6, budget=1) == [["a"], ["b"], ["c"]]


def test_reference_batched_by_length_keeps_input_order(tiny_model_dir, parity_texts):
    from edgembed.export.reference import load_reference_model, reference_embeddings

    model = load_reference_model(tiny_model_dir)
    texts = parity_texts[::-1]
    batched = reference_embeddings(model, tiny_model_dir, texts, "mean", 256, batch_tokens=512)
    one_by_one = np.concatenate([reference_embeddings(model, tiny_model_dir, [t], "mean", 256) for t in texts])
    assert batched.shape == (len(texts), 64) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, one_by_one, atol=2e-5)


def test_steps_report_time_memory_and_a_heartbeat_in_silent_steps():
    lines: list[str] = []
    progress = Progress(lines.append)
    with Steps(2, progress, heartbeat=0.3) as steps:
        steps.next("first")
        progress.status("7 of 9 texts")
        time.sleep(1.6)
        steps.next("second")
        steps.finish()
    assert lines[0] == "[1/2] first"
    beats = [line for line in lines if "7 of 9 texts" in line]
    assert beats and "into this step" in beats[0] and "GB" in beats[0]
    done = [line for line in lines if line.strip().startswith("done in")]
    assert len(done) == 2 and all("peak" in line for line in done)
    assert lines.index("[2/2] second") > lines.index(beats[0])


def _root_record(message: str, source: str) -> logging.LogRecord:
    """A warning logged on the root logger from `source`, as ONNX Runtime's quantizer logs."""
    return logging.makeLogRecord({"name": "root", "levelno": logging.WARNING, "levelname": "WARNING", "msg": message,
                                  "pathname": f"/venv/lib/python3.11/site-packages/{source}"})


def test_other_tools_noise_is_hidden_and_what_matters_becomes_a_note(caplog):
    notes: list[str] = []
    with caplog.at_level(logging.INFO), quiet_tools(False, notes.append):
        root = logging.getLogger()
        root.handle(_root_record("Please consider to run pre-processing before quantization. Refer to example: ...",
                                 "onnxruntime/quantization/quantize.py"))
        root.handle(_root_record("A new thing ONNX Runtime says", "onnxruntime/quantization/onnx_quantizer.py"))
        root.warning("the application's own warning")
        logging.getLogger("optimum.exporters.onnx.base").warning(
            "Weight deduplication check in the ONNX export requires accelerate. Please install accelerate to run it.")
        logging.getLogger("optimum.exporters.onnx.base").info("Deduplicating shared (tied) weights...")
        logging.getLogger("transformers.modeling_utils").warning(
            "Some weights of ModernBertModel were not initialized from the model checkpoint at x and are newly "
            "initialized: ['layers.0.attn.Wo.weight']")
        logging.getLogger("nncf").warning("Something nncf wants the user to know")
        warnings.warn("deprecated soon", FutureWarning, stacklevel=1)  # attributed here, like a tool's own
        import rich

        assert rich.get_console().quiet
    assert notes == ["note from onnxruntime: A new thing ONNX Runtime says",
                     "note: the checkpoint lacks weights the model needs, and transformers filled them with random "
                     "values: the export (and the PyTorch reference it is checked against) reproduces a partly "
                     "random model",
                     "note from nncf: Something nncf wants the user to know"]
    assert [record.getMessage() for record in caplog.records] == ["the application's own warning"]
    assert not rich.get_console().quiet


def test_verbose_lets_everything_through():
    import rich

    notes: list[str] = []
    before = {name: logging.getLogger(name).handlers[:] for name in ("optimum", "transformers", "nncf")}
    with quiet_tools(True, notes.append):
        assert {name: logging.getLogger(name).handlers for name in before} == before
        assert not rich.get_console().quiet
        logging.getLogger("nncf").warning("Something nncf wants the user to know")
    assert notes == []
