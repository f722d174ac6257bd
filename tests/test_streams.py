"""Streams: several batches at once for several texts, all threads for one text, the same vectors either way."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import cosines

from edgembed.runtime import Embedder
from edgembed.runtime.backends import BackendOptions, compile_graph, engine_options
from edgembed.runtime.manifest import Manifest
from edgembed.runtime.streams import STREAM_BATCH_TOKENS, resolve_streams


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_streams_give_the_vectors_of_one_batch_at_a_time(tiny_export, parity_texts, backend):
    texts = parity_texts[:40]
    sequential = Embedder.load(tiny_export, variant="fp32", backend=backend, threads=2, streams=1)
    parallel = Embedder.load(tiny_export, variant="fp32", backend=backend, threads=2, streams=2)
    expected = sequential.encode(texts, batch_size=8)
    got = parallel.encode(texts, batch_size=8, max_batch_tokens=400)
    assert got.shape == expected.shape
    assert cosines(expected, got).min() >= 0.99999
    assert "2 batches at a time for several texts on 1 thread each, single texts on 1 thread too, one copy of the " \
           "weights" in parallel.describe()
    assert "one batch at a time on 2 threads, one copy of the weights" in sequential.describe()


class _RecordingBackend:
    """Wraps a backend and records the (rows, length) of every batch it runs."""

    def __init__(self, backend, shapes: list[tuple[int, int]]) -> None:
        self._backend, self._shapes = backend, shapes
        self.name, self.inputs, self.output_width = backend.name, backend.inputs, backend.output_width

    def run(self, feeds):
        self._shapes.append(feeds["input_ids"].shape)
        return self._backend.run(feeds)

    def close(self):
        self._backend.close()


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_single_texts_and_streams_share_one_compiled_graph(tiny_export, backend):
    compiled: list[BackendOptions] = []

    def recording_compile(name, path, output, options):
        compiled.append(options)
        return compile_graph(name, path, output, options)

    model = Embedder.load(tiny_export, variant="fp32", backend=backend, threads=2, streams=2,
                          compile=recording_compile)
    model.encode("a single query")
    model.encode(["one text in a list"])
    model.encode(["first text", "second text", "a third, longer text"])
    model.encode(["and", "again"])
    assert [(o.threads, o.streams) for o in compiled] == [(2, 2)]  # one copy of the weights, used both ways


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_latency_copy_runs_single_texts_on_every_thread_and_batches_on_the_streams(tiny_export, parity_texts,
                                                                                      backend):
    runs: dict[int, list[tuple[int, int]]] = {}

    def recording_compile(name, path, output, options):
        return _RecordingBackend(compile_graph(name, path, output, options), runs.setdefault(options.streams, []))

    model = Embedder.load(tiny_export, variant="fp32", backend=backend, threads=2, streams=2, latency_copy=True,
                          compile=recording_compile)
    for shapes in runs.values():
        shapes.clear()
    single = model.encode("a single query")
    several = model.encode(parity_texts[:6])
    assert [rows for rows, _ in runs[1]] == [1] and sum(rows for rows, _ in runs[2]) == 6
    assert "single texts on a second copy of the weights with 2 threads" in model.describe()
    shared = Embedder.load(tiny_export, variant="fp32", backend=backend, threads=2, streams=2)
    assert cosines(shared.encode(["a single query"]), single[None]).min() >= 0.99999
    assert cosines(shared.encode(parity_texts[:6]), several).min() >= 0.99999


def test_stream_batches_are_small_and_every_stream_gets_one(tiny_export, parity_texts):
    shapes: list[tuple[int, int]] = []
    model = Embedder.load(tiny_export, variant="fp32", backend="onnxruntime", threads=2, streams=2,
                          compile=lambda *args: _RecordingBackend(compile_graph(*args), shapes))
    shapes.clear()  # the latency graph's warm-up, if any
    texts = [" ".join(parity_texts[:12])[:1500]] + parity_texts[:60]
    model.encode(texts, batch_size=32)
    assert sum(rows for rows, _ in shapes) == len(texts)
    assert all(rows * length <= STREAM_BATCH_TOKENS or rows == 1 for rows, length in shapes)
    shapes.clear()
    model.encode(["two", "texts"], batch_size=32)
    assert [rows for rows, _ in shapes] == [1, 1]  # one batch per stream, not one batch of two


def test_openvino_compiles_one_stream_per_caller(tiny_export):
    manifest = Manifest.read(tiny_export)
    variant = manifest.find("openvino", "fp32")
    # The manifest's precision hint, as Embedder.load passes it: without it, AMX CPUs compile this IR in bf16,
    # and OpenVINO 2026.4 crashed (SIGFPE) compiling the tiny model so with 2 streams on 2 cores.
    backend = compile_graph("openvino", tiny_export / variant.model_file, variant.output,
                            BackendOptions(threads=2, streams=2, engine=engine_options("openvino", variant, {})))
    assert int(backend._compiled.get_property("NUM_STREAMS")) == 2


def test_bad_stream_counts_are_refused(tiny_export):
    with pytest.raises(ValueError, match="streams=0 is not valid: expected an integer of at least 1"):
        Embedder.load(tiny_export, variant="fp32", backend="onnxruntime", streams=0)
    with pytest.raises(ValueError, match="streams=3 is not valid: expected at most the 2 threads"):
        Embedder.load(tiny_export, variant="fp32", backend="onnxruntime", threads=2, streams=3)


def test_default_streams_follow_the_cores_and_the_device():
    assert resolve_streams(None, 4, on_cpu=True) == (2, 4)
    assert resolve_streams(None, 1, on_cpu=True) == (1, 1)
    assert resolve_streams(None, 4, on_cpu=False) == (1, 4)
    assert resolve_streams(3, 4, on_cpu=True) == (3, 4)


def test_an_error_in_a_stream_reaches_the_caller(tiny_export):
    broken = {"on": True}

    class FailingBackend(_RecordingBackend):
        def run(self, feeds):
            if broken["on"]:
                raise RuntimeError("engine failed")
            return super().run(feeds)

    model = Embedder.load(tiny_export, variant="fp32", backend="onnxruntime", threads=2, streams=2,
                          compile=lambda *args: FailingBackend(compile_graph(*args), []))
    with pytest.raises(RuntimeError, match="engine failed"):
        model.encode(["one", "two", "three"])
    broken["on"] = False
    assert np.isfinite(model.encode(["one", "two", "three"])).all()
