"""One keep-alive HTTP/1.1 connection to a backend, as an `asyncio.Protocol` fed to httptools.

Why a module of its own: the connection is the part of `server/transport.py` that reads bytes and
enforces the backend-side `[limits]` ceilings as they arrive (header block counted before httptools
assembles it, body bytes counted as parsed, a `Content-Encoding` other than identity refused at the
headers); the pool and the httpx transport around it only hand connections out and take them back.
Failures are the httpx exceptions httpcore would raise, so the bridge maps them the same way.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
import httpx

from server.config import Limits
from server.limits import too_large, unsupported_encoding

__all__ = ["Connection", "Origin", "Timeouts", "encoding_refused", "timeout_of", "timeouts_of"]

#: Buffered, unread body bytes above which the socket stops being read (backpressure).
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
#: The most body bytes one read hands over (see `Connection.take`).
_MAX_TAKE = 64 * 1024

Origin = tuple[str, int]
#: `{"connect", "read", "write", "pool"}` seconds (None: no limit), as httpx keeps them per request.
Timeouts = dict[str, Any]

#: Content-Encoding values that mean "not encoded".
_IDENTITY = frozenset((b"", b"identity"))


class _Abort(Exception):
    """Raised from a parser callback to stop parsing after `_fail` (httptools wraps it)."""


def encoding_refused(value: bytes) -> bool:
    return value.strip().lower() not in _IDENTITY


def timeout_of(timeouts: Timeouts | None, key: str) -> float | None:
    if isinstance(timeouts, dict):
        value = timeouts.get(key)
        return float(value) if value is not None else None
    return None


def timeouts_of(request: httpx.Request) -> Timeouts | None:
    """The request's timeout dict (httpx's `extensions["timeout"]`), read again for every body read."""
    timeouts = request.extensions.get("timeout")
    return timeouts if isinstance(timeouts, dict) else None


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Connection(asyncio.Protocol):
    """One keep-alive TCP connection; parses one response at a time into a byte buffer.

    The protocol buffers body bytes in a list and wakes at most one waiting reader, so a reader
    that lags receives everything that arrived meanwhile in one read (the translator handles
    several SSE frames per read for the price of one)."""

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop, ceilings: Limits | None = None) -> None:
        self.origin = origin
        self.loop = loop
        ceilings = ceilings or Limits()
        self.max_header_bytes = ceilings.upstream_max_header_bytes
        self.max_answer_bytes = ceilings.upstream_max_answer_bytes
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._write_paused: asyncio.Future[None] | None = None
        self._read_paused = False
        self._reset()

    def _reset(self) -> None:
        self.parser: Any = None
        self.active = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.keep_alive = False
        self.complete = False
        self.error: Exception | None = None
        self.buffer: list[bytes] = []
        self.buffered = 0
        #: Raw bytes that came in the read that completed the headers, after them: parsed when the
        #: body is first read (`parse_pending`), so the stream's first event need not wait for them.
        self.pending: bytes = b""
        self.head_bytes = 0  # bytes fed while the headers were incomplete
        self.body_bytes = 0  # body bytes of this answer so far
        self.waiter: asyncio.Future[None] | None = None
        self.framed = False  # has content-length or chunked: EOF is not a valid end of body
        self.head_only = False

    # --------------------------------------------------------------------------- asyncio protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.active or self.complete or self.error is not None:
            # Bytes on an idle connection (or after the message): nothing can be trusted any more.
            self._close_transport()
            return
        if self.pending:  # the body reader has not looked yet: keep the order
            data, self.pending = self.pending + data, b""
        elif not self.headers_done:
            # A backend that sends its headers and a burst of body in one write: only the head is
            # parsed now, so the waiting request sees its status at once; the rest is parsed when
            # the body is read (a few dozen chunk callbacks no longer stand before the first event).
            end = data.find(b"\r\n\r\n")
            if 0 <= end < len(data) - 4:
                head, rest = data[: end + 4], data[end + 4 :]
                self._feed(head, True)
                if self.headers_done and not self.complete and self.error is None:
                    self.pending = rest
                    return
                if self.error is not None or not self.active:
                    return
                data = rest  # an interim 1xx head (or a HEAD answer): on as one read
        self._feed(data, not self.headers_done)

    def parse_pending(self) -> None:
        """Parse the bytes `data_received` left after the headers (the body reader calls this)."""
        data, self.pending = self.pending, b""
        if data and self.active and self.error is None:
            self._feed(data, False)

    def _feed(self, data: bytes, counting_head: bool) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("Unexpected protocol upgrade from the server."))
            return
        except httptools.HttpParserError as exc:
            # A callback's `_Abort` arrives wrapped; `_fail` has already recorded why.
            self._fail(httpx.RemoteProtocolError(f"Malformed HTTP response: {exc}"))
            return
        if counting_head and not self.headers_done:
            # Counted per read rather than per header so that one endless header line is caught too;
            # a read is at most a few hundred KiB, so the block is refused soon after the limit.
            self.head_bytes += len(data)
            if self.head_bytes > self.max_header_bytes:
                self._fail(too_large("a response header block", "upstream_max_header_bytes", self.max_header_bytes))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pending:
            self.parse_pending()  # what came before the end is parsed before the end is judged
        self.closed = True
        self.transport = None
        if self._write_paused is not None and not self._write_paused.done():
            self._write_paused.set_result(None)
        if not self.active or self.complete or self.error is not None:
            return
        if self.headers_done and not self.framed:
            self.on_message_complete()  # a close-delimited body ends at EOF
            return
        if not self.headers_done:
            message = "Server disconnected without sending a response."
        else:
            message = "peer closed connection without sending complete message body"
        error: Exception
        if isinstance(exc, OSError) and not isinstance(exc, ConnectionResetError):
            error = httpx.ReadError(str(exc) or message)
        else:
            error = httpx.RemoteProtocolError(message)
        self._fail(error)

    def pause_writing(self) -> None:
        if self._write_paused is None or self._write_paused.done():
            self._write_paused = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._write_paused is not None and not self._write_paused.done():
            self._write_paused.set_result(None)

    # --------------------------------------------------------------------------- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length" or (lowered == b"transfer-encoding" and b"chunked" in value.lower()):
            self.framed = True

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.status = parser.get_status_code()
        if 100 <= self.status < 200:
            # An interim response (100 Continue, 103 Early Hints): its final response follows.
            self.headers = []
            self.framed = False
            return
        for name, value in self.headers:
            if name.lower() == b"content-encoding" and encoding_refused(value):
                self._fail(unsupported_encoding(value.decode("latin-1")))
                raise _Abort
        if self.status in (204, 304) or self.head_only:
            self.framed = True
        self.headers_done = True
        # llhttp forgets keep-alive once the message completes: ask while the headers are fresh.
        self.keep_alive = bool(parser.should_keep_alive())
        if self.head_only:
            # httptools does not know the request was HEAD and would wait for a body: end here and
            # never reuse the connection, whose parser state is now unreliable.
            self.complete = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.error is not None:
            raise _Abort
        self.body_bytes += len(body)
        if self.body_bytes > self.max_answer_bytes:
            self._fail(too_large("an answer", "upstream_max_answer_bytes", self.max_answer_bytes))
            raise _Abort
        self.buffer.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.headers_done:
            return  # end of an interim 1xx response
        self.complete = True
        self._wake()

    # --------------------------------------------------------------------------- helpers

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self._close_transport()
        self._wake()

    def _close_transport(self) -> None:
        self.closed = True
        transport = self.transport
        if transport is not None:
            transport.close()

    def take(self) -> bytes:
        """The buffered body bytes as one piece, at most about `_MAX_TAKE` (resuming the socket if
        it was paused). Capped so that one read never hands the translator more work than a few
        milliseconds' worth: the reader yields to the loop between reads, not within one."""
        buffer = self.buffer
        if self.buffered <= _MAX_TAKE:
            data = buffer[0] if len(buffer) == 1 else b"".join(buffer)
            self.buffer = []
            self.buffered = 0
        else:
            size = 0
            count = 0
            while count < len(buffer) and size < _MAX_TAKE:
                size += len(buffer[count])
                count += 1
            data = b"".join(buffer[:count])
            if len(data) > _MAX_TAKE:  # one socket read larger than the cap: split it
                self.buffer = [data[_MAX_TAKE:], *buffer[count:]]
                data = data[:_MAX_TAKE]
            else:
                self.buffer = buffer[count:]
            self.buffered -= len(data)
        if self._read_paused and self.buffered < _LOW_WATER and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()
        return data

    async def wait(self, timeout: float | None, request: httpx.Request | None, exc_type: type[Exception]) -> None:
        """Wait for the protocol's next event (headers, body bytes, end, failure)."""
        waiter = self.waiter = self.loop.create_future()
        handle = self.loop.call_later(timeout, _expire, waiter) if timeout is not None else None
        try:
            await waiter
        except TimeoutError:
            raise exc_type("Timed out reading from the server.", request=request) from None
        finally:
            self.waiter = None
            if handle is not None:
                handle.cancel()

    def start(self, head_only: bool) -> None:
        parser = self.parser  # kept by the pool only after a whole, reusable answer: llhttp is then
        self._reset()  # ready for the next message on this connection, as uvicorn's request parser is
        self.active = True
        self.head_only = head_only
        self.parser = parser if parser is not None else httptools.HttpResponseParser(self)

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and self.error is None
            and not self.closed
            and not self.head_only
            and not self.buffer
            and not self.pending
            and self.keep_alive
        )

    async def send(self, data: bytes, timeout: float | None, request: httpx.Request | None) -> None:
        transport = self.transport
        if transport is None or self.closed:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        transport.write(data)
        paused = self._write_paused
        if paused is not None and not paused.done():
            try:
                async with asyncio.timeout(timeout):
                    await paused
            except TimeoutError:
                raise httpx.WriteTimeout("Timed out writing the request.", request=request) from None
