"""The real bridge (its own process) in front of a hostile backend (tests/support/hostile_backend.py).

Each case asserts three things: the bridge's RSS grows by less than `RSS_CEILING_MIB`, another
client's `/healthz` answers within `LATENCY_CEILING_S` throughout (scaled on an oversubscribed
machine: `Measurement.latency_ceiling`), and the client gets a clear
OpenAI-shaped answer (a 502 naming the limit before a stream starts, `response.failed` with
`[DONE]` after). Sizes are capped to prove a limit, not to flood the machine: the bridge runs with
lowered `[limits]` (`LIMITS`), and the backend sends a few times the limit. Figures per case go to
`HOSTILE_RESULTS` when set (docs/failure-behaviour.md has the table).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.assertions import assert_openai_error
from tests.support.bridge_process import BridgeProcess
from tests.support.hostile import measure, stream_response
from tests.support.hostile_backend import HostileBackend, gzip_bomb

pytestmark = pytest.mark.timeout(90)

MIB = 1024 * 1024
UPSTREAM_KEY = "sk-upstream-" + uuid.uuid4().hex
API_KEY = "sk-client-" + uuid.uuid4().hex
LIMITS = {
    "upstream_max_answer_bytes": 16 * MIB,
    "upstream_max_json_bytes": 8 * MIB,
    "upstream_max_header_bytes": 64 * 1024,
    "upstream_max_output_tokens": 1 << 30,  # the byte limits are under test here, not the token ceiling
}


@pytest.fixture(scope="module")
def backend() -> Iterator[HostileBackend]:
    gzip_bomb()  # built before any case: building it would be measured as the bridge's latency
    with HostileBackend(big_header_bytes=16 * MIB, big_json_mib=24) as server:
        yield server


@pytest.fixture
def bridge(backend: HostileBackend) -> Iterator[BridgeProcess]:
    # One bridge per case: its RSS is then that case's alone, and a case that kills it (run against
    # unfixed code) cannot spoil the next.
    with BridgeProcess(backend.base_url, upstream_key=UPSTREAM_KEY, api_key=API_KEY, limits=LIMITS) as proc:
        yield proc


def _post(bridge: BridgeProcess, model: str, timeout: float = 20.0) -> httpx.Response:
    return httpx.post(bridge.url + "/v1/responses", json={"model": model, "input": "hi"},
                      headers={"authorization": f"Bearer {API_KEY}"}, timeout=timeout)  # fmt: skip


def _stream(bridge: BridgeProcess, model: str, deadline: float = 15.0):  # type: ignore[no-untyped-def]
    return stream_response(bridge.url, {"model": model, "input": "hi", "stream": True}, API_KEY, deadline)


def test_endless_stream_ends_failed_naming_the_answer_limit(bridge: BridgeProcess) -> None:
    with measure(bridge, "endless stream") as m:
        outcome = _stream(bridge, "endless")
    m.assert_bounded()
    assert outcome.status == 200 and not outcome.timed_out, outcome
    assert outcome.terminal == "response.failed" and outcome.done, outcome
    assert outcome.received < 4 * LIMITS["upstream_max_answer_bytes"]  # stopped soon after the limit
    assert outcome.error is not None and "upstream_max_answer_bytes" in outcome.error["message"], outcome.error


def test_endless_json_answer_is_a_502_naming_the_json_limit(bridge: BridgeProcess) -> None:
    with measure(bridge, "endless JSON answer") as m:
        response = _post(bridge, "endless-json")
    m.assert_bounded()
    error = assert_openai_error(response, 502)
    assert "upstream_max_json_bytes" in error["message"], error


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_gzip_bomb_is_refused_not_inflated(bridge: BridgeProcess, stream: bool) -> None:
    with measure(bridge, f"gzip bomb ({'stream' if stream else 'json'})") as m:
        if stream:
            outcome = _stream(bridge, "gzip-bomb")
            response = httpx.Response(outcome.status, content=outcome.body,
                                      headers={"content-type": "application/json"})  # fmt: skip
        else:
            response = _post(bridge, "gzip-bomb")
    m.assert_bounded()
    error = assert_openai_error(response, 502)
    assert error["code"] == "upstream_unsupported_encoding" and "Content-Encoding" in error["message"], error
    assert len(response.content) < 4096


def test_endless_sse_line_ends_failed(bridge: BridgeProcess) -> None:
    with measure(bridge, "endless SSE line") as m:
        outcome = _stream(bridge, "sse-line")
    m.assert_bounded()
    assert outcome.status == 200 and not outcome.timed_out, outcome
    assert outcome.terminal == "response.failed" and outcome.done, outcome


def test_huge_response_header_is_a_502_naming_the_header_limit(bridge: BridgeProcess) -> None:
    with measure(bridge, "16 MiB response header") as m:
        response = _post(bridge, "big-header")
    m.assert_bounded()
    error = assert_openai_error(response, 502)
    assert "upstream_max_header_bytes" in error["message"], error


@pytest.mark.parametrize("model", ["big-json", "big-json-chunked"], ids=["content-length", "chunked"])
def test_huge_json_answer_is_a_502_naming_the_json_limit(bridge: BridgeProcess, model: str) -> None:
    with measure(bridge, f"huge JSON answer ({model})") as m:
        response = _post(bridge, model)
    m.assert_bounded()
    error = assert_openai_error(response, 502)
    assert "upstream_max_json_bytes" in error["message"], error


def test_100k_tool_call_indexes_do_not_stall_others(bridge: BridgeProcess) -> None:
    with measure(bridge, "100,000 tool-call indexes") as m:
        outcome = _stream(bridge, "tool-indexes", deadline=20.0)
    m.assert_bounded()
    assert outcome.status == 200 and not outcome.timed_out, outcome
    assert outcome.terminal is not None and outcome.done, outcome


def test_10k_parallel_calls_in_one_chunk_do_not_stall_others(bridge: BridgeProcess) -> None:
    with measure(bridge, "10,000 parallel calls in one chunk") as m:
        outcome = _stream(bridge, "parallel-calls")
    m.assert_bounded()
    assert outcome.status == 200 and not outcome.timed_out, outcome
    assert outcome.terminal is not None and outcome.done, outcome


def _forms(secret: str) -> list[str]:
    raw = secret.encode()
    return [secret, secret.upper(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("="),
            base64.b64encode(b"user:" + raw).decode()]  # fmt: skip


@pytest.mark.parametrize("status", [429, 401])
def test_backend_echoing_the_key_in_headers_leaks_nothing(bridge: BridgeProcess, status: int) -> None:
    with measure(bridge, f"key echoed in {status} headers") as m:
        response = _post(bridge, f"echo-key-{status}")
    m.assert_bounded()
    assert_openai_error(response, status)
    seen = response.text + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    for form in _forms(UPSTREAM_KEY):
        assert form not in seen, (form, seen)
    if status == 429:
        assert response.headers.get("retry-after") == "***"  # passed on, scrubbed
