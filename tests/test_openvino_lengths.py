"""OpenVINO pads each run's length up to a few steps (the CPU plugin keeps memory per shape), and the padding never
changes a vector."""
from __future__ import annotations

import numpy as np
import pytest

from edgembed.runtime import Embedder
from edgembed.runtime.backends.openvino_backend import bucket_length

TEXTS = [f"a text of growing length about padding, {'word ' * (3 * index)}" for index in range(12)]


def test_lengths_are_rounded_up_to_steps_of_32_then_128():
    assert [bucket_length(length) for length in (1, 9, 32, 33, 512, 2048, 2049, 8192)] == [
        32, 32, 32, 64, 512, 2048, 2176, 8192]


def test_the_padded_length_holds_the_text_and_adds_less_than_a_step():
    for length in range(1, 9000):
        assert length <= bucket_length(length) < length + (32 if length <= 2048 else 128)


def test_padding_leaves_every_vector_as_the_text_alone_gives_it(fast_export):
    pytest.importorskip("openvino")
    with Embedder.load(fast_export, backend="openvino", threads=2) as model:
        alone = np.stack([model.encode(text) for text in TEXTS])
        together = model.encode(TEXTS, batch_size=len(TEXTS))
    cosines = np.sum(alone * together, axis=1) / (np.linalg.norm(alone, axis=1) * np.linalg.norm(together, axis=1))
    assert cosines.min() > 0.99999


def test_a_batch_gives_its_buffers_back_and_a_short_text_keeps_them(fast_export):
    pytest.importorskip("openvino")
    from edgembed.runtime.backends import BackendOptions
    from edgembed.runtime.backends.openvino_backend import OpenVinoBackend

    backend = OpenVinoBackend(fast_export / "openvino" / "openvino_model.xml", "last_hidden_state",
                              BackendOptions(threads=1))
    released = []
    compiled = backend._compiled

    class Recording:  # the real compiled model, with its release_memory calls counted
        def __getattr__(self, name):
            return getattr(compiled, name)

        def release_memory(self):
            released.append(True)
            compiled.release_memory()

    backend._compiled = Recording()
    short = {"input_ids": np.ones((1, 9), np.int64), "attention_mask": np.ones((1, 9), np.int64)}
    backend.run(short)
    assert released == []
    batch = {"input_ids": np.ones((4, 20), np.int64), "attention_mask": np.ones((4, 20), np.int64)}
    backend.run(batch)
    assert released == [True]
    backend.close()
