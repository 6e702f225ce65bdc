"""uvicorn's httptools protocol with the client-side ceilings it lacks, all enforced before the app
(and so before any API key is checked).

uvicorn bounds neither the request header block nor the time to send it, and judges a body only by
the app's own gap timeout: one client could hold gigabytes in headers, or every file descriptor
with connections that never finish their headers. This subclass adds, per `server.config.Limits`:

- `request_max_header_bytes` / `request_max_headers`: bytes are counted as they arrive, before
  httptools assembles the header (it joins fragments by concatenation); over the limit → 431;
- `request_header_timeout`: from connection open (or, on a kept-alive connection, from the first
  byte of the next request) to the end of the headers; over it → 408 (a connection that sent
  nothing at all is just closed);
- `request_min_body_rate` over `request_body_rate_window` (`server.limits.BodyRate`): a body
  arriving slower than that on average → 408, whatever the gaps;
- `max_client_connections`: a connection beyond it is answered 503 at once and closed, freeing its
  descriptor; a request while that many are still in flight is answered 503 too (uvicorn's
  `limit_concurrency`, answered here in OpenAI's shape instead of plain text).

Every answer is `{"error": {message, type, param, code}}` with `connection: close`.

Wiring: `uvicorn.Config(app, http=bounded_protocol(config.limits), ...)` (one class per limits),
or `http=BoundedHttpToolsProtocol` after `configure(limits)` in the same process.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from server.config import Limits
from server.limits import BodyRate, raw_error_response

__all__ = ["BoundedHttpToolsProtocol", "bounded_protocol", "configure"]


class _Refuse(Exception):
    """Raised from a parser callback to stop parsing; `data_received` answers with `refusal`."""


class _LazyFlowControl(FlowControl):
    """uvicorn's `FlowControl` with its `asyncio.Event` made only when writing is first paused.

    One per client connection; most never pause (an idle stream never does), and an `Event` with
    its waiter deque is the largest object a held connection would otherwise keep. Every method that
    touches the event is overridden here, so none of uvicorn's reaches it unmade."""

    def __init__(self, transport: asyncio.Transport) -> None:  # FlowControl.__init__ would make the event
        self._transport = transport
        self.read_paused = False
        self.write_paused = False
        self._is_writable_event: asyncio.Event | None = None  # type: ignore[assignment]

    async def drain(self) -> None:
        event = self._is_writable_event
        if event is not None:
            await event.wait()

    def pause_writing(self) -> None:
        if not self.write_paused:
            self.write_paused = True
            if self._is_writable_event is None:
                self._is_writable_event = asyncio.Event()
            self._is_writable_event.clear()

    def resume_writing(self) -> None:
        if self.write_paused:
            self.write_paused = False
            if self._is_writable_event is not None:
                self._is_writable_event.set()


_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Pipeline(list):  # type: ignore[type-arg]
    """uvicorn's queue of pipelined requests as a list (`appendleft`, `pop`, truth are all it asks of
    it): an empty list is 56 bytes, an empty deque 600, on every connection for the rare client that
    pipelines."""

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


class _HeadWithBody:
    """The transport one response's cycle writes through: the response head is held until the
    body's first bytes, and both leave in one `writelines` (one syscall, one TCP segment) instead of
    two. uvloop writes each `write` at once, so without this every answer costs the client an extra
    wake-up before its first byte of body, on the path of the time to first event. A head with no
    body in the same step of the loop (a stream whose first event is not ready yet) is written at
    the end of that step, so nothing is ever held longer than that."""

    __slots__ = ("_head", "_loop", "_state", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head = b""
        self._state = 0  # 0: nothing written yet, 1: the head is held, 2: writes pass through

    def write(self, data: bytes) -> None:
        state = self._state
        if state == 2:
            self._transport.write(data)
        elif state == 1:
            self._state = 2
            head, self._head = self._head, b""
            self._transport.writelines((head, data))
        elif data == _CONTINUE:  # an interim answer, before the head: at once
            self._transport.write(data)
        else:
            self._state = 1
            self._head = data
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write a held head now (nothing follows in this step, or the connection is being closed)."""
        if self._state == 1:
            self._state = 2
            head, self._head = self._head, b""
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # anything else the cycle might ask of its transport
        return getattr(self._transport, name)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` plus header, header-time, body-rate and connection ceilings."""

    # Slots for this class's own fields: uvicorn's ~30 already fill the instance dict's shared-key
    # table, and more would turn every connection's dict into a private table (~1.5 KB each).
    __slots__ = ("_body_rate", "_body_timer", "_head_bytes", "_head_size", "_head_timer", "_header_count",
                 "_in_head", "_refusal")

    limits: Limits = Limits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipeline = _Pipeline()  # type: ignore[assignment]
        self.limit_concurrency = None  # checked in `on_headers_complete`, answered in OpenAI's shape
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._head_size = (
            0  # the parsed block: request target and header fields, as httptools hands them over
        )
        self._refusal: bytes | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_rate: BodyRate | None = None

    # ------------------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = _LazyFlowControl(transport)
        if len(self.connections) > self.limits.max_client_connections:
            self._answer_and_close(raw_error_response(
                503, "The server has too many open connections; retry shortly.", "server_busy"))  # fmt: skip
            # No longer one of the open connections, although asyncio reports it lost only later:
            # counted until then, it would push a client already inside the limit over it.
            self.connections.discard(self)
            return
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _answer_and_close(self, answer: bytes) -> None:
        self._cancel_timers()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The app may still be running: it sees a disconnect, and its writes are dropped.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                answer = b""
                if isinstance(cycle.transport, _HeadWithBody):
                    cycle.transport.flush()  # a head it holds goes first, as it would have without it
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if answer:
                transport.write(answer)
            transport.close()

    # ------------------------------------------------------------------------ header ceilings

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.request_header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and self._head_bytes == 0:
            # Nothing of a request yet (a client's pre-opened connection): close it quietly, as a
            # keep-alive timeout would; an unasked-for 408 would only confuse its connection pool.
            self._answer_and_close(b"")
        elif self._in_head:
            self._answer_and_close(raw_error_response(
                408, f"The request headers did not arrive within {self.limits.request_header_timeout:g} seconds "
                "(limits.request_header_timeout).", "request_timeout"))  # fmt: skip

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self._in_head:
            # Raw bytes while the headers are incomplete: catches one endless header line, which
            # httptools would otherwise keep concatenating without ever calling back.
            self._head_bytes += len(data)
        elif self._body_rate is not None:
            self._body_rate.feed(len(data))
        try:
            super().data_received(data)
        except _Refuse:  # pragma: no cover - httptools wraps callback errors; kept for safety
            pass
        if self._refusal is not None:
            refusal, self._refusal = self._refusal, None
            self._answer_and_close(refusal)
            return
        # The clocks start only for what is still incomplete after this read (most requests arrive
        # whole in one read, and then neither timer is made only to be cancelled): the same deadlines,
        # since this is the same moment.
        if self._in_head:
            if self._head_bytes > self.limits.request_max_header_bytes:
                self._refuse_headers()
                self._answer_and_close(self._refusal or b"")
            elif self._head_bytes:
                self._start_head_timer()  # a kept-alive connection: the next request's headers started
        elif self._body_rate is not None and self._body_timer is None:
            self._schedule_body_check()  # the body is still arriving

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:
            return  # a callback refused the request: `data_received` answers
        super().send_400_response(msg)

    def _refuse_headers(self) -> None:
        self._refusal = raw_error_response(
            431, f"The request headers exceed the server's limit of {self.limits.request_max_header_bytes} bytes "
            f"or {self.limits.request_max_headers} fields (limits.request_max_header_bytes, "
            "limits.request_max_headers).", "request_headers_too_large")  # fmt: skip

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        if self._head_size > self.limits.request_max_header_bytes:
            self._refuse_headers()
            raise _Refuse
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_size += len(name) + len(value) + 4
        if (
            self._header_count > self.limits.request_max_headers
            or self._head_size > self.limits.request_max_header_bytes
        ):
            self._refuse_headers()
            raise _Refuse
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        # uvicorn's limit_concurrency, answered in OpenAI's shape. The connection itself is inside
        # the limit (`connection_made` refused it otherwise): only requests still in flight count,
        # some of them apps going on after their clients left.
        busy = len(self.tasks) >= self.limits.max_client_connections
        app = self.app
        if busy:
            self.app = _server_busy
        try:
            super().on_headers_complete()
        finally:
            self.app = app
        cycle = self.cycle
        if cycle is not None and cycle.transport is self.transport:
            cycle.transport = _HeadWithBody(self.transport, self.loop)  # type: ignore[assignment]
            # The cycle's `asyncio.Event` waits with a deque of waiters (600 bytes, held as long as the
            # request, a stream included) for what is at most one waiter: a list does the same
            # (`append`, `remove`, iteration are all `Event` asks of it).
            cycle.message_event._waiters = []  # type: ignore[attr-defined]
        self._start_body_rate()

    # ------------------------------------------------------------------------ body rate

    def _start_body_rate(self) -> None:
        limits = self.limits
        self._body_rate = BodyRate(
            limits.request_min_body_rate, limits.request_body_rate_window, self.loop.time()
        )  # its timer: `data_received`, once the read that completed the headers left the body unfinished

    def _schedule_body_check(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
        self._body_timer = self.loop.call_later(self.limits.request_body_rate_window, self._check_body_rate)

    def _check_body_rate(self) -> None:
        self._body_timer = None
        rate = self._body_rate
        cycle = self.cycle
        if rate is None or cycle is None or not cycle.more_body or cycle.response_complete:
            return  # the body is complete (or there is none): nothing to judge
        now = self.loop.time()
        if self.flow is not None and self.flow.read_paused:
            rate.restart(now)  # the app has not taken what arrived: not the client's fault
        elif rate.too_slow(now):
            self._answer_and_close(raw_error_response(408, rate.message(), "request_timeout"))
            return
        self._schedule_body_check()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # What follows on this connection is the next request's head (its timer starts with its
        # first byte, in `data_received`; until then uvicorn's keep-alive timeout applies).
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._head_size = (
            0  # the parsed block: request target and header fields, as httptools hands them over
        )
        self._body_rate = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None


async def _server_busy(scope: Any, receive: Any, send: Any) -> None:
    body = raw_error_response(503, "The server is at its connection limit; retry shortly.", "server_busy")
    head, _, payload = body.partition(b"\r\n\r\n")
    headers = [tuple(line.split(b": ", 1)) for line in head.split(b"\r\n")[1:]]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


def bounded_protocol(limits: Limits) -> type[BoundedHttpToolsProtocol]:
    """A protocol class enforcing `limits` (uvicorn instantiates the class itself, per connection)."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"limits": limits})


def configure(limits: Limits) -> None:
    """Set the limits `BoundedHttpToolsProtocol` itself enforces (for a worker process, where the
    class is named by import path rather than built by `bounded_protocol`)."""
    BoundedHttpToolsProtocol.limits = limits
