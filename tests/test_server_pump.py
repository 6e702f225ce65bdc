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

from server.store import MemoryStore
from server.store_sqlite import SQLiteStore
from tests.assertions import assert_openai_error
from tests.conftest import BridgeHandle, bridge_config, start_bridge
from tests.servers import RunningServer, poll, run_app
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
    assert parse_frames(pump.last_resort_frame(3))[0][1]["sequence_number"] == 3


# ------------------------------------------------------------------ the pump alone (any consumer)


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
    return b"data: " + orjson.dumps(body) + b"\n\n"


def _upstream(parts: list[bytes], stall: asyncio.Event | None = None) -> httpx.Response:
    """An upstream response whose body is `parts`, then (with `stall`) no more bytes until it is set."""

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part
        if stall is not None:
            await stall.wait()

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())


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

    return EventPump(_upstream(parts, kwargs.pop("stall", None)), ChatStreamTranslator({"model": "m", "input": "hi"}),
                     **kwargs)  # fmt: skip


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


@pytest.mark.parametrize(
    ("parts", "code"),
    [([_chunk({"content": "x"}), b"data: {not json\n\n"], "upstream_malformed_chunk"),
     ([_chunk({"content": "x"}), b"data: [1, 2]\n\n"], "upstream_malformed_chunk"),
     ([_chunk({"content": "x"})], "server_error")],  # cut without finish reason: the translator's own failure
)  # fmt: skip
def test_pump_ends_every_fault_with_failed(parts: list[bytes], code: str) -> None:
    events = _flat(asyncio.run(_collect(_pump(parts))))
    assert events[-1]["type"] == "response.failed" and events[-1]["response"]["error"]["code"] == code
