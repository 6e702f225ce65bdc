"""A scripted chat-completions backend fast enough not to be the bottleneck of a bridge benchmark.

Why a raw asyncio server rather than the fixture backend or a Starlette app: the benchmark asks how
much a bridge costs on top of a backend, so the backend must be as cheap as possible per request.
Every answer is encoded once, when first asked for, and cached as the exact bytes that go on the
wire (status line, headers and the whole chunked body), so serving a request is: find the end of
the headers, look at a few bytes of the body with regular expressions, and make one
``transport.write``.  With uvloop installed it is used; without, plain asyncio works the same.

What the request selects (by the ``model`` field, so that any bridge passes it through unchanged):

- ``bench-<N>`` (e.g. ``bench-64``, ``bench-512``): an answer of N content chunks.  With
  ``"stream": true`` it is streamed as SSE, like OpenAI: a role chunk, N content chunks, a finish
  chunk, a usage chunk when ``stream_options.include_usage`` is true, then ``data: [DONE]``.  Each SSE
  frame is one HTTP chunk, but the whole body is written at once: the backend never waits between
  chunks, which is the fastest a backend can be (a real model is far slower; see docs/benchmarks.md).
  Without ``stream`` it answers one ``chat.completion`` with the N pieces joined.
- ``bench-stall``: streams the role chunk and one content chunk, then holds the stream open, sending
  nothing more, until the client goes away.  The benchmark uses it to make a bridge hold many idle
  streams while its memory is measured.
- ``GET /v1/models`` lists those models (codex-relay asks for it when it starts).
- ``GET /_bench/stats``: connections accepted and requests answered so far (by this process).
- Any other path answers 404 in OpenAI's error shape, so a peer that talks to the backend in a way
  the benchmark did not intend (say, calling ``/v1/responses`` natively) fails visibly.

Run: ``python bench/backend.py --port 9100 [--procs N]``.  ``--procs`` forks N processes that
accept on one shared listening socket; on a 2-core machine one process is normally enough (and
more processes compete with the bridge and the load generator for the same two cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import sys
from collections.abc import Callable
from typing import cast

CREATED = 1_700_000_000
# One token's worth of text per content chunk, cycling through distinct words: LiteLLM aborts a stream
# whose chunks repeat ("The model is repeating the same chunk"), and a real model does not repeat either.
WORDS = ("lorem ", "ipsum ", "dolor ", "sitam ", "ametis ", "consec ", "adipis ", "elitus ", "sedum ", "eiusmo ")
PIECE = WORDS[0]
STALL_MODEL = "bench-stall"

_MODEL_RE = re.compile(rb'"model"\s*:\s*"([^"]*)"')
_STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
_USAGE_RE = re.compile(rb'"include_usage"\s*:\s*true')
_BENCH_RE = re.compile(r"bench-(\d+)(p?)\Z")
MAX_CHUNKS = 100_000


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _http_chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _sse_chunk(obj: object) -> bytes:
    """One SSE frame wrapped as one HTTP/1.1 chunk (what a typical Python or Rust server emits)."""
    return _http_chunk(b"data: " + _dumps(obj) + b"\n\n")


def _chunk(model: str, delta: dict, finish: str | None = None) -> dict:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _usage(n: int) -> dict:
    return {"prompt_tokens": 8, "completion_tokens": n, "total_tokens": 8 + n}


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream\r\n"
    b"cache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def stream_bytes(model: str, n: int, usage: bool) -> bytes:
    """The whole streamed answer: headers, every chunk, the terminating zero-length chunk."""
    return b"".join(stream_parts(model, n, usage))


def stream_parts(model: str, n: int, usage: bool) -> list[bytes]:
    """The streamed answer as the pieces a paced stream writes one by one (headers with the first)."""
    parts = [STREAM_HEAD, _sse_chunk(_chunk(model, {"role": "assistant", "content": ""}))]
    contents = [_sse_chunk(_chunk(model, {"content": w})) for w in WORDS]
    parts.extend(contents[i % len(WORDS)] for i in range(n))
    parts.append(_sse_chunk(_chunk(model, {}, "stop")))
    if usage:
        tail = _chunk(model, {})
        tail["choices"] = []
        tail["usage"] = _usage(n)
        parts.append(_sse_chunk(tail))
    parts.append(_http_chunk(b"data: [DONE]\n\n"))
    parts.append(b"0\r\n\r\n")
    return [parts[0] + parts[1], *parts[2:]]


def stall_bytes(model: str) -> bytes:
    """The start of a stream that then goes quiet: headers, role chunk and one content chunk."""
    return (
        STREAM_HEAD
        + _sse_chunk(_chunk(model, {"role": "assistant", "content": ""}))
        + _sse_chunk(_chunk(model, {"content": PIECE}))
    )


def _json_response(status: str, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status.encode() + b"\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def completion_bytes(model: str, n: int) -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(WORDS[i % len(WORDS)] for i in range(n)),
                            "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(n),
    }
    return _json_response("200 OK", _dumps(body))


def error_bytes(status: str, message: str) -> bytes:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    return _json_response(status, _dumps(body))


MODELS_BYTES = _json_response(
    "200 OK",
    _dumps(
        {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": CREATED, "owned_by": "bench"}
                for m in ("bench-64", "bench-512", STALL_MODEL)
            ],
        }
    ),
)

_cache: dict[tuple[str, bool, bool], bytes | list[bytes]] = {}
# Counted so the benchmark can tell how a bridge uses its upstream connections (GET /_bench/stats):
# a bridge that opens a new connection per request pays a TCP handshake each time.
STATS = {"connections": 0, "requests": 0}


def answer(path: bytes, method: bytes, body: bytes) -> bytes | list[bytes] | None:
    """The bytes to send for one request; a list for a paced stream; None for a stalled one."""
    if method == b"GET" and path.startswith(b"/v1/models"):
        return MODELS_BYTES
    if method == b"GET" and path == b"/_bench/stats":
        return _json_response("200 OK", _dumps(STATS))
    STATS["requests"] += 1
    if method != b"POST" or not path.endswith(b"/chat/completions"):
        return error_bytes("404 Not Found", f"no route {method.decode()} {path.decode()}")
    match = _MODEL_RE.search(body)
    model = match.group(1).decode() if match else ""
    stream = _STREAM_RE.search(body) is not None
    usage = stream and _USAGE_RE.search(body) is not None
    key = (model, stream, usage)
    cached = _cache.get(key)
    if cached is not None:
        return cached
    if model == STALL_MODEL:
        return None
    m = _BENCH_RE.match(model)
    if m is None or not 0 < int(m.group(1)) <= MAX_CHUNKS:
        return error_bytes("404 Not Found", f"model {model!r} not found; use bench-<N> or bench-stall")
    n = int(m.group(1))
    data: bytes | list[bytes]
    if not stream:
        data = completion_bytes(model, n)
    elif m.group(2):
        data = stream_parts(model, n, usage)
    else:
        data = stream_bytes(model, n, usage)
    _cache[key] = data
    return data


class BenchProtocol(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection; pipelining-safe, requests answered in order."""

    __slots__ = ("buf", "loop", "pending", "stalled", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.stalled = False
        self.pending: list[bytes] = []  # frames of a paced stream still to write, last first
        self.loop = asyncio.get_event_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport's methods without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        STATS["connections"] += 1

    def data_received(self, data: bytes) -> None:
        if self.stalled:
            return  # a stalled stream ignores whatever the client sends until it goes away
        self.buf += data
        if not self.pending:
            self._process()

    def _pace(self) -> None:
        """Write the next frame of a paced stream, then let every other connection run first."""
        if self.transport is None or self.transport.is_closing():
            self.pending.clear()
            return
        self.transport.write(self.pending.pop())
        if self.pending:
            self.loop.call_soon(self._pace)
        elif self.buf:
            self._process()  # a request that arrived while streaming

    def _process(self) -> None:
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            lines = head.split(b"\r\n")
            try:
                method, path, _version = lines[0].split(b" ", 2)
            except ValueError:
                self._close_with(error_bytes("400 Bad Request", "bad request line"))
                return
            length = 0
            chunked = False
            close = False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            start = end + 4
            if chunked:
                decoded = _decode_chunked(self.buf, start)
                if decoded is None:
                    return
                body, consumed = decoded
            else:
                if len(self.buf) - start < length:
                    return
                body, consumed = self.buf[start : start + length], start + length
            self.buf = self.buf[consumed:]
            out = answer(path, method, body)
            assert self.transport is not None
            if out is None:
                match = _MODEL_RE.search(body)
                self.transport.write(stall_bytes(match.group(1).decode() if match else STALL_MODEL))
                self.stalled = True
                return
            if isinstance(out, list):
                self.pending = out[::-1]
                self._pace()
                return
            self.transport.write(out)
            if close:
                self.transport.close()
                return

    def _close_with(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def _decode_chunked(buf: bytes, pos: int) -> tuple[bytes, int] | None:
    """Decode a chunked request body starting at pos; None until all of it has arrived."""
    out = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(buf[pos:eol].split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            end = buf.find(b"\r\n", pos)
            if end < 0:
                return None
            return b"".join(out), end + 2
        if len(buf) < pos + size + 2:
            return None
        out.append(buf[pos : pos + size])
        pos += size + 2


def _install_loop() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def _serve(sock: socket.socket) -> None:
    loop = _install_loop()()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(loop.create_server(BenchProtocol, sock=sock, backlog=4096))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.add_signal_handler(signal.SIGINT, loop.stop)
    try:
        loop.run_forever()
    finally:
        server.close()
        loop.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--procs", type=int, default=1, help="processes sharing the listening socket")
    args = parser.parse_args(argv)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(4096)
    sock.setblocking(False)
    children: list[int] = []
    for _ in range(max(args.procs, 1) - 1):
        pid = os.fork()
        if pid == 0:
            _serve(sock)
            os._exit(0)
        children.append(pid)
    print(f"bench backend on http://{args.host}:{args.port}/v1 ({args.procs} process(es))", file=sys.stderr)
    try:
        _serve(sock)
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
