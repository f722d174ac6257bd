"""Rotary positions stay exact in every variant up to 4096 tokens.

Pooled vectors average small rotary errors away, so this compares every token's hidden state with PyTorch.
It caught OpenVINO's fp16 IR rounding the rotary inverse frequencies (token cosine 0.99945 instead of
0.999998): angles drift in proportion to the position.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import BACKENDS, DTYPES
from tiny_model import build_tiny_modernbert, real_sentences

from edgembed.runtime.backends import BackendOptions, load_backend
from edgembed.runtime.cli import main
from edgembed.runtime.manifest import BACKEND_FORMATS, Manifest
from edgembed.runtime.tokenization import TextTokenizer

TOKEN_THRESHOLDS = {"fp32": 0.99999, "fp16": 0.9999, "q8": 0.99}


@pytest.fixture(scope="module")
def long_model(tmp_path_factory: pytest.TempPathFactory):
    model_dir = build_tiny_modernbert(tmp_path_factory.mktemp("long") / "model", seed=2, max_positions=4096,
                                      sentence_transformers_files=False)
    out = model_dir.parent / "out"
    assert main(["export", str(model_dir), "-o", str(out), "--quantize", *DTYPES, "--eval-size", "0", "0"]) == 0
    return model_dir, out


@pytest.fixture(scope="module")
def long_batch(long_model):
    _, out = long_model
    manifest = Manifest.read(out)
    tokenizer = TextTokenizer(out / manifest.tokenizer_file, manifest.max_length, manifest.pad_token_id)
    batch = tokenizer([" ".join(real_sentences(400))])
    assert batch.input_ids.shape[1] == 4096
    return batch


@pytest.fixture(scope="module")
def long_reference(long_model, long_batch) -> np.ndarray:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(long_model[0])).eval()
    with torch.inference_mode():
        return model(input_ids=torch.from_numpy(long_batch.input_ids),
                     attention_mask=torch.from_numpy(long_batch.attention_mask)).last_hidden_state[0].numpy()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_token_matches_up_to_4096(long_model, long_batch, long_reference, report, dtype, backend):
    out = long_model[1]
    variant = Manifest.read(out).find(BACKEND_FORMATS[backend], dtype)
    graph = load_backend(backend, out / variant.model_file, variant.output,
                         BackendOptions(precision_hint=variant.precision_hint))
    hidden = graph.run({"input_ids": long_batch.input_ids, "attention_mask": long_batch.attention_mask})[0]
    sims = (hidden * long_reference).sum(-1) / (
        np.linalg.norm(hidden, axis=-1) * np.linalg.norm(long_reference, axis=-1))
    report(f"tiny ModernBERT {dtype:>4}/{backend:<11}: token cosine min {sims.min():.7f} "
           f"(positions 2048+: {sims[2048:].min():.7f}) on a 4096-token text")
    assert sims.min() >= TOKEN_THRESHOLDS[dtype]
