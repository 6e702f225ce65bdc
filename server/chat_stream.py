"""The SSE answer of `POST /v1/chat/completions`: chat chunks as `data:` frames, then `data: [DONE]`.

One class, `ChunkStream`, for both upstream kinds: it writes what a `ChunkSource` yields (the
frames one upstream read caused, already encoded), so a passthrough relay and the reverse
translation share the wire rules:
- the frames of one upstream read go out in one `http.response.body` message;
- the stream always ends with `data: [DONE]` (docs/reverse.md §2), after an error chunk when the
  source broke (`ChunkSource.failure` builds it; the source itself never raises but for
  cancellation);
- `: keep-alive` comments after `keepalive_interval` seconds without a write (chat clients skip
  SSE comments);
- the streams-in-flight gauge (server/metrics.py) counts it while it runs, when metrics are on;
- a client disconnect cancels the source at once, which closes the backend connection;
- a shutdown (`shutting_down()` turning true) gives the stream `grace` seconds, then ends it with an
  error chunk (code `server_shutting_down`) and `[DONE]`. Only a wait on the source is interrupted,
  never a write, so no frame is cut in two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import orjson
from starlette.types import Receive, Scope, Send

from server.accesslog import AccessRecord
from server.scope import RAW_SEND_KEY

__all__ = ["DONE", "ChunkSource", "ChunkStream", "encode_chunk"]

log = logging.getLogger("responses_bridge")

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def encode_chunk(chunk: dict[str, Any]) -> bytes:
    """One chat chunk as one SSE frame (chat streams carry no `event:` lines)."""
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


class ChunkSource(Protocol):
    """What `ChunkStream` reads: encoded frames per upstream read; `failure` ends a broken one."""

    record: AccessRecord

    def frames(self) -> AsyncIterator[bytes]: ...

    def failure(self, message: str, code: str) -> bytes: ...


class ChunkStream:
    """The 200 `text/event-stream` answer fed by `source`."""

    def __init__(self, source: ChunkSource, *, keepalive_interval: float,
                 shutting_down: Callable[[], bool] = lambda: False, grace: float = 10.0) -> None:
        self.source = source
        self.record = source.record
        self.keepalive_interval = keepalive_interval
        self.shutting_down = shutting_down
        self.grace = grace
        self.ended = False
        self._last_write = 0.0
        self._reading = False  # the writer waits on the source (the one place a shutdown may cut in)
        self._aborted = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        self.record.status = 200
        metrics = getattr(self.record, "metrics", None)  # the streams-in-flight gauge, when metrics are on
        upstream = self.record.upstream or "unknown"
        if metrics is not None:
            metrics.stream_opened(upstream)
        try:
            await self._serve(scope, receive, send, loop)
        finally:
            if metrics is not None:
                metrics.stream_closed(upstream)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, loop: asyncio.AbstractEventLoop) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        send = scope.get(RAW_SEND_KEY) or send
        self._last_write = loop.time()
        writer = loop.create_task(self._write(send))
        listener = loop.create_task(self._listen(receive, writer))
        keepalive = loop.create_task(self._keepalive(send))
        watcher = loop.create_task(self._watch_shutdown(writer))
        try:
            await asyncio.wait((writer,))
        finally:
            listener.cancel()
            keepalive.cancel()
            watcher.cancel()
            if not writer.done():
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writer

    async def _write(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        tail = DONE
        try:
            async with contextlib.aclosing(self.source.frames()) as frames:
                iterator = frames.__aiter__()
                while True:
                    self._reading = True
                    try:
                        body = await iterator.__anext__()
                    except StopAsyncIteration:
                        break
                    except asyncio.CancelledError:
                        task = asyncio.current_task()
                        if self._aborted and task is not None and task.uncancel() == 0:
                            tail = self.source.failure("The server is shutting down.", "server_shutting_down") + DONE
                            break
                        raise
                    finally:
                        self._reading = False
                    if body:
                        self._last_write = loop.time()
                        await send({"type": "http.response.body", "body": body, "more_body": True})
        except OSError:  # the client's socket went away
            self._gone()
            return
        except Exception:  # a source that broke its promise: the client still gets an end
            log.exception("chat stream failed")
            self.record.error_code = "server_error"
            tail = self.source.failure("The bridge failed while streaming.", "server_error") + DONE
        if not self.ended:
            self.ended = True
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _watch_shutdown(self, writer: asyncio.Task[None]) -> None:
        while not self.shutting_down():
            await asyncio.sleep(0.25)
        await asyncio.sleep(self.grace)
        self._aborted = True
        while not self.ended and not writer.done():
            if self._reading:
                writer.cancel()
                return
            await asyncio.sleep(0.01)

    def _gone(self) -> None:
        self.ended = True
        self.record.error_code = "client_disconnected"

    async def _listen(self, receive: Receive, writer: asyncio.Task[None]) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not self.ended:
                    self._gone()
                    writer.cancel()
                return

    async def _keepalive(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        while not self.ended:
            delay = self._last_write + self.keepalive_interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            self._last_write = loop.time()
            await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
