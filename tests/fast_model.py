"""A small export built without torch or the exporter, for the fast test tier.

The graph is real (ONNX, and the same graph as an OpenVINO IR): token embeddings, a mix with the text's mean
token, tanh. Its vectors depend on every token and on the attention mask, so batching, padding and pooling
errors show; it has no trained meaning. The tokenizer is a byte-level BPE trained on CPython's help topics.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

HIDDEN = 32
MAX_LENGTH = 64
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
PROMPTS = {"query": "search_query: ", "document": "search_document: "}


def training_lines(limit: int = 4000) -> list[str]:
    from pydoc_data.topics import topics

    lines = [line.strip() for text in topics.values() for line in text.splitlines() if len(line.strip()) > 20]
    return lines[:limit]


def build_tokenizer(path: Path, vocab_size: int = 600) -> int:
    """A byte-level BPE with [CLS] ... [SEP] around every text, saved as tokenizer.json; returns its vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(training_lines(), trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")),
                                                 ("[SEP]", tokenizer.token_to_id("[SEP]"))])
    # Like all-MiniLM-L6-v2's file: padding and truncation stored in it, which the runtime must replace.
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", length=MAX_LENGTH)
    tokenizer.enable_truncation(max_length=MAX_LENGTH)
    tokenizer.save(str(path))
    return tokenizer.get_vocab_size()


def _graph(vocab: int, seed: int):
    """last_hidden_state = tanh(E[ids] + 0.5 * masked mean of E[ids] over the text)."""
    from onnx import TensorProto, helper, numpy_helper

    table = np.random.default_rng(seed).standard_normal((vocab, HIDDEN)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["tokens"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "last_axis"], ["mask3"]),
        helper.make_node("Mul", ["tokens", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "seq_axis"], ["summed"], keepdims=1),
        helper.make_node("ReduceSum", ["mask3", "seq_axis"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", "one"], ["safe_count"]),
        helper.make_node("Div", ["summed", "safe_count"], ["mean"]),
        helper.make_node("Mul", ["mean", "half"], ["context"]),
        helper.make_node("Add", ["tokens", "context"], ["mixed"]),
        helper.make_node("Tanh", ["mixed"], ["last_hidden_state"]),
    ]
    initializers = [numpy_helper.from_array(table, "table"),
                    numpy_helper.from_array(np.array([-1], np.int64), "last_axis"),
                    numpy_helper.from_array(np.array([1], np.int64), "seq_axis"),
                    numpy_helper.from_array(np.array(1.0, np.float32), "one"),
                    numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    graph = helper.make_graph(
        nodes, "fast", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
                        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", HIDDEN])],
        initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _entry(root: Path, path: Path) -> dict[str, object]:
    return {"path": path.relative_to(root).as_posix(), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "bytes": path.stat().st_size}


def build_fast_export(root: Path, seed: int = 0, openvino: bool = True) -> Path:
    """Write OUT/manifest.json, tokenizer.json, onnx/model.onnx and (with `openvino`) the same graph as an IR."""
    import onnx

    root.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(root / "tokenizer.json")
    (root / "onnx").mkdir(exist_ok=True)
    onnx.save(_graph(vocab, seed), str(root / "onnx/model.onnx"))
    fidelity = {"cosine_min": 1.0, "cosine_mean": 1.0, "texts": 24, "reference": "itself", "threshold": 0.9999,
                "passed": True, "int8_path": "avx2"}
    variants = [{"format": "onnx", "dtype": "fp32", "files": [_entry(root, root / "onnx/model.onnx")],
                 "portable": True, "fidelity": fidelity}]
    if openvino:
        import openvino as ov

        (root / "openvino").mkdir(exist_ok=True)
        ov.save_model(ov.convert_model(str(root / "onnx/model.onnx")), str(root / "openvino/openvino_model.xml"),
                      compress_to_fp16=False)
        files = [_entry(root, root / "openvino/openvino_model.xml"), _entry(root, root / "openvino/openvino_model.bin")]
        variants.append({"format": "openvino", "dtype": "fp32", "files": files, "precision_hint": "f32",
                         "portable": True, "fidelity": fidelity})
    manifest = {"format_version": 1, "source": {"model": "fast-test-model", "revision": None},
                "architecture": "FastTestModel", "model_type": "test", "hidden_size": HIDDEN,
                "max_length": MAX_LENGTH, "max_position_embeddings": 128, "pad_token_id": 0, "pooling": "mean",
                "normalize": True, "prompts": PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine",
                "matryoshka_dims": [32, 16], "tokenizer_file": "tokenizer.json", "attention": "standard",
                "variants": variants, "edgembed_version": "test"}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


def reference_vectors(root: Path, texts: list[str], prompt: str = "") -> np.ndarray:
    """The fast model's embeddings computed in numpy, independently of the runtime (mean pooling, L2 norm)."""
    import onnx
    from onnx import numpy_helper
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=MAX_LENGTH)
    table = next(numpy_helper.to_array(t) for t in onnx.load(str(root / "onnx/model.onnx")).graph.initializer
                 if t.name == "table")
    vectors = []
    for text in texts:
        tokens = table[tokenizer.encode(prompt + text).ids]
        hidden = np.tanh(tokens + 0.5 * tokens.mean(axis=0))
        pooled = hidden.mean(axis=0)
        vectors.append(pooled / max(np.linalg.norm(pooled), 1e-12))
    return np.asarray(vectors, np.float32)
