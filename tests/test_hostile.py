"""Hostile input: malformed texts and options, damaged and hostile model folders, many threads, many calls.

Every case runs in a subprocess with a timeout, so a crash or a hang fails the test instead of the run. The
outcome each case must have: finite unit vectors for text that is odd but valid, and for everything else an
edgembed error (ValueError / TypeError / ModelFileError subclasses) whose message names the bad argument or file.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from edgembed.runtime import Embedder

HUGE = 10_000_000  # characters
# (id, expression for the texts, options, expected): expected is "ok" or the start of the error type's name and a
# fragment of its message.
ENCODE_CASES = [
    ("empty-string", "['']", {}, "ok"),
    ("spaces", "['   ']", {}, "ok"),
    ("nul", "['\\x00']", {}, "ok"),
    ("nul-inside", "['a\\x00b' * 100]", {}, "ok"),
    ("control-characters", "[''.join(chr(c) for c in range(32)) + '\\x7f']", {}, "ok"),
    ("newlines", "['\\n' * 100000]", {}, "ok"),
    ("zero-width", "['\\u200b' * 5000]", {}, "ok"),
    ("bom-and-noncharacters", "['\\ufeff\\uffff\\U0010ffff']", {}, "ok"),
    ("emoji", "['\\U0001F600' * 5000]", {}, "ok"),
    ("combining-marks", "['e' + '\\u0301' * 20000]", {}, "ok"),
    ("right-to-left", "['\\u05e9\\u05dc\\u05d5\\u05dd \\u0645\\u0631\\u062d\\u0628\\u0627' * 300]", {}, "ok"),
    ("special-token-strings", "['[CLS] [SEP] [PAD] [UNK] [MASK] <s></s><pad> <|endoftext|>' * 50]", {}, "ok"),
    ("huge-string", f"['word ' * {HUGE // 5}]", {}, "ok"),
    ("huge-unbroken", f"['a' * {HUGE}]", {}, "ok"),
    ("many-texts", "['t%d' % i for i in range(5000)]", {}, "ok"),
    ("generator", "(t for t in ['a', 'b'])", {}, "ok"),
    ("tuple", "('a', 'b')", {}, "ok"),
    ("numpy-strings", "__import__('numpy').array(['a', 'b'])", {}, "ok"),
    ("lone-surrogate", "['ok', 'bad \\ud800 text']", {}, "InvalidArgumentError:texts[1]"),
    ("low-surrogate", "['\\udfff']", {}, "InvalidArgumentError:texts[0]"),
    ("none", "None", {}, "InvalidTypeError:texts is NoneType"),
    ("integer", "5", {}, "InvalidTypeError:texts is int"),
    ("bytes", "b'bytes'", {}, "InvalidTypeError:texts is bytes"),
    ("bytearray", "bytearray(b'x')", {}, "InvalidTypeError:texts is bytearray"),
    ("none-in-list", "['a', None]", {}, "InvalidTypeError:texts[1] is NoneType"),
    ("int-in-list", "['a', 3]", {}, "InvalidTypeError:texts[1] is int"),
    ("nested-list", "[['a']]", {}, "InvalidTypeError:texts[0] is list"),
    ("bytes-in-list", "[b'a']", {}, "InvalidTypeError:texts[0] is bytes"),
    ("batch-size-zero", "['a']", {"batch_size": 0}, "InvalidArgumentError:batch_size=0"),
    ("batch-size-negative", "['a']", {"batch_size": -3}, "InvalidArgumentError:batch_size=-3"),
    ("batch-size-float", "['a']", {"batch_size": 1.5}, "InvalidTypeError:batch_size is float"),
    ("batch-size-string", "['a']", {"batch_size": "8"}, "InvalidTypeError:batch_size is str"),
    ("batch-tokens-zero", "['a']", {"max_batch_tokens": 0}, "InvalidArgumentError:max_batch_tokens=0"),
    ("dim-zero", "['a']", {"dim": 0}, "InvalidArgumentError:dim=0"),
    ("dim-too-large", "['a']", {"dim": 33}, "InvalidArgumentError:dim=33"),
    ("dim-float", "['a']", {"dim": 8.0}, "InvalidTypeError:dim is float"),
    ("dim-bool", "['a']", {"dim": True}, "InvalidTypeError:dim is bool"),
    ("prompt-int", "['a']", {"prompt": 5}, "InvalidTypeError:prompt is int"),
    ("prompt-bytes", "['a']", {"prompt": b"x"}, "InvalidTypeError:prompt is bytes"),
    ("prompt-name-unknown", "['a']", {"prompt_name": "nope"}, "UnknownChoiceError:unknown prompt name 'nope'"),
    ("prompt-name-int", "['a']", {"prompt_name": 1}, "InvalidTypeError:prompt_name is int"),
    ("normalize-string", "['a']", {"normalize": "yes"}, "InvalidTypeError:normalize is str"),
    ("normalize-int", "['a']", {"normalize": 1}, "InvalidTypeError:normalize is int"),
    ("truncate-string", "['a']", {"truncate": "no"}, "InvalidTypeError:truncate is str"),
    ("truncate-none", "['a']", {"truncate": None}, "InvalidTypeError:truncate is NoneType"),
    ("too-long-untruncated", "['word ' * 500]", {"truncate": False}, "InputTooLongError:text at index 0"),
    ("chunking-string", "['a']", {"chunking": "yes"}, "InvalidTypeError:chunking is str"),
    ("overlap-negative", "['a']", {"chunking": True, "chunk_overlap": -1}, "InvalidArgumentError:chunk_overlap=-1"),
    ("overlap-too-large", "['a']", {"chunking": True, "chunk_overlap": 1000}, "InvalidArgumentError:chunk_overlap"),
    ("chunked-huge", f"['word ' * {HUGE // 50}]", {"chunking": True}, "ok"),
]
RUN_CASES = """
import json, sys, time
import numpy as np
from edgembed.runtime import Embedder, EdgembedError
model = Embedder.load(sys.argv[1], variant="fp32", backend=sys.argv[2])
for case_id, expression, options in json.loads(sys.stdin.read()):
    print(json.dumps({"start": case_id}), flush=True)
    started = time.perf_counter()
    try:
        vectors = np.atleast_2d(model.encode(eval(expression), **eval(options)))
        norms = np.linalg.norm(vectors, axis=1)
        outcome = {"outcome": "ok", "finite": bool(np.isfinite(vectors).all()),
                   "unit": bool(np.allclose(norms, 1.0, atol=1e-4)), "rows": len(vectors)}
    except EdgembedError as exc:
        outcome = {"outcome": type(exc).__name__, "message": str(exc)}
    except Exception as exc:  # anything that is not ours is a failure of the test
        outcome = {"outcome": "foreign " + type(exc).__name__, "message": str(exc)[:500]}
    outcome.update(case=case_id, seconds=round(time.perf_counter() - started, 2))
    print(json.dumps(outcome), flush=True)
"""


def _run_cases(export: Path, backend: str, cases: list, timeout: float) -> dict[str, dict]:
    payload = json.dumps([[case_id, expression, repr(options)] for case_id, expression, options, _ in cases])
    try:
        result = subprocess.run([sys.executable, "-c", RUN_CASES, str(export), backend], input=payload,
                                capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        lines = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        raise AssertionError(f"hung; last case started: {lines.strip().splitlines()[-1:]}") from None
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    done = {record["case"]: record for record in records if "case" in record}
    started = [record["start"] for record in records if "start" in record]
    assert result.returncode == 0 and len(done) == len(cases), (
        f"crashed (exit {result.returncode}) in case {started[-1] if started else None}: {result.stderr[-2000:]}")
    return done


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_malformed_texts_and_options_give_vectors_or_clear_errors(fast_export, backend):
    outcomes = _run_cases(fast_export, backend, ENCODE_CASES, timeout=300)
    problems = []
    for case_id, _, _, expected in ENCODE_CASES:
        got = outcomes[case_id]
        if expected == "ok":
            if got["outcome"] != "ok" or not got["finite"] or not got["unit"]:
                problems.append((case_id, got))
        else:
            kind, fragment = expected.split(":", 1)
            if got["outcome"] != kind or fragment not in got["message"]:
                problems.append((case_id, expected, got))
        if got["seconds"] > 60:
            problems.append((case_id, "too slow", got["seconds"]))
    assert not problems, problems
    assert len(ENCODE_CASES) >= 40


CLI_CASES = [
    ("dim-zero", ["--dim", "0", "x"], 2, "dim=0 is not valid"),
    ("dim-too-large", ["--dim", "1000", "x"], 2, "dim=1000 is not valid: expected an integer from 1 to 32"),
    ("batch-size-zero", ["--batch-size", "0", "x"], 2, "batch_size=0 is not valid"),
    ("max-length-zero", ["--max-length", "0", "x"], 2, "max_length=0 is not valid"),
    ("max-length-huge", ["--max-length", "100000", "x"], 2, "max_length=100000 is not valid: expected an integer "
                                                            "from 1 to 128"),
    ("threads-zero", ["--threads", "0", "x"], 2, "threads=0 is not valid"),
    ("streams-too-many", ["--threads", "1", "--streams", "2", "x"], 2, "streams=2 is not valid"),
    ("dim-not-a-number", ["--dim", "abc", "x"], 2, "invalid int value: 'abc'"),
    ("unknown-variant", ["--variant", "q3", "x"], 2, "unknown variant 'q3'"),
    ("unknown-backend", ["--backend", "tensorrt", "x"], 2, "unknown backend 'tensorrt'"),
    ("unknown-prompt", ["--prompt-name", "nope", "x"], 2, "unknown prompt name 'nope'"),
    ("bad-format", ["--format", "xml", "x"], 2, "--format='xml' is not valid"),
    ("bad-verify", ["--verify", "md5", "x"], 2, "verify='md5' is not valid"),
    ("bad-auto-cosine", ["--auto-min-cosine", "2", "--variant", "auto", "x"], 2, "--auto-min-cosine=2.0"),
    ("surrogate-argument", [b"bad \xff byte"], 2, "texts[0]"),
    ("missing-directory", None, 1, "manifest.json: not found"),
]


@pytest.mark.parametrize("case_id,arguments,code,message", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_errors_are_one_line_without_traceback(fast_export, tmp_path, case_id, arguments, code, message):
    target = str(tmp_path / "absent") if arguments is None else str(fast_export)
    words = [os.fsencode(w) if isinstance(w, str) else w for w in ["embed", target, *(arguments or ["x"])]]
    result = subprocess.run([os.fsencode(sys.executable), b"-m", b"edgembed", *words], capture_output=True,
                            timeout=120)
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == code, stderr
    assert message in stderr and "Traceback" not in stderr
    assert len([line for line in stderr.splitlines() if "error" in line]) == 1


@pytest.mark.parametrize("stdin,code,message", [
    (b"", 2, "stdin was empty"),
    (b"fine\n\xff\xfe not utf-8\n", 2, "stdin line 2"),
])
def test_cli_bad_stdin_is_one_line(fast_export, stdin, code, message):
    result = subprocess.run([sys.executable, "-m", "edgembed", "embed", str(fast_export)], input=stdin,
                            capture_output=True, timeout=120)
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == code and message in stderr and "Traceback" not in stderr


def _folder_cases(root: Path, tmp: Path) -> list[tuple[str, str, callable]]:
    """(id, the backend whose files it damages or "both", the damage)."""
    def edit(change):
        def apply():
            data = json.loads((root / "manifest.json").read_text())
            change(data)
            (root / "manifest.json").write_text(json.dumps(data))
        return apply

    def write(name: str, content: bytes, keep_size: bool = False):
        def apply():
            path = root / name
            size = path.stat().st_size
            path.write_bytes((content * (size // len(content) + 1))[:size] if keep_size else content)
        return apply

    def link_out(name: str):
        def apply():
            outside = tmp / f"outside-{root.name}-{Path(name).name}"
            shutil.copy(root / name, outside)
            (root / name).unlink()
            os.symlink(outside, root / name)
        return apply

    def flip(name: str):
        def apply():
            data = bytearray((root / name).read_bytes())
            data[len(data) // 2] ^= 0xFF
            (root / name).write_bytes(bytes(data))
        return apply

    onnx_entry = lambda d: d["variants"][0]  # noqa: E731 - the fast export lists onnx first
    return [
        ("manifest-missing", "both", lambda: (root / "manifest.json").unlink()),
        ("manifest-truncated", "both", write("manifest.json", b'{"format_version": 1, "source"')),
        ("manifest-binary", "both", write("manifest.json", bytes(range(256)))),
        ("manifest-a-list", "both", write("manifest.json", b"[1, 2]")),
        ("manifest-null", "both", write("manifest.json", b"null")),
        ("format-version-2", "both", edit(lambda d: d.update(format_version=2))),
        ("format-version-string", "both", edit(lambda d: d.update(format_version="1"))),
        ("no-variants", "both", edit(lambda d: d.update(variants=[]))),
        ("hidden-size-wrong", "both", edit(lambda d: d.update(hidden_size=64, matryoshka_dims=[]))),
        ("pad-id-out-of-vocabulary", "both", edit(lambda d: d.update(pad_token_id=10**9))),
        ("tokenizer-traversal", "both", edit(lambda d: d.update(tokenizer_file="../../outside/tokenizer.json"))),
        ("tokenizer-absolute", "both", edit(lambda d: d.update(tokenizer_file="/etc/passwd"))),
        ("tokenizer-symlink-out", "both", link_out("tokenizer.json")),
        ("tokenizer-missing", "both", lambda: (root / "tokenizer.json").unlink()),
        ("tokenizer-truncated", "both", write("tokenizer.json", b'{"version": "1.0", "trunc')),
        ("tokenizer-wrong-json", "both", write("tokenizer.json", b'{"model": {"type": "Nope"}}')),
        ("model-traversal", "onnxruntime", edit(lambda d: onnx_entry(d)["files"][0].update(path="../model.onnx"))),
        ("model-absolute", "onnxruntime", edit(lambda d: onnx_entry(d)["files"][0].update(path="/etc/hostname"))),
        ("alternate-traversal", "both", edit(lambda d: onnx_entry(d).update(alternates={"x": "../x"}))),
        ("model-symlink-out", "onnxruntime", link_out("onnx/model.onnx")),
        ("onnx-truncated", "onnxruntime", write("onnx/model.onnx", b"\x08\x07")),
        ("onnx-garbage-same-size", "onnxruntime", write("onnx/model.onnx", b"\xde\xad\xbe\xef", keep_size=True)),
        ("onnx-flipped-byte-sha256", "onnxruntime", flip("onnx/model.onnx")),
        ("xml-garbage-same-size", "openvino", write("openvino/openvino_model.xml", b"<not xml", keep_size=True)),
        ("bin-truncated", "openvino", write("openvino/openvino_model.bin", b"\x00" * 10)),
        ("bin-flipped-byte-sha256", "openvino", flip("openvino/openvino_model.bin")),
    ]


LOAD_CASES = """
import json, sys
from edgembed.runtime import Embedder, EdgembedError
backend = sys.argv[1]
for root in json.loads(sys.stdin.read()):
    print(json.dumps({"start": root}), flush=True)
    try:
        Embedder.load(root, backend=backend, variant="fp32", verify="sha256").encode(["hello"])
        outcome = "LOADED"
    except EdgembedError as exc:
        outcome = "REFUSED " + type(exc).__name__ + ": " + str(exc)
    except Exception as exc:
        outcome = "FOREIGN " + type(exc).__name__ + ": " + str(exc)[:300]
    print(json.dumps({"root": root, "outcome": outcome}), flush=True)
"""


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_damaged_and_hostile_folders_are_refused(fast_export, tmp_path, backend):
    cases = []
    for index, (case_id, concerns, damage) in enumerate(_folder_cases(tmp_path / "probe", tmp_path)):
        root = tmp_path / f"case-{index}-{case_id}"
        shutil.copytree(fast_export, root, symlinks=True)
        (tmp_path / "probe").unlink(missing_ok=True)
        os.symlink(root, tmp_path / "probe")  # the damage functions write through this name
        damage()
        cases.append((case_id, concerns, str(root)))
    result = subprocess.run([sys.executable, "-c", LOAD_CASES, backend], input=json.dumps([c[2] for c in cases]),
                            capture_output=True, text=True, timeout=300)
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    outcomes = {record["root"]: record["outcome"] for record in records if "root" in record}
    assert result.returncode == 0 and len(outcomes) == len(cases), (records[-1:], result.stderr[-1500:])
    refused = []
    for case_id, concerns, root in cases:
        expected = "REFUSED" if concerns in ("both", backend) else "LOADED"
        assert outcomes[root].startswith(expected), (case_id, outcomes[root])
        if expected == "REFUSED":
            refused.append(case_id)
    assert len(refused) >= 19, refused


def test_eight_threads_sharing_one_embedder_get_the_sequential_results(fast_export):
    model = Embedder.load(fast_export, variant="fp32", backend="onnxruntime")
    rng = np.random.default_rng(0)
    words = "the quick brown fox jumps over a lazy dog while tokenizers split words into pieces".split()
    batches = [[" ".join(rng.choice(words, int(rng.integers(1, 60)))) for _ in range(int(rng.integers(1, 12)))]
               for _ in range(64)]
    expected = [model.encode(batch) for batch in batches]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for index in range(offset, len(batches), 8):
                results[index] = model.encode(batches[index], batch_size=int(1 + index % 5))
        except BaseException as exc:  # reported below: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(offset,)) for offset in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and len(results) == len(batches)
    for index, vectors in results.items():
        np.testing.assert_allclose(vectors, expected[index], atol=1e-5)


RSS_SCRIPT = """
import sys
import numpy as np
from edgembed.runtime import Embedder

def rss_mb():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 1e6

model = Embedder.load(sys.argv[1], variant="fp32", backend=sys.argv[2])
rng = np.random.default_rng(1)
words = "edge servers need fast embeddings of short and long texts alike".split()
def call():
    texts = [" ".join(rng.choice(words, int(rng.integers(1, 40)))) for _ in range(int(rng.integers(1, 9)))]
    model.encode(texts, batch_size=int(rng.integers(1, 9)))
for _ in range(300):
    call()
warm = rss_mb()
for _ in range(2700):
    call()
print(warm, rss_mb())
"""


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_memory_stays_flat_over_3000_calls_of_random_shapes(fast_export, backend):
    result = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(fast_export), backend], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    warm, end = (float(value) for value in result.stdout.split())
    print(f"\n{backend}: RSS {warm:.1f} MB after 300 calls, {end:.1f} MB after 3000")
    assert end <= warm * 1.10, (warm, end)
