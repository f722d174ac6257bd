"""embed-file on a real local Ray (ray.init(num_cpus=2)): the same output as the single-box job, and a killed
actor's shard retried without losing or doubling a row."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fast_model import build_fast_export, training_lines

ray = pytest.importorskip("ray", reason="install the ray extra: pip install -e '.[ray]'")
pq = pytest.importorskip("pyarrow.parquet")

from edgembed.jobs import JobOptions, RayOptions, embed_file  # noqa: E402
from edgembed.jobs.errors import InputFileError  # noqa: E402
from edgembed.runtime import Embedder, EncodeOptions, LoadOptions  # noqa: E402

ACTOR_TITLE = "ray::MapWorker(MapBatches(EmbedShards))"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def fast_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fast_export(tmp_path_factory.mktemp("fast") / "out")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12,000 JSONL rows with string ids, two bad rows and a blank line."""
    lines = training_lines(4000)
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    with open(path, "w") as handle:
        for index in range(12_000):
            if index == 4321:
                handle.write('{"id": "x4321"}\n')  # no text: skipped and listed
            elif index == 9000:
                handle.write("\n")
            elif index == 11_999:
                handle.write('{"id": "x11999", "text": null}\n')
            else:
                handle.write(json.dumps({"id": f"x{index}", "text": f"{lines[index % len(lines)]} {index}"}) + "\n")
    return path


def actor_pids() -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith(ACTOR_TITLE):
                pids.add(int(entry.name))
    return pids


JOB = JobOptions(id_field="id", on_bad_row="skip", shard_size=1000)


def single_box(model_dir: Path, corpus: Path, out: Path, *, backend: str = "onnxruntime", threads: int | None = None,
               streams: int | None = None, encode: EncodeOptions = EncodeOptions()):
    model = Embedder.load(model_dir, variant="fp32", backend=backend, threads=threads, streams=streams)
    return embed_file(model, corpus, out, encode=encode, job=JOB, progress=False)


def on_ray(model_dir: Path, corpus: Path, out: Path, *, backend: str = "onnxruntime", ray: RayOptions = RayOptions(),
           encode: EncodeOptions = EncodeOptions()):
    model = Embedder.load(model_dir, variant="fp32", backend=backend)
    return embed_file(model, corpus, out, encode=encode, job=JOB, ray=ray, progress=False)


def assert_same_output(a: Path, b: Path) -> None:
    table_a, table_b = pq.read_table(a), pq.read_table(b)
    assert table_a.equals(table_b)
    assert (a / "_skipped.jsonl").read_text() == (b / "_skipped.jsonl").read_text()
    for part in sorted(a.glob("part-*.parquet")):
        assert pq.read_schema(part).metadata == pq.read_schema(b / part.name).metadata


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_two_actors_equal_single_box_with_one_stream(local_ray, fast_export, corpus, tmp_path, backend):
    """Two actors of one CPU (one thread, one stream each) against the single-box job on one stream: the same
    batches, so the same bits."""
    single = single_box(fast_export, corpus, tmp_path / "single", backend=backend, streams=1)
    summary = on_ray(fast_export, corpus, tmp_path / "ray", backend=backend, ray=RayOptions(actors=2, cpus_per_actor=1))
    assert_same_output(tmp_path / "single", tmp_path / "ray")
    ids = pq.read_table(tmp_path / "ray").column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 11_997
    assert (summary.texts, summary.skipped, summary.tokens) == (single.texts, single.skipped, single.tokens)
    assert [json.loads(line)["row"] for line in (tmp_path / "ray" / "_skipped.jsonl").read_text().splitlines()] \
        == [4321, 11_999]


def test_one_actor_of_two_cpus_equals_the_default_single_box(local_ray, fast_export, corpus, tmp_path):
    """One actor of two CPUs runs two streams like the single-box default: the same bits again."""
    single_box(fast_export, corpus, tmp_path / "single", threads=2)
    on_ray(fast_export, corpus, tmp_path / "ray", ray=RayOptions(actors=1, cpus_per_actor=2))
    assert_same_output(tmp_path / "single", tmp_path / "ray")


def test_codes_on_ray_equal_the_single_box(local_ray, fast_export, corpus, tmp_path):
    """precision travels with the job's settings: the actors write the single box's binary codes and metadata."""
    binary = EncodeOptions(precision="binary")
    single_box(fast_export, corpus, tmp_path / "single", threads=2, encode=binary)
    on_ray(fast_export, corpus, tmp_path / "ray", ray=RayOptions(actors=1, cpus_per_actor=2), encode=binary)
    assert_same_output(tmp_path / "single", tmp_path / "ray")
    column = pq.read_schema(tmp_path / "ray" / "part-000000.parquet").field("embedding").type
    assert (str(column.value_type), column.list_size) == ("int8", 4)


def test_actors_default_to_two_cpus_on_nodes_that_have_them(local_ray):
    """One actor's two streams share one copy of the weights; two one-CPU actors each hold their own."""
    from edgembed.jobs.ray_job import _default_cpus_per_actor

    assert _default_cpus_per_actor(ray) == 2


def test_defaults_on_a_two_cpu_ray_equal_the_default_single_box(local_ray, fast_export, corpus, tmp_path):
    """Both defaults run two streams of one thread over the same chunks: the same bits."""
    single_box(fast_export, corpus, tmp_path / "single")
    on_ray(fast_export, corpus, tmp_path / "ray")
    assert_same_output(tmp_path / "single", tmp_path / "ray")


def test_ray_resumes_a_single_box_job(local_ray, fast_export, corpus, tmp_path):
    """Shards missing from a job (as after a kill) are the only ones Ray embeds; the result is the same."""
    single_box(fast_export, corpus, tmp_path / "single", streams=1)
    single_box(fast_export, corpus, tmp_path / "mixed", streams=1)
    for shard in (2, 7, 11):
        (tmp_path / "mixed" / f"part-{shard:06d}.parquet").unlink()
    summary = on_ray(fast_export, corpus, tmp_path / "mixed", ray=RayOptions(actors=2, cpus_per_actor=1))
    assert (summary.resumed_shards, summary.texts_this_run) == (9, 2999)  # shard 11 holds the null text
    assert_same_output(tmp_path / "single", tmp_path / "mixed")


def test_bad_row_error_comes_back_as_itself(local_ray, fast_export, corpus, tmp_path):
    model = Embedder.load(fast_export, variant="fp32", backend="onnxruntime")
    with pytest.raises(InputFileError, match="row 4321: line 4322 has no field 'text'"):
        embed_file(model, corpus, tmp_path / "out", job=JobOptions(id_field="id", shard_size=1000), ray=RayOptions(),
                   progress=False)


ROWS = 150_000


def test_killed_actor_is_retried(local_ray, fast_export, tmp_path):
    """SIGKILL one of the two actors once three shards are written: Ray restarts it and retries its shard,
    which is rewritten under the same name; every row comes out once, equal to the single-box job's."""
    lines = training_lines(4000)
    corpus = tmp_path / "big.txt"
    corpus.write_text("".join(f"{lines[i % len(lines)]} {i}\n" for i in range(ROWS)))
    out = tmp_path / "ray"
    model = Embedder.load(fast_export, variant="fp32", backend="onnxruntime")
    outcome: dict[str, object] = {}

    def job() -> None:
        try:
            outcome["summary"] = embed_file(model, corpus, out, load=LoadOptions(streams=1),
                                            job=JobOptions(shard_size=1000),
                                            ray=RayOptions(actors=2, cpus_per_actor=1), progress=False)
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=job)
    thread.start()
    deadline = time.monotonic() + 300
    while len(list(out.glob("part-*.parquet")) if out.is_dir() else []) < 3:
        assert time.monotonic() < deadline and thread.is_alive(), outcome
        time.sleep(0.01)
    before = actor_pids()
    while len(before) < 2 and thread.is_alive() and time.monotonic() < deadline:  # the second may start late
        time.sleep(0.01)
        before = actor_pids()
    assert len(before) == 2, before
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    parts_at_kill = len(list(out.glob("part-*.parquet")))
    seen: set[int] = set()
    while thread.is_alive() and time.monotonic() < deadline + 300:
        seen |= actor_pids()
        time.sleep(0.05)
    thread.join(timeout=60)
    assert "error" not in outcome, outcome.get("error")
    assert parts_at_kill < ROWS // 1000, "the job ended before the kill; make the corpus longer"
    assert seen - before, f"Ray did not start a new actor: {before} then {seen}"
    ids = pq.read_table(out).column("id").to_pylist()
    assert ids == list(range(ROWS))  # every row once, in order
    single_box_model = Embedder.load(fast_export, variant="fp32", backend="onnxruntime", streams=1)
    embed_file(single_box_model, corpus, tmp_path / "single", job=JobOptions(shard_size=1000), progress=False)
    assert pq.read_table(out).equals(pq.read_table(tmp_path / "single"))
    assert outcome["summary"].texts == ROWS


def test_shipped_model(fast_export, corpus, tmp_path):
    """--ship-model: embed_file starts Ray itself with the export as the job's runtime_env working_dir, and the
    actors load it from there (their current directory), not from its path. Last: it ends the module's Ray."""
    if ray.is_initialized():
        ray.shutdown()
    single_box(fast_export, corpus, tmp_path / "single", streams=1)
    on_ray(fast_export, corpus, tmp_path / "ray", ray=RayOptions(actors=2, cpus_per_actor=1, ship_model=True))
    assert not ray.is_initialized()  # the Ray it started is shut down
    assert_same_output(tmp_path / "single", tmp_path / "ray")


def test_cli_on_ray_prints_the_jobs_lines_not_ray_datas(fast_export, corpus, tmp_path):
    """`edgembed embed-file --ray` in a fresh process: Ray Data's plan, start and finish lines and its note that
    its progress bars are off stay in its log file; the job's summary line is printed. After test_shipped_model,
    so that this process starts the only Ray."""
    if ray.is_initialized():
        ray.shutdown()
    result = subprocess.run([sys.executable, "-m", "edgembed", "embed-file", str(fast_export), str(corpus), "-o",
                             str(tmp_path / "ray"), "--id-field", "id", "--on-bad-row", "skip", "--ray",
                             "--actors", "1", "--cpus-per-actor", "1", "--progress", "off"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "edgembed embed-file: 11,997 texts" in result.stderr, result.stderr
    assert "Progress bars disabled" not in result.stderr and "Starting execution" not in result.stderr, result.stderr
