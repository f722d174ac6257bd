"""edgembed embed-file on one box: formats, ids, bad rows, .npy, refusing another job, and resume after SIGKILL."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fast_model import build_fast_export, reference_vectors, training_lines

pa = pytest.importorskip("pyarrow", reason="install the jobs extra: pip install -e '.[jobs]'")
pq = pytest.importorskip("pyarrow.parquet")

from edgembed.jobs import JobOptions, embed_file  # noqa: E402
from edgembed.jobs.errors import InputFileError, JobStateError  # noqa: E402
from edgembed.jobs.inputs import input_spec, read_shard, scan  # noqa: E402
from edgembed.runtime import Embedder, EncodeOptions, UnknownChoiceError  # noqa: E402

EDGEMBED = [sys.executable, "-m", "edgembed"]


@pytest.fixture(scope="module")
def fast_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fast_export(tmp_path_factory.mktemp("fast") / "out")


@pytest.fixture(scope="module")
def model(fast_export: Path) -> Embedder:
    return Embedder.load(fast_export, variant="fp32", backend="onnxruntime")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    lines = training_lines(4000)
    return [f"{lines[i % len(lines)]} ({i})" for i in range(2500)] + ["", "héllo wörld ✓"]


def read_output(directory: Path) -> tuple[list, np.ndarray]:
    table = pq.read_table(directory)
    return table.column("id").to_pylist(), np.asarray(table.column("embedding").to_pylist(), np.float32)


def encode_like_job(model, texts: list[str], shard_size: int, **options) -> np.ndarray:
    """encode() on the groups the job embeds together (jobs.embedding.chunk_bounds of each shard): its exact
    vectors. encode() of all texts at once differs by float rounding (another padding per batch) for graphs that
    see padding."""
    from edgembed.jobs.embedding import chunk_bounds

    shards = [texts[s:s + shard_size] for s in range(0, len(texts), shard_size)]
    groups = [shard[start:stop] for shard in shards for start, stop in chunk_bounds(shard)]
    return np.concatenate([model.encode(group, **options) for group in groups])


def run(*args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGEMBED, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def test_text_file_matches_encode(model, texts, fast_export, tmp_path):
    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    summary = embed_file(model, source, tmp_path / "vectors", job=JobOptions(shard_size=1000), progress=False)
    ids, vectors = read_output(tmp_path / "vectors")
    assert ids == list(range(len(texts)))
    np.testing.assert_array_equal(vectors, encode_like_job(model, texts, 1000))
    np.testing.assert_allclose(vectors, model.encode(texts), atol=1e-6)
    np.testing.assert_allclose(vectors, reference_vectors(fast_export, texts), atol=1e-5)
    assert (summary.rows, summary.texts, summary.skipped, summary.shards) == (len(texts), len(texts), 0, 3)
    assert summary.tokens == model.tokenize(texts).token_count
    names = sorted(p.name for p in (tmp_path / "vectors").iterdir())
    assert names == ["_job.json", "part-000000.parquet", "part-000001.parquet", "part-000002.parquet"]
    schema = pq.read_schema(tmp_path / "vectors" / "part-000001.parquet")
    assert schema.field("embedding").type == pa.list_(pa.float32(), 32)
    assert schema.field("id").type == pa.int64()
    meta = json.loads(schema.metadata[b"edgembed"])
    assert (meta["model_id"], meta["variant"], meta["backend"], meta["dimension"]) == (
        "fast-test-model", "fp32", "onnxruntime", 32)
    assert meta["rows"] == [1000, 2000] and meta["texts"] == 1000
    assert json.loads((tmp_path / "vectors" / "_job.json").read_text())["status"] == "complete"


def test_chunks_split_a_shard_by_characters(model, texts, tmp_path, monkeypatch):
    from edgembed.jobs import embedding

    monkeypatch.setattr(embedding, "CHUNK_CHARACTERS", 20_000)
    bounds = embedding.chunk_bounds(texts[:1000])
    assert len(bounds) > 2 and bounds[0][0] == 0 and bounds[-1][1] == 1000
    assert all(stop == start for (_, stop), (start, _) in zip(bounds, bounds[1:]))
    assert all(sum(len(t) + 1 for t in texts[a:b - 1]) < 20_000 for a, b in bounds)
    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(texts[:1000]) + "\n", encoding="utf-8")
    updates = []

    def on_chunk(count: int, tokens: int) -> None:
        updates.append((count, tokens))

    result = embedding.embed_texts(model, texts[:1000], model.check(EncodeOptions()), on_chunk)
    np.testing.assert_array_equal(result.vectors, encode_like_job(model, texts[:1000], 1000))
    assert len(updates) > len(bounds)  # one per batch, not one per chunk
    assert sum(c for c, _ in updates) == 1000 and sum(t for _, t in updates) == result.tokens
    embed_file(model, source, tmp_path / "vectors", job=JobOptions(shard_size=600), progress=False)
    np.testing.assert_array_equal(read_output(tmp_path / "vectors")[1], encode_like_job(model, texts[:1000], 600))


def test_scan_finds_every_shard_start(tmp_path):
    for content, rows in ((b"", 0), (b"a", 1), (b"a\n", 1), (b"a\nb", 2), (b"\n\n\n", 3),
                          (b"".join(b"line %d\r\n" % i for i in range(1001)), 1001)):
        path = tmp_path / "lines.txt"
        path.write_bytes(content)
        spec = input_spec(path)
        for size in (1, 2, 7, 1000):
            plan = scan(spec, size)
            assert plan.rows == rows and plan.shards == -(-rows // size)
            got = [text for shard in range(plan.shards) for text in read_shard(spec, plan, shard, size).texts]
            assert got == content.decode().replace("\r\n", "\n").split("\n")[:rows]


def test_jsonl_ids_prompt_and_blank_lines(model, texts, tmp_path):
    source = tmp_path / "docs.jsonl"
    with open(source, "w") as handle:
        for index, text in enumerate(texts[:300]):
            handle.write(json.dumps({"doc": f"d{index}", "body": text}) + "\n")
            if index == 150:
                handle.write("\n")  # a blank line is not a row
    embed_file(model, source, tmp_path / "out", encode=EncodeOptions(prompt_name="document"),
               job=JobOptions(text_field="body", id_field="doc", shard_size=128), progress=False)
    ids, vectors = read_output(tmp_path / "out")
    assert ids == [f"d{index}" for index in range(300)]
    # lines 128-255 hold the blank line, so that shard has 127 texts
    groups = [texts[0:128], texts[128:255], texts[255:300]]
    np.testing.assert_array_equal(vectors, np.concatenate([model.encode(g, prompt_name="document") for g in groups]))
    assert pq.read_schema(tmp_path / "out" / "part-000000.parquet").field("id").type == pa.string()


def test_csv_with_quoted_newlines_and_tsv(model, tmp_path):
    rows = [("7", "first text"), ("8", "two\nlines, \"quoted\""), ("9", "third")] * 5
    for name, delimiter in (("docs.csv", ","), ("docs.tsv", "\t")):
        source = tmp_path / name
        with open(source, "w", newline="") as handle:
            writer = csv.writer(handle, delimiter=delimiter)
            writer.writerow(["id", "text"])
            writer.writerows(rows)
        out = tmp_path / f"{name}.out"
        embed_file(model, source, out, job=JobOptions(id_field="id", shard_size=4), progress=False)
        ids, vectors = read_output(out)
        assert ids == [row[0] for row in rows]
        np.testing.assert_array_equal(vectors, encode_like_job(model, [row[1] for row in rows], 4))


def test_parquet_input_across_row_groups(model, texts, tmp_path):
    table = pa.table({"key": pa.array(range(1000, 1000 + 700), pa.int32()), "text": texts[:700]})
    pq.write_table(table, tmp_path / "docs.parquet", row_group_size=97)
    embed_file(model, tmp_path / "docs.parquet", tmp_path / "out", job=JobOptions(id_field="key", shard_size=250),
               progress=False)
    ids, vectors = read_output(tmp_path / "out")
    assert ids == list(range(1000, 1700))
    np.testing.assert_array_equal(vectors, encode_like_job(model, texts[:700], 250))


def test_npy_output(model, texts, tmp_path):
    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(texts[:900]))
    target = tmp_path / "vectors.npy"
    embed_file(model, source, target, encode=EncodeOptions(dim=16), job=JobOptions(shard_size=400), progress=False)
    np.testing.assert_array_equal(np.load(target), encode_like_job(model, texts[:900], 400, dim=16))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "vectors.npy"]  # the shards are gone
    with pytest.raises(JobStateError, match="exists; pass --overwrite"):
        embed_file(model, source, target, job=JobOptions(shard_size=400), progress=False)
    embed_file(model, source, target, job=JobOptions(shard_size=400, overwrite=True), progress=False)
    assert np.load(target).shape == (900, 32)


def test_chunking_passes_through(model, tmp_path):
    long_text = " ".join(training_lines(200)[:60])
    source = tmp_path / "long.txt"
    source.write_text(f"short one\n{long_text}\n")
    summary = embed_file(model, source, tmp_path / "out", encode=EncodeOptions(chunking=True), progress=False)
    np.testing.assert_array_equal(read_output(tmp_path / "out")[1],
                                  model.encode(["short one", long_text], chunking=True))
    assert summary.truncated == 0


BAD_JSONL = ['{"text": "good one"}', '{"txt": "no text field"}', '{"text": 12}', "not json",
             '{"text": "lone \\ud800 surrogate"}', '["a", "list"]', '{"text": "good two"}']


def test_bad_rows_error_names_the_row(model, tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text("\n".join(BAD_JSONL) + "\n")
    with pytest.raises(InputFileError, match=r"row 1: line 2 has no field 'text'.*row 2: .*int.*row 3: line 4 "
                                              r"is not JSON.*and 2 more.*--on-bad-row skip"):
        embed_file(model, source, tmp_path / "out", progress=False)


def test_bad_rows_skipped_are_listed(model, tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text("\n".join(BAD_JSONL) + "\n")
    summary = embed_file(model, source, tmp_path / "out", job=JobOptions(on_bad_row="skip", shard_size=3),
                         progress=False)
    ids, vectors = read_output(tmp_path / "out")
    assert ids == [0, 6]
    np.testing.assert_array_equal(vectors, np.concatenate([model.encode(["good one"]), model.encode(["good two"])]))
    skipped = [json.loads(line) for line in (tmp_path / "out" / "_skipped.jsonl").read_text().splitlines()]
    assert [entry["row"] for entry in skipped] == [1, 2, 3, 4, 5]
    assert "not valid UTF-8" in skipped[3]["reason"] and "not an object" in skipped[4]["reason"]
    assert (summary.texts, summary.skipped) == (2, 5)


def test_invalid_utf8_line_and_csv_field_count(model, tmp_path):
    source = tmp_path / "latin1.txt"
    source.write_bytes(b"fine\ncaf\xe9\nfine too\n")
    with pytest.raises(InputFileError, match=r"row 1: line 2 is not UTF-8 \(byte 0xe9 at position 3\)"):
        embed_file(model, source, tmp_path / "out", progress=False)
    short = tmp_path / "short.csv"
    short.write_text("id,text\n1,ok\n2\n")
    with pytest.raises(InputFileError, match="record 1 .* has 1 fields, the header 2"):
        embed_file(model, short, tmp_path / "out2", progress=False)
    with pytest.raises(InputFileError, match="no column 'body'.*columns: id, text"):
        embed_file(model, short, tmp_path / "out3", job=JobOptions(text_field="body"), progress=False)


def test_another_job_is_refused(model, texts, tmp_path):
    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(texts[:500]) + "\n")
    out = tmp_path / "out"
    embed_file(model, source, out, job=JobOptions(shard_size=200), progress=False)
    # complete: nothing left to do
    again = embed_file(model, source, out, job=JobOptions(shard_size=200), progress=False)
    assert (again.resumed_shards, again.texts_this_run, again.texts) == (3, 0, 500)
    with pytest.raises(JobStateError, match="vectors dim was None, now 16.*--overwrite"):
        embed_file(model, source, out, encode=EncodeOptions(dim=16), job=JobOptions(shard_size=200), progress=False)
    with pytest.raises(JobStateError, match="shard_size was 200, now 100"):
        embed_file(model, source, out, job=JobOptions(shard_size=100), progress=False)
    with pytest.raises(JobStateError, match="backend was 'onnxruntime', now 'openvino'.*--backend onnxruntime"):
        embed_file(Embedder.load(model.directory, variant="fp32", backend="openvino"), source, out,
                   job=JobOptions(shard_size=200), progress=False)
    with open(source, "a") as handle:
        handle.write("one more line\n")
    with pytest.raises(JobStateError, match="input bytes was"):
        embed_file(model, source, out, job=JobOptions(shard_size=200), progress=False)
    summary = embed_file(model, source, out, job=JobOptions(shard_size=200, overwrite=True), progress=False)
    assert summary.texts == 501 and summary.resumed_shards == 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not ours")
    with pytest.raises(JobStateError, match="not this job's"):
        embed_file(model, source, tmp_path / "mine", job=JobOptions(overwrite=True), progress=False)


def test_options_are_checked_against_the_model_before_any_file(model, texts, tmp_path):
    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(texts[:10]) + "\n")
    out = tmp_path / "out"
    with pytest.raises(UnknownChoiceError, match="unknown prompt name 'nope'"):
        embed_file(model, source, out, encode=EncodeOptions(prompt_name="nope"), progress=False)
    with pytest.raises(ValueError, match="dim=64 is not valid: expected an integer from 1 to 32"):
        embed_file(model, source, out, encode=EncodeOptions(dim=64), progress=False)
    with pytest.raises(ValueError, match="ranges=.*the export's fixed ranges"):
        embed_file(model, source, out, encode=EncodeOptions(precision="int8", ranges=np.zeros((2, 32))),
                   progress=False)
    with pytest.raises(TypeError, match="encode is dict.*expected EncodeOptions"):
        embed_file(model, source, out, encode={"dim": 16}, progress=False)
    assert not out.exists()


def test_progress_lines_in_a_log(fast_export, texts, tmp_path):
    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(texts) + "\n")
    result = run("embed-file", fast_export, source, "-o", tmp_path / "out", "--variant", "fp32",
                 "--backend", "onnxruntime", "--shard-size", "500", "--log-every", "0")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert any("of 2,502 rows" in line and "texts/s" in line and "tokens/s" in line and "ETA" in line
               for line in lines), lines
    assert "2,502 texts" in lines[-1] and "tokens" in lines[-1] and "truncated" in lines[-1], lines[-1]
    assert result.stdout == ""


def test_progress_bar(model, texts, tmp_path):
    import io

    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(texts) + "\n")
    stream = io.StringIO()
    embed_file(model, source, tmp_path / "out", job=JobOptions(shard_size=500), progress="bar", stream=stream)
    last = stream.getvalue().replace("\r", "\n").strip().splitlines()[-1]
    assert "2.50k/2.50k" in last and "texts/s" in last and "tokens/s" in last and "<00:00" in last, last


def test_cli_errors_are_one_line(fast_export, tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"txt": 1}\n')
    result = run("embed-file", fast_export, source, "-o", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "row 0: line 1 has no field 'text'" in result.stderr


def _wait_for_parts(directory: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parts = len(list(directory.glob("part-*.parquet"))) if directory.is_dir() else 0
        if parts >= count:
            return parts
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.01)
    raise AssertionError(f"fewer than {count} shards after {timeout} s")


def test_resume_after_sigkill(fast_export, tmp_path):
    lines = training_lines(4000)
    source = tmp_path / "corpus.jsonl"
    with open(source, "w") as handle:
        for index in range(40_000):
            handle.write(json.dumps({"id": index * 3, "text": f"{lines[index % len(lines)]} {index}"}) + "\n")
    options = ["--variant", "fp32", "--backend", "onnxruntime", "--id-field", "id", "--shard-size", "1000",
               "--progress", "off"]
    killed = tmp_path / "killed"
    process = subprocess.Popen([*EDGEMBED, "embed-file", fast_export, source, "-o", killed, *options],
                               stderr=subprocess.PIPE, text=True)
    done_at_kill = _wait_for_parts(killed, 3, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    parts_after_kill = len(list(killed.glob("part-*.parquet")))
    assert 3 <= done_at_kill <= parts_after_kill < 40, parts_after_kill  # killed midway
    assert json.loads((killed / "_job.json").read_text())["status"] == "running"

    resumed = run("embed-file", fast_export, source, "-o", killed, *options)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{parts_after_kill} of 40 shards done before" in resumed.stderr
    whole = run("embed-file", fast_export, source, "-o", tmp_path / "whole", *options)
    assert whole.returncode == 0, whole.stderr

    killed_table, whole_table = pq.read_table(killed), pq.read_table(tmp_path / "whole")
    ids = killed_table.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 40_000 and ids == [index * 3 for index in range(40_000)]
    assert killed_table.equals(whole_table)
    assert not [p for p in killed.iterdir() if p.name.startswith(".")]  # no temporary file left
    for shard in range(40):
        name = f"part-{shard:06d}.parquet"
        assert pq.read_schema(killed / name).metadata == pq.read_schema(tmp_path / "whole" / name).metadata


def test_help_imports_no_pyarrow():
    code = ("import sys; from edgembed.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('pyarrow', 'ray', 'tqdm') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_base_install_needs_no_pyarrow_or_ray():
    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert [d.split(">")[0] for d in project["dependencies"]] == ["numpy", "tokenizers"]
    extras = project["optional-dependencies"]
    assert any(d.startswith("pyarrow") for d in extras["jobs"]) and any(d.startswith("ray[data]")
                                                                          for d in extras["ray"])
    assert not any(d.startswith("torch") for d in extras["jobs"] + extras["ray"])
