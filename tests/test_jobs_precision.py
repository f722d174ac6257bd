"""embed-file --precision: the job writes the codes encode() gives, records how to read them, and search reads them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fast_model import training_lines

pa = pytest.importorskip("pyarrow", reason="install the jobs extra: pip install -e '.[jobs]'")
pq = pytest.importorskip("pyarrow.parquet")

from edgembed.jobs import JobOptions, embed_file  # noqa: E402
from edgembed.jobs.errors import JobStateError  # noqa: E402
from edgembed.runtime import Embedder, EncodeOptions, search  # noqa: E402
from edgembed.runtime.errors import MissingRangesError, UnknownChoiceError  # noqa: E402
from edgembed.runtime.precision import quantize  # noqa: E402

EDGEMBED = [sys.executable, "-m", "edgembed"]
COLUMN_TYPES = {"int8": pa.int8(), "uint8": pa.uint8(), "binary": pa.int8(), "ubinary": pa.uint8()}


@pytest.fixture(scope="module")
def model(ranged_export: Path) -> Embedder:
    return Embedder.load(ranged_export, variant="fp32", backend="onnxruntime")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    lines = training_lines(1500)
    texts = [f"{lines[i % len(lines)]} ({i})" for i in range(1300)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path, texts


def float_run(model: Embedder, corpus, tmp_path: Path, encode: EncodeOptions = EncodeOptions()) -> np.ndarray:
    embed_file(model, corpus[0], tmp_path / "float", encode=encode, job=JobOptions(shard_size=500), progress=False)
    return np.asarray(pq.read_table(tmp_path / "float").column("embedding").to_pylist(), np.float32)


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_parquet_codes_are_the_float_runs_vectors_quantized(model, corpus, tmp_path, precision):
    vectors = float_run(model, corpus, tmp_path)
    summary = embed_file(model, corpus[0], tmp_path / "codes", encode=EncodeOptions(precision=precision),
                         job=JobOptions(shard_size=500), progress=False)
    table = pq.read_table(tmp_path / "codes")
    width = 32 if "int8" in precision else 4
    assert table.schema.field("embedding").type == pa.list_(COLUMN_TYPES[precision], width)
    codes = np.asarray(table.column("embedding").to_pylist(), dtype=COLUMN_TYPES[precision].to_pandas_dtype())
    np.testing.assert_array_equal(codes, quantize(vectors, precision, ranges=model.embedding_ranges()))
    meta = json.loads(pq.read_schema(tmp_path / "codes" / "part-000001.parquet").metadata[b"edgembed"])
    assert (meta["precision"], meta["dimension"]) == (precision, 32)
    if "int8" in precision:
        np.testing.assert_array_equal(np.asarray(meta["ranges"], np.float32), model.embedding_ranges())
    else:
        assert "ranges" not in meta
    assert summary.precision == precision and f"as {precision} codes" in summary.line()
    assert table.column("id").to_pylist() == list(range(len(corpus[1])))


def test_npy_of_matryoshka_int8_codes(model, corpus, tmp_path):
    vectors = float_run(model, corpus, tmp_path, EncodeOptions(dim=16))
    target = tmp_path / "codes.npy"
    embed_file(model, corpus[0], target, encode=EncodeOptions(dim=16, precision="int8"),
               job=JobOptions(shard_size=500), progress=False)
    codes = np.load(target)
    assert codes.dtype == np.int8 and codes.shape == (len(corpus[1]), 16)
    np.testing.assert_array_equal(codes, quantize(vectors, "int8", ranges=model.embedding_ranges(dim=16)))


def test_binary_npy_is_packed_bytes(model, corpus, tmp_path):
    target = tmp_path / "bits.npy"
    embed_file(model, corpus[0], target, encode=EncodeOptions(precision="ubinary"), job=JobOptions(shard_size=500),
               progress=False)
    codes = np.load(target)
    assert codes.dtype == np.uint8 and codes.shape == (len(corpus[1]), 4)


def test_another_precision_is_another_job(model, corpus, tmp_path):
    embed_file(model, corpus[0], tmp_path / "out", job=JobOptions(shard_size=500), progress=False)
    with pytest.raises(JobStateError, match="precision was 'float32', now 'int8'.*--overwrite"):
        embed_file(model, corpus[0], tmp_path / "out", encode=EncodeOptions(precision="int8"),
                   job=JobOptions(shard_size=500), progress=False)


def test_bad_precision_or_missing_ranges_fail_before_any_file(fast_export, model, corpus, tmp_path):
    listed = "unknown precision 'int4'; available: 'binary', 'float32', 'int8', 'ubinary', 'uint8'"
    with pytest.raises(UnknownChoiceError, match=listed):
        embed_file(model, corpus[0], tmp_path / "a", encode=EncodeOptions(precision="int4"), progress=False)
    unranged = Embedder.load(fast_export, variant="fp32", backend="onnxruntime")
    with pytest.raises(MissingRangesError, match="precision='int8' needs fixed ranges.*records none"):
        embed_file(unranged, corpus[0], tmp_path / "b", encode=EncodeOptions(precision="int8"), progress=False)
    with pytest.raises(MissingRangesError, match="dim=8.*add 8 to --matryoshka-dims"):
        with pytest.warns(UserWarning, match="dim=8 is not among the Matryoshka dims"):
            embed_file(model, corpus[0], tmp_path / "c", encode=EncodeOptions(precision="int8", dim=8),
                       progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # bits need no ranges
    embed_file(unranged, corpus[0], tmp_path / "d", encode=EncodeOptions(precision="binary"), progress=False)


def test_cli_writes_codes_that_search_reads(ranged_export, model, corpus, tmp_path):
    out = ranged_export
    vectors_dir = tmp_path / "codes"
    made = subprocess.run([*EDGEMBED, "embed-file", out, corpus[0], "-o", vectors_dir, "--precision", "binary",
                           "--variant", "fp32", "--backend", "onnxruntime", "--progress", "off"],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    assert "as binary codes" in made.stderr
    queries = [corpus[1][7], corpus[1][900]]
    found = subprocess.run([*EDGEMBED, "search", out, vectors_dir, *queries, "-k", "5", "--format", "json",
                            "--variant", "fp32", "--backend", "onnxruntime"],
                           capture_output=True, text=True, timeout=300)
    assert found.returncode == 0, found.stderr
    payload = json.loads(found.stdout)
    written = np.asarray(pq.read_table(vectors_dir).column("embedding").to_pylist(), np.int8)
    expected = search(model.encode_query(queries), written, k=5, precision="binary")
    assert payload["precision"] == "binary"
    assert [[hit["id"] for hit in result["hits"]] for result in payload["results"]] == expected.indices.tolist()
    bad = subprocess.run([*EDGEMBED, "embed-file", out, corpus[0], "-o", tmp_path / "x", "--precision", "int4"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "invalid choice: 'int4'" in bad.stderr and "Traceback" not in bad.stderr
