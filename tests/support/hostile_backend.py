"""A hostile chat-completions backend on loopback: a raw asyncio server whose every answer breaks
some rule a well-behaved backend keeps (endless streams, compression bombs, giant headers, lines
and bodies, tool-call floods, secrets echoed in headers).

Raw sockets rather than a web framework, because a framework would refuse to produce most of these
answers (or buffer them). The misbehaviour is chosen by the request's `model`, so one backend serves
every case; see `MODES`. Runs in its own thread and loop, so the test thread can block freely.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

__all__ = ["MODES", "HostileBackend"]

MIB = 1024 * 1024

Writer = asyncio.StreamWriter
Mode = Callable[["HostileBackend", Writer, dict[str, Any], str], Awaitable[None]]


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-hostile", "object": "chat.completion.chunk", "created": 0, "model": "hostile",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
    return b"data: " + orjson.dumps(body) + b"\n\n"


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


SSE_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
            b"connection: close\r\n\r\n")  # fmt: skip
JSON_CHUNKED_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n"
                     b"connection: close\r\n\r\n")  # fmt: skip


async def _endless(backend: HostileBackend, writer: Writer, request: dict[str, Any], key: str) -> None:
    """Valid content chunks without end (the bridge must stop at its answer-size limit)."""
    writer.write(SSE_HEAD)
    batch = _chunked(_chunk({"role": "assistant", "content": ""}) + _chunk({"content": "x" * 200}) * 300)
    while not backend.stopping:
        writer.write(batch)
        await writer.drain()


async def _endless_json(backend: HostileBackend, writer: Writer, request: dict[str, Any], key: str) -> None:
    """A non-streamed JSON answer that never ends."""
    writer.write(JSON_CHUNKED_HEAD)
    writer.write(_chunked(b'{"id":"chatcmpl-x","object":"chat.completion","choices":[{"index":0,'
                          b'"message":{"role":"assistant","content":"'))  # fmt: skip
    piece = _chunked(b"a" * 256 * 1024)
    while not backend.stopping:
        writer.write(piece)
        await writer.drain()


_BOMB: dict[str, bytes] = {}


def gzip_bomb(inflated: int = 1024 * MIB) -> bytes:
    """gzip of `inflated` zero bytes (about 1/1000 of that size), built once."""
    key = str(inflated)
    if key not in _BOMB:
        comp = zlib.compressobj(9, zlib.DEFLATED, 31)
        block = bytes(MIB)
        parts = [comp.compress(block) for _ in range(inflated // MIB)]
        parts.append(comp.flush())
        _BOMB[key] = b"".join(parts)
    return _BOMB[key]


async def _gzip_bomb(backend: HostileBackend, writer: Writer, request: dict[str, Any], key: str) -> None:
    bomb = gzip_bomb()
    kind = b"text/event-stream" if request.get("stream") else b"application/json"
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n"
                 b"connection: close\r\n\r\n" % (kind, len(bomb)))  # fmt: skip
    writer.write(bomb)
    await writer.drain()


async def _sse_line(backend: HostileBackend, writer: Writer, request: dict[str, Any], key: str) -> None:
    """One SSE `data:` line that never ends (no newline)."""
    writer.write(SSE_HEAD)
    writer.write(_chunked(b'data: {"choices":[{"index":0,"delta":{"content":"'))
    piece = _chunked(b"a" * 256 * 1024)
    while not backend.stopping:
        writer.write(piece)
        await writer.drain()


async def _big_header(backend: HostileBackend, writer: Writer, request: dict[str, Any], key: str) -> None:
    """A response header of `backend.big_header_bytes` (the bridge must refuse it long before)."""
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-big: ")
    piece = b"a" * 256 * 1024
    for _ in range(backend.big_header_bytes // len(piece)):
        if backend.stopping:
            return
        writer.write(piece)
        await writer.drain()
    writer.write(b"\r\ncontent-length: 0\r\n\r\n")
    await writer.drain()


async def _big_json(backend: HostileBackend, writer: Writer, request: dict[str, Any], key: str) -> None:
    """A 300 MB non-streamed answer, announced by Content-Length."""
    size = 300 * 1000 * 1000
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                 b"connection: close\r\n\r\n" % size)  # fmt: skip
    prefix = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"'
    writer.write(prefix)
    sent = len(prefix)
    piece = b"a" * MIB
    while sent + len(piece) < size - 10 and not backend.stopping:
        writer.write(piece)
        sent += len(piece)
        await writer.drain()
    writer.write(b"a" * (size - 10 - sent) + b'"}}]}     ')
    await writer.drain()


async def _big_json_chunked(backend: HostileBackend, writer: Writer, request: dict[str, Any], key: str) -> None:
    """A large valid non-streamed answer with no Content-Length (size known only while reading)."""
    writer.write(JSON_CHUNKED_HEAD)
    writer.write(_chunked(b'{"id":"chatcmpl-x","object":"chat.completion","choices":[{"index":0,'
                          b'"message":{"role":"assistant","content":"'))  # fmt: skip
    piece = _chunked(b"a" * MIB)
    for _ in range(backend.big_json_mib):
        writer.write(piece)
        await writer.drain()
    writer.write(_chunked(b'"},"finish_reason":"stop"}]}') + b"0\r\n\r\n")
    await writer.drain()


async def _tool_indexes(backend: HostileBackend, writer: Writer, request: dict[str, Any], key: str) -> None:
    """100,000 tool calls, one new index per chunk."""
    writer.write(SSE_HEAD)
    writer.write(_chunked(_chunk({"role": "assistant"})))
    batch: list[bytes] = []
    for i in range(100_000):
        call = {"index": i, "id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        batch.append(_chunk({"tool_calls": [call]}))
        if len(batch) == 500:
            writer.write(_chunked(b"".join(batch)))
            batch = []
            await writer.drain()
            if backend.stopping:
                return
    writer.write(_chunked(b"".join(batch) + _chunk({}, "tool_calls") + b"data: [DONE]\n\n") + b"0\r\n\r\n")
    await writer.drain()


async def _parallel_calls(backend: HostileBackend, writer: Writer, request: dict[str, Any], key: str) -> None:
    """10,000 parallel tool calls in one chunk."""
    calls = [{"index": i, "id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
             for i in range(10_000)]  # fmt: skip
    writer.write(SSE_HEAD)
    body = _chunk({"role": "assistant", "tool_calls": calls}) + _chunk({}, "tool_calls") + b"data: [DONE]\n\n"
    writer.write(_chunked(body) + b"0\r\n\r\n")
    await writer.drain()


def _echo(status: int) -> Mode:
    async def mode(backend: HostileBackend, writer: Writer, request: dict[str, Any], key: str) -> None:
        """An error whose headers echo the upstream key: as is, upper-cased, base64 (both alphabets)."""
        raw = key.encode()
        echoes = {
            b"retry-after": raw,
            b"x-ratelimit-limit-requests": base64.b64encode(raw),
            b"x-ratelimit-remaining-requests": base64.urlsafe_b64encode(raw).rstrip(b"="),
            b"x-ratelimit-reset-requests": key.upper().encode(),
            b"x-ratelimit-limit-tokens": base64.b64encode(b"user:" + raw),
            b"x-ratelimit-remaining-tokens": b"key=" + raw,
        }
        body = orjson.dumps({"error": {"message": f"bad key {key} ({key.upper()})", "type": "rate_limit_error",
                                       "code": "rate_limit_exceeded"}})  # fmt: skip
        head = [b"HTTP/1.1 %d Error\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (status, len(body))]
        head += [name + b": " + value + b"\r\n" for name, value in echoes.items()]
        writer.write(b"".join([*head, b"connection: close\r\n\r\n", body]))
        await writer.drain()

    return mode


async def _ok(backend: HostileBackend, writer: Writer, request: dict[str, Any], key: str) -> None:
    if request.get("stream"):
        body = _chunk({"role": "assistant", "content": "hi"}) + _chunk({}, "stop") + b"data: [DONE]\n\n"
        writer.write(SSE_HEAD + _chunked(body) + b"0\r\n\r\n")
    else:
        body = orjson.dumps({"id": "chatcmpl-ok", "object": "chat.completion", "created": 0, "model": "ok",
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                          "finish_reason": "stop"}]})  # fmt: skip
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                     b"connection: close\r\n\r\n%s" % (len(body), body))  # fmt: skip
    await writer.drain()


MODES: dict[str, Mode] = {
    "endless": _endless,
    "endless-json": _endless_json,
    "gzip-bomb": _gzip_bomb,
    "sse-line": _sse_line,
    "big-header": _big_header,
    "big-json": _big_json,
    "big-json-chunked": _big_json_chunked,
    "tool-indexes": _tool_indexes,
    "parallel-calls": _parallel_calls,
    "echo-key-429": _echo(429),
    "echo-key-401": _echo(401),
    "ok": _ok,
}


class HostileBackend:
    """`MODES` on a free loopback port; `base_url` ends in /v1. Use as a context manager."""

    def __init__(self, *, big_header_bytes: int = 16 * MIB, big_json_mib: int = 48) -> None:
        self.big_header_bytes = big_header_bytes
        self.big_json_mib = big_json_mib
        self.stopping = False
        self.requests: list[dict[str, Any]] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile-backend", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._started.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            headers: dict[str, str] = {}
            for line in head.decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name:
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            body = await reader.readexactly(length) if length else b""
            request = orjson.loads(body) if body else {}
            self.requests.append({"model": request.get("model"), "stream": request.get("stream")})
            key = headers.get("authorization", "").removeprefix("Bearer ")
            mode = MODES.get(str(request.get("model")), _ok)
            await mode(self, writer, request, key)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def __enter__(self) -> HostileBackend:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("hostile backend did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping = True

        async def stop() -> None:
            assert self._server is not None
            self._server.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
