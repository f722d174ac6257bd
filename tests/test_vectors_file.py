"""The vectors file format (jobs/vectors_file.py): what embed-file records reads back as the same typed header,
files with the flat keys of earlier versions still read, and the reader gives back the vectors written."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="install the jobs extra: pip install -e '.[jobs]'")
pq = pytest.importorskip("pyarrow.parquet")

from edgembed.jobs import JobOptions, embed_file  # noqa: E402
from edgembed.jobs.vectors_file import METADATA_KEY, VectorsFileHeader, header_from_metadata  # noqa: E402
from edgembed.jobs.vectors_reader import VectorsReader  # noqa: E402
from edgembed.runtime import Embedder, EncodeOptions, ModelFileError  # noqa: E402

TEXTS = [f"line {n} about {topic}" for n in range(30) for topic in ("files", "numbers", "loops")]


@pytest.fixture(scope="module")
def model(ranged_export: Path) -> Embedder:
    return Embedder.load(ranged_export, variant="fp32", backend="onnxruntime")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


def test_embed_file_output_reads_back_with_the_header_it_recorded(model, corpus, tmp_path):
    embed_file(model, corpus, tmp_path / "vectors", job=JobOptions(shard_size=40),
               encode=EncodeOptions(precision="int8", prompt_name="document"), progress=False)
    reader = VectorsReader(tmp_path / "vectors")
    header = reader.header
    assert (header.model_id, header.variant, header.backend) == (model.model_id, "fp32", "onnxruntime")
    assert (header.dimension, header.precision, header.prompt_name) == (model.dimension, "int8", "document")
    np.testing.assert_array_equal(np.asarray(header.ranges, np.float32), model.embedding_ranges())
    assert header.job_id and header.edgembed_version
    assert (reader.rows, reader.width, reader.kind, reader.stored_precision) == (len(TEXTS), 32, "int8", "int8")
    blocks = list(reader.blocks(id_column="id"))
    codes = np.concatenate([block for block, _ in blocks])
    ids = [row_id for _, block_ids in blocks for row_id in block_ids]
    np.testing.assert_array_equal(codes, model.encode_document(TEXTS, precision="int8"))
    assert ids == list(range(len(TEXTS)))


def test_a_header_round_trips_through_its_metadata():
    header = VectorsFileHeader(model_id="org/model", variant="q8", backend="openvino", dimension=256,
                               precision="binary", prompt="search_document: ", job_id="abc",
                               edgembed_version="1.0")
    recorded = header.to_metadata()
    assert "ranges" not in recorded  # only int8/uint8 codes record ranges
    assert header_from_metadata({METADATA_KEY: json.dumps(recorded).encode()}, "file") == header


@pytest.mark.parametrize("metadata", [
    {b"edgembed.model_id": b"org/model", b"edgembed.variant": b"q8", b"edgembed.precision": b"binary",
     b"edgembed.dimension": b"256"},
    {b"model": b"org/model", b"variant": b"q8", b"precision": b"binary", b"dimension": b"256"},
    {METADATA_KEY: json.dumps({"edgembed.model": "org/model", "variant": "q8", "edgembed.precision": "binary",
                               "dimension": 256}).encode()},
])
def test_files_with_the_flat_keys_of_earlier_versions_still_read(metadata):
    header = header_from_metadata(metadata, "old.parquet")
    assert (header.model_id, header.variant, header.precision, header.dimension) == ("org/model", "q8", "binary", 256)


def test_a_file_that_records_nothing_has_an_empty_header():
    assert header_from_metadata(None, "bare.parquet") == VectorsFileHeader()
    assert header_from_metadata({METADATA_KEY: b"not json"}, "bare.parquet") == VectorsFileHeader()


def test_a_dimension_that_is_not_a_number_is_named():
    with pytest.raises(ModelFileError, match=r"odd\.parquet.*records a dimension of 'wide'"):
        header_from_metadata({b"dimension": b"wide"}, "odd.parquet")


def test_a_npy_matrix_reads_in_blocks_without_a_header(tmp_path):
    matrix = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.save(tmp_path / "vectors.npy", matrix)
    reader = VectorsReader(tmp_path / "vectors.npy")
    assert (reader.rows, reader.width, reader.kind, reader.header) == (4, 3, "float", VectorsFileHeader())
    [(block, ids)] = list(reader.blocks(id_column="id"))
    assert block.dtype == np.float32 and ids is None
    np.testing.assert_array_equal(block, matrix)
    assert reader.values_at([0, 2], "text") is None
