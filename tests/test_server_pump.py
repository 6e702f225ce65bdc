"""The event pump's two promises, through a running bridge: nothing is acknowledged that was not stored
(a SQLite store whose disk is full), and any exception while streaming still ends the stream with
`response.failed` and `[DONE]` (a translator that raises, a backend chunk nested 300 deep).
"""

from __future__ import annotations

import asyncio
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

from server.store_sqlite import SQLiteStore
from tests.assertions import assert_openai_error
from tests.conftest import BridgeHandle, bridge_config, start_bridge
from tests.servers import RunningServer, run_app
from tests.test_server_stream import TERMINAL, assert_well_ended, events_of, parse_frames

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
        assert frames[-1] == ("done", None), frames[-3:]
        terminals = [e for e in events_of(frames) if e["type"] in TERMINAL]
        assert len(terminals) == 1 and terminals[0]["type"] == "response.failed", [e["type"] for e in events_of(frames)]
        assert terminals[0]["response"]["error"]["code"] in ("server_error", "store_unavailable")
        # the bridge goes on serving
        assert httpx.get(handle.root + "/healthz", timeout=10).status_code == 200
    finally:
        handle.stop()


def test_a_300_deep_answer_is_a_clean_error_without_stream(deep_backend: RunningServer) -> None:
    handle = start_bridge(bridge_config(deep_backend.url + "/v1", store="memory"))
    try:
        response = httpx.post(handle.url + "/responses", json={"model": "m", "input": "hi"}, timeout=30)
        assert response.status_code in (500, 502, 503), response.text[:300]
        error = assert_openai_error(response, response.status_code)
        assert "Traceback" not in response.text and error["type"] == "server_error", error
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
