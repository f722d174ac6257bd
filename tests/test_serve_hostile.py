"""Hostile clients against the real `edgembed serve` process, on raw sockets (tests/hostile_http.py): each fault
class a network-facing server must close, one test each; the last one checks the server's memory after all of them.
The figures under load (a normal request's latency under siege) are the benchmark's: benchmarks/hostile_clients.py.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

import hostile_http as hostile
import pytest
from serve_process import start_server

LOAD = ("--variant", "fp32", "--backend", "onnxruntime")
HEADER_TIMEOUT, BODY_TIMEOUT, GRACEFUL_TIMEOUT = 2.0, 2.0, 3.0
PAYLOAD_LIMIT = 4_000_000
KEY = "hostile-test-key"
LIMITS = ("--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT), "--graceful-timeout",
          str(GRACEFUL_TIMEOUT), "--payload-limit", str(PAYLOAD_LIMIT))


@pytest.fixture(scope="module")
def server(fast_export: Path, tmp_path_factory: pytest.TempPathFactory):
    served = start_server(fast_export, tmp_path_factory.mktemp("hostile") / "serve.log", *LOAD, *LIMITS)
    host, port = served.url.removeprefix("http://").split(":")
    target = hostile.Target(host, int(port), served.process.pid, export_path=str(fast_export.resolve()))
    target.rss_at_start = hostile.rss_mb(served.process.pid)
    yield target
    assert served.stop() == 0, served.output()


@pytest.fixture(scope="module")
def keyed(fast_export: Path, tmp_path_factory: pytest.TempPathFactory):
    served = start_server(fast_export, tmp_path_factory.mktemp("hostile-key") / "serve.log", *LOAD, *LIMITS,
                          env={"EDGEMBED_API_KEY": KEY})
    host, port = served.url.removeprefix("http://").split(":")
    yield hostile.Target(host, int(port), served.process.pid, export_path=str(fast_export.resolve()), api_key=KEY)
    assert served.stop() == 0, served.output()


def _held(outcome: hostile.Outcome) -> None:
    assert outcome.passed, outcome.seen


def test_a_header_line_that_never_ends_is_cut_off_without_being_buffered(server):
    _held(hostile.endless_header_line(server))


def test_heads_trickled_a_line_at_a_time_are_closed_by_the_header_timeout(server):
    _held(hostile.slow_headers(server, clients=200, interval=0.5, limit=HEADER_TIMEOUT))


def test_a_trickled_body_gets_408_within_the_body_timeout(server):
    _held(hostile.slow_body(server, rate=5, limit=BODY_TIMEOUT))


def test_pipeliners_that_never_read_their_answers_do_not_grow_memory(server):
    _held(hostile.never_reading_pipeliners(server, clients=8, requests=3000, grown_limit=30))


def test_deeply_nested_json_in_any_field_is_a_4xx_never_a_5xx(server):
    _held(hostile.deep_json(server))


def test_no_answer_carries_the_exports_local_path(server):
    _held(hostile.path_leak(server))


def test_megabyte_texts_without_truncation_are_422_and_leave_others_answered(server):
    outcome = hostile.huge_text_stall(server, megabytes=3, clients=3)
    assert "[422]" in outcome.seen, outcome.seen


def test_a_chunk_extension_of_megabytes_is_refused_before_it_is_read(server):
    _held(hostile.chunk_extension(server))


def test_a_chunked_body_over_the_limit_is_413_and_no_more_is_read(server):
    _held(hostile.refused_chunked_body(server, limit=PAYLOAD_LIMIT))


def test_a_pipelined_100_continue_never_overtakes_the_answer_before_it(server):
    _held(hostile.pipelined_continue(server))


def test_ambiguous_framing_and_other_protocols_never_smuggle_or_5xx(server):
    _held(hostile.smuggling(server))


def test_a_normal_request_is_answered_under_slow_heads_and_never_reading_pipeliners(server):
    outcome = hostile.under_siege(server, slow_clients=200, pipeliners=8)
    assert "slowest" in outcome.seen and "inf" not in outcome.seen, outcome.seen


def test_without_the_key_a_large_upload_is_401_before_it_is_read(keyed):
    _held(hostile.unauthenticated_upload(keyed))


def test_no_spelling_of_a_guarded_path_passes_without_the_key(keyed):
    _held(hostile.key_path_tricks(keyed))


def test_sigterm_exits_within_the_graceful_timeout_whatever_a_client_trickles(fast_export, tmp_path):
    served = start_server(fast_export, tmp_path / "serve.log", *LOAD, "--graceful-timeout", str(GRACEFUL_TIMEOUT))
    host, port = served.url.removeprefix("http://").split(":")
    target = hostile.Target(host, int(port), served.process.pid)
    trickler = hostile.connect(target)
    trickler.sendall(b"POST /embed HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n{")  # a body that stalls
    time.sleep(0.3)
    started = time.monotonic()
    status = served.stop(signal.SIGTERM, timeout=GRACEFUL_TIMEOUT + 10)
    took = time.monotonic() - started
    trickler.close()
    assert status == 0, served.output()
    assert took < GRACEFUL_TIMEOUT + 3, (took, served.output())
    assert "--graceful-timeout" in served.output()


def test_memory_after_the_hostile_run_is_within_a_quarter_of_its_start(server):
    """Runs last in this module: every scenario above has hit this server."""
    now = hostile.rss_mb(server.pid)
    assert now <= 1.25 * server.rss_at_start, (server.rss_at_start, now)
