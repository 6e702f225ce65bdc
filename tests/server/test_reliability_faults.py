"""Every backend fault, through the running bridge, streaming and not.

The contract: a failure known before the stream starts is an HTTP status with OpenAI's error
body `{"error": {message, type, param, code}}`; a failure after the 200 ends the stream with
`response.failed` carrying a useful message, then `data: [DONE]`. Nothing waits past the configured
timeouts, and the bridge serves the next request normally. The backend is the project's fixture backend
in chaos mode (`model: "chaos:<fault>"`, fixtures/chaos.py); a refused connection is a closed loopback
port. Raw bodies are read with httpx so every byte is checked; a few cases go through the openai SDK to
pin the exception class a real client sees.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from conformance import parse_sse, validate_events
from tests.conftest import BridgeHandle, bridge_config, start_bridge
from tests.support.assertions import assert_openai_error

pytestmark = pytest.mark.timeout(60)

CONNECT, FIRST_BYTE, IDLE = 1.0, 1.5, 1.0
SLACK = 5.0
"""Seconds of scheduling slack on top of a configured timeout: the bound says "no hang", not "fast"."""
LONGEST_WAIT = FIRST_BYTE + IDLE + SLACK
TERMINAL = {"response.completed", "response.incomplete", "response.failed"}


@dataclass(frozen=True)
class Expect:
    """What the client must get for one fault: an HTTP error `status` before any stream, or a stream
    whose terminal event is `terminal` (message containing `hint`)."""

    status: int | None = None
    terminal: str | None = None
    hint: str = ""
    code: str | None = None
    retry_after: str | None = None


# fault → (non-streaming expectation, streaming expectation)
FAULTS: dict[str, tuple[Expect, Expect]] = {
    "refuse": (Expect(502), Expect(502)),
    "hang": (Expect(504, code="upstream_timeout"), Expect(504, code="upstream_timeout")),
    "stall": (Expect(504, code="upstream_timeout"), Expect(terminal="response.failed", hint="too long", code="upstream_timeout")),
    "cut": (Expect(502), Expect(terminal="response.failed", hint="mid-stream", code="upstream_error")),
    "malformed": (Expect(502), Expect(terminal="response.failed", hint="malformed", code="upstream_malformed_chunk")),
    "midstream-error": (
        Expect(502, hint="Chaos"),
        Expect(terminal="response.failed", hint="crashed mid-stream"),
    ),
    "no-done": (Expect(200), Expect(terminal="response.completed")),
    "big": (Expect(200), Expect(terminal="response.incomplete")),  # ~1.3M estimated tokens: past upstream_max_output_tokens
    "status-400": (Expect(400, hint="Chaos"), Expect(400, hint="Chaos")),
    "status-401": (Expect(401, hint="Chaos"), Expect(401, hint="Chaos")),
    "status-404": (Expect(404, hint="Chaos"), Expect(404, hint="Chaos")),
    "status-429": (Expect(429, hint="Chaos", retry_after="7"), Expect(429, hint="Chaos", retry_after="7")),
    "status-500": (Expect(502, hint="Chaos"), Expect(502, hint="Chaos")),
    "status-503": (Expect(502, hint="Chaos"), Expect(502, hint="Chaos")),
    "status-400-nobody": (Expect(400, hint="400"), Expect(400, hint="400")),
    "status-401-nobody": (Expect(401, hint="401"), Expect(401, hint="401")),
    "status-404-nobody": (Expect(404, hint="404"), Expect(404, hint="404")),
    "status-429-nobody": (Expect(429, retry_after="7"), Expect(429, retry_after="7")),
    "status-500-nobody": (Expect(502, hint="500"), Expect(502, hint="500")),
    "status-503-nobody": (Expect(502, hint="503"), Expect(502, hint="503")),
}


@pytest.fixture(scope="module")
def fault_bridge(backend_url: str) -> Iterator[BridgeHandle]:
    """One bridge with short timeouts for every fault: it must survive them all, in sequence."""
    from server.config import Timeouts

    config = bridge_config(
        backend_url, store="none", timeouts=Timeouts(connect=CONNECT, first_byte=FIRST_BYTE, idle=IDLE)
    )
    handle = start_bridge(config)
    try:
        yield handle
    finally:
        handle.stop()


# ------------------------------------------------------------------------------------- checks


def assert_stream_ended(raw: bytes, request: dict[str, Any]) -> dict[str, Any]:
    """A well-formed event stream: one terminal event, last, then `data: [DONE]`, and the whole
    sequence passes the project's event-grammar validator. Returns the terminal event."""
    assert raw.endswith(b"data: [DONE]\n\n"), raw[-300:]
    assert raw.count(b"data: [DONE]") == 1
    events, framing = parse_sse(raw, require_done=True)
    assert not framing, [str(v) for v in framing]
    violations = validate_events(events, request)
    assert not violations, [str(v) for v in violations]
    terminals = [e for e in events if e["type"] in TERMINAL]
    assert len(terminals) == 1 and events[-1] is terminals[0], [e["type"] for e in events]
    return terminals[0]


def assert_still_serving(url: str, stream: bool) -> None:
    """The fault left nothing broken: the next request is answered normally."""
    body = {"model": "fixture-scripted", "input": "@text still alive", "stream": stream}
    response = httpx.post(url + "/responses", json=body, timeout=30)
    assert response.status_code == 200, response.text[:500]
    if stream:
        terminal = assert_stream_ended(response.content, body)
        assert terminal["type"] == "response.completed"
    else:
        assert response.json()["status"] == "completed"
        assert response.json()["output"][0]["content"][0]["text"] == "still alive"


def check(response: httpx.Response, expect: Expect, request: dict[str, Any]) -> None:
    if expect.status is not None and expect.status != 200:
        error = assert_openai_error(response, expect.status)
        assert expect.hint in error["message"], error
        if expect.code is not None:
            assert error["code"] == expect.code, error
        expected_type = "server_error" if expect.status >= 500 else None
        if expected_type is not None:
            assert error["type"] == expected_type, error
        if expect.retry_after is not None:
            assert response.headers.get("retry-after") == expect.retry_after
        assert "text/event-stream" not in response.headers["content-type"]
        return
    assert response.status_code == 200, response.text[:500]
    if request["stream"]:
        terminal = assert_stream_ended(response.content, request)
        assert terminal["type"] == expect.terminal, terminal
        if expect.terminal == "response.failed":
            error = terminal["response"]["error"]
            assert error["code"] == (expect.code or "server_error"), error
            assert expect.hint in error["message"], error
    else:
        body = response.json()
        assert body["object"] == "response" and body["status"] == "completed", str(body)[:300]


# -------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("fault", [f for f in FAULTS if f != "refuse"])
def test_chaos_fault(fault_bridge: BridgeHandle, fault: str, stream: bool) -> None:
    expect = FAULTS[fault][int(stream)]
    request = {"model": f"chaos:{fault}", "input": "hi", "stream": stream}
    started = time.monotonic()
    response = httpx.post(fault_bridge.url + "/responses", json=request, timeout=LONGEST_WAIT + 30)
    elapsed = time.monotonic() - started
    assert elapsed < LONGEST_WAIT, f"{fault}: the client waited {elapsed:.1f}s, past every timeout"
    check(response, expect, request)
    if fault == "big" and response.status_code == 200:
        text = _text(response, stream)
        assert len(text) >= 5 * 1024 * 1024 and set(text) == {"a"}, "the 5 MB chunk arrives whole"
    assert_still_serving(fault_bridge.url, stream)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_nonutf8_is_decoded_or_failed_never_crashes(fault_bridge: BridgeHandle, stream: bool) -> None:
    """Invalid UTF-8 from the backend: a stream decodes it leniently (U+FFFD, as browsers do) and
    completes; a whole body that is not valid JSON is a 502. No 500, no hang."""
    request = {"model": "chaos:nonutf8", "input": "hi", "stream": stream}
    response = httpx.post(fault_bridge.url + "/responses", json=request, timeout=30)
    if stream:
        assert response.status_code == 200
        terminal = assert_stream_ended(response.content, request)
        assert terminal["type"] == "response.completed", terminal
        assert "caf\ufffd" in _text(response, stream)
    else:
        assert_openai_error(response, 502)
    assert_still_serving(fault_bridge.url, stream)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_html_page_instead_of_json(fault_bridge: BridgeHandle, stream: bool) -> None:
    """A proxy's HTML error page with status 200. Known before the 200 is sent, so a 502 is right;
    a stream that already opened must end `response.failed` (never `completed`, never silent)."""
    request = {"model": "chaos:html", "input": "hi", "stream": stream}
    response = httpx.post(fault_bridge.url + "/responses", json=request, timeout=30)
    assert "<html" not in response.text.lower(), "the page itself is not handed to the client"
    if response.status_code == 200 and stream:
        terminal = assert_stream_ended(response.content, request)
        assert terminal["type"] == "response.failed", terminal
        assert terminal["response"]["error"]["message"]
    else:
        error = assert_openai_error(response, 502)
        assert error["type"] == "server_error"
    assert_still_serving(fault_bridge.url, stream)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_refused_connection_is_502(backend_url: str, stream: bool) -> None:
    """Nothing listening on the upstream port (ECONNREFUSED), and a backend that accepts and closes."""
    from fixtures.chaos import closed_port_url
    from server.config import Timeouts

    timeouts = Timeouts(connect=CONNECT, first_byte=FIRST_BYTE, idle=IDLE)
    handle = start_bridge(bridge_config(backend_url, store="none", timeouts=timeouts,
                                        upstream={"base_url": closed_port_url()}))  # fmt: skip
    try:
        request = {"model": "any-model", "input": "hi", "stream": stream}
        for _ in range(3):  # repeated: no state is left behind by a refused connect
            started = time.monotonic()
            response = httpx.post(handle.url + "/responses", json=request, timeout=30)
            assert time.monotonic() - started < CONNECT + SLACK
            error = assert_openai_error(response, 502)
            assert error["type"] == "server_error" and error["code"] == "upstream_unavailable", error
        health = httpx.get(handle.root + "/healthz", timeout=10)
        assert health.status_code == 200
    finally:
        handle.stop()
    # the accept-then-close flavour, through the shared fault bridge's backend
    handle = start_bridge(bridge_config(backend_url, store="none", timeouts=timeouts))
    try:
        request = {"model": "chaos:refuse", "input": "hi", "stream": stream}
        error = assert_openai_error(httpx.post(handle.url + "/responses", json=request, timeout=30), 502)
        assert error["type"] == "server_error"
        assert_still_serving(handle.url, stream)
    finally:
        handle.stop()


def test_faults_back_to_back_concurrently(fault_bridge: BridgeHandle) -> None:
    """All faults at once on one bridge, with normal requests mixed in: no cross-talk, every normal
    request completes with its own text, every fault gets its own expected answer."""
    import asyncio

    async def one(client: httpx.AsyncClient, fault: str | None, stream: bool, i: int) -> None:
        if fault is None:
            request = {"model": "fixture-scripted", "input": f"@text normal {i}", "stream": stream}
        else:
            request = {"model": f"chaos:{fault}", "input": "hi", "stream": stream}
        response = await client.post(fault_bridge.url + "/responses", json=request)
        if fault is None:
            assert response.status_code == 200
            assert _text(response, stream) == f"normal {i}"
        else:
            check(response, FAULTS[fault][int(stream)], request)

    async def main() -> None:
        limits = httpx.Limits(max_keepalive_connections=0)  # the client's own pool is not under test
        async with httpx.AsyncClient(timeout=LONGEST_WAIT + 30, limits=limits) as client:
            jobs = []
            for i, fault in enumerate([f for f in FAULTS if f not in ("refuse", "big")] + [None] * 10):
                for stream in (False, True):
                    jobs.append(one(client, fault, stream, i))
            started = time.monotonic()
            await asyncio.gather(*jobs)
            assert time.monotonic() - started < LONGEST_WAIT + SLACK

    asyncio.run(main())
    assert_still_serving(fault_bridge.url, True)
    assert poll_streams_drained(fault_bridge)


def poll_streams_drained(handle: BridgeHandle, timeout: float = 5.0) -> bool:
    """No stream is left registered in the bridge once every client has its answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not handle.app.state.bridge.streams:
            return True
        time.sleep(0.05)
    return False


# ----------------------------------------------------------------------------- through the SDK


def _sdk(handle: BridgeHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=handle.url, api_key="x", max_retries=0, timeout=LONGEST_WAIT + 30)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_sdk_rate_limit(fault_bridge: BridgeHandle, stream: bool) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        result = _sdk(fault_bridge).responses.create(model="chaos:status-429", input="hi", stream=stream)
        if stream:
            list(result)
    assert info.value.status_code == 429
    assert info.value.response.headers.get("retry-after") == "7"
    assert "rate limit" in info.value.message


@pytest.mark.parametrize("fault", ["status-500", "status-503-nobody", "refuse", "malformed"])
def test_sdk_backend_failure_is_502(fault_bridge: BridgeHandle, fault: str) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        _sdk(fault_bridge).responses.create(model=f"chaos:{fault}", input="hi")
    assert info.value.status_code == 502
    assert isinstance(info.value, openai.APIStatusError)


def test_sdk_hang_is_504_not_a_client_timeout(fault_bridge: BridgeHandle) -> None:
    """The bridge answers 504 itself, long before the SDK's own timeout would fire."""
    with pytest.raises(openai.APIStatusError) as info:
        _sdk(fault_bridge).responses.create(model="chaos:hang", input="hi")
    assert not isinstance(info.value, openai.APITimeoutError)
    assert info.value.status_code == 504
    assert info.value.code == "upstream_timeout"


@pytest.mark.parametrize(("fault", "hint"), [("cut", "mid-stream"), ("midstream-error", "crashed"),
                                             ("stall", "too long")])  # fmt: skip
def test_sdk_stream_failure_raises_with_message(fault_bridge: BridgeHandle, fault: str, hint: str) -> None:
    """A stream that fails after the 200 surfaces in the SDK as `APIError` carrying the message
    (the `error` event, docs/wire.md §1.8), after the events that did arrive."""
    seen: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for event in _sdk(fault_bridge).responses.create(model=f"chaos:{fault}", input="hi", stream=True):
            seen.append(event.type)
    assert hint in info.value.message
    assert seen[:1] == ["response.created"]


def test_sdk_stream_helper_no_done(fault_bridge: BridgeHandle) -> None:
    """A backend that forgets `[DONE]` but finished its answer: the SDK helper gets a whole response."""
    client = _sdk(fault_bridge)
    with client.responses.stream(model="chaos:no-done", input="hi") as stream:
        final = stream.get_final_response()
    assert final.status == "completed"
    assert final.output_text == "Complete but no DONE."


# ------------------------------------------------------------------------------------- helpers


def _text(response: httpx.Response, stream: bool) -> str:
    if not stream:
        body = response.json()
        return "".join(
            part.get("text", "")
            for item in body["output"]
            if item["type"] == "message"
            for part in item["content"]
        )
    events, _ = parse_sse(response.content)
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def test_backend_closing_idle_keepalive_connections_is_not_an_error() -> None:
    """Backends close idle keep-alive connections (uvicorn, hence vLLM and most Python servers, after
    5 s; 0.5 s here). A request sent on a pooled connection at the moment the backend closes it gets
    a reset before any response byte; the backend never saw it, so the bridge must send it again on
    a fresh connection instead of answering 502 for a healthy backend. Bursts of streams separated by
    gaps around the backend's timeout make that moment happen many times."""
    import asyncio

    from fixtures.backend import create_app
    from tests.support.servers import run_app

    problems: list[str] = []

    async def bursts(url: str) -> None:
        # the client side opens a new connection per request, so only the bridge's pool is tested
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:

            async def one(i: int, stream: bool) -> None:
                body = {"model": "fixture-scripted", "input": f"@text burst {i}", "stream": stream}
                response = await client.post(url + "/responses", json=body)
                if response.status_code != 200:
                    problems.append(f"{response.status_code} {response.text[:160]}")

            for gap in (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.3, 0.4, 0.45):
                await asyncio.gather(*(one(i, i % 3 == 0) for i in range(100)))
                await asyncio.sleep(gap)

    with run_app(create_app(), timeout_keep_alive=0.5) as backend:
        handle = start_bridge(bridge_config(backend.url + "/v1", store="none"))
        try:
            asyncio.run(bursts(handle.url))
        finally:
            handle.stop()
    assert not problems, f"{len(problems)} of 1000 requests failed: {problems[:3]}"
