"""The real bridge (its own process, served with server/http_protocol.py) against hostile clients on
raw sockets: huge or endless headers, too many header fields, headers or a body dripped slowly,
more connections than allowed, and requests with arrays of a million elements.

Every refusal here happens before any API key is checked (the hostile clients send none), except the
body cases, which need a valid key to get past authentication to the body at all. Each case
asserts the bridge's RSS growth, another client's `/healthz` latency meanwhile (tests/support/
hostile.py), and an answer in OpenAI's shape with `connection: close`. The bridge runs with short
client-side `[limits]` (`LIMITS`) so each case lasts a few seconds.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.support.assertions import assert_openai_error
from tests.support.bridge_process import BridgeProcess
from tests.support.hostile import measure
from tests.support.hostile_backend import HostileBackend

pytestmark = pytest.mark.timeout(120)

MIB = 1024 * 1024
API_KEY = "sk-client-" + uuid.uuid4().hex
LIMITS = {
    "request_max_header_bytes": 64 * 1024,
    "request_max_headers": 100,
    "request_header_timeout": 2.0,
    "request_min_body_rate": 1024,
    "request_body_rate_window": 2.0,
    "max_client_connections": 64,
}


@pytest.fixture(scope="module")
def backend() -> Iterator[HostileBackend]:
    with HostileBackend() as server:
        yield server


@pytest.fixture
def bridge(backend: HostileBackend) -> Iterator[BridgeProcess]:
    with BridgeProcess(backend.base_url, upstream_key="sk-up-" + uuid.uuid4().hex, api_key=API_KEY,
                       limits=LIMITS) as proc:  # fmt: skip
        yield proc


def _connect(bridge: BridgeProcess, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", bridge.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_answer(sock: socket.socket) -> httpx.Response | None:
    """The whole answer on `sock` up to the server's close, as an httpx.Response (None: no answer)."""
    data = b""
    try:
        while True:
            part = sock.recv(65536)
            if not part:
                break
            data += part
    except (ConnectionResetError, TimeoutError, OSError):
        pass
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:] if ":" in line]
    return httpx.Response(status, headers=headers, content=body)


def _assert_refused(response: httpx.Response | None, status: int, code: str) -> dict:
    assert response is not None, "the server closed without an answer"
    error = assert_openai_error(response, status)
    assert error["code"] == code, error
    assert response.headers.get("connection") == "close"
    return error


def test_header_block_over_the_limit_is_a_431(bridge: BridgeProcess) -> None:
    with measure(bridge, "100 KiB request header") as m:
        sock = _connect(bridge)
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (100 * 1024))
        response = _read_answer(sock)
        sock.close()
    m.assert_bounded()
    error = _assert_refused(response, 431, "request_headers_too_large")
    assert "request_max_header_bytes" in error["message"]


def test_many_connections_sending_endless_headers_hold_no_memory(bridge: BridgeProcess) -> None:
    """20 clients each pushing 8 MiB of one header (the reported attack: 100 x 50 MB held 5.5 GB)."""
    closed_early: list[bool] = []

    def attack() -> None:
        sock = _connect(bridge)
        try:
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-big: ")
            piece = b"a" * 65536
            for _ in range(128):
                sock.sendall(piece)
            closed_early.append(False)
        except OSError:
            closed_early.append(True)  # the server refused and closed while we were still sending
        finally:
            sock.close()

    with measure(bridge, "20 connections x 8 MiB headers") as m:
        threads = [threading.Thread(target=attack) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    m.assert_bounded()
    assert closed_early.count(True) == 20, closed_early


def test_too_many_header_fields_is_a_431(bridge: BridgeProcess) -> None:
    with measure(bridge, "150 header fields") as m:
        sock = _connect(bridge)
        fields = b"".join(b"x-h%d: v\r\n" % i for i in range(150))
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n" + fields + b"\r\n")
        response = _read_answer(sock)
        sock.close()
    m.assert_bounded()
    error = _assert_refused(response, 431, "request_headers_too_large")
    assert "request_max_headers" in error["message"]


def test_slow_headers_are_a_408_after_the_header_timeout(bridge: BridgeProcess) -> None:
    answer: list[httpx.Response | None] = []
    with measure(bridge, "headers dripped 1 byte / 0.5 s") as m:
        sock = _connect(bridge)
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n")
        start = time.monotonic()
        reader = threading.Thread(target=lambda: answer.append(_read_answer(sock)))
        reader.start()
        try:
            while reader.is_alive() and time.monotonic() - start < 8:
                sock.send(b"x")
                time.sleep(0.5)
        except OSError:
            pass
        reader.join(10)
        sock.close()
    m.assert_bounded()
    assert time.monotonic() - start < 8, "the dripping client was held past the header timeout"
    error = _assert_refused(answer[0], 408, "request_timeout")
    assert "request_header_timeout" in error["message"]


def test_connections_beyond_the_limit_get_a_503_and_idle_ones_are_closed(bridge: BridgeProcess) -> None:
    limit = LIMITS["max_client_connections"]
    with measure(bridge, f"{limit + 16} idle connections (limit {limit})") as m:
        socks = [_connect(bridge) for _ in range(limit + 16)]
        answers: list[httpx.Response | None] = [None] * len(socks)

        def read(i: int) -> None:
            answers[i] = _read_answer(socks[i])

        readers = [threading.Thread(target=read, args=(i,)) for i in range(len(socks))]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(15)
        for sock in socks:
            sock.close()
        after = httpx.get(bridge.url + "/healthz", timeout=5)
    m.assert_bounded()
    statuses = [a.status_code if a is not None else None for a in answers]
    # Beyond the limit: a 503 at once. Within it: closed quietly after the header timeout (they
    # sent nothing), not held; every reader above returned before its 10 s socket timeout.
    assert statuses.count(503) >= 16, statuses
    assert set(statuses) <= {503, None}, statuses
    for answer in answers:
        if answer is not None:
            _assert_refused(answer, 503, "server_busy")
    assert m.seconds < 9
    assert after.status_code == 200  # the server serves again once the idle connections are gone


def test_a_dripped_body_is_a_408_by_its_rate_not_held(bridge: BridgeProcess) -> None:
    answer: list[httpx.Response | None] = []
    with measure(bridge, "body dripped 1 byte / 0.5 s") as m:
        sock = _connect(bridge)
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"authorization: Bearer " + API_KEY.encode() + b"\r\ncontent-length: 5000\r\n\r\n{")  # fmt: skip
        start = time.monotonic()
        reader = threading.Thread(target=lambda: answer.append(_read_answer(sock)))
        reader.start()
        try:
            while reader.is_alive() and time.monotonic() - start < 9:
                sock.send(b" ")
                time.sleep(0.5)
        except OSError:
            pass
        reader.join(10)
        sock.close()
    m.assert_bounded()
    assert time.monotonic() - start < 9, "the dripping client was held"
    error = _assert_refused(answer[0], 408, "request_timeout")
    assert "request_min_body_rate" in error["message"]


def test_a_body_at_a_fair_rate_is_not_cut(bridge: BridgeProcess) -> None:
    """The rule must not refuse an honest slow upload: 2 KiB/s (twice the minimum) for 5 s."""
    body = orjson.dumps({"model": "ok", "input": "x" * 10_000})

    def slow() -> Iterator[bytes]:
        for i in range(0, len(body), 1024):
            yield body[i : i + 1024]
            time.sleep(0.5)

    response = httpx.post(bridge.url + "/v1/responses", content=slow(), timeout=30,
                          headers={"authorization": f"Bearer {API_KEY}", "content-type": "application/json",
                                   "content-length": str(len(body))})  # fmt: skip
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("field", ["tools", "input"])
def test_a_million_element_array_is_refused_without_stalling_others(bridge: BridgeProcess, field: str) -> None:
    element = {"type": "function", "name": "f"} if field == "tools" else {"role": "user", "content": "x"}
    payload = {"model": "ok", "input": "hi", field: [element] * 1_000_000}
    content = orjson.dumps(payload)
    with measure(bridge, f"{field} of 1,000,000 elements") as m:
        response = httpx.post(bridge.url + "/v1/responses", content=content, timeout=20,
                              headers={"authorization": f"Bearer {API_KEY}", "content-type": "application/json"})  # fmt: skip
    m.assert_bounded()
    error = assert_openai_error(response, 400)
    assert error["param"] is not None and error["param"].startswith(field), error
