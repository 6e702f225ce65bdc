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
from collections.abc import AsyncIterator

import httpx

from server.config import Limits
from server.limits import UpstreamLimitError, too_large, unsupported_encoding
from server.response_headers import ResponseHeaders
from server.upstream_connection import Connection, Origin, Timeouts, encoding_refused, timeout_of, timeouts_of

__all__ = ["FastTransport", "RawResponse", "ResponseHeaders"]


class _Body(httpx.AsyncByteStream):
    """A response body read straight from the connection's buffer; closing it frees the connection."""

    def __init__(
        self, pool: _Pool, conn: Connection, timeouts: Timeouts | None, request: httpx.Request | None = None
    ) -> None:
        self._pool = pool
        self._conn: Connection | None = conn
        self._timeouts = timeouts
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            conn = self._conn
            if conn is None:
                return
            if conn.pending:  # what came with the headers, parsed only now that the body is read
                conn.parse_pending()
            if conn.buffer:
                yield conn.take()
                if conn.buffer:
                    # Let the loop run between two reads when the next is already buffered: a
                    # backend that sends faster than the bridge translates would otherwise keep this
                    # reader running without a pause, and every other client waiting. (With nothing
                    # buffered the wait below yields anyway, and an answer that is complete ends at
                    # once: its stream's last steps do not wait behind the next request's.)
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
            await conn.wait(timeout_of(self._timeouts, "read"), self._request, httpx.ReadTimeout)

    def _finish(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn, conn.reusable)

    async def aclose(self) -> None:
        self._finish()


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

    def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body's own iterator (it frees the connection when the body ends), not a generator
        around it: one frame less per held stream and one resumption less per read."""
        return self._body.__aiter__()

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
    """The ceilings `Connection` applies, for a response from the fallback transport (its header
    block is already bounded by h11's own limit)."""
    encoding = response.headers.get("content-encoding", "")
    if encoding_refused(encoding.encode("latin-1", "replace")):
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
        self.idle: dict[Origin, list[Connection]] = {}
        self.idle_count = 0
        self.total = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.closing = False
        self.ceilings = Limits()

    def _pop_idle(self, origin: Origin, now: float) -> Connection | None:
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

    def _discard(self, conn: Connection) -> None:
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

    async def acquire(self, origin: Origin, timeouts: Timeouts | None, request: httpx.Request | None) -> Connection:
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
                pool_timeout = timeout_of(timeouts, "pool")
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
        self, origin: Origin, timeouts: Timeouts | None, request: httpx.Request | None,
        loop: asyncio.AbstractEventLoop,
    ) -> Connection:
        conn = Connection(origin, loop, self.ceilings)
        try:
            async with asyncio.timeout(timeout_of(timeouts, "connect")):
                await loop.create_connection(lambda: conn, origin[0], origin[1])
        except TimeoutError:
            raise httpx.ConnectTimeout("Timed out connecting.", request=request) from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from None
        return conn

    def release(self, conn: Connection, reusable: bool) -> None:
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
        timeouts = timeouts_of(request)
        conn = await self._exchange(origin, self._head(request, body) + body, timeouts, request,
                                    head_only=request.method == "HEAD")  # fmt: skip
        return httpx.Response(
            conn.status,
            headers=conn.headers,
            stream=_Body(self._pool, conn, timeouts, request),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def send_raw(self, origin: Origin, data: bytes, timeouts: Timeouts) -> RawResponse:
        """Send one request already encoded as bytes (head and body) to `origin` on a pooled
        connection, and return its answer once the headers are in.

        The bridge's hot path: no `httpx.Request`/`httpx.Response` objects, no URL parsing, no
        header merging (the caller pre-built the head once per upstream). The same pool, ceilings and
        exceptions as `handle_async_request`; `timeouts["read"]` is read again for every body read."""
        conn = await self._exchange(origin, data, timeouts, None)
        return RawResponse(conn.status, conn.headers, _Body(self._pool, conn, timeouts), timeouts)

    async def _exchange(
        self, origin: Origin, data: bytes, timeouts: Timeouts | None, request: httpx.Request | None,
        *, head_only: bool = False,
    ) -> Connection:
        """Write `data` on a pooled connection and wait for the answer's headers."""
        conn = await self._pool.acquire(origin, timeouts, request)
        try:
            conn.start(head_only)
            await conn.send(data, timeout_of(timeouts, "write"), request)
            read_timeout = timeout_of(timeouts, "read")
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
