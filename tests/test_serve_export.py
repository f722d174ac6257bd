"""`edgembed serve` on the tiny ModernBERT's q8 export: the served vectors are the runtime's, request by request
and when requests are merged into one batch.

ONNX Runtime's q8 graph quantizes some activations per tensor at run time, so a text's vector moves slightly with
its batch-mates and their padding, in process as much as in the server (measured on this model: cosine 0.9998
between a text embedded alone and in a batch). OpenVINO's q8 moves less (its bf16 hint and batch-shaped kernels:
cosine 0.99993 seen in a merged batch).
"""
from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest
from serve_process import start_server

from edgembed.runtime import Embedder

pytestmark = pytest.mark.export
# least cosine between a merged batch's vector and encode() of the request alone (see above)
BATCH_DEPENDENT_COSINE = {"onnxruntime": 0.998, "openvino": 0.9995}


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_serves_the_tiny_modernbert_q8(tiny_export, parity_texts, tmp_path, backend):
    model = Embedder.load(tiny_export, variant="q8", backend=backend)
    server = start_server(tiny_export, tmp_path / "serve.log", "--variant", "q8", "--backend", backend)
    try:
        from openai import OpenAI

        client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        name = client.models.list().data[0].id
        assert name == tiny_export.name  # an export from a local folder is served by the folder's name, no path
        texts = [text for text in parity_texts if text.strip()]
        chunks = [texts[start:start + 8] for start in range(0, len(texts), 8)]

        def ask(chunk: list[str]) -> np.ndarray:
            data = client.embeddings.create(input=chunk, model=name).data  # base64, the default
            return np.array([item.embedding for item in data])

        for chunk in chunks:  # one request at a time: the same batch as encode(chunk)
            np.testing.assert_allclose(ask(chunk), model.encode(chunk), atol=1e-5)
        with concurrent.futures.ThreadPoolExecutor(len(chunks)) as pool:  # merged with each other's texts
            merged = list(pool.map(ask, chunks))
        for chunk, served in zip(chunks, merged):
            cosines = (served * model.encode(chunk)).sum(axis=1)
            assert cosines.min() > BATCH_DEPENDENT_COSINE[backend], cosines.min()
        long_text = " ".join(texts) * 4  # over the 256-token limit: cut, as encode cuts it
        cut = client.embeddings.create(input=[long_text], model=name, encoding_format="float")
        np.testing.assert_allclose(cut.data[0].embedding, model.encode(long_text), atol=1e-5)
        assert cut.model == name and cut.usage.prompt_tokens == model.max_length
    finally:
        assert server.stop() == 0, server.output()
