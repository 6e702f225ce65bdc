"""The SSE response: a small raw ASGI callable, so disconnects, keep-alives and shutdown are ours.

Guarantees, whatever happens once the 200 has been sent:
- every event is one whole frame (`translator.encode_sse`), and the frames produced from one upstream
  read go out in ONE `http.response.body` message (REFERENCE §1.1: the Open Responses parser drops
  frames split across reads);
- the stream ends with a terminal event (`response.completed` / `incomplete` / `failed`) and then
  `data: [DONE]`: an upstream cut, an idle timeout, a malformed chunk, an error chunk or a server
  shutdown all end with the translator's `fail()` events (REFERENCE §1.5e, §1.8);
- `: keep-alive` comments go out after `keepalive_interval` seconds without a write;
- a client disconnect cancels the upstream read at once and closes the backend connection, so the
  backend stops generating for nobody.

Hot path: one `decoder.feed` per upstream read, `orjson.loads` per chunk, one `b"".join` per read.
No per-chunk logging, tasks or locks; the keep-alive and disconnect watchers are one task each per
stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson
from starlette.types import Receive, Scope, Send

from server.accesslog import AccessRecord
from server.upstream import scrub_value
from translator import completion_to_chunk
from translator.sse import DONE_FRAME, SSEDecoder, encode_sse

__all__ = ["TERMINAL_TYPES", "EventStream"]

log = logging.getLogger("responses_bridge")

TERMINAL_TYPES = frozenset(("response.completed", "response.incomplete", "response.failed"))
KEEPALIVE = b": keep-alive\n\n"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

OnTerminal = Callable[[dict[str, Any]], Awaitable[None]]


class EventStream:
    """Streams one upstream chat response to the client as Responses events.

    `upstream` is an httpx response whose status has already been checked (pre-stream failures were
    plain HTTP errors). `on_terminal(response)` runs after the terminal event is produced and before
    it is written, so a stored response is visible to the client's very next request.
    """

    def __init__(
        self,
        *,
        upstream: httpx.Response,
        translator: Any,
        record: AccessRecord,
        keepalive_interval: float,
        on_terminal: OnTerminal | None = None,
        on_close: Callable[[EventStream], None] | None = None,
        upstream_name: str = "upstream",
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.upstream = upstream
        self.translator = translator
        self.record = record
        self.keepalive_interval = keepalive_interval
        self.on_terminal = on_terminal
        self.on_close = on_close
        self.upstream_name = upstream_name
        self.secrets = secrets
        self.abort_reason: str | None = None
        self.finished = False
        self.finished_terminal = False
        self._reading = False
        self._drain = False
        self._raw_iter: Any = None
        self._pump: asyncio.Task[None] | None = None
        self._last_write = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------------------------- control

    def abort(self, reason: str) -> None:
        """End the stream early: `disconnect` (write nothing more) or `shutdown` (fail, then [DONE]).

        The pump is cancelled only while it waits on the backend, never between producing events and
        writing them, so sequence numbers stay gapless and no frame is ever cut."""
        if self.abort_reason is not None or self.finished:
            return
        self.abort_reason = reason
        if reason == "disconnect":
            self.record.error_code = "client_disconnected"
        pump = self._pump
        if pump is not None and not pump.done() and (self._reading or reason == "disconnect"):
            pump.cancel()

    # ---------------------------------------------------------------------------------------- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self.record.status = 200
        tail: list[bytes] = []
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            send = scope.get("responses_bridge.raw_send") or send
            start = getattr(self.translator, "start", None)
            opening = start() if start is not None else []
            if opening:  # response.created at once: the client knows the stream is alive
                body = b"".join([encode_sse(event) for event in opening])
                await send({"type": "http.response.body", "body": body, "more_body": True})
            self._last_write = loop.time()
            self._pump = loop.create_task(self._run_pump(send, tail))
            listener = loop.create_task(self._listen(receive))
            keepalive = loop.create_task(self._keepalive(send))
            try:
                await asyncio.wait((self._pump,))
            finally:
                listener.cancel()
                keepalive.cancel()
                if not self._pump.done():  # we were cancelled ourselves (server force-exit)
                    self._pump.cancel()
                    self.abort_reason = self.abort_reason or "cancelled"
            if self._pump.cancelled() and self.abort_reason not in ("disconnect", "cancelled"):
                tail.extend(await self._fail_frames(*_ABORT_ERRORS.get(self.abort_reason or "", _ABORT_ERRORS["shutdown"])))
            elif not self._pump.cancelled() and self._pump.exception() is not None:
                exc = self._pump.exception()
                log.error("stream pump crashed", exc_info=exc)
                tail.extend(await self._fail_frames("The bridge failed while streaming.", "server_error"))
            if self.abort_reason != "disconnect":
                tail.append(DONE_FRAME)
                await send({"type": "http.response.body", "body": b"".join(tail), "more_body": False})
        except OSError:  # the client's socket went away while we wrote
            self.abort_reason = self.abort_reason or "disconnect"
        finally:
            self.finished = True
            if self._drain and self.abort_reason is None:
                await self._drain_upstream()
            await self.upstream.aclose()
            if self.on_close is not None:
                self.on_close(self)

    async def _listen(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.abort("disconnect")
                return

    async def _drain_upstream(self) -> None:
        """Read the little that follows `[DONE]` (the chunked terminator) so the backend connection
        goes back to the pool instead of being closed: a new TCP connect per request is costly.
        Runs after the client has its last frame; bounded, since a backend may linger."""
        try:
            async with asyncio.timeout(1.0):
                async for _ in self._raw_iter:
                    pass
        except (TimeoutError, httpx.HTTPError):
            pass

    async def _keepalive(self, send: Send) -> None:
        loop = self._loop
        assert loop is not None
        interval = self.keepalive_interval
        while True:
            delay = self._last_write + interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            self._last_write = loop.time()
            await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})

    # ---------------------------------------------------------------------------------------- pump

    async def _fail_frames(self, message: str, code: str) -> list[bytes]:
        if self.finished_terminal:
            return []
        events = self.translator.fail(message, code)
        return await self._frames(events)

    async def _frames(self, events: list[dict[str, Any]]) -> list[bytes]:
        """Encode events; on the terminal one, run `on_terminal` first (store before the client sees it)."""
        if events and events[-1]["type"] in TERMINAL_TYPES and not self.finished_terminal:
            self.finished_terminal = True
            response = events[-1].get("response")
            self.record.set_usage(response)
            if self.on_terminal is not None and isinstance(response, dict):
                try:
                    await self.on_terminal(response)
                except Exception:
                    log.exception("storing response %s failed", response.get("id"))
        return [encode_sse(event) for event in events]

    async def _run_pump(self, send: Send, tail: list[bytes]) -> None:
        """Read upstream, translate, write; leaves the closing frames (minus [DONE]) in `tail`."""
        translator = self.translator
        decoder = SSEDecoder()
        loads = orjson.loads
        loop = self._loop
        assert loop is not None
        raw_iter = self._raw_iter = (
            self.upstream.aiter_bytes() if self.upstream.headers.get("content-encoding") else self.upstream.aiter_raw()
        ).__aiter__()
        record = self.record
        saw_done = False
        try:
            if self.upstream.headers.get("content-type", "").startswith("application/json"):
                # Some backends ignore `stream: true` (tools on older Ollama): one JSON body instead.
                await self._pump_whole(tail)
                return
            while True:
                self._reading = True
                try:
                    raw = await raw_iter.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    self._reading = False
                frames = decoder.feed(raw)
                if not frames:
                    if self.abort_reason is not None:
                        raise asyncio.CancelledError
                    continue
                out: list[bytes] = []
                for _name, data in frames:
                    if data == "[DONE]":
                        saw_done = True
                        break
                    try:
                        chunk = loads(data)
                    except orjson.JSONDecodeError:
                        out.extend(await self._fail_frames(
                            f"Upstream {self.upstream_name} sent a malformed chunk.", "upstream_malformed_chunk"))  # fmt: skip
                        break
                    if not isinstance(chunk, dict):
                        out.extend(await self._fail_frames(
                            f"Upstream {self.upstream_name} sent a chunk that is not an object.", "upstream_malformed_chunk"))  # fmt: skip
                        break
                    if "error" in chunk and self.secrets:  # backends echo keys in error text
                        chunk = scrub_value(chunk, self.secrets)
                    events = translator.feed(chunk)
                    if events:
                        if record.first_token is None and len(events) > 0 and _has_output(events):
                            record.mark_first_token()
                        if events[-1]["type"] in TERMINAL_TYPES:
                            out.extend(await self._frames(events))
                            break
                        out.extend([encode_sse(e) for e in events])
                if out:
                    if self.finished_terminal:
                        tail.extend(out)
                        return
                    self._last_write = loop.time()
                    await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
                if saw_done:
                    self._drain = True
                if self.finished_terminal or saw_done:
                    break
                if self.abort_reason is not None:
                    raise asyncio.CancelledError
            if not self.finished_terminal:
                if not saw_done:
                    for _name, data in decoder.close():
                        if data != "[DONE]":
                            try:
                                chunk = loads(data)
                            except orjson.JSONDecodeError:
                                continue
                            if isinstance(chunk, dict):
                                tail.extend(await self._frames(translator.feed(chunk)))
                if not self.finished_terminal:
                    tail.extend(await self._frames(_finish(translator, saw_done)))
        except httpx.TimeoutException:
            tail.extend(await self._fail_frames(
                f"Upstream {self.upstream_name} sent nothing for too long.", "upstream_timeout"))  # fmt: skip
        except httpx.HTTPError as exc:
            tail.extend(await self._fail_frames(
                f"Upstream {self.upstream_name} connection failed mid-stream ({type(exc).__name__}).", "upstream_error"))  # fmt: skip


    async def _pump_whole(self, tail: list[bytes]) -> None:
        body = await self.upstream.aread()
        try:
            completion = orjson.loads(body)
        except orjson.JSONDecodeError:
            completion = None
        if not isinstance(completion, dict):
            tail.extend(await self._fail_frames(
                f"Upstream {self.upstream_name} sent a body that is not JSON.", "upstream_malformed_chunk"))  # fmt: skip
            return
        # An error body becomes an error chunk (the translator fails the stream); an answer becomes the
        # same single chunk `chat_completion_to_response` uses, so a whole body streams as it would translate.
        if completion.get("error") and not completion.get("choices"):
            chunk: dict[str, Any] = {"error": completion["error"]}
        else:
            chunk = completion_to_chunk(completion)
        if "error" in chunk and self.secrets:
            chunk = scrub_value(chunk, self.secrets)
        events = self.translator.feed(chunk)
        if events and _has_output(events):
            self.record.mark_first_token()
        tail.extend(await self._frames(events))
        if not self.finished_terminal:
            tail.extend(await self._frames(self.translator.finish()))


def _finish(translator: Any, done_seen: bool) -> list[dict[str, Any]]:
    """End of the upstream body; without `[DONE]` and without a finish reason the answer was cut."""
    return translator.finish(done_seen=done_seen)


_ABORT_ERRORS = {
    # The translator keeps only the SDK's ResponseError codes, so this arrives as server_error with
    # the message; the code is passed anyway for translators that keep it.
    "shutdown": ("The server is shutting down.", "server_shutting_down"),
}

_OUTPUT_EVENT_TYPES = frozenset((
    "response.output_text.delta", "response.reasoning_summary_text.delta", "response.reasoning_text.delta",
    "response.function_call_arguments.delta", "response.refusal.delta", "response.output_item.added",
    "response.custom_tool_call_input.delta", "response.reasoning.delta",
))  # fmt: skip


def _has_output(events: list[dict[str, Any]]) -> bool:
    return any(e["type"] in _OUTPUT_EVENT_TYPES for e in events)
