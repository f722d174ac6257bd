"""`edgembed search OUT VECTORS QUERY`: Parquet from embed-file or .npy with labels, checked against the model."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgembed.cli import main
from edgembed.runtime import Embedder, search

DOCUMENTS = [f"{topic} number {n}" for n in range(40) for topic in
             ("open a file and read its lines", "sort a list of numbers", "catch an exception in a loop")]
QUERIES = ["read the lines of a file", "sorting numbers"]


@pytest.fixture(scope="module")
def model(ranged_export: Path) -> Embedder:
    return Embedder.load(ranged_export, variant="fp32", backend="onnxruntime")


@pytest.fixture(scope="module")
def vectors(model: Embedder) -> np.ndarray:
    return model.encode_document(DOCUMENTS)


@pytest.fixture(scope="module")
def npy(vectors: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("npy")
    np.save(folder / "vectors.npy", vectors)
    (folder / "texts.txt").write_text("\n".join(DOCUMENTS) + "\n", encoding="utf-8")
    return folder / "vectors.npy", folder / "texts.txt"


def embed_file_metadata(model_id: str) -> dict[bytes, bytes]:
    """embed-file's shard metadata (jobs/shards.py): a JSON object under the key `edgembed`."""
    return {b"edgembed": json.dumps({"model_id": model_id, "variant": "fp32", "backend": "onnxruntime",
                                     "dimension": 32}).encode()}


def write_parquet(path: Path, vectors: np.ndarray, model_id: str, rows_per_group: int = 25) -> Path:
    """What embed-file writes: an id column, a fixed-size-list float32 embedding column, the model in metadata
    (plus a text column, which the search shows when a file has one)."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"id": [f"doc-{i}" for i in range(len(vectors))], "text": DOCUMENTS[:len(vectors)],
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])})
    table = table.replace_schema_metadata(embed_file_metadata(model_id))
    pq.write_table(table, path, row_group_size=rows_per_group)
    return path


def run(capsys, *words: str) -> tuple[int, str, str]:
    code = main(["search", *words])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def expected_rows(model: Embedder, vectors: np.ndarray, k: int, **options) -> np.ndarray:
    return search(model.encode_query(QUERIES), vectors, k=k, **options).indices


def test_npy_with_labels_gives_the_api_top_k(capsys, ranged_export, npy, model, vectors):
    code, stdout, _ = run(capsys, str(ranged_export), str(npy[0]), *QUERIES, "-k", "5", "--texts", str(npy[1]),
                          "--format", "json")
    assert code == 0
    payload = json.loads(stdout)
    assert payload["rows"] == len(DOCUMENTS) and payload["precision"] == "float32"
    expected = expected_rows(model, vectors, 5)
    for result, rows in zip(payload["results"], expected):
        assert [hit["row"] for hit in result["hits"]] == rows.tolist()
        assert [hit["id"] for hit in result["hits"]] == [DOCUMENTS[r] for r in rows]
    assert "file" in payload["results"][0]["hits"][0]["id"] and "sort" in payload["results"][1]["hits"][0]["id"]


def test_parquet_table_and_jsonl(capsys, ranged_export, model, vectors, tmp_path):
    path = write_parquet(tmp_path / "vectors.parquet", vectors, model.model_id)
    code, stdout, _ = run(capsys, str(ranged_export), str(path), QUERIES[0], "-k", "3")
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0] == f"query: {QUERIES[0]}" and len(lines) == 4
    rows = expected_rows(model, vectors, 3)[0]
    assert [line.split()[2] for line in lines[1:]] == [f"doc-{r}" for r in rows]
    assert repr(DOCUMENTS[rows[0]]) in lines[1]
    code, stdout, _ = run(capsys, str(ranged_export), str(path), *QUERIES, "-k", "2", "--format", "jsonl")
    hits = [json.loads(line) for line in stdout.splitlines()]
    assert [(h["query"], h["rank"]) for h in hits] == [(q, r) for q in QUERIES for r in (1, 2)]
    assert hits[0]["text"] == DOCUMENTS[rows[0]]


@pytest.mark.parametrize("precision,rescore", [("int8", False), ("binary", False), ("binary", True),
                                               ("int8", True)])
def test_compact_searches_match_the_api(capsys, ranged_export, model, vectors, tmp_path, precision, rescore):
    path = write_parquet(tmp_path / "vectors.parquet", vectors, model.model_id)
    words = [str(ranged_export), str(path), *QUERIES, "-k", "4", "--precision", precision, "--format", "json"]
    code, stdout, _ = run(capsys, *words, *(["--rescore"] if rescore else []))
    assert code == 0
    ranges = model.embedding_ranges()
    corpus = model.encode_document(DOCUMENTS, precision=precision)
    options = {"precision": precision, "ranges": ranges}
    if rescore:
        options.update(rescore=vectors if precision == "int8" else model.encode_document(DOCUMENTS, precision="int8"),
                       rescore_precision="float32" if precision == "int8" else "int8")
    expected = search(model.encode_query(QUERIES), corpus, k=4, **options).indices
    assert [[h["row"] for h in r["hits"]] for r in json.loads(stdout)["results"]] == expected.tolist()


def test_a_matryoshka_file_is_searched_at_its_dim(capsys, ranged_export, model, tmp_path):
    short = model.encode_document(DOCUMENTS, dim=16)
    path = write_parquet(tmp_path / "short.parquet", short, model.model_id)
    code, stdout, _ = run(capsys, str(ranged_export), str(path), QUERIES[0], "-k", "3", "--precision", "int8",
                          "--format", "json")
    assert code == 0
    expected = search(model.encode_query(QUERIES[0], dim=16), model.encode_document(DOCUMENTS, dim=16,
                      precision="int8"), k=3, precision="int8", ranges=model.embedding_ranges(dim=16)).indices
    assert [h["row"] for h in json.loads(stdout)["results"][0]["hits"]] == expected.tolist()


def write_codes(path: Path, codes: np.ndarray, metadata: dict[bytes, bytes]) -> Path:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    values = pa.array(codes.ravel(), type=pa.from_numpy_dtype(codes.dtype))
    table = pa.table({"id": [f"doc-{i}" for i in range(len(codes))],
                      "embedding": pa.FixedSizeListArray.from_arrays(values, codes.shape[1])})
    pq.write_table(table.replace_schema_metadata(metadata), path)
    return path


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_a_file_of_codes_is_searched_in_its_precision(capsys, ranged_export, model, tmp_path, precision):
    codes = model.encode_document(DOCUMENTS, precision=precision)
    described = {b"edgembed": json.dumps({"model_id": model.model_id, "dimension": 32, "precision": precision,
                                          **({"ranges": model.embedding_ranges().tolist()}
                                             if "int8" in precision else {})}).encode()}
    path = write_codes(tmp_path / "codes.parquet", codes, described)
    code, stdout, _ = run(capsys, str(ranged_export), str(path), *QUERIES, "-k", "4", "--format", "json")
    assert code == 0
    payload = json.loads(stdout)
    expected = search(model.encode_query(QUERIES), codes, k=4, precision=precision,
                      ranges=model.embedding_ranges()).indices
    assert payload["precision"] == precision
    assert [[h["row"] for h in r["hits"]] for r in payload["results"]] == expected.tolist()


def test_codes_without_a_record_need_their_precision_named(capsys, ranged_export, model, tmp_path):
    codes = model.encode_document(DOCUMENTS, precision="binary")
    np.save(tmp_path / "codes.npy", codes)
    code, _, stderr = run(capsys, str(ranged_export), str(tmp_path / "codes.npy"), "q")
    assert code == 2 and "holds int8 codes with no record of their precision" in stderr
    assert "--precision int8 or --precision binary" in stderr
    code, stdout, _ = run(capsys, str(ranged_export), str(tmp_path / "codes.npy"), *QUERIES, "--precision", "binary",
                          "-k", "3", "--format", "json")
    assert code == 0
    expected = search(model.encode_query(QUERIES), codes, k=3, precision="binary").indices
    assert [[h["row"] for h in r["hits"]] for r in json.loads(stdout)["results"]] == expected.tolist()


@pytest.mark.parametrize("words,message", [
    (["--precision", "float32"], "holds int8 codes (embed-file --precision int8), which can only be searched as "
                                 "int8: drop --precision float32"),
    (["--precision", "binary"], "drop --precision binary, or write float32 vectors"),
    (["--rescore"], "holds only int8 codes: search without --rescore"),
])
def test_a_file_of_codes_refuses_other_precisions_and_rescoring(capsys, ranged_export, model, tmp_path, words, message):
    codes = model.encode_document(DOCUMENTS, precision="int8")
    described = {b"edgembed": json.dumps({"model_id": model.model_id, "precision": "int8"}).encode()}
    path = write_codes(tmp_path / "codes.parquet", codes, described)
    code, _, stderr = run(capsys, str(ranged_export), str(path), "q", *words)
    assert code == 2 and message in stderr, stderr


def test_a_file_whose_record_contradicts_its_values_is_refused(capsys, ranged_export, model, tmp_path):
    codes = model.encode_document(DOCUMENTS, precision="uint8")
    described = {b"edgembed": json.dumps({"model_id": model.model_id, "precision": "int8"}).encode()}
    path = write_codes(tmp_path / "codes.parquet", codes, described)
    code, _, stderr = run(capsys, str(ranged_export), str(path), "q")
    assert code == 1 and "says it holds int8 vectors, but its values are uint8" in stderr


def test_a_file_of_another_model_is_refused_unless_forced(capsys, ranged_export, vectors, tmp_path):
    path = write_parquet(tmp_path / "other.parquet", vectors, "someone/else")
    code, _, stderr = run(capsys, str(ranged_export), str(path), "query")
    assert code == 2
    assert "made with model 'someone/else' (fp32), but OUT holds 'fast-test-model'" in stderr
    assert "--force" in stderr
    code, stdout, stderr = run(capsys, str(ranged_export), str(path), "query", "--force", "-k", "1")
    assert code == 0 and "warning" in stderr and stdout.startswith("query: query")


@pytest.mark.parametrize("words,message", [
    (["--precision", "int4"],
     "--precision='int4' is not valid: expected float32 or int8 or uint8 or binary or ubinary"),
    (["--rescore"], "--rescore re-ranks an int8 or binary search"),
    (["-k", "0"], "-k=0 is not valid"),
    (["--format", "xml"], "--format='xml' is not valid"),
])
def test_bad_options(capsys, ranged_export, npy, words, message):
    code, _, stderr = run(capsys, str(ranged_export), str(npy[0]), "query", *words)
    assert code == 2 and message in stderr and "Traceback" not in stderr


def test_bad_files(capsys, ranged_export, npy, tmp_path, fast_export, vectors):
    code, _, stderr = run(capsys, str(ranged_export), str(tmp_path / "missing.npy"), "q")
    assert code == 2 and "no such file or directory" in stderr
    (tmp_path / "labels.txt").write_text("one\ntwo\n")
    code, _, stderr = run(capsys, str(ranged_export), str(npy[0]), "q", "--texts", str(tmp_path / "labels.txt"))
    assert code == 2 and "has 2 lines but the vectors have 120 rows" in stderr
    np.save(tmp_path / "wide.npy", np.zeros((3, 64), np.float32))
    code, _, stderr = run(capsys, str(ranged_export), str(tmp_path / "wide.npy"), "q")
    assert code == 2 and "64 components, more than the 32" in stderr
    # an export without ranges: int8 says what to do instead
    code, _, stderr = run(capsys, str(fast_export), str(npy[0]), "q", "--precision", "int8")
    assert code == 2 and "records none" in stderr and "--precision float32" in stderr


def test_a_file_that_is_not_parquet(capsys, ranged_export, tmp_path):
    pytest.importorskip("pyarrow")
    (tmp_path / "bad.parquet").write_text("not parquet")
    code, _, stderr = run(capsys, str(ranged_export), str(tmp_path / "bad.parquet"), "q")
    assert code == 1 and "cannot be read as Parquet" in stderr


def test_a_parquet_directory(capsys, ranged_export, model, vectors, tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    write_parquet(folder / "part-000.parquet", vectors[:60], model.model_id)
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rest = pa.table({"id": [f"doc-{i}" for i in range(60, 120)], "text": DOCUMENTS[60:],
                     "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors[60:].ravel()), 32)})
    pq.write_table(rest.replace_schema_metadata({"edgembed.model_id": model.model_id}), folder / "part-001.parquet")
    (folder / "_job.json").write_text("{}")  # embed-file's state files sit beside the shards
    (folder / ".part-000002.parquet.tmp-1-abc").write_text("an unfinished shard")
    code, stdout, _ = run(capsys, str(ranged_export), str(folder), *QUERIES, "-k", "5", "--format", "json")
    assert code == 0
    expected = expected_rows(model, vectors, 5)
    results = json.loads(stdout)["results"]
    assert [[h["id"] for h in r["hits"]] for r in results] == [[f"doc-{i}" for i in rows] for rows in expected]


NO_PYARROW = textwrap.dedent("""
    import importlib.abc, sys

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "pyarrow":
                raise ImportError("pyarrow is blocked in this test")
            return None

    sys.meta_path.insert(0, Refuse())
    from edgembed.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_parquet_without_pyarrow_names_the_extra(ranged_export, tmp_path):
    (tmp_path / "v.parquet").write_bytes(b"PAR1")
    result = subprocess.run([sys.executable, "-c", NO_PYARROW, "search", str(ranged_export),
                             str(tmp_path / "v.parquet"), "q"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "reading Parquet needs pyarrow" in result.stderr and 'pip install "edgembed[' in result.stderr
