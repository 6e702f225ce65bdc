"""The event pump's two promises, through a running bridge: nothing is acknowledged that was not stored
(a SQLite store whose disk is full), and any exception while streaming still ends the stream with
`response.failed` and `[DONE]` (a translator that raises, a backend chunk nested 300 deep).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from server.store import MemoryStore
from server.stores.sqlite import SQLiteStore
from tests.conftest import BridgeHandle, bridge_config, start_bridge
from tests.server.test_server_stream import TERMINAL, assert_well_ended, events_of, parse_frames
from tests.support.assertions import assert_openai_error
from tests.support.servers import RunningServer, poll, run_app

LONG_TEXT = " ".join(f"word{n}" for n in range(4000))  # ~35 KB: needs new pages in any SQLite file


class FullDiskSQLiteStore(SQLiteStore):
    """The real SQLite store on a file that cannot grow (`PRAGMA max_page_count` = its size once
    `fill()` ran): every write needing a new page fails as on a full disk (SQLITE_FULL)."""

    def _cap(self) -> None:
        conn = self._db()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")

    async def fill(self) -> None:
        await self._run(self._cap)


@pytest.fixture
def full_disk_bridge(
    backend_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[BridgeHandle, FullDiskSQLiteStore]]:
    """A bridge whose store is a SQLite file that is full (opened by the app's own lifespan)."""
    store = FullDiskSQLiteStore(tmp_path / "full.db")

    def open_store(spec: str) -> FullDiskSQLiteStore:
        assert spec.startswith("sqlite://")
        return store

    monkeypatch.setattr("server.state.open_store", open_store)
    handle = start_bridge(bridge_config(backend_url, store=f"sqlite:///{tmp_path / 'full.db'}"))
    try:
        asyncio.run_coroutine_threadsafe(store.fill(), handle.app.state.bridge.loop).result(10)
        yield handle, store
    finally:
        handle.stop()


def _long_request(**fields: Any) -> dict[str, Any]:
    return {"model": "fixture-scripted", "input": f"@text {LONG_TEXT}", **fields}


def test_stream_is_failed_not_completed_when_the_store_write_fails(
    full_disk_bridge: tuple[BridgeHandle, FullDiskSQLiteStore], caplog: pytest.LogCaptureFixture
) -> None:
    handle, _store = full_disk_bridge
    with caplog.at_level(logging.ERROR, logger="responses_bridge"):
        response = httpx.post(handle.url + "/responses", json=_long_request(stream=True), timeout=60)
    assert response.status_code == 200
    frames = parse_frames(response.content)
    terminal = assert_well_ended(frames)
    types = [e["type"] for e in events_of(frames)]
    assert "response.completed" not in types, "completed was sent for a response that was not stored"
    assert terminal["type"] == "response.failed"
    assert terminal["response"]["error"]["code"] == "store_unavailable", terminal["response"]["error"]
    rid = terminal["response"]["id"]
    # not stored indeed, and the log says why
    assert_openai_error(httpx.get(f"{handle.url}/responses/{rid}", timeout=10), 404)
    logged = [r for r in caplog.records if rid in r.getMessage() and "store_unavailable" in r.getMessage()]
    assert logged and logged[0].exc_info is not None, [r.getMessage() for r in caplog.records]


def test_non_stream_is_503_store_unavailable_when_the_store_write_fails(
    full_disk_bridge: tuple[BridgeHandle, FullDiskSQLiteStore], caplog: pytest.LogCaptureFixture
) -> None:
    handle, _store = full_disk_bridge
    with caplog.at_level(logging.ERROR, logger="responses_bridge"):
        response = httpx.post(handle.url + "/responses", json=_long_request(), timeout=60)
    error = assert_openai_error(response, 503)
    assert error["code"] == "store_unavailable" and error["type"] == "server_error", error
    assert any("store_unavailable" in r.getMessage() and r.exc_info for r in caplog.records)


def test_store_false_is_unaffected_by_a_failing_store(
    full_disk_bridge: tuple[BridgeHandle, FullDiskSQLiteStore],
) -> None:
    handle, _store = full_disk_bridge
    whole = httpx.post(handle.url + "/responses", json=_long_request(store=False), timeout=60)
    assert whole.status_code == 200 and whole.json()["status"] == "completed"
    streamed = httpx.post(handle.url + "/responses", json=_long_request(store=False, stream=True), timeout=60)
    assert assert_well_ended(parse_frames(streamed.content))["type"] == "response.completed"


def test_a_store_that_works_still_acknowledges(make_bridge: Any, tmp_path: Path) -> None:
    """The same long answer on a SQLite file with room: completed, and retrievable right after."""
    handle = make_bridge(store=f"sqlite:///{tmp_path / 'roomy.db'}")
    response = httpx.post(handle.url + "/responses", json=_long_request(stream=True), timeout=60)
    terminal = assert_well_ended(parse_frames(response.content))
    assert terminal["type"] == "response.completed"
    stored = httpx.get(f"{handle.url}/responses/{terminal['response']['id']}", timeout=10)
    assert stored.status_code == 200 and stored.json()["status"] == "completed"


class DroppedWriteMemoryStore(MemoryStore):
    """The memory store, losing its connection once: the first write of a finished background
    response raises (as a PostgreSQL connection terminated mid-write does); later writes work."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped: list[str] = []

    async def update_response(self, response: dict[str, Any], *, owner: str | None) -> bool:
        if response.get("status") == "completed" and not self.dropped:
            self.dropped.append(response["id"])
            raise ConnectionResetError("connection to the database was lost")
        return await super().update_response(response, owner=owner)


def test_background_job_whose_final_write_fails_ends_store_unavailable(
    backend_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DroppedWriteMemoryStore()
    monkeypatch.setattr("server.state.open_store", lambda spec: store)
    handle = start_bridge(bridge_config(backend_url, store="memory"))
    try:
        body = {"model": "fixture-scripted", "input": "@text stored or not", "background": True}
        queued = httpx.post(handle.url + "/responses", json=body, timeout=30).json()
        assert queued["status"] == "queued", queued
        rid = queued["id"]
        assert poll(lambda: httpx.get(f"{handle.url}/responses/{rid}", timeout=10).json()["status"]
                    not in ("queued", "in_progress"), timeout=20)  # fmt: skip
        final = httpx.get(f"{handle.url}/responses/{rid}", timeout=10).json()
        assert store.dropped == [rid]
        assert final["status"] == "failed" and final["error"]["code"] == "store_unavailable", final
        followed = httpx.get(f"{handle.url}/responses/{rid}", params={"stream": "true"}, timeout=30)
        frames = parse_frames(followed.content)
        terminal = assert_well_ended(frames)
        assert terminal["type"] == "response.failed" and terminal["response"]["error"]["code"] == "store_unavailable"
        assert "response.completed" not in [e["type"] for e in events_of(frames)]
    finally:
        handle.stop()


# --------------------------------------------------------------------------- the failure path


def test_a_translator_that_raises_still_ends_the_stream(bridge: BridgeHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    from translator.stream import ChatStreamTranslator

    original = ChatStreamTranslator.feed
    calls = {"n": 0}

    def feed(self: ChatStreamTranslator, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("translator state broken")
        return original(self, chunk)

    monkeypatch.setattr(ChatStreamTranslator, "feed", feed)
    body = {"model": "fixture-scripted", "input": "@text one two three four five six seven", "stream": True}
    response = httpx.post(bridge.url + "/responses", json=body, timeout=30)
    assert response.status_code == 200
    frames = parse_frames(response.content)
    terminal = assert_well_ended(frames)  # gapless sequence numbers, one terminal, then [DONE]
    assert terminal["type"] == "response.failed"
    assert terminal["response"]["error"]["code"] == "server_error"
    assert terminal["response"]["id"] == events_of(frames)[0]["response"]["id"]
    assert calls["n"] >= 3


def _deep(depth: int) -> Any:
    value: Any = {"type": "reasoning.text", "text": "deep"}
    for _ in range(depth):
        value = {"nested": [value]}
    return value


def _deep_chunks() -> list[dict[str, Any]]:
    base = {"id": "chatcmpl-deep", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    return [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {"reasoning_details": [_deep(300)]}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]


@pytest.fixture(scope="module")
def deep_backend() -> Iterator[RunningServer]:
    """A backend whose answer carries `reasoning_details` nested 300 deep (past orjson's limit)."""

    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        chunks = _deep_chunks()
        if not body.get("stream"):
            completion = {"id": "chatcmpl-deep", "object": "chat.completion", "created": 1, "model": "m",
                          "choices": [{"index": 0, "finish_reason": "stop", "message": {
                              "role": "assistant", "content": "Hi", "reasoning_details": [_deep(300)]}}]}  # fmt: skip
            return Response(_dumps_deep(completion), media_type="application/json")

        async def frames() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield b"data: " + _dumps_deep(chunk) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(frames(), media_type="text/event-stream")

    with run_app(Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])) as server:
        yield server


def _dumps_deep(value: Any) -> bytes:
    """orjson refuses more than 255 levels; the standard library writes any depth."""
    import json

    return json.dumps(value).encode()


@pytest.mark.parametrize("store", ["memory", "none"])
def test_a_300_deep_chunk_ends_the_stream_with_failed_and_done(deep_backend: RunningServer, store: str) -> None:
    handle = start_bridge(bridge_config(deep_backend.url + "/v1", store=store))
    try:
        response = httpx.post(handle.url + "/responses", json={"model": "m", "input": "hi", "stream": True}, timeout=30)
        assert response.status_code == 200
        frames = parse_frames(response.content)
        terminal = assert_well_ended(frames)  # gapless sequence numbers, one terminal, then [DONE]
        assert terminal["type"] == "response.failed", [e["type"] for e in events_of(frames)]
        terminals = [terminal]
        # reasoning details that deep cannot be sealed (orjson's limit): the backend's fault, whatever the store
        assert terminals[0]["response"]["error"] == {
            "code": "upstream_malformed_chunk",
            "message": "The backend sent reasoning that cannot be carried back (Recursion limit reached)."}
        # the bridge goes on serving
        assert httpx.get(handle.root + "/healthz", timeout=10).status_code == 200
    finally:
        handle.stop()


def test_a_300_deep_answer_is_a_failed_response_without_stream(deep_backend: RunningServer) -> None:
    handle = start_bridge(bridge_config(deep_backend.url + "/v1", store="memory"))
    try:
        response = httpx.post(handle.url + "/responses", json={"model": "m", "input": "hi"}, timeout=30)
        assert response.status_code == 200, response.text  # a Response that failed, as a failed stream ends
        body = response.json()
        assert body["status"] == "failed"
        assert body["error"] == {"code": "upstream_malformed_chunk",
                                 "message": "The backend sent reasoning that cannot be carried back (Recursion limit reached)."}
    finally:
        handle.stop()


def test_last_resort_frame_is_a_valid_failed_event() -> None:
    """The pre-encoded frame parses as one `response.failed` frame carrying the response id."""
    from server.pump import EventPump
    from translator import ChatStreamTranslator

    translator = ChatStreamTranslator({"model": "m", "input": "hi"})
    pump = EventPump(httpx.Response(200), translator)
    pump._next_seq = 7
    frames = parse_frames(pump.last_resort_frame())
    assert len(frames) == 1 and frames[0][0] == "response.failed"
    event = frames[0][1]
    assert event["sequence_number"] == 7 and event["response"]["id"] == translator.id
    assert event["response"]["status"] == "failed" and event["response"]["error"]["code"] == "server_error"
    assert event == pump.last_resort_event()
    assert parse_frames(pump.last_resort_frame(3))[0][1]["sequence_number"] == 3


# ------------------------------------------------------------------ the pump alone (any consumer)


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
    return b"data: " + orjson.dumps(body) + b"\n\n"


def _upstream(parts: list[bytes], stall: asyncio.Event | None = None, content_type: str = "text/event-stream",
              ) -> httpx.Response:  # fmt: skip
    """An upstream response whose body is `parts`, then (with `stall`) no more bytes until it is set."""

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part
        if stall is not None:
            await stall.wait()

    return httpx.Response(200, headers={"content-type": content_type}, content=body())


ANSWER = [_chunk({"role": "assistant", "content": "Hel"}), _chunk({"content": "lo"}), _chunk({}, "stop"),
          b"data: [DONE]\n\n"]  # fmt: skip


async def _collect(pump: Any) -> list[list[dict[str, Any]]]:
    import contextlib

    batches = []
    async with contextlib.aclosing(pump.events()) as stream:
        async for batch in stream:
            batches.append(batch)
            assert not batches[:-1] or not any(e["type"] in TERMINAL for b in batches[:-1] for e in b)
    return batches


def _pump(parts: list[bytes], **kwargs: Any) -> Any:
    from server.pump import EventPump
    from translator import ChatStreamTranslator

    upstream = _upstream(parts, kwargs.pop("stall", None), kwargs.pop("content_type", "text/event-stream"))
    return EventPump(upstream, ChatStreamTranslator({"model": "m", "input": "hi"}), **kwargs)


def _flat(batches: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    events = [e for batch in batches for e in batch]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def test_pump_yields_batches_ending_in_one_terminal_event() -> None:
    committed: list[dict[str, Any]] = []

    async def commit(response: dict[str, Any]) -> bool:
        committed.append(response)
        return True

    pump = _pump(ANSWER, commit=commit)
    batches = asyncio.run(_collect(pump))
    events = _flat(batches)
    assert [e["type"] for e in batches[0]] == ["response.created", "response.in_progress"]
    assert events[-1]["type"] == "response.completed" and pump.finished
    assert committed == [events[-1]["response"]]
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "Hello"


def test_pump_commit_that_raises_turns_completed_into_store_unavailable() -> None:
    async def commit(response: dict[str, Any]) -> bool:
        raise OSError("database or disk is full")

    events = _flat(asyncio.run(_collect(_pump(ANSWER, commit=commit))))
    assert "response.completed" not in [e["type"] for e in events]
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "store_unavailable"


def test_pump_commit_refused_on_purpose_withholds_the_terminal_batch() -> None:
    async def commit(response: dict[str, Any]) -> bool:
        return False  # e.g. cancelled meanwhile: the cancel wins

    pump = _pump(ANSWER, commit=commit)
    events = _flat(asyncio.run(_collect(pump)))
    assert pump.finished and not [e for e in events if e["type"] in TERMINAL]


def test_pump_abort_during_a_stalled_read_ends_with_server_shutting_down() -> None:
    async def run() -> list[list[dict[str, Any]]]:
        pump = _pump(ANSWER[:2], stall=asyncio.Event())
        asyncio.get_running_loop().call_later(0.2, pump.abort, "shutdown")
        return await asyncio.wait_for(_collect(pump), timeout=10)

    events = _flat(asyncio.run(run()))
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"] == {"code": "server_shutting_down", "message": "The server is shutting down."}


def test_pump_abort_during_a_stalled_whole_json_body_ends_with_server_shutting_down() -> None:
    """A backend that ignored `stream: true` and stalls mid-body: a shutdown still ends the stream."""

    async def run() -> list[list[dict[str, Any]]]:
        pump = _pump([b'{"id": "chatcmpl-1", "choi'], stall=asyncio.Event(), content_type="application/json")
        asyncio.get_running_loop().call_later(0.2, pump.abort, "shutdown")
        return await asyncio.wait_for(_collect(pump), timeout=10)

    events = _flat(asyncio.run(run()))
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"] == {"code": "server_shutting_down", "message": "The server is shutting down."}


def test_a_whole_json_body_cut_mid_read_is_an_upstream_error() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b'{"id": "chatcmpl-1", "choi'
        raise httpx.ReadError("connection reset")

    async def run() -> list[list[dict[str, Any]]]:
        from server.pump import EventPump
        from translator import ChatStreamTranslator

        upstream = httpx.Response(200, headers={"content-type": "application/json"}, content=body())
        return await _collect(EventPump(upstream, ChatStreamTranslator({"model": "m", "input": "hi"})))

    events = _flat(asyncio.run(run()))
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "upstream_error", events[-1]


@pytest.mark.parametrize(
    ("parts", "code"),
    [([_chunk({"content": "x"}), b"data: {not json\n\n"], "upstream_malformed_chunk"),
     ([_chunk({"content": "x"}), b"data: [1, 2]\n\n"], "upstream_malformed_chunk"),
     ([_chunk({"content": "x"})], "server_error")],  # cut without finish reason: the translator's own failure
)  # fmt: skip
def test_pump_ends_every_fault_with_failed(parts: list[bytes], code: str) -> None:
    events = _flat(asyncio.run(_collect(_pump(parts))))
    assert events[-1]["type"] == "response.failed" and events[-1]["response"]["error"]["code"] == code


# ------------------------------------------------------------- error paths through a running bridge


def _bridged(app: Any, body: dict[str, Any] | None = None, **config: Any) -> list[tuple[str, Any]]:
    """Stream one request through a bridge in front of `app`; the parsed frames (framing checked)."""
    with run_app(app) as running:
        handle = start_bridge(bridge_config(running.url + "/v1", store="none", **config))
        try:
            response = httpx.post(handle.url + "/responses", timeout=30,
                                  json={"model": "m", "input": "hi", "stream": True, **(body or {})})  # fmt: skip
        finally:
            handle.stop()
    assert response.status_code == 200, response.text[:300]
    return parse_frames(response.content)


def _failed_with(frames: list[tuple[str, Any]], code: str, message: str) -> dict[str, Any]:
    """The stream ends `response.failed` (then [DONE], gapless) with exactly this error."""
    terminal = assert_well_ended(frames)
    assert terminal["type"] == "response.failed", terminal
    assert terminal["response"]["error"] == {"code": code, "message": message}
    return terminal


def test_a_chunk_that_is_not_an_object_fails_malformed() -> None:
    from tests.server.test_server_stream import raw_backend, sse_chunk

    frames = _bridged(raw_backend([sse_chunk({"role": "assistant", "content": "Hi"}) + b"\n\n", b"data: [1, 2]\n\n",
                                   sse_chunk({}, "stop") + b"\n\n"]))  # fmt: skip
    terminal = _failed_with(frames, "upstream_malformed_chunk", "Upstream fixture sent a chunk that is not an object.")
    assert terminal["response"]["output"][0]["content"][0]["text"] == "Hi"  # what came before is kept


def test_a_json_content_type_with_a_body_that_is_not_json_fails_malformed() -> None:
    from tests.server.test_server_stream import raw_backend

    frames = _bridged(raw_backend([b"<html>oops</html>"], content_type=b"application/json"))
    assert [name for name, _ in frames] == ["response.created", "response.in_progress", "error", "response.failed",
                                            "done"]
    _failed_with(frames, "upstream_malformed_chunk", "Upstream fixture sent a body that is not JSON.")


def test_a_json_error_body_answering_a_stream_request_fails_with_its_message() -> None:
    from tests.server.test_server_stream import raw_backend

    body = orjson.dumps({"error": {"message": "model is loading", "type": "server_error"}})
    frames = _bridged(raw_backend([body], content_type=b"application/json"))
    _failed_with(frames, "server_error", "model is loading")


def test_a_done_without_blank_line_after_the_finish_chunk_completes() -> None:
    from tests.server.test_server_stream import raw_backend, sse_chunk

    frames = _bridged(raw_backend([sse_chunk({"content": "ok"}, "stop") + b"\n\ndata: [DONE]"]))
    terminal = assert_well_ended(frames)
    assert terminal["type"] == "response.completed" and terminal["response"]["output"][0]["content"][0]["text"] == "ok"


def test_the_pump_crashing_mid_stream_ends_with_the_last_resort_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """`EventPump.events` promises not to raise; if it does after the first batch, the SSE writer
    still ends the stream: the pre-encoded last-resort `response.failed`, numbered next, then [DONE]."""
    from server.pump import EventPump
    from tests.server.test_server_stream import raw_backend, sse_chunk

    original = EventPump.events

    async def crashing(self: EventPump) -> AsyncIterator[list[dict[str, Any]]]:
        async for batch in original(self):
            yield batch
            raise RuntimeError("pump broken")

    monkeypatch.setattr(EventPump, "events", crashing)
    frames = _bridged(raw_backend([sse_chunk({"content": "x"}, "stop") + b"\n\n"]))
    assert [name for name, _ in frames] == ["response.created", "response.in_progress", "response.failed", "done"]
    _failed_with(frames, "server_error", "The bridge failed while streaming.")


def test_an_event_that_cannot_be_encoded_ends_with_the_last_resort_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """Encoding a batch fails: that batch is replaced by the last-resort event numbered as its first
    event, then [DONE], and the stream stops there (the backend connection is closed)."""
    import server.streaming
    from tests.server.test_server_stream import raw_backend, sse_chunk
    from translator.sse import encode_sse

    def encode(event: dict[str, Any]) -> bytes:
        if event["type"] == "response.output_text.delta":
            raise TypeError("cannot encode")
        return encode_sse(event)

    monkeypatch.setattr(server.streaming, "encode_sse", encode)
    frames = _bridged(raw_backend([sse_chunk({"content": "x"}) + b"\n\n", sse_chunk({}, "stop") + b"\n\n"]))
    names = [name for name, _ in frames]
    assert names[-2:] == ["response.failed", "done"] and "response.output_text.delta" not in names
    terminal = _failed_with(frames, "server_error", "The bridge failed while streaming.")
    assert terminal["response"]["output"] == []


def test_pump_aborted_before_reading_fails_shutting_down_without_reading() -> None:
    pump = _pump(ANSWER)
    pump.abort("shutdown")
    events = _flat(asyncio.run(_collect(pump)))
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "error", "response.failed"]
    assert events[-1]["response"]["error"] == {"code": "server_shutting_down", "message": "The server is shutting down."}


def test_pump_commit_that_raises_on_a_failed_response_keeps_its_own_error() -> None:
    """A failed response whose write fails is released as it is: its own code says what went wrong."""
    committed: list[str] = []

    async def commit(response: dict[str, Any]) -> bool:
        committed.append(response["status"])
        raise OSError("database or disk is full")

    events = _flat(asyncio.run(_collect(_pump([_chunk({"content": "x"}), b"data: {not json\n\n"], commit=commit))))
    assert committed == ["failed"]
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"] == {"code": "upstream_malformed_chunk",
                                               "message": "Upstream upstream sent a malformed chunk."}


def test_pump_scrubs_secrets_from_an_error_chunk() -> None:
    error = b'data: {"error": {"message": "bad key sk-secret-123 for you", "type": "invalid_request_error"}}\n\n'
    events = _flat(asyncio.run(_collect(_pump([_chunk({"content": "x"}), error], secrets=("sk-secret-123",)))))
    assert "sk-secret-123" not in orjson.dumps(events).decode()
    assert events[-1]["type"] == "response.failed" and "bad key" in events[-1]["response"]["error"]["message"]


class _Sink:
    """ASGI `send`/`receive` for an `EventStream` called in-process: `fail_at` makes the n-th body
    write raise OSError (the client's socket went away)."""

    def __init__(self, fail_at: int) -> None:
        self.bodies: list[bytes] = []
        self.fail_at = fail_at
        self.disconnect = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            if len(self.bodies) + 1 == self.fail_at:
                raise BrokenPipeError("client gone")
            self.bodies.append(message["body"])

    async def receive(self) -> dict[str, Any]:
        await self.disconnect.wait()
        return {"type": "http.disconnect"}


def test_oserror_writing_to_the_client_ends_the_stream_and_closes_the_backend() -> None:
    from server.streaming import EventStream

    async def run() -> tuple[Any, _Sink, bool]:
        stall = asyncio.Event()
        closed: list[bool] = []
        pump = _pump(ANSWER[:2], stall=stall, on_close=lambda p: closed.append(True))
        sink = _Sink(fail_at=2)  # the first batch goes out, the second write fails
        stream = EventStream(pump, keepalive_interval=60)
        await asyncio.wait_for(stream({"type": "http"}, sink.receive, sink.send), timeout=10)
        return stream, sink, bool(closed) and pump.upstream.is_closed

    stream, sink, backend_closed = asyncio.run(run())
    assert stream.ended and stream.record.error_code == "client_disconnected"
    assert len(sink.bodies) == 1 and b"response.created" in sink.bodies[0]
    assert backend_closed


class _GoneBeforeHeaders(_Sink):
    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            raise ConnectionResetError("client gone")
        await super().send(message)


def test_a_client_gone_before_the_headers_still_closes_the_backend_and_untracks_the_pump() -> None:
    """Writing the response start fails: the pump never runs, yet its backend response is closed and
    `on_close` runs (the server stops tracking it, so a shutdown does not wait for it)."""
    from server.streaming import EventStream

    async def run() -> tuple[Any, list[Any], Any]:
        closed: list[Any] = []
        pump = _pump(ANSWER, on_close=closed.append)
        stream = EventStream(pump, keepalive_interval=60)
        sink = _GoneBeforeHeaders(fail_at=0)
        await asyncio.wait_for(stream({"type": "http"}, sink.receive, sink.send), timeout=10)
        return stream, closed, pump

    stream, closed, pump = asyncio.run(run())
    assert stream.ended and stream.record.error_code == "client_disconnected"
    assert closed == [pump] and pump.upstream.is_closed


def test_a_client_message_other_than_disconnect_is_ignored() -> None:
    """The listener reads on after a stray `http.request` message and still ends the stream normally."""
    from server.streaming import EventStream

    class Chatty(_Sink):
        def __init__(self) -> None:
            super().__init__(fail_at=0)
            self.sent_request = False

        async def receive(self) -> dict[str, Any]:
            if not self.sent_request:
                self.sent_request = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return await super().receive()

    async def run() -> _Sink:
        sink = Chatty()
        await asyncio.wait_for(EventStream(_pump(ANSWER), keepalive_interval=60)({"type": "http"}, sink.receive,
                                                                                  sink.send), timeout=10)  # fmt: skip
        return sink

    sink = asyncio.run(run())
    assert assert_well_ended(parse_frames(b"".join(sink.bodies)))["type"] == "response.completed"


def test_pump_abort_between_reads_ends_at_the_next_read_without_cutting_a_batch() -> None:
    """`abort` while the consumer holds a batch (no read in progress): that batch stays whole and the
    pump ends before its next read; a second `abort` changes nothing."""

    async def run() -> list[list[dict[str, Any]]]:
        import contextlib

        pump = _pump(ANSWER)
        batches: list[list[dict[str, Any]]] = []
        async with contextlib.aclosing(pump.events()) as stream:
            async for batch in stream:
                batches.append(batch)
                if any(e["type"] == "response.output_text.delta" for e in batch):
                    pump.abort("shutdown")
                    pump.abort("shutdown")
        return batches

    batches = asyncio.run(run())
    events = _flat(batches)
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "Hel"
    assert [e["type"] for e in batches[-1]][-1] == "response.failed"
    assert events[-1]["response"]["error"] == {"code": "server_shutting_down", "message": "The server is shutting down."}
    assert [e for e in events if e["type"] in TERMINAL] == [events[-1]]


def test_pump_drain_after_done_gives_up_on_a_lingering_backend() -> None:
    """After [DONE] the pump reads on to put the connection back in the pool, but a backend that
    sends nothing more (and never ends its body) is given up on after a bounded wait."""

    async def run() -> tuple[list[dict[str, Any]], Any]:
        pump = _pump(ANSWER, stall=asyncio.Event())  # never set: the body never ends
        return _flat(await asyncio.wait_for(_collect(pump), timeout=10)), pump

    events, pump = asyncio.run(run())
    assert events[-1]["type"] == "response.completed" and pump.upstream.is_closed


def test_pump_fails_a_frame_over_the_decoder_ceiling_without_buffering_it() -> None:
    from translator.sse import MAX_FRAME_BYTES

    events = _flat(asyncio.run(_collect(_pump([_chunk({"content": "x"}), b"data: " + b"a" * (MAX_FRAME_BYTES + 1)]))))
    assert events[-1]["type"] == "response.failed" and events[-1]["response"]["error"]["code"] == "upstream_error"
    assert events[-1]["response"]["error"]["message"].startswith("Upstream upstream: ")


def test_a_stream_cancelled_by_the_server_closes_the_backend() -> None:
    """The server force-exits while a stream waits on its backend: the task running the SSE response
    is cancelled, and the writer it started is cancelled and awaited, so the backend response is
    closed rather than left to the garbage collector."""
    from server.streaming import EventStream

    async def run() -> tuple[Any, list[Any]]:
        closed: list[Any] = []
        pump = _pump(ANSWER[:1], stall=asyncio.Event(), on_close=closed.append)
        sink = _Sink(fail_at=0)
        task = asyncio.get_running_loop().create_task(EventStream(pump, keepalive_interval=60)(
            {"type": "http"}, sink.receive, sink.send))  # fmt: skip
        while len(sink.bodies) < 2:  # the opening batch and the first delta went out
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)
        return pump, closed

    pump, closed = asyncio.run(run())
    assert pump.upstream.is_closed and closed == [pump]


def test_an_exception_after_the_terminal_batch_is_not_a_second_terminal() -> None:
    """Draining the backend after [DONE] raises something unexpected: the client already has its
    terminal event, so the pump ends quietly instead of yielding the last-resort event too."""

    async def body() -> AsyncIterator[bytes]:
        for part in ANSWER:
            yield part
        raise RuntimeError("odd transport failure while draining")

    async def run() -> list[list[dict[str, Any]]]:
        from server.pump import EventPump
        from translator import ChatStreamTranslator

        upstream = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())
        return await _collect(EventPump(upstream, ChatStreamTranslator({"model": "m", "input": "hi"})))

    events = _flat(asyncio.run(run()))
    assert [e["type"] for e in events if e["type"] in TERMINAL] == ["response.completed"]
    assert events[-1]["type"] == "response.completed"


def test_a_translator_that_cannot_describe_itself_still_gets_a_last_resort_event() -> None:
    from server.pump import EventPump
    from translator import ChatStreamTranslator

    class Broken(ChatStreamTranslator):
        @property
        def response(self) -> dict[str, Any]:  # type: ignore[override]
            raise RuntimeError("no response")

    translator = Broken({"model": "m", "input": "hi"}, response_id="resp_broken")
    event = EventPump(httpx.Response(200), translator).last_resort_event()
    assert event["response"] == {"id": "resp_broken", "object": "response", "status": "failed", "output": [],
                                 "error": {"code": "server_error", "message": "The bridge failed while streaming."}}
