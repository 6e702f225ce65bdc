"""The floor proxy must be right before its figures mean anything: it has to find the end of every answer
(or keep-alive breaks and wrk counts errors), however the backend's bytes are split across reads.

Run: ``python -m pytest bench/test_floor_proxy.py -q`` (starts the bench backend and the proxy on
loopback ports, real sockets).
"""

from __future__ import annotations

import http.client
import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import floor_proxy
import procs
from targets import WORK, backend_argv, chat_body, project_python


def _chunked(payloads: list[bytes], trailer: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in payloads) + b"0\r\n" + trailer + b"\r\n"


def _feed(parts: list[bytes]) -> list[bool]:
    up = floor_proxy.UpstreamProtocol()
    up.chunked = True
    return [up._chunks(p) for p in parts]


@pytest.mark.parametrize("trailer", [b"", b"x-checksum: 1\r\n"])
def test_chunked_end_found_at_every_split(trailer: bytes) -> None:
    body = _chunked([b"data: " + json.dumps({"n": i}).encode() + b"\n\n" for i in range(40)], trailer)
    rng = random.Random(7)
    for _ in range(500):
        cuts = sorted(rng.sample(range(1, len(body)), rng.randint(1, 12)))
        parts = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        seen = _feed(parts)
        assert seen[-1] and not any(seen[:-1]), cuts


def test_chunk_extension_and_zero_data_split() -> None:
    body = b"5;name=value\r\nhello\r\n" + _chunked([])
    for k in range(1, len(body)):
        assert _feed([body[:k], body[k:]]) == [False, True], k


def test_an_unfinished_answer_is_not_taken_for_done() -> None:
    body = _chunked([b"a" * 100])
    assert _feed([body[:-1]]) == [False]


@pytest.fixture(scope="module")
def proxy_port() -> int:
    backend_port, port = procs.free_port(), procs.free_port()
    backend = procs.start("test-backend", backend_argv(backend_port, 1), WORK / "logs")
    proxy = procs.start("test-floor", [project_python(), str(Path(floor_proxy.__file__)), "--port", str(port),
                                       "--upstream", f"127.0.0.1:{backend_port}"], WORK / "logs")
    try:
        assert procs.wait_port(backend_port, 20, backend) and procs.wait_port(port, 20, proxy)
        yield port
    finally:
        proxy.stop()
        backend.stop()


@pytest.mark.parametrize(("model", "stream", "marker", "count"), [
    ("bench-64", True, b'"delta":{"content":"', 64),
    ("bench-512", True, b'"delta":{"content":"', 512),
    ("bench-64p", True, b'"delta":{"content":"', 64),
    ("bench-64", False, b"lorem", 7),  # one whole chat.completion: the word cycle repeats every 10
])
def test_answers_arrive_whole_on_one_keep_alive_connection(proxy_port: int, model: str, stream: bool,
                                                           marker: bytes, count: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
    try:
        for _ in range(3):  # the same connection each time: the proxy found where each answer ended
            conn.request("POST", "/v1/chat/completions", body=chat_body(model, stream),
                         headers={"content-type": "application/json"})
            reply = conn.getresponse()
            body = reply.read()
            assert reply.status == 200
            assert body.count(marker) == count
            if stream:
                assert body.rstrip().endswith(b"data: [DONE]")
    finally:
        conn.close()


def test_backend_errors_are_copied_through(proxy_port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
    try:
        conn.request("POST", "/v1/nowhere", body=b"{}", headers={"content-type": "application/json"})
        reply = conn.getresponse()
        assert reply.status == 404
        assert "error" in json.loads(reply.read())
    finally:
        conn.close()
