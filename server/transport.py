"""A lean HTTP/1.1 transport for httpx: asyncio protocol + httptools, per-origin keep-alive pool.

Why: profiling the bridge streaming chat answers showed most CPU in httpcore/h11/anyio per body
read (pool bookkeeping, h11 events, socket-readability probes), far more than the translation
itself. The owner wants httpx as the client API, so this plugs in below it as an
`httpx.AsyncBaseTransport`: the C parser from uvicorn's dependency (httptools) parses responses,
an `asyncio.Protocol` receives bytes with no per-read probing, and a body read hands over every
byte already received in one piece. Only plain `http://` is handled here; anything else goes to
httpx's default transport.

Contract kept with `server/upstream.py` and `server/streaming.py`: timeouts come from
`request.extensions["timeout"]` and the `read` value is read again for every body read (the
bridge switches it to the idle timeout after the headers); failures raise the httpx exceptions
httpcore would (`ConnectTimeout`, `ConnectError`, `PoolTimeout`, `ReadTimeout`, `WriteTimeout`,
`RemoteProtocolError`, `ReadError`), which the bridge maps to 502/504 and `response.failed`.

Ceilings (`server.config.Limits`, raised as `server.limits.UpstreamLimitError`): the response header
block is counted as bytes arrive, before httptools assembles it (it joins header fragments by
concatenation, so a huge header also costs time); body bytes are counted as they are parsed; an
answer with a `Content-Encoding` other than identity is refused at its headers (the bridge asks for
identity, and httpx would otherwise inflate it without bound). The same checks wrap the fallback
transport used for `https://`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httptools
import httpx

from server.config import Limits
from server.limits import UpstreamLimitError, too_large, unsupported_encoding

__all__ = ["FastTransport", "RawResponse", "ResponseHeaders"]

#: Buffered, unread body bytes above which the socket stops being read (backpressure).
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
#: The most body bytes one read hands over (see `_Connection.take`).
_MAX_TAKE = 64 * 1024

_Origin = tuple[str, int]
#: `{"connect", "read", "write", "pool"}` seconds (None: no limit), as httpx keeps them per request.
Timeouts = dict[str, Any]

#: Content-Encoding values that mean "not encoded".
_IDENTITY = frozenset((b"", b"identity"))


class _Abort(Exception):
    """Raised from a parser callback to stop parsing after `_fail` (httptools wraps it)."""


def _encoding_refused(value: bytes) -> bool:
    return value.strip().lower() not in _IDENTITY


def _timeout_of(timeouts: Timeouts | None, key: str) -> float | None:
    if isinstance(timeouts, dict):
        value = timeouts.get(key)
        return float(value) if value is not None else None
    return None


def _timeouts_of(request: httpx.Request) -> Timeouts | None:
    """The request's timeout dict (httpx's `extensions["timeout"]`), read again for every body read."""
    timeouts = request.extensions.get("timeout")
    return timeouts if isinstance(timeouts, dict) else None


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Connection(asyncio.Protocol):
    """One keep-alive TCP connection; parses one response at a time into a byte buffer.

    The protocol buffers body bytes in a list and wakes at most one waiting reader, so a reader
    that lags receives everything that arrived meanwhile in one read (the translator handles
    several SSE frames per read for the price of one)."""

    def __init__(self, origin: _Origin, loop: asyncio.AbstractEventLoop, ceilings: Limits | None = None) -> None:
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
        counting_head = not self.headers_done
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
            if name.lower() == b"content-encoding" and _encoding_refused(value):
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
        self._reset()
        self.active = True
        self.head_only = head_only
        self.parser = httptools.HttpResponseParser(self)

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and self.error is None
            and not self.closed
            and not self.head_only
            and not self.buffer
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


class _Body(httpx.AsyncByteStream):
    """A response body read straight from the connection's buffer; closing it frees the connection."""

    def __init__(
        self, pool: _Pool, conn: _Connection, timeouts: Timeouts | None, request: httpx.Request | None = None
    ) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self._timeouts = timeouts
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            conn = self._conn
            if conn is None:
                return
            if conn.buffer:
                yield conn.take()
                # Let the loop run between two reads even when the next is already buffered: a
                # backend that sends faster than the bridge translates would otherwise keep this
                # reader running without a pause, and every other client waiting.
                await asyncio.sleep(0)
                continue
            if conn.error is not None:
                error = conn.error
                self._finish()
                if isinstance(error, httpx.RequestError) and self._request is not None:
                    error.request = self._request
                raise error
            if conn.complete:
                self._finish()
                return
            await conn.wait(_timeout_of(self._timeouts, "read"), self._request, httpx.ReadTimeout)

    def _finish(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn, conn.reusable)

    async def aclose(self) -> None:
        self._finish()


class ResponseHeaders(Mapping[str, str]):
    """A response's headers as `httpx.Headers` reads them (names case-insensitive, repeated fields
    joined with ", ", values decoded as ASCII, else UTF-8, else Latin-1), built on first use."""

    __slots__ = ("_map", "_raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._map: dict[str, str] | None = None

    def _mapping(self) -> dict[str, str]:
        mapping = self._map
        if mapping is None:
            encoding = _header_encoding(self._raw)
            mapping = {}
            for name, value in self._raw:
                key, text = name.decode(encoding).lower(), value.decode(encoding)
                mapping[key] = f"{mapping[key]}, {text}" if key in mapping else text
            self._map = mapping
        return mapping

    def __getitem__(self, key: str) -> str:
        return self._mapping()[key.lower()]

    def get(self, key: str, default: Any = None) -> Any:
        """One field, found without decoding the others when it occurs once and is ASCII (which
        reads the same in every encoding `httpx.Headers` might pick)."""
        if self._map is None and key.isascii():
            target = key.lower().encode("ascii")
            found: bytes | None = None
            for name, value in self._raw:
                if name.lower() == target:
                    if found is not None:
                        found = None  # repeated: joined by the general path
                        break
                    found = value
            else:
                if found is None:
                    return default
            if found is not None and found.isascii():
                return found.decode("ascii")
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._mapping()

    def __iter__(self) -> Iterator[str]:
        return iter(self._mapping())

    def __len__(self) -> int:
        return len(self._mapping())

    @property
    def raw(self) -> list[tuple[bytes, bytes]]:
        return self._raw


def _header_encoding(raw: list[tuple[bytes, bytes]]) -> str:
    for encoding in ("ascii", "utf-8"):
        try:
            for name, value in raw:
                name.decode(encoding)
                value.decode(encoding)
        except UnicodeDecodeError:
            continue
        return encoding
    return "iso-8859-1"


class RawResponse:
    """An answer from `FastTransport.send_raw`: what the bridge reads of an `httpx.Response`
    (`status_code`, `headers`, `aiter_raw`, `aread`, `aclose`), without its model layer.
    `timeouts` is the live dict the body reads consult (the bridge switches `read` to the idle
    timeout once the headers are in)."""

    __slots__ = ("_body", "headers", "status_code", "timeouts")

    def __init__(self, status: int, raw_headers: list[tuple[bytes, bytes]], body: _Body, timeouts: Timeouts) -> None:
        self.status_code = status
        self.headers = ResponseHeaders(raw_headers)
        self.timeouts = timeouts
        self._body = body

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        async for part in self._body:
            yield part
        await self.aclose()

    async def aread(self) -> bytes:
        return b"".join([part async for part in self.aiter_raw()])

    async def aclose(self) -> None:
        await self._body.aclose()


class _BoundedStream(httpx.AsyncByteStream):
    """The fallback transport's body with the answer-size ceiling applied."""

    def __init__(self, stream: httpx.AsyncByteStream, request: httpx.Request, limit: int) -> None:
        self._stream = stream
        self._request = request
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        async for part in self._stream:
            received += len(part)
            if received > self._limit:
                await self._stream.aclose()
                error = too_large("an answer", "upstream_max_answer_bytes", self._limit)
                error.request = self._request
                raise error
            yield part

    async def aclose(self) -> None:
        await self._stream.aclose()


async def _bounded(response: httpx.Response, request: httpx.Request, ceilings: Limits) -> httpx.Response:
    """The ceilings `_Connection` applies, for a response from the fallback transport (its header
    block is already bounded by h11's own limit)."""
    encoding = response.headers.get("content-encoding", "")
    if _encoding_refused(encoding.encode("latin-1", "replace")):
        await response.aclose()
        error: UpstreamLimitError = unsupported_encoding(encoding)
        error.request = request
        raise error
    stream = response.stream
    assert isinstance(stream, httpx.AsyncByteStream)
    response.stream = _BoundedStream(stream, request, ceilings.upstream_max_answer_bytes)
    return response


class _Pool:
    """Keep-alive connections per origin: LIFO idle lists, a cap on all connections, idle expiry."""

    def __init__(
        self, max_connections: int | None, max_keepalive: int | None, keepalive_expiry: float | None
    ) -> None:
        self.max_connections = max_connections
        self.max_keepalive = max_keepalive
        self.keepalive_expiry = keepalive_expiry
        self.idle: dict[_Origin, list[_Connection]] = {}
        self.idle_count = 0
        self.total = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.closing = False
        self.ceilings = Limits()

    def _pop_idle(self, origin: _Origin, now: float) -> _Connection | None:
        stack = self.idle.get(origin)
        expiry = self.keepalive_expiry
        while stack:
            conn = stack.pop()
            self.idle_count -= 1
            if conn.closed or (expiry is not None and now - conn.idle_since > expiry):
                self._discard(conn)
                continue
            return conn
        return None

    def _discard(self, conn: _Connection) -> None:
        conn._close_transport()
        self.total -= 1
        self._notify()

    def _notify(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _evict_one_idle(self) -> bool:
        """Close the oldest idle connection of any origin to make room for a new one."""
        for stack in self.idle.values():
            if stack:
                conn = stack.pop(0)
                self.idle_count -= 1
                self._discard(conn)
                return True
        return False

    async def acquire(self, origin: _Origin, timeouts: Timeouts | None, request: httpx.Request | None) -> _Connection:
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            if self.closing:
                raise httpx.ConnectError("The transport is closed.", request=request)
            conn = self._pop_idle(origin, loop.time())
            if conn is not None:
                return conn
            if self.max_connections is None or self.total < self.max_connections or self._evict_one_idle():
                self.total += 1
                try:
                    return await self._connect(origin, timeouts, request, loop)
                except BaseException:
                    self.total -= 1
                    self._notify()
                    raise
            if deadline is None:
                pool_timeout = _timeout_of(timeouts, "pool")
                deadline = loop.time() + pool_timeout if pool_timeout is not None else float("inf")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise httpx.PoolTimeout("Timed out waiting for a free connection.", request=request)
            waiter = loop.create_future()
            self.waiters.append(waiter)
            try:
                async with asyncio.timeout(None if remaining == float("inf") else remaining):
                    await waiter
            except TimeoutError:
                raise httpx.PoolTimeout("Timed out waiting for a free connection.", request=request) from None
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._notify()  # pass the wake-up on to the next waiter
                raise
            finally:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(waiter)

    async def _connect(
        self, origin: _Origin, timeouts: Timeouts | None, request: httpx.Request | None,
        loop: asyncio.AbstractEventLoop,
    ) -> _Connection:
        conn = _Connection(origin, loop, self.ceilings)
        try:
            async with asyncio.timeout(_timeout_of(timeouts, "connect")):
                await loop.create_connection(lambda: conn, origin[0], origin[1])
        except TimeoutError:
            raise httpx.ConnectTimeout("Timed out connecting.", request=request) from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from None
        return conn

    def release(self, conn: _Connection, reusable: bool) -> None:
        conn.active = False
        conn.parser = None if not reusable else conn.parser
        if (
            not reusable
            or self.closing
            or (self.max_keepalive is not None and self.idle_count >= self.max_keepalive)
        ):
            self._discard(conn)
            return
        conn.idle_since = conn.loop.time()
        conn.buffer = []
        self.idle.setdefault(conn.origin, []).append(conn)
        self.idle_count += 1
        self._notify()

    def close(self) -> None:
        self.closing = True
        for stack in self.idle.values():
            for conn in stack:
                conn._close_transport()
                self.total -= 1
        self.idle.clear()
        self.idle_count = 0
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)


class FastTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 for `http://` URLs over asyncio + httptools; other schemes use httpx's transport."""

    def __init__(
        self,
        *,
        limits: httpx.Limits | None = None,
        fallback: httpx.AsyncBaseTransport | None = None,
        ceilings: Limits | None = None,
    ) -> None:
        limits = limits or httpx.Limits()
        self.ceilings = ceilings or Limits()
        self._pool = _Pool(limits.max_connections, limits.max_keepalive_connections, limits.keepalive_expiry)
        self._pool.ceilings = self.ceilings
        self._fallback = fallback
        self._limits = limits

    def _fallback_transport(self) -> httpx.AsyncBaseTransport:
        if self._fallback is None:
            self._fallback = httpx.AsyncHTTPTransport(limits=self._limits, trust_env=False)
        return self._fallback

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            response = await self._fallback_transport().handle_async_request(request)
            return await _bounded(response, request, self.ceilings)
        origin = (url.host, url.port or 80)
        try:
            body: bytes = request.content
        except httpx.RequestNotRead:
            body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
        timeouts = _timeouts_of(request)
        conn = await self._exchange(origin, self._head(request, body) + body, timeouts, request,
                                    head_only=request.method == "HEAD")  # fmt: skip
        return httpx.Response(
            conn.status,
            headers=conn.headers,
            stream=_Body(self._pool, conn, timeouts, request),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def send_raw(self, origin: _Origin, data: bytes, timeouts: Timeouts) -> RawResponse:
        """Send one request already encoded as bytes (head and body) to `origin` on a pooled
        connection, and return its answer once the headers are in.

        The bridge's hot path: no `httpx.Request`/`httpx.Response` objects, no URL parsing, no
        header merging (the caller pre-built the head once per upstream). The same pool, ceilings and
        exceptions as `handle_async_request`; `timeouts["read"]` is read again for every body read."""
        conn = await self._exchange(origin, data, timeouts, None)
        return RawResponse(conn.status, conn.headers, _Body(self._pool, conn, timeouts), timeouts)

    async def _exchange(
        self, origin: _Origin, data: bytes, timeouts: Timeouts | None, request: httpx.Request | None,
        *, head_only: bool = False,
    ) -> _Connection:
        """Write `data` on a pooled connection and wait for the answer's headers."""
        conn = await self._pool.acquire(origin, timeouts, request)
        try:
            conn.start(head_only)
            await conn.send(data, _timeout_of(timeouts, "write"), request)
            read_timeout = _timeout_of(timeouts, "read")
            while not conn.headers_done:
                if conn.error is not None:
                    error = conn.error
                    if isinstance(error, httpx.RequestError) and request is not None:
                        error.request = request
                    raise error
                await conn.wait(read_timeout, request, httpx.ReadTimeout)
        except BaseException:
            conn._close_transport()
            self._pool.release(conn, False)
            raise
        return conn

    @staticmethod
    def _head(request: httpx.Request, body: bytes) -> bytes:
        parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
        chunked = False
        for name, value in request.headers.raw:
            if name.lower() == b"transfer-encoding":
                chunked = True
                continue
            parts += (name, b": ", value, b"\r\n")
        if chunked:
            # The whole body is in hand, so send it framed by its length rather than in chunks.
            parts += (b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    async def aclose(self) -> None:
        self._pool.close()
        if self._fallback is not None:
            await self._fallback.aclose()
