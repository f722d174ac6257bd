"""Long context: the efficient attention export matches PyTorch token by token, up to 8192 tokens.

Pooled vectors average small errors away, so these compare every token's hidden state with PyTorch.
- Every token of an 8192-token text, per variant and backend. This also caught OpenVINO's fp16 IR rounding
  the rotary inverse frequencies (token cosine 0.99945 instead of 0.999998): angles drift with the position.
- Lengths around the sliding-window blocks (the tiny model's window is 16, so blocks of 8 tokens) and around
  127/128/129, 255/256/257, 511/512/513, padded together in one batch: padding must change nothing. The same
  lengths one by one: texts shorter than a block plus its window take a narrower key window.
- The standard export (--attention standard) stays available and equal.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import DTYPES

from edgembed.cli import main
from edgembed.export.synthetic import LOCAL_WINDOW, build_tiny_modernbert, real_sentences
from edgembed.runtime.backends import BACKENDS, BackendOptions, compile_graph, engine_options
from edgembed.runtime.manifest import Manifest
from edgembed.runtime.tokenization import TextTokenizer

LONGEST = 8192
TOKEN_THRESHOLDS = {"fp32": 0.99999, "fp16": 0.9999, "q8": 0.99}
BLOCK = LOCAL_WINDOW // 2
BOUNDARY_LENGTHS = sorted({1, 2, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK - 1, 2 * BLOCK, 2 * BLOCK + 1,
                           3 * BLOCK + 1, 127, 128, 129, 255, 256, 257, 511, 512, 513})
ALL = [(dtype, backend) for dtype in DTYPES for backend in BACKENDS]


def export(model_dir, out, *options: str):
    assert main(["export", str(model_dir), "-o", str(out), "--eval-size", "0", "0", *options]) == 0
    return out


@pytest.fixture(scope="module")
def long_model(tmp_path_factory: pytest.TempPathFactory):
    model_dir = build_tiny_modernbert(tmp_path_factory.mktemp("long") / "model", seed=2, max_positions=LONGEST,
                                      sentence_transformers_files=False)
    return model_dir, export(model_dir, model_dir.parent / "out", "--quantize", *DTYPES)


@pytest.fixture(scope="module")
def long_ids(long_model) -> np.ndarray:
    """8192 token ids of real text, [CLS] first and [SEP] last, as the runtime's tokenizer makes them."""
    out = long_model[1]
    manifest = Manifest.read(out)
    tokenizer = TextTokenizer(out / manifest.tokenizer_file, LONGEST, manifest.pad_token_id)
    ids = np.asarray(tokenizer.tokenize([" ".join(real_sentences(1200))]).encodings[0].ids, dtype=np.int64)
    assert len(ids) == LONGEST
    return ids


@pytest.fixture(scope="module")
def torch_model(long_model):
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(long_model[0])).eval()


def torch_hidden(model, ids: np.ndarray) -> np.ndarray:
    """Hidden states of one unpadded text: the truth that no batch composition may change."""
    import torch

    with torch.inference_mode():
        tensor = torch.from_numpy(ids[None])
        return model(input_ids=tensor, attention_mask=torch.ones_like(tensor)).last_hidden_state[0].numpy()


def token_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def load_graph(out, dtype: str, backend: str):
    variant = Manifest.read(out).find(BACKENDS[backend].formats[0], dtype)
    return compile_graph(backend, out / variant.model_file, variant.output,
                        BackendOptions(engine=engine_options(backend, variant, {})))


def boundary_batch(long_ids: np.ndarray) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """One text per boundary length (real tokens, ending in [SEP]), right-padded into one batch."""
    texts = [np.append(long_ids[:n - 1], long_ids[-1]) for n in BOUNDARY_LENGTHS]
    input_ids = np.zeros((len(texts), max(BOUNDARY_LENGTHS)), dtype=np.int64)
    mask = np.zeros_like(input_ids)
    for row, ids in enumerate(texts):
        input_ids[row, :len(ids)], mask[row, :len(ids)] = ids, 1
    return texts, {"input_ids": input_ids, "attention_mask": mask}


def check_boundary_rows(rows, references, report, dtype: str, backend: str, how: str) -> None:
    """Every boundary length's tokens against PyTorch; reports and asserts the worst token cosine."""
    worst = {n: token_cosines(hidden, ref).min() for n, hidden, ref in zip(BOUNDARY_LENGTHS, rows, references)}
    length, lowest = min(worst.items(), key=lambda item: item[1])
    report(f"tiny ModernBERT {dtype:>4}/{backend:<11}: token cosine min {lowest:.7f} over lengths "
           f"{BOUNDARY_LENGTHS[0]}..{BOUNDARY_LENGTHS[-1]} {how} (worst at {length})")
    assert lowest >= TOKEN_THRESHOLDS[dtype], worst


@pytest.fixture(scope="module")
def boundary_reference(torch_model, long_ids):
    texts, feeds = boundary_batch(long_ids)
    return [torch_hidden(torch_model, ids) for ids in texts], feeds


@pytest.fixture(scope="module")
def long_reference(torch_model, long_ids) -> np.ndarray:
    return torch_hidden(torch_model, long_ids)


@pytest.mark.parametrize(("dtype", "backend"), ALL)
def test_every_token_matches_at_8192(long_model, long_ids, long_reference, report, dtype, backend):
    graph = load_graph(long_model[1], dtype, backend)
    hidden = graph.run({"input_ids": long_ids[None], "attention_mask": np.ones_like(long_ids)[None]})[0]
    sims = token_cosines(hidden, long_reference)
    report(f"tiny ModernBERT {dtype:>4}/{backend:<11}: token cosine min {sims.min():.7f} "
           f"(positions 4096+: {sims[4096:].min():.7f}) on an 8192-token text, efficient attention")
    assert sims.min() >= TOKEN_THRESHOLDS[dtype]


@pytest.mark.parametrize(("dtype", "backend"), ALL)
def test_block_and_window_boundaries_in_one_padded_batch(long_model, boundary_reference, report, dtype, backend):
    references, feeds = boundary_reference
    hidden = load_graph(long_model[1], dtype, backend).run(feeds)
    rows = [hidden[row, :n] for row, n in enumerate(BOUNDARY_LENGTHS)]
    check_boundary_rows(rows, references, report, dtype, backend, "padded in one batch")


@pytest.mark.parametrize(("dtype", "backend"), ALL)
def test_block_and_window_boundaries_one_text_at_a_time(long_model, boundary_reference, report, dtype, backend):
    references, feeds = boundary_reference
    graph = load_graph(long_model[1], dtype, backend)
    rows = [graph.run({name: value[row:row + 1, :n] for name, value in feeds.items()})[0]
            for row, n in enumerate(BOUNDARY_LENGTHS)]
    check_boundary_rows(rows, references, report, dtype, backend, "one at a time")


def test_efficient_graph_fuses_global_attention_for_onnxruntime(long_model):
    out = long_model[1]
    assert Manifest.read(out).attention == "efficient"
    graph = onnx.load(str(out / "onnx" / "model.onnx"))
    fused = [node for node in graph.graph.node if node.op_type == "MultiHeadAttention"]
    assert len(fused) == 2  # layers 0 and 3 of 4 are global
    fp16 = onnx.load(str(out / "onnx" / "model_fp16.onnx"))
    assert sum(node.op_type == "MultiHeadAttention" for node in fp16.graph.node) == 2


def test_standard_attention_stays_available(long_model, boundary_reference, tmp_path):
    out = export(long_model[0], tmp_path / "standard", "--attention", "standard", "--quantize", "fp32")
    assert Manifest.read(out).attention == "standard"
    graph = onnx.load(str(out / "onnx" / "model.onnx"))
    assert not any(node.op_type == "MultiHeadAttention" for node in graph.graph.node)
    references, feeds = boundary_reference
    for backend in BACKENDS:
        hidden = load_graph(out, "fp32", backend).run(feeds)
        for row, (n, ref) in enumerate(zip(BOUNDARY_LENGTHS, references)):
            assert token_cosines(hidden[row, :n], ref).min() >= TOKEN_THRESHOLDS["fp32"]


def test_unknown_attention_mode_is_refused_before_loading(long_model, tmp_path, capsys):
    assert main(["export", str(long_model[0]), "-o", str(tmp_path / "x"), "--attention", "sparse"]) != 0
    assert "sparse" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_windows_cover_the_text_with_the_requested_overlap(long_model):
    out = long_model[1]
    manifest = Manifest.read(out)
    tokenizer = TextTokenizer(out / manifest.tokenizer_file, 64, manifest.pad_token_id)
    text = " ".join(real_sentences(60))
    untruncated = TextTokenizer(out / manifest.tokenizer_file, LONGEST, manifest.pad_token_id)
    whole = untruncated.tokenize([text]).encodings[0].ids
    windows = [[w.ids for w in text_windows]
               for text_windows in tokenizer.encode_windows([text, "a short one"], overlap=16)]
    assert len(windows[1]) == 1
    body = whole[1:-1]
    pieces = windows[0]
    assert len(pieces) > 3 and all(len(p) <= 64 and p[0] == whole[0] and p[-1] == whole[-1] for p in pieces)
    step = 64 - 2 - 16
    for index, piece in enumerate(pieces):
        assert piece[1:-1] == body[index * step:index * step + 62]


def test_chunking_reads_past_max_length(long_model):
    from edgembed.runtime import Embedder

    out = long_model[1]
    text = " ".join(real_sentences(80))
    full = Embedder.load(out, variant="fp32", backend="onnxruntime", max_length=2048)
    short = Embedder.load(out, variant="fp32", backend="onnxruntime", max_length=128)
    whole = full.encode(text)
    truncated, chunked = short.encode(text), short.encode(text, chunking=True)
    assert full.tokenize(text).lengths[0] > 4 * 128
    # The windows see all of the text, so the chunked vector is closer to the whole-text one.
    assert float(chunked @ whole) > float(truncated @ whole)
    np.testing.assert_allclose(short.encode("a short text", chunking=True), short.encode("a short text"), atol=1e-6)
    with pytest.raises(ValueError, match="chunk_overlap"):
        short.encode(text, chunking=True, chunk_overlap=100)


@pytest.mark.export
@pytest.mark.parametrize("onnxruntime_ops", [True, False])
def test_rewritten_forward_matches_the_model_with_biases(onnxruntime_ops):
    """The export-time forward (split projections, rotary op, blocked windows) computes what the model does,
    biases included (the tiny exports have none), with padding in the batch."""
    import torch
    from transformers import ModernBertConfig, ModernBertModel

    from edgembed.export.attention import efficient_attention

    config = ModernBertConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                              num_attention_heads=4, global_attn_every_n_layers=3, local_attention=LOCAL_WINDOW,
                              max_position_embeddings=256, pad_token_id=0, attention_bias=True, mlp_bias=True,
                              initializer_range=0.2, attn_implementation="eager")
    torch.manual_seed(5)
    model = ModernBertModel(config).eval()
    for parameter in model.parameters():  # biases start at zero: give them values
        torch.nn.init.normal_(parameter, std=0.2)
    ids = torch.randint(5, 300, (2, 40))
    mask = torch.ones_like(ids)
    mask[1, 23:] = 0
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).last_hidden_state
        with efficient_attention(model, onnxruntime_ops):
            rewritten = model(input_ids=ids, attention_mask=mask).last_hidden_state
        restored = model(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    assert torch.allclose(rewritten[real], expected[real], atol=1e-4), (rewritten[real] - expected[real]).abs().max()
    assert torch.equal(restored, expected)  # the context manager put the model's own forward back
