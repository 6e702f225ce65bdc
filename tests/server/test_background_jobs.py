"""The error paths of a background job (server/background.py), driven directly on a `BackgroundRunner`
over the real memory store: each test names the one way the job ends and asserts the stored final
response, the stored events (gapless, one terminal event at most) and what a follower reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from server.background import BackgroundRunner
from server.errors import ApiError
from server.store import MemoryStore
from tests.server.test_server_stream import TERMINAL, parse_frames
from translator import ChatStreamTranslator

REQUEST = {"model": "m", "input": "hi", "background": True}


def _translator() -> ChatStreamTranslator:
    return ChatStreamTranslator(REQUEST, response_id="resp_bg1", created_at=1, completed_at=2)


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


async def _start(runner: BackgroundRunner, run: Any) -> dict[str, Any]:
    tr_response = {**_translator().response, "status": "queued", "background": True}
    return await runner.start(tr_response, [{"type": "message", "role": "user", "content": "hi"}], run, owner=None)


async def _finish(runner: BackgroundRunner, rid: str) -> tuple[dict[str, Any], list[dict[str, Any]], list[Any]]:
    task = runner.tasks.get(rid)
    if task is not None:
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
    final = await runner.store.get(rid, owner=None)
    events = await runner.store.events(rid, after=None)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    followed = b"".join([part async for part in runner.follow(rid, owner=None, after=None)])
    return final, events, parse_frames(followed)


def test_a_normal_job_stores_completed_and_its_events() -> None:
    async def main() -> tuple[Any, ...]:
        runner = BackgroundRunner(MemoryStore(), poll_interval=0.01)
        tr = _translator()

        async def run() -> AsyncIterator[list[dict[str, Any]]]:
            yield tr.start()
            yield tr.feed(_chunk({"content": "done"}, "stop")) + tr.finish()

        queued = await _start(runner, run)
        return (queued, *await _finish(runner, queued["id"]))

    queued, final, events, frames = asyncio.run(main())
    assert queued["status"] == "queued"
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == "done"
    assert events[-1]["type"] == "response.completed" and events[-1]["response"] == final
    assert frames[-1] == ("done", None) and frames[-2][0] == "response.completed"


def test_cancel_winning_the_race_at_the_final_update_keeps_cancelled() -> None:
    """Another replica cancels after the last token, before the job's final write: the store refuses
    that write (`update_response` → False), so the job ends without a terminal event of its own and
    the response stays `cancelled`; a follower ends with [DONE] after the events that were stored."""

    async def main() -> tuple[Any, ...]:
        store = MemoryStore()
        runner = BackgroundRunner(store, poll_interval=60)  # the watcher never looks: the race is ours
        tr = _translator()
        release = asyncio.Event()

        async def run() -> AsyncIterator[list[dict[str, Any]]]:
            yield tr.start()
            await release.wait()
            yield tr.feed(_chunk({"content": "late"}, "stop")) + tr.finish()

        queued = await _start(runner, run)
        rid = queued["id"]
        while len(await store.events(rid, after=None)) < 2:
            await asyncio.sleep(0.01)
        assert (await store.request_cancel(rid, owner=None))["status"] == "cancelled"  # not via runner.cancel
        release.set()
        return await _finish(runner, rid)

    final, events, frames = asyncio.run(main())
    assert final["status"] == "cancelled"
    assert [e["type"] for e in events] == ["response.created", "response.in_progress"]
    assert [name for name, _ in frames] == ["response.created", "response.in_progress", "done"]


def test_a_stream_without_a_terminal_event_ends_failed_server_error() -> None:
    async def main() -> tuple[Any, ...]:
        runner = BackgroundRunner(MemoryStore(), poll_interval=0.01)
        tr = _translator()

        async def run() -> AsyncIterator[list[dict[str, Any]]]:
            yield tr.start()
            yield tr.feed(_chunk({"content": "half"}))  # and then the iterator just ends

        queued = await _start(runner, run)
        return await _finish(runner, queued["id"])

    final, events, frames = asyncio.run(main())
    assert final["status"] == "failed"
    assert final["error"] == {"code": "server_error", "message": "The response ended without a final event."}
    assert [e["type"] for e in events][-1] == "response.failed"
    assert [e for e in events if e["type"] in TERMINAL] == [events[-1]]
    assert events[-1]["response"] == final
    assert [name for name, _ in frames][-2:] == ["response.failed", "done"]


def test_an_internal_exception_ends_failed_without_its_details(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> tuple[Any, ...]:
        runner = BackgroundRunner(MemoryStore(), poll_interval=0.01)
        tr = _translator()

        async def run() -> AsyncIterator[list[dict[str, Any]]]:
            yield tr.start()
            raise KeyError("secret internal detail")

        queued = await _start(runner, run)
        return await _finish(runner, queued["id"])

    with caplog.at_level(logging.ERROR, logger="responses_bridge"):
        final, events, frames = asyncio.run(main())
    assert final["error"] == {"code": "server_error",
                              "message": "The bridge failed while running the response (KeyError)."}
    assert "secret internal detail" not in orjson.dumps(events).decode()
    assert events[-1] == {"type": "response.failed", "sequence_number": 2, "response": final}
    assert [name for name, _ in frames][-2:] == ["response.failed", "done"]
    assert any(r.exc_info for r in caplog.records if "resp_bg1" in r.getMessage())


def test_a_backend_refusal_keeps_its_message_and_code() -> None:
    async def main() -> tuple[Any, ...]:
        runner = BackgroundRunner(MemoryStore(), poll_interval=0.01)

        async def run() -> AsyncIterator[list[dict[str, Any]]]:
            raise ApiError(429, "Slow down.", type="rate_limit_error", code="rate_limit_exceeded")
            yield []  # pragma: no cover - makes this an async generator

        queued = await _start(runner, run)
        return await _finish(runner, queued["id"])

    final, events, _frames = asyncio.run(main())
    assert final["status"] == "failed" and final["error"] == {"code": "rate_limit_exceeded", "message": "Slow down."}
    assert events == [{"type": "response.failed", "sequence_number": 0, "response": final}]


class FlakyCancelFlagStore(MemoryStore):
    """`cancel_requested` fails twice (a database hiccup), then answers normally."""

    def __init__(self) -> None:
        super().__init__()
        self.checks = 0

    async def cancel_requested(self, response_id: str) -> bool:
        self.checks += 1
        if self.checks <= 2:
            raise ConnectionResetError("database connection lost")
        return await super().cancel_requested(response_id)


def test_a_store_error_in_the_cancel_watcher_does_not_kill_the_job(caplog: pytest.LogCaptureFixture) -> None:
    """The watcher logs the hiccup and looks again; the job completes, and a cancel seen on a later
    look still stops a job (checked with a second job)."""

    async def main() -> tuple[Any, ...]:
        store = FlakyCancelFlagStore()
        runner = BackgroundRunner(store, poll_interval=0.01)
        tr = _translator()

        async def run() -> AsyncIterator[list[dict[str, Any]]]:
            yield tr.start()
            for _ in range(300):  # until the watcher failed twice and then looked again (3 s at most)
                if store.checks >= 4:
                    break
                await asyncio.sleep(0.01)
            yield tr.feed(_chunk({"content": "ok"}, "stop")) + tr.finish()

        queued = await _start(runner, run)
        return (store, *await _finish(runner, queued["id"]))

    with caplog.at_level(logging.WARNING, logger="responses_bridge"):
        store, final, events, _frames = asyncio.run(main())
    assert final["status"] == "completed" and events[-1]["type"] == "response.completed"
    assert store.checks >= 4
    warnings = [r for r in caplog.records if "could not check the cancel flag of resp_bg1" in r.getMessage()]
    assert len(warnings) == 2 and all(r.exc_info for r in warnings)


def test_a_cancel_seen_by_the_watcher_stops_the_job() -> None:
    async def main() -> tuple[Any, ...]:
        store = MemoryStore()
        runner = BackgroundRunner(store, poll_interval=0.01)
        tr = _translator()
        closed = asyncio.Event()

        async def run() -> AsyncIterator[list[dict[str, Any]]]:
            try:
                yield tr.start()
                await asyncio.sleep(30)
                yield tr.feed(_chunk({"content": "never"}, "stop")) + tr.finish()
            finally:
                closed.set()

        queued = await _start(runner, run)
        rid = queued["id"]
        while len(await store.events(rid, after=None)) < 2:
            await asyncio.sleep(0.01)
        await store.request_cancel(rid, owner=None)  # as another replica would
        result = await _finish(runner, rid)
        assert closed.is_set()  # the job's stream was closed (the upstream with it)
        return result

    final, events, frames = asyncio.run(main())
    assert final["status"] == "cancelled"
    assert [e["type"] for e in events] == ["response.created", "response.in_progress"]
    assert frames[-1] == ("done", None)
