"""The path to a stream's first event, one write and no loop hop more than it needs
(docs/benchmarks.md, "Time to first event"):

- the response head waits for the body's first bytes and both leave in one `writelines` (a head on
  its own is written at the end of the loop step; `100 Continue` and a close are not held up);
- a complete backend answer ends its body iteration at once, so a finished stream's last steps (its
  backend connection back to the pool, its access-log line) do not wait behind the next request;
- the first batch (`response.created`) is written in the same step as the response start.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx

from server.http_protocol import _CONTINUE, _HeadWithBody


class _Transport:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def writelines(self, parts: Any) -> None:
        self.calls.append(("writelines", tuple(parts)))

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", None))

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str) -> str:
        return f"extra {name}"


def test_the_head_and_the_first_body_leave_in_one_write() -> None:
    async def run() -> list[tuple[str, Any]]:
        transport = _Transport()
        through = _HeadWithBody(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
        through.write(b"HTTP/1.1 200 OK\r\n\r\n")
        through.write(b"5\r\nhello\r\n")
        through.write(b"0\r\n\r\n")
        await asyncio.sleep(0)  # the end-of-step flush finds nothing held
        return transport.calls

    assert asyncio.run(run()) == [("writelines", (b"HTTP/1.1 200 OK\r\n\r\n", b"5\r\nhello\r\n")),
                                  ("write", b"0\r\n\r\n")]  # fmt: skip


def test_a_head_alone_goes_out_at_the_end_of_the_step_and_before_a_close() -> None:
    async def run() -> tuple[list[Any], list[Any], list[Any]]:
        loop = asyncio.get_running_loop()
        alone, closed, gone = _Transport(), _Transport(), _Transport()
        through = _HeadWithBody(alone, loop)  # type: ignore[arg-type]
        through.write(b"HTTP/1.1 200 OK\r\n\r\n")
        held = list(alone.calls)
        await asyncio.sleep(0)
        cut = _HeadWithBody(closed, loop)  # type: ignore[arg-type]
        cut.write(b"HTTP/1.1 200 OK\r\n\r\n")
        cut.close()
        left = _HeadWithBody(gone, loop)  # type: ignore[arg-type]
        left.write(b"HTTP/1.1 200 OK\r\n\r\n")
        gone.closing = True  # the connection went away before the step ended: nothing is written
        await asyncio.sleep(0)
        assert held == []
        return alone.calls, closed.calls, gone.calls

    alone, closed, gone = asyncio.run(run())
    assert alone == [("write", b"HTTP/1.1 200 OK\r\n\r\n")]
    assert closed == [("write", b"HTTP/1.1 200 OK\r\n\r\n"), ("close", None)]
    assert gone == []


def test_an_interim_continue_is_not_held_and_the_rest_passes_through() -> None:
    async def run() -> list[tuple[str, Any]]:
        transport = _Transport()
        through = _HeadWithBody(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
        through.write(_CONTINUE)
        assert through.get_extra_info("peername") == "extra peername"
        assert not through.is_closing()
        through.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        through.write(b"{}")
        return transport.calls

    assert asyncio.run(run()) == [("write", _CONTINUE),
                                  ("writelines", (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", b"{}"))]  # fmt: skip


class _Conn:
    """What `_Body` reads of a `Connection`: a buffer, and whether the answer is complete."""

    def __init__(self, parts: list[bytes], complete_after: int) -> None:
        self.parts = parts
        self.taken = 0
        self.complete_after = complete_after
        self.error = None
        self.reusable = True
        self.pending = b""

    @property
    def buffer(self) -> list[bytes]:
        return self.parts[self.taken:self.taken + 1]

    @property
    def complete(self) -> bool:
        return self.taken >= self.complete_after

    def take(self) -> bytes:
        self.taken += 1
        return self.parts[self.taken - 1]


class _Pool:
    def __init__(self) -> None:
        self.released: list[Any] = []

    def release(self, conn: Any, reusable: bool) -> None:
        self.released.append(conn)


def test_a_complete_answer_ends_its_body_without_a_loop_hop(monkeypatch: Any) -> None:
    """Two buffered reads: the loop runs between them (fairness), but not after the last one."""
    from server import transport

    hops: list[float] = []
    real_sleep = asyncio.sleep
    this_thread = threading.get_ident()

    async def sleep(delay: float) -> None:
        # `transport.asyncio` is the asyncio module: servers other tests left running in their own
        # threads (uvicorn's main loop sleeps 0.1 s per tick) call the patched sleep too.
        if threading.get_ident() == this_thread:
            hops.append(delay)
        await real_sleep(delay)

    monkeypatch.setattr(transport.asyncio, "sleep", sleep)

    async def run() -> list[bytes]:
        pool = _Pool()
        body = transport._Body(pool, _Conn([b"a", b"b"], complete_after=2), None)  # type: ignore[arg-type]
        parts = [part async for part in body]
        assert len(pool.released) == 1
        return parts

    assert asyncio.run(run()) == [b"a", b"b"]
    assert hops == [0]  # between the two reads, none after the last


def test_the_first_batch_is_written_in_the_step_of_the_response_start() -> None:
    from server.pump import EventPump
    from server.streaming import EventStream
    from translator import ChatStreamTranslator

    async def body() -> Any:
        await asyncio.sleep(30)
        yield b""

    async def run() -> list[str]:
        seen: list[str] = []
        loop = asyncio.get_running_loop()
        steps = [0]

        def tick() -> None:  # counts steps of the loop while the stream starts
            steps[0] += 1
            loop.call_soon(tick)

        async def send(message: dict[str, Any]) -> None:
            seen.append(f"{message['type']}@{steps[0]}")

        async def receive() -> dict[str, Any]:
            await asyncio.sleep(30)
            return {"type": "http.disconnect"}

        upstream = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())
        pump = EventPump(upstream, ChatStreamTranslator({"model": "m", "input": "hi"}))
        loop.call_soon(tick)
        await asyncio.sleep(0)
        task = asyncio.ensure_future(EventStream(pump, keepalive_interval=60)({"type": "http"}, receive, send))
        while len(seen) < 2:
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return seen

    start, first = asyncio.run(run())[:2]
    assert start.startswith("http.response.start@") and first.startswith("http.response.body@")
    assert start.split("@")[1] == first.split("@")[1]


class _Socket:
    """The transport a backend `Connection` writes to and closes."""

    def __init__(self) -> None:
        self.closed = False

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _connection() -> Any:
    from server.upstream_connection import Connection

    async def make() -> Any:
        conn = Connection(("127.0.0.1", 1), asyncio.get_running_loop())
        conn.connection_made(_Socket())  # type: ignore[arg-type]
        conn.start(False)
        return conn

    return asyncio.run(make())


def test_a_burst_of_body_with_the_headers_is_parsed_when_the_body_is_read() -> None:
    """The read that completes the headers also holds 3 chunks and the end: the headers are parsed
    at once (the request sees its status), the chunks only when the body reader asks."""
    conn = _connection()
    body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (b"data: a\n\n", b"data: b\n\n", b"data: c\n\n"))
    conn.data_received(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n")
    assert conn.headers_done and conn.status == 200
    assert conn.buffer == [] and not conn.complete and conn.pending
    conn.parse_pending()
    assert conn.take() == b"data: a\n\ndata: b\n\ndata: c\n\n" and conn.complete and conn.reusable


def test_bytes_after_a_deferred_burst_keep_their_order_and_an_eof_ends_the_body() -> None:
    conn = _connection()
    conn.data_received(b"HTTP/1.1 200 OK\r\n\r\nfirst ")  # close-delimited: the body ends at EOF
    conn.data_received(b"second ")
    conn.data_received(b"third")
    assert conn.headers_done and not conn.pending and conn.take() == b"first second third"
    conn.data_received(b" fourth")
    conn.connection_lost(None)
    assert conn.take() == b" fourth" and conn.complete and conn.error is None

    cut = _connection()
    cut.data_received(b"HTTP/1.1 200 OK\r\n\r\nall of it")
    cut.connection_lost(None)  # the deferred bytes are parsed before the end is judged
    assert cut.take() == b"all of it" and cut.complete and cut.error is None


def test_an_interim_response_in_the_same_read_is_not_mistaken_for_the_head() -> None:
    conn = _connection()
    conn.data_received(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    assert conn.headers_done and conn.status == 200
    if conn.pending:
        conn.parse_pending()
    assert conn.take() == b"ok" and conn.complete
