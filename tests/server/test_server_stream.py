"""Streaming behaviour over real sockets: SSE framing, failures after the stream started, keep-alives,
client disconnects and graceful shutdown (docs/wire.md §1.1, §1.5e, §1.8)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import BridgeHandle, bridge_config, start_bridge
from tests.support.servers import RunningServer, poll, run_app

TERMINAL = {"response.completed", "response.incomplete", "response.failed"}


def parse_frames(raw: bytes) -> list[tuple[str, Any]]:
    """Split an SSE body into ("comment"|"done"|event-name, payload) and check each frame's shape."""
    assert b"\r" not in raw, "frames use LF only"
    assert raw.endswith(b"\n\n"), "the body ends with a whole frame"
    frames: list[tuple[str, Any]] = []
    for block in raw[:-2].split(b"\n\n"):
        lines = block.split(b"\n")
        if all(line.startswith(b":") for line in lines):
            frames.append(("comment", block))
            continue
        if lines == [b"data: [DONE]"]:
            frames.append(("done", None))
            continue
        assert len(lines) == 2, f"one event line and ONE data line per frame: {block[:200]!r}"
        assert lines[0].startswith(b"event: ") and lines[1].startswith(b"data: "), block[:200]
        name = lines[0][len(b"event: ") :].decode()
        data = orjson.loads(lines[1][len(b"data: ") :])
        assert data["type"] == name, "event: line equals the data's type"
        frames.append((name, data))
    return frames


def events_of(frames: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    return [data for name, data in frames if name not in ("comment", "done")]


def assert_well_ended(frames: list[tuple[str, Any]]) -> dict[str, Any]:
    """One terminal event, then [DONE] last; sequence numbers 0..n without gaps. Returns the terminal."""
    assert frames[-1] == ("done", None), "data: [DONE] comes last"
    events = events_of(frames)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    terminals = [e for e in events if e["type"] in TERMINAL]
    assert len(terminals) == 1, [e["type"] for e in events]
    assert events[-1] is terminals[0], "nothing after the terminal event but [DONE]"
    return terminals[0]


def stream_raw(url: str, body: dict[str, Any], timeout: float = 30) -> httpx.Response:
    response = httpx.post(url + "/responses", json={**body, "stream": True}, timeout=timeout)
    return response


def test_stream_framing_and_headers(bridge_url: str) -> None:
    response = stream_raw(bridge_url, {"model": "fixture-scripted", "input": "@text Hello there, framing."})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    frames = parse_frames(response.content)
    terminal = assert_well_ended(frames)
    assert terminal["type"] == "response.completed"
    text = "".join(e["delta"] for e in events_of(frames) if e["type"] == "response.output_text.delta")
    assert text == "Hello there, framing."
    assert events_of(frames)[0]["type"] == "response.created"


def test_every_write_holds_whole_frames(backend_url: str) -> None:
    """Each ASGI body message the bridge writes holds whole frames only (docs/wire.md §1.1: the Open
    Responses parser drops a frame split across network reads). Checked at the ASGI boundary, where
    the bridge decides its writes; what TCP then does with them is not the bridge's to decide."""
    from server.app import create_app

    inner = create_app(bridge_config(backend_url, store="none"))
    writes: list[bytes] = []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        async def spy(message: Any) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                writes.append(message["body"])
            await send(message)

        await inner(scope, receive, spy)

    with run_app(recording) as server:
        response = httpx.post(
            server.url + "/v1/responses",
            json={"model": "fixture-scripted", "input": "@text " + "word " * 200, "stream": True},
            timeout=30,
        )
    assert response.status_code == 200
    assert len(writes) >= 2
    for part in writes:
        assert part.endswith(b"\n\n") and not part.startswith(b"\n"), part[-80:]
    assert b"".join(writes) == response.content
    parse_frames(response.content)


@pytest.mark.parametrize(
    ("fault", "hint", "code"),
    [("cut", "connection failed", "upstream_error"), ("malformed", "malformed", "upstream_malformed_chunk"),
     ("midstream-error", "crashed mid-stream", "server_error")],
)
def test_failure_after_start_ends_with_failed_then_done(bridge_url: str, fault: str, hint: str, code: str) -> None:
    response = stream_raw(bridge_url, {"model": f"chaos:{fault}", "input": "hi"})
    assert response.status_code == 200
    frames = parse_frames(response.content)
    terminal = assert_well_ended(frames)
    assert terminal["type"] == "response.failed"
    error = terminal["response"]["error"]
    # the code says whose fault it was (the bridge's own codes; a backend's error chunk is server_error)
    assert error["code"] == code
    assert hint in error["message"], error


def test_no_done_from_backend_still_ends_cleanly(bridge_url: str) -> None:
    frames = parse_frames(stream_raw(bridge_url, {"model": "chaos:no-done", "input": "hi"}).content)
    assert_well_ended(frames)


def test_idle_timeout_mid_stream_fails(make_bridge: Callable[..., BridgeHandle]) -> None:
    from server.config import Timeouts

    handle = make_bridge(timeouts=Timeouts(connect=5, first_byte=10, idle=0.5))
    frames = parse_frames(stream_raw(handle.url, {"model": "chaos:stall", "input": "hi"}).content)
    terminal = assert_well_ended(frames)
    assert terminal["type"] == "response.failed"
    assert "sent nothing for too long" in terminal["response"]["error"]["message"]


def test_keepalive_comments_during_silence(make_bridge: Callable[..., BridgeHandle]) -> None:
    from server.config import Timeouts

    handle = make_bridge(keepalive_interval=0.2, timeouts=Timeouts(connect=5, first_byte=10, idle=1.5))
    frames = parse_frames(stream_raw(handle.url, {"model": "chaos:stall", "input": "hi"}).content)
    comments = [payload for name, payload in frames if name == "comment"]
    assert len(comments) >= 3, frames
    assert all(c == b": keep-alive" for c in comments)
    assert_well_ended(frames)


# ------------------------------------------------------------------------------ disconnects


class CountingApp:
    """Wraps the fixture backend and counts requests whose handler is still running."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.active = 0
        self.finished = 0
        self.lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            return await self.app(scope, receive, send)
        with self.lock:
            self.active += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            with self.lock:
                self.active -= 1
                self.finished += 1


@pytest.fixture
def counted_backend() -> Iterator[tuple[CountingApp, RunningServer]]:
    from fixtures.backend import create_app

    app = CountingApp(create_app())
    with run_app(app) as running:
        yield app, running


def test_client_disconnect_cancels_upstream(counted_backend: tuple[CountingApp, RunningServer]) -> None:
    counter, backend = counted_backend
    handle = start_bridge(bridge_config(backend.url + "/v1"))
    try:
        with httpx.stream(
            "POST", handle.url + "/responses",
            json={"model": "chaos:stall", "input": "hi", "stream": True}, timeout=30,
        ) as response:  # fmt: skip
            assert response.status_code == 200
            reads = response.iter_raw()
            first = next(reads)
            assert b"response.created" in first
            if not poll(lambda: counter.active == 1, timeout=5):
                rest = b"".join(reads)
                raise AssertionError(f"the backend should be streaming: {counter.active=} {first=} {rest=}")
        # the client hung up: the bridge must drop its backend request at once
        assert poll(lambda: counter.active == 0, timeout=5), "upstream request still open after disconnect"
        assert counter.finished == 1
        assert poll(lambda: not handle.app.state.bridge.streams, timeout=5)
    finally:
        handle.stop()


def test_sdk_client_closing_stream_cancels_upstream(counted_backend: tuple[CountingApp, RunningServer]) -> None:
    import openai

    counter, backend = counted_backend
    handle = start_bridge(bridge_config(backend.url + "/v1"))
    try:
        client = openai.OpenAI(base_url=handle.url, api_key="x", max_retries=0, timeout=30)
        stream = client.responses.create(model="chaos:stall", input="hi", stream=True)
        first = next(iter(stream))
        assert first.type == "response.created"
        assert poll(lambda: counter.active == 1, timeout=5)
        stream.close()
        assert poll(lambda: counter.active == 0, timeout=5)
    finally:
        handle.stop()


def test_shutdown_fails_inflight_stream_cleanly(backend_url: str) -> None:
    handle = start_bridge(bridge_config(backend_url, shutdown_grace=0.3, keepalive_interval=60))
    body = b""
    stopper: threading.Thread | None = None
    try:
        with httpx.stream(
            "POST", handle.url + "/responses",
            json={"model": "chaos:stall", "input": "hi", "stream": True}, timeout=30,
        ) as response:  # fmt: skip
            reads = response.iter_raw()
            body += next(reads)
            stopper = threading.Thread(target=handle.stop)
            started = time.monotonic()
            stopper.start()
            for part in reads:
                body += part
        assert time.monotonic() - started < 15
    finally:
        if stopper is not None:
            stopper.join(20)
        else:
            handle.stop()
    frames = parse_frames(body)
    terminal = assert_well_ended(frames)
    assert terminal["type"] == "response.failed"
    assert terminal["response"]["error"] == {"code": "server_shutting_down", "message": "The server is shutting down."}


@pytest.mark.parametrize("fault", ["nonutf8", "big", "html"])
def test_odd_backend_bodies_still_end_well(bridge_url: str, fault: str) -> None:
    response = stream_raw(bridge_url, {"model": f"chaos:{fault}", "input": "hi"}, timeout=60)
    if fault == "html":  # a 200 HTML page where a stream was expected: no chunk, no finish reason
        terminal = assert_well_ended(parse_frames(response.content))
        assert terminal["type"] == "response.failed"
        assert terminal["response"]["error"] == {
            "code": "server_error", "message": "The upstream stream ended before the answer was finished."}
        return
    frames = parse_frames(response.content)
    terminal = assert_well_ended(frames)
    # 5 MiB of text in one chunk is ~1.3M estimated tokens, past [limits] upstream_max_output_tokens:
    # the chunk is kept whole and the answer ends incomplete
    assert terminal["type"] == ("response.incomplete" if fault == "big" else "response.completed")
    if fault == "big":
        text = "".join(e["delta"] for e in events_of(frames) if e["type"] == "response.output_text.delta")
        assert text.endswith("a" * 1000) and len(text) >= 5 * 1024 * 1024


def test_backend_answering_json_to_a_stream_request() -> None:
    """Some backends ignore `stream: true`; the bridge streams their whole answer anyway."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat(request: Any) -> JSONResponse:
        return JSONResponse({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None,
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        })  # fmt: skip

    backend = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    with run_app(backend) as running:
        handle = start_bridge(bridge_config(running.url + "/v1"))
        try:
            frames = parse_frames(stream_raw(handle.url, {"model": "m", "input": "weather?"}).content)
        finally:
            handle.stop()
    terminal = assert_well_ended(frames)
    assert terminal["type"] == "response.completed"
    (call,) = terminal["response"]["output"]
    assert (call["type"], call["name"], call["arguments"]) == ("function_call", "get_weather", '{"city":"Oslo"}')
    assert terminal["response"]["usage"]["output_tokens"] == 4


def test_many_concurrent_streams(bridge_url: str) -> None:
    import asyncio

    async def one(client: httpx.AsyncClient, i: int) -> bytes:
        response = await client.post(
            bridge_url + "/responses",
            json={"model": "fixture-scripted", "input": f"@text stream number {i}", "stream": True},
        )
        assert response.status_code == 200
        return response.content

    async def main() -> list[bytes]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            return await asyncio.gather(*(one(client, i) for i in range(64)))

    bodies = asyncio.run(main())
    for i, body in enumerate(bodies):
        frames = parse_frames(body)
        assert assert_well_ended(frames)["type"] == "response.completed"
        text = "".join(e["delta"] for e in events_of(frames) if e["type"] == "response.output_text.delta")
        assert text == f"stream number {i}"


def test_backend_connections_are_reused_after_streams() -> None:
    """After [DONE] the bridge reads the body to its end, so the keep-alive connection is reused
    (a TCP connect per request would cost every stream)."""
    from fixtures.backend import create_app

    inner = create_app()
    client_ports: list[int] = []

    async def recording(scope: Any, receive: Any, send: Any) -> Any:
        if scope["type"] == "http" and scope["path"].endswith("/chat/completions"):
            client_ports.append(scope["client"][1])
        return await inner(scope, receive, send)

    with run_app(recording) as backend:
        handle = start_bridge(bridge_config(backend.url + "/v1"))
        try:
            for i in range(5):
                response = stream_raw(handle.url, {"model": "fixture-scripted", "input": f"@text n{i}"})
                assert_well_ended(parse_frames(response.content))
                time.sleep(0.05)
            for _ in range(3):
                response = httpx.post(handle.url + "/responses", json={"model": "fixture-scripted", "input": "x"},
                                      timeout=30)  # fmt: skip
                assert response.status_code == 200
        finally:
            handle.stop()
    assert len(client_ports) == 8
    assert len(set(client_ports)) == 1, client_ports


# ------------------------------------------------------------------ backends that write raw bytes


def raw_backend(pieces: list[bytes], gap: float = 0.0, content_type: bytes = b"text/event-stream") -> Any:
    """A chat backend that answers every request with exactly these body writes, `gap` seconds apart,
    then ends the body (the connection is closed cleanly: no [DONE] unless a piece holds one)."""
    import asyncio

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]})
        for piece in pieces:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            if gap:
                await asyncio.sleep(gap)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def sse_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(chunk)


def stream_from(app: Any, body: dict[str, Any], **config: Any) -> list[tuple[str, Any]]:
    with run_app(app) as running:
        handle = start_bridge(bridge_config(running.url + "/v1", store="none", **config))
        try:
            response = stream_raw(handle.url, body)
        finally:
            handle.stop()
    assert response.status_code == 200, response.text[:300]
    return parse_frames(response.content)


def delta_text(frames: list[tuple[str, Any]]) -> str:
    return "".join(e["delta"] for e in events_of(frames) if e["type"] == "response.output_text.delta")


def test_last_frame_without_blank_line_or_done_still_completes() -> None:
    """The finish chunk is the body's last bytes, with no blank line after it and no [DONE]: the SSE
    decoder holds it until the body ends, and the pump must flush it then (`decoder.close()`)."""
    pieces = [sse_chunk({"role": "assistant", "content": "Hel"}) + b"\n\n", sse_chunk({"content": "lo"}) + b"\n\n",
              sse_chunk({"content": " world"}, "stop")]
    frames = stream_from(raw_backend(pieces), {"model": "m", "input": "hi"})
    terminal = assert_well_ended(frames)
    assert terminal["type"] == "response.completed", terminal["response"].get("error")
    assert delta_text(frames) == "Hello world"
    assert terminal["response"]["output"][0]["content"][0]["text"] == "Hello world"


def test_last_frame_without_blank_line_that_is_not_json_fails_as_cut() -> None:
    """The same flush with a leftover that is not a chunk: nothing says how the answer ended."""
    pieces = [sse_chunk({"role": "assistant", "content": "Hel"}) + b"\n\n", b"data: {not json"]
    frames = stream_from(raw_backend(pieces), {"model": "m", "input": "hi"})
    terminal = assert_well_ended(frames)
    assert terminal["type"] == "response.failed"
    assert terminal["response"]["error"] == {
        "code": "server_error", "message": "The upstream stream ended before the answer was finished."}


def test_no_keepalive_while_data_flows() -> None:
    """Keep-alives fill silence only: with a 0.2 s interval and a chunk every 50 ms, every data write
    resets the keep-alive timer, so none is written."""
    pieces = [sse_chunk({"role": "assistant", "content": ""}) + b"\n\n"]
    pieces += [sse_chunk({"content": f"{i} "}) + b"\n\n" for i in range(24)]
    pieces += [sse_chunk({}, "stop") + b"\n\ndata: [DONE]\n\n"]
    frames = stream_from(raw_backend(pieces, gap=0.05), {"model": "m", "input": "hi"}, keepalive_interval=0.2)
    assert [payload for name, payload in frames if name == "comment"] == []
    assert assert_well_ended(frames)["type"] == "response.completed"
    assert delta_text(frames) == "".join(f"{i} " for i in range(24))
