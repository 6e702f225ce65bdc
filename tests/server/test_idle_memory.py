"""What a held idle stream costs: an SSE response whose backend sent its first chunk and then nothing.

A client can hold thousands of these (docs/benchmarks.md, "Where an idle stream's memory goes"), so
what each keeps is bounded here with tracemalloc, in-process: the pump's pre-encoded last-resort
frame must not carry orjson's growth buffer, and nothing of what was already sent (the opening batch,
the first chunk, its SSE bytes) may outlive its write. Also the lazy flow control of the client
connection (server/http_protocol.py), which makes its `asyncio.Event` only when writing pauses.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from server.http_protocol import _LazyFlowControl
from tests.support.servers import read_body

FIRST = b"data: " + orjson.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                  "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"},
                                               "finish_reason": None}]}) + b"\n\n"  # fmt: skip


class _Client:
    """ASGI send/receive of a client that reads everything and never hangs up (until `gone` is set)."""

    def __init__(self, gone: asyncio.Event) -> None:
        self.bodies = 0
        self.gone = gone

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            self.bodies += 1

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}


def _stalled_stream(stall: asyncio.Event) -> Any:
    from server.pump import EventPump
    from server.streaming import EventStream
    from translator import ChatStreamTranslator

    async def body() -> AsyncIterator[bytes]:
        yield FIRST
        await stall.wait()

    upstream = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())
    request = {"model": "m", "input": "Write a few words.", "instructions": "Be brief. " * 50}
    return EventStream(EventPump(upstream, ChatStreamTranslator(request)), keepalive_interval=60)


async def _held_bytes_per_stream(count: int) -> float:
    stall, gone = asyncio.Event(), asyncio.Event()
    clients = [_Client(gone) for _ in range(count)]
    streams = [_stalled_stream(stall) for _ in range(count)]  # built before the first snapshot: the
    # translator and the request are what a stream must keep; this measures what serving it adds
    gc.collect()
    before = tracemalloc.take_snapshot()
    tasks = [asyncio.ensure_future(s({"type": "http"}, c.receive, c.send)) for s, c in zip(streams, clients, strict=True)]
    while min(c.bodies for c in clients) < 2:  # the opening batch and the first delta went out
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    gc.collect()
    after = tracemalloc.take_snapshot()
    stall.set()
    gone.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return grown / count


def test_a_held_idle_stream_keeps_no_encoder_buffer_and_nothing_it_already_sent() -> None:
    """Before the change each stream held ~16 KiB of orjson buffer and its first batch (~4 KiB);
    what serving it needs (tasks, coroutine frames, timers, the translator's open item) is ~6 KiB."""
    tracemalloc.start()
    try:
        per_stream = asyncio.run(_held_bytes_per_stream(100))
    finally:
        tracemalloc.stop()
    assert per_stream < 9 * 1024, f"each held stream keeps {per_stream:.0f} bytes"


def test_the_last_resort_frame_is_stored_at_its_size() -> None:
    stall = asyncio.Event()
    pump = _stalled_stream(stall).pump
    frame = pump.last_resort_frame(7)
    assert frame.startswith(b"event: response.failed\ndata: ") and b'"sequence_number":7' in frame
    assert pump.last_resort_event()["response"]["error"]["code"] == "server_error"
    encoded = pump._last_resort_json
    assert sys.getsizeof(encoded) - len(encoded) < 64  # a bytes object's own header, no spare buffer


class _Transport:
    def __init__(self) -> None:
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def test_lazy_flow_control_pauses_and_resumes_like_uvicorns() -> None:
    async def run() -> list[str]:
        transport = _Transport()
        flow = _LazyFlowControl(transport)  # type: ignore[arg-type]
        assert flow._is_writable_event is None  # nothing made for a connection that never pauses
        await asyncio.wait_for(flow.drain(), 1)  # not paused: returns at once
        seen: list[str] = []
        flow.pause_writing()
        flow.pause_writing()
        waiter = asyncio.ensure_future(flow.drain())
        await asyncio.sleep(0.01)
        seen.append("waiting" if not waiter.done() else "done early")
        flow.resume_writing()
        await asyncio.wait_for(waiter, 1)
        seen.append("resumed")
        flow.resume_writing()  # resuming twice changes nothing
        await asyncio.wait_for(flow.drain(), 1)
        flow.pause_reading()
        seen.append(f"reading={transport.reading}")
        flow.resume_reading()
        seen.append(f"reading={transport.reading}")
        return seen

    assert asyncio.run(run()) == ["waiting", "resumed", "reading=False", "reading=True"]


def test_pipelined_requests_are_answered_in_order_through_the_bounded_protocol() -> None:
    """Three requests in one write: uvicorn queues the second and third (the protocol's `_Pipeline`
    list) and answers all three in order; the cycle's event (its waiters a list) still wakes a
    request body reader."""
    import socket
    import threading
    import time

    import uvicorn

    from server.config import Limits
    from server.http_protocol import bounded_protocol

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        payload = scope["path"].encode() + b":" + body
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(payload)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": payload})

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, loop="uvloop", lifespan="off",
                                           http=bounded_protocol(Limits()), log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"GET /one HTTP/1.1\r\nhost: x\r\n\r\nGET /two HTTP/1.1\r\nhost: x\r\n\r\n"
                           b"POST /three HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhe")  # fmt: skip
            time.sleep(0.1)
            client.sendall(b"llo")  # the body's rest: the waiting reader is woken through the event
            received = b""
            while received.count(b"HTTP/1.1 200") < 3 or not received.endswith(b"/three:hello"):
                chunk = client.recv(65536)
                if not chunk:
                    break
                received += chunk
    finally:
        server.should_exit = True
        thread.join(10)
    bodies = [part.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0] for part in received.split(b"HTTP/1.1 200")[1:]]
    assert [b.strip() for b in bodies] == [b"/one:", b"/two:", b"/three:hello"]
