"""close() and `with Embedder.load(...)`: the graph and the stream threads go, later calls say the model was closed,
and calls already running finish with the right vectors."""
from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest

from edgembed.runtime import ClosedError, Embedder
from edgembed.runtime.backends import compile_graph

TEXTS = [f"text number {index} about closing models, " * (1 + index % 5) for index in range(24)]


def _stream_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name.startswith("edgembed-stream")}


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_with_block_closes_the_model_and_later_calls_say_so(fast_export, backend):
    with Embedder.load(fast_export, variant="fp32", backend=backend, threads=2, streams=2) as model:
        assert not model.closed
        assert model.encode(TEXTS).shape == (len(TEXTS), model.dimension)
    assert model.closed
    for call in (lambda: model.encode("one"), lambda: model.encode_query(["a", "b"]),
                 lambda: model.embed(model.tokenize(["tokenized first"])),
                 lambda: model.encode(["long " * 50], chunking=True)):
        with pytest.raises(ClosedError, match=r"was closed \(close\(\) or the end of its `with` block\).*"
                                              r"Embedder\.load"):
            call()
    model.close()  # again: nothing happens
    assert model.backend == backend and model.dimension > 0 and backend in model.describe()


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_close_releases_the_compiled_graph_and_the_stream_threads(fast_export, backend):
    built = []

    def keep_a_weak_reference(*args):
        graph = compile_graph(*args)
        built.append(weakref.ref(graph))
        return graph

    before = _stream_threads()  # other tests' models may still hold theirs
    model = Embedder.load(fast_export, variant="fp32", backend=backend, threads=2, streams=2,
                          compile=keep_a_weak_reference)
    model.encode(TEXTS)
    assert len(built) == 1 and _stream_threads() - before
    model.close()
    gc.collect()
    assert built[0]() is None
    assert _stream_threads() <= before


def test_a_call_running_when_close_is_called_finishes_with_the_right_vectors(fast_export):
    expected = Embedder.load(fast_export, variant="fp32", backend="onnxruntime", streams=1).encode(TEXTS)
    model = Embedder.load(fast_export, variant="fp32", backend="onnxruntime", streams=1)
    first_batch, closed = threading.Event(), threading.Event()
    result = {}

    def report(texts, tokens):
        first_batch.set()
        closed.wait(10)

    def encode_in_thread():
        result["vectors"] = model.embed(model.tokenize(TEXTS), batch_size=4, on_batch=report)

    worker = threading.Thread(target=encode_in_thread)
    worker.start()
    assert first_batch.wait(30)
    model.close()  # returns at once; the running call releases the graph when it ends
    closed.set()
    worker.join(60)
    np.testing.assert_allclose(result["vectors"], expected, atol=1e-5)
    with pytest.raises(ClosedError):
        model.encode("after")


def test_closing_from_a_callback_of_the_running_call_does_not_wait_for_itself(fast_export):
    model = Embedder.load(fast_export, variant="fp32", backend="onnxruntime", threads=2, streams=2)
    vectors = model.embed(model.tokenize(TEXTS), batch_size=4, on_batch=lambda texts, tokens: model.close())
    assert vectors.shape == (len(TEXTS), model.dimension) and np.isfinite(vectors).all()
    assert model.closed
    with pytest.raises(ClosedError):
        model.encode(TEXTS)
