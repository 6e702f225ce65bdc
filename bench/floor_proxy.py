"""The floor: a minimal reverse proxy that copies bytes, so every figure has "what moving them costs in Python".

A bridge does three things per request: it receives an HTTP request, sends one upstream, and moves the
answer back.  This proxy does only the moving: it parses just enough HTTP/1.1 to know where a request
ends (the head and a ``Content-Length`` body) and where the backend's answer ends (``Content-Length``
or the chunked framing), forwards the request bytes unchanged over a pooled keep-alive upstream
connection, and writes the answer's bytes to the client as they arrive.  No JSON is parsed, no header
is rewritten, no SSE frame is looked at.  Whatever a real bridge costs beyond this is translation,
routing, validation, storage and bookkeeping; whatever this costs is the price of Python + asyncio +
uvloop + the kernel's loopback sockets on this machine.

It is written with asyncio Protocols (callbacks, no coroutine per request), the cheapest way to move
bytes in asyncio, and uses uvloop when installed.  Back-pressure is honoured both ways: when the
client's socket buffer fills, the upstream socket stops being read, and the reverse.

Limits, on purpose (it is a benchmark floor, not a product): one upstream (``--upstream`` host:port),
requests with a chunked body are answered 411, answers without framing are read to close.

Run: ``python bench/floor_proxy.py --port 9200 --upstream 127.0.0.1:9100``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys

MAX_HEAD = 64 * 1024


def _canned(status: str, message: str, kind: str) -> bytes:
    """A whole HTTP answer in OpenAI's error shape, encoded once."""
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}).encode()
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body


LENGTH_REQUIRED = _canned("411 Length Required", "chunked request bodies are not supported", "invalid_request_error")
BAD_GATEWAY = _canned("502 Bad Gateway", "upstream failed", "api_error")


def _header(head: bytes, name: bytes) -> bytes | None:
    """The value of one header in a raw head (name lower-case), by a plain scan: no header dict."""
    lower = head.lower()
    at = lower.find(b"\r\n" + name + b":")
    if at < 0:
        return None
    start = at + len(name) + 3
    end = lower.find(b"\r\n", start)
    return head[start:end].strip()


class Pool:
    """Idle keep-alive connections to the one upstream, reused most-recent first."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.idle: list[UpstreamProtocol] = []

    async def get(self) -> UpstreamProtocol:
        while self.idle:
            up = self.idle.pop()
            if not up.closed:
                return up
        loop = asyncio.get_running_loop()
        _, up = await loop.create_connection(UpstreamProtocol, self.host, self.port)
        return up

    def put(self, up: UpstreamProtocol) -> None:
        if not up.closed:
            self.idle.append(up)


class UpstreamProtocol(asyncio.Protocol):
    """One upstream connection; while attached to a client it copies the answer to it and finds its end."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.client: ClientProtocol | None = None
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        self.head = bytearray()
        self.in_head = True
        self.remaining = 0  # body bytes still to come (Content-Length), or of the current chunk + CRLF
        self.chunked = False
        self.to_close = False  # no framing: the answer ends when the upstream closes
        self.chunk_line = bytearray()  # a chunk-size line split across reads
        self.trailer = False  # after the last (zero-size) chunk: lines until an empty one
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def attach(self, client: ClientProtocol, request: bytes) -> None:
        self.client = client
        self._reset()
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:  # bytes nobody asked for: the connection is unusable
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            return
        client.write(data)
        if self.in_head:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > MAX_HEAD:
                    self._fail()
                return
            head = bytes(self.head[:end + 2])
            body = bytes(self.head[end + 4:])
            self.in_head = False
            self.head = bytearray()
            status = head[9:12]
            connection = _header(head, b"connection")
            self.keep_alive = not (connection and connection.lower() == b"close")
            te = _header(head, b"transfer-encoding")
            if te is not None and b"chunked" in te.lower():
                self.chunked = True
            else:
                length = _header(head, b"content-length")
                if length is not None:
                    self.remaining = int(length)
                elif status in (b"204", b"304") or status.startswith(b"1"):
                    self.remaining = 0
                else:
                    self.to_close = True
                    self.keep_alive = False
                    return
            data = body
        if self.to_close:
            return
        if self.chunked:
            if self._chunks(data):
                self._done()
        else:
            self.remaining -= len(data)
            if self.remaining <= 0:
                self._done()

    def _chunks(self, data: bytes) -> bool:
        """Follow the chunked framing over one read; True once the whole answer has gone by.

        A tight loop over local variables: per chunk one ``find`` for the size line and one ``int``,
        the data itself is skipped, not looked at."""
        n = len(data)
        i = min(self.remaining, n)
        self.remaining -= i
        if self.chunk_line:  # the rest of a size line split across reads
            data = bytes(self.chunk_line) + data
            self.chunk_line = bytearray()
            n = len(data)
        find = data.find
        while i < n:
            end = find(b"\n", i)
            if end < 0:
                self.chunk_line += data[i:]
                return False
            if self.trailer:
                if end - i <= 1:  # the empty line that ends the trailer section
                    return True
                i = end + 1
                continue
            try:
                size = int(data[i:end], 16)  # int() ignores the line's trailing CR
            except ValueError:  # a chunk extension (";name=value")
                size = int(data[i:end].split(b";", 1)[0], 16)
            if size == 0:
                self.trailer = True
                i = end + 1
                continue
            i = end + 1 + size + 2  # the data and its CRLF
            if i > n:
                self.remaining = i - n
                return False
        return False

    def _done(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.answered(self, self.keep_alive)

    def _fail(self) -> None:
        client, self.client = self.client, None
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        if client is not None:
            client.upstream_failed()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        client, self.client = self.client, None
        if client is not None:
            if self.to_close and not self.in_head:
                client.answered(self, False)
                client.close()
            else:
                client.upstream_failed()

    def pause_writing(self) -> None:
        if self.client is not None and self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client is not None and self.client.transport is not None:
            self.client.transport.resume_reading()


class ClientProtocol(asyncio.Protocol):
    """One client connection: requests are taken one at a time (pipelined ones wait their turn)."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        self.upstream: UpstreamProtocol | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self.close()
            return
        head = bytes(self.buffer[:end + 2])
        te = _header(head, b"transfer-encoding")
        if te is not None:
            self.write(LENGTH_REQUIRED)
            self.close()
            return
        length = _header(head, b"content-length")
        total = end + 4 + (int(length) if length else 0)
        if len(self.buffer) < total:
            return
        request = bytes(self.buffer[:total])
        del self.buffer[:total]
        self.busy = True
        pool = self.pool
        if pool.idle:
            up = pool.idle.pop()
            if not up.closed:
                self._send(up, request)
                return
        task = asyncio.ensure_future(pool.get())
        task.add_done_callback(lambda t: self._connected(t, request))

    def _connected(self, task: asyncio.Future, request: bytes) -> None:
        if task.cancelled() or task.exception() is not None:
            self.upstream_failed()
            return
        up = task.result()
        if self.closed:
            self.pool.put(up)
            return
        self._send(up, request)

    def _send(self, up: UpstreamProtocol, request: bytes) -> None:
        self.upstream = up
        up.attach(self, request)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def answered(self, up: UpstreamProtocol, reusable: bool) -> None:
        self.upstream = None
        self.busy = False
        if reusable:
            self.pool.put(up)
        elif up.transport is not None:
            up.closed = True
            up.transport.close()
        if self.buffer and not self.closed:
            self._next()

    def upstream_failed(self) -> None:
        self.upstream = None
        if not self.closed:
            self.write(BAD_GATEWAY)
            self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        up, self.upstream = self.upstream, None
        if up is not None:  # mid-answer: the upstream connection cannot be reused
            up.client = None
            up.closed = True
            if up.transport is not None:
                up.transport.close()

    def pause_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()


async def serve(port: int, upstream: str) -> None:
    host, _, up_port = upstream.rpartition(":")
    pool = Pool(host or "127.0.0.1", int(up_port))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ClientProtocol(pool), "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="byte-copying reverse proxy (the benchmark's floor)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="host:port of the backend")
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.port, args.upstream))
    return 0


if __name__ == "__main__":
    sys.exit(main())
