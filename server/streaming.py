"""The SSE response: writes what an `EventPump` yields, as a small raw ASGI callable, so disconnects
and keep-alives are ours.

The pump (server/pump.py) owns what the events are and that the stream ends with a terminal event;
this module owns only the wire:
- every event is one whole frame (`translator.encode_sse`), and the frames of one batch (one upstream
  read) go out in ONE `http.response.body` message (docs/wire.md §1.1: the Open Responses parser drops
  frames split across reads);
- after the terminal event comes `data: [DONE]` (docs/wire.md §1.5e, §1.8); if encoding a batch
  fails, the pump's pre-encoded last-resort frame and `[DONE]` go out instead;
- `: keep-alive` comments go out after `keepalive_interval` seconds without a write;
- a client disconnect cancels the pump at once (it closes the backend connection, so the backend
  stops generating for nobody).

Hot path: one `b"".join` of `encode_sse` per upstream read; no per-chunk logging, tasks or locks;
the disconnect watcher is one task per stream, the keep-alive a timer (a task only while one is sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.types import Receive, Scope, Send

from server.pump import EventPump
from server.scope import RAW_SEND_KEY
from translator.sse import DONE_FRAME, encode_sse

__all__ = ["EventStream"]

log = logging.getLogger("responses_bridge")

KEEPALIVE = b": keep-alive\n\n"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class EventStream:
    """The 200 `text/event-stream` answer to one streaming request, fed by `pump`."""

    def __init__(self, pump: EventPump, *, keepalive_interval: float) -> None:
        self.pump = pump
        self.record = pump.record
        self.keepalive_interval = keepalive_interval
        self.ended = False  # `[DONE]` written (or the client gone): nothing more may be sent
        self._hung_up = False  # the listener cancelled the writing task because the client left
        self._receive: Receive | None = None  # until `_watch` hands it to the listener
        self._listener: asyncio.Task[None] | None = None
        self._last_write = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._keepalive_task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self.record.status = 200
        started = False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            send = scope.get(RAW_SEND_KEY) or send
            self._last_write = loop.time()
            # The batches are written by this task itself, not by a task of their own: one task, one
            # context and one `asyncio.wait` fewer for every held stream, and `response.created` goes
            # out in this step of the loop instead of the next. The listener cancels this task when
            # the client hangs up (`_hung_up` tells that cancellation from the server's own).
            # The listener and the keep-alive timer start once the first batch is out (`_watch`),
            # not on the path to it.
            task = asyncio.current_task()
            assert task is not None
            self._receive = receive
            started = True
            try:
                await self._write(send)
            except asyncio.CancelledError:
                if not self._hung_up or task.uncancel() > 0:
                    raise  # the server's own cancellation (force-exit): the pump is closed, pass it on
            finally:
                if self._listener is not None:
                    self._listener.cancel()
                self._stop_keepalive()
        except OSError:  # the client's socket went away while we wrote
            self._gone()
        finally:
            if not started:  # gone before the headers went out: the pump never ran, so close it here
                await self.pump.upstream.aclose()
                if self.pump.on_close is not None:
                    self.pump.on_close(self.pump)

    def _gone(self) -> None:
        self.ended = True
        self.record.error_code = "client_disconnected"

    async def _write(self, send: Send) -> None:
        """Every batch of the pump, each as one body message; `[DONE]` right after the terminal one."""
        pump = self.pump
        loop = self._loop
        assert loop is not None
        try:
            async with contextlib.aclosing(pump.events()) as batches:
                async for batch in batches:
                    if self.ended:
                        continue  # the pump drains the backend connection after the terminal batch
                    broken = False
                    try:
                        frames = [encode_sse(event) for event in batch]
                    except Exception:
                        log.exception("encoding an event of %s failed; ending the stream", pump.response_id)
                        first = batch[0].get("sequence_number")
                        frames, broken = [pump.last_resort_frame(first if isinstance(first, int) else None)], True
                        self.record.error_code = "server_error"
                    if broken or pump.finished:
                        self.ended = True
                        frames.append(DONE_FRAME)  # in the one join: a large answer is copied once
                        await send({"type": "http.response.body", "body": b"".join(frames), "more_body": False})
                        if broken:
                            break  # closes the pump (and the backend connection) without reading on
                        continue
                    self._last_write = loop.time()
                    await send({"type": "http.response.body", "body": b"".join(frames), "more_body": True})
                    del batch, frames  # an idle stream keeps no copy of what it already sent
                    if self._listener is None:
                        self._watch(send)
        except OSError:
            self._gone()
            return
        except Exception:  # the pump promises not to raise; if it did, the client still gets an end
            log.exception("stream of %s failed", pump.response_id)
        if not self.ended:
            self.ended = True
            await send({"type": "http.response.body", "body": pump.last_resort_frame() + DONE_FRAME,
                        "more_body": False})  # fmt: skip

    def _watch(self, send: Send) -> None:
        """After the first batch: the disconnect listener (it cancels this task when the client
        hangs up) and the keep-alive timer. A hang-up before it is still seen: uvicorn answers the
        listener's first `receive` with the disconnect."""
        task = asyncio.current_task()
        assert task is not None and self._loop is not None and self._receive is not None
        self._listener = self._loop.create_task(self._listen(self._receive, task))
        self._receive = None
        self._arm_keepalive(send)

    async def _listen(self, receive: Receive, writer: asyncio.Task[None]) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not self.ended:  # after [DONE] this only says the response is complete
                    self._gone()
                    self._hung_up = True
                    writer.cancel()  # closes the pump, and with it the backend connection
                return

    # A timer, not a task: a stream that never falls silent (most) never starts a keep-alive task.

    def _arm_keepalive(self, send: Send) -> None:
        loop = self._loop
        assert loop is not None
        self._keepalive_timer = loop.call_at(self._last_write + self.keepalive_interval, self._keepalive_due, send)

    def _keepalive_due(self, send: Send) -> None:
        self._keepalive_timer = None
        loop = self._loop
        if self.ended or loop is None:
            return
        if self._last_write + self.keepalive_interval > loop.time():  # written meanwhile: wait from then
            self._arm_keepalive(send)
            return
        self._last_write = loop.time()
        self._keepalive_task = loop.create_task(self._send_keepalive(send))

    async def _send_keepalive(self, send: Send) -> None:
        try:
            await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
        finally:
            self._keepalive_task = None
        if not self.ended:
            self._arm_keepalive(send)

    def _stop_keepalive(self) -> None:
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
            self._keepalive_timer = None
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            self._keepalive_task = None
