"""q8 corpus jobs on a local Ray against the single-box job (the tiny ModernBERT export: export tier).

q8 quantizes activations per batch, so a vector depends on the texts it shares a batch with. Ray actors of
one CPU run one stream, the single-box default two: the batches differ, the vectors agree within the q8 batch
tolerance. With the same streams the batches are the same and so are the bits.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import cosines
from test_parity import BATCH_INVARIANCE

from edgembed.export.synthetic import real_sentences

ray = pytest.importorskip("ray", reason="install the ray extra: pip install -e '.[ray]'")
pq = pytest.importorskip("pyarrow.parquet")

from edgembed.jobs import JobOptions, RayOptions, embed_file  # noqa: E402
from edgembed.runtime import Embedder  # noqa: E402

pytestmark = pytest.mark.export
# Least cosine between the same text's q8 vectors batched with other texts: the runtime's own bound.
Q8_BATCH_TOLERANCE = BATCH_INVARIANCE["q8"]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sentences = real_sentences(400)
    path = tmp_path_factory.mktemp("q8") / "corpus.txt"
    path.write_text("".join(f"{sentences[i % len(sentences)]} {' '.join(sentences[:i % 7])}\n" for i in range(3000)))
    return path


def vectors(directory: Path) -> np.ndarray:
    table = pq.read_table(directory)
    assert table.column("id").to_pylist() == list(range(table.num_rows))
    column = table.column("embedding").combine_chunks()
    return np.asarray(column.values).reshape(table.num_rows, -1)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_q8_on_ray_within_batch_tolerance(local_ray, tiny_export, corpus, tmp_path, backend, report):
    single = Embedder.load(tiny_export, variant="q8", backend=backend, threads=2)  # two streams
    embed_file(single, corpus, tmp_path / "single", job=JobOptions(shard_size=500), progress=False)
    driver = Embedder.load(tiny_export, variant="q8", backend=backend, threads=1)
    embed_file(driver, corpus, tmp_path / "ray", job=JobOptions(shard_size=500),
               ray=RayOptions(actors=2, cpus_per_actor=1), progress=False)
    a, b = vectors(tmp_path / "single"), vectors(tmp_path / "ray")
    sims = cosines(a, b)
    report(f"q8/{backend} Ray 2x1 CPU vs single box (2 streams), 3000 texts: cosine min {sims.min():.6f}, "
           f"identical rows {int((a == b).all(axis=1).sum())}")
    assert sims.min() >= Q8_BATCH_TOLERANCE

    embed_file(Embedder.load(tiny_export, variant="q8", backend=backend, streams=1), corpus, tmp_path / "single-1",
               job=JobOptions(shard_size=500), progress=False)
    assert pq.read_table(tmp_path / "single-1").equals(pq.read_table(tmp_path / "ray"))
