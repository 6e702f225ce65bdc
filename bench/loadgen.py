"""The benchmark's own HTTP client, for what wrk cannot measure: correctness, time to first event, idle streams.

wrk drives the throughput phases (it is C and costs the shared cores little).  This module runs in a
separate process too, and does three things wrk cannot:

- ``check``: send one request and verify the answer is whole (HTTP 200, the expected number of text
  pieces, a terminal event), so a fast-but-broken target cannot score.
- ``ttfe``: sequential streaming requests on one keep-alive connection, timing the first SSE event
  (the first ``data:`` line of the body) and the end of the stream.
- ``idle``: open N streams that the backend stalls after one chunk, wait until each has delivered
  its first event, report, then hold them all open until told to stop (stdin closes) or the hold time
  ends.  The benchmark samples the target's memory meanwhile.

Every mode prints one JSON object per line on stdout; run.py reads them.  It is a plain asyncio client
over raw sockets (with uvloop when available) so it needs nothing beyond the standard library.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field

# the words bench/backend.py cycles through, one per content chunk
WORDS = (b"lorem ", b"ipsum ", b"dolor ", b"sitam ", b"ametis ", b"consec ", b"adipis ", b"elitus ", b"sedum ",
         b"eiusmo ")


@dataclass
class Reply:
    """One HTTP response as the client saw it; times are seconds after the request was written."""

    status: int
    body: bytes
    t_first_event: float | None
    t_end: float
    headers: dict[str, str] = field(default_factory=dict)


def build_request(host: str, port: int, path: str, body: bytes, api_key: str | None = None) -> bytes:
    auth = f"authorization: Bearer {api_key}\r\n" if api_key else ""
    return (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"accept: text/event-stream, application/json\r\n{auth}content-length: {len(body)}\r\n\r\n"
    ).encode() + body


async def read_reply(reader: asyncio.StreamReader, t0: float, stop_at_first_event: bool = False) -> Reply:
    """Read one HTTP/1.1 response (Content-Length or chunked), noting when the first SSE event arrived."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = bytearray()
    t_first: float | None = None

    def note(data: bytes) -> None:
        nonlocal t_first
        body.extend(data)
        if t_first is None and b"data:" in body:
            t_first = time.perf_counter() - t0

    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            note(await reader.readexactly(size))
            await reader.readexactly(2)
            if stop_at_first_event and t_first is not None:
                break
    elif "content-length" in headers:
        note(await reader.readexactly(int(headers["content-length"])))
    else:  # read to close
        note(await reader.read())
    return Reply(status, bytes(body), t_first, time.perf_counter() - t0, headers)


async def one_request(host: str, port: int, path: str, body: bytes, api_key: str | None) -> Reply:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        t0 = time.perf_counter()
        writer.write(build_request(host, port, path, body, api_key))
        return await read_reply(reader, t0)
    finally:
        writer.close()


def count_pieces(body: bytes, kind: str) -> dict:
    """What a complete answer must contain, counted from the raw body (no parsing cost assumptions)."""
    if kind == "chat":
        return {
            "text_pieces": body.count(b'"delta":{"content":"'),
            "terminal": b"data: [DONE]" in body,
        }
    return {
        "text_pieces": body.count(b'"response.output_text.delta"'),
        "terminal": b'"response.completed"' in body,
    }


async def cmd_check(args: argparse.Namespace) -> dict:
    body = args.body.encode()
    try:
        reply = await asyncio.wait_for(one_request(args.host, args.port, args.path, body, args.api_key), args.timeout)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    result: dict = {"status": reply.status, "bytes": len(reply.body)}
    if args.stream:
        result.update(count_pieces(reply.body, args.kind))
        result["ok"] = reply.status == 200 and result["text_pieces"] == args.pieces and result["terminal"]
    else:
        text = sum(reply.body.count(w) for w in WORDS)
        result["text_pieces"] = text
        result["ok"] = reply.status == 200 and text == args.pieces
    if not result["ok"]:
        result["sample"] = reply.body[:400].decode("utf-8", "replace")
    return result


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def cmd_ttfe(args: argparse.Namespace) -> dict:
    """Sequential streams on one keep-alive connection (reconnecting if the server closes it)."""
    body = args.body.encode()
    request = build_request(args.host, args.port, args.path, body, args.api_key)
    firsts: list[float] = []
    totals: list[float] = []
    errors = 0
    deadline = time.perf_counter() + args.duration
    reader = writer = None
    while time.perf_counter() < deadline and len(firsts) < args.max_requests:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(args.host, args.port)
            assert reader is not None
            t0 = time.perf_counter()
            writer.write(request)
            reply = await asyncio.wait_for(read_reply(reader, t0), args.timeout)
            if reply.status != 200 or reply.t_first_event is None:
                errors += 1
            else:
                firsts.append(reply.t_first_event)
                totals.append(reply.t_end)
            if reply.headers.get("connection", "").lower() == "close":
                writer.close()
                reader = writer = None
            if args.pause_ms:
                await asyncio.sleep(args.pause_ms / 1000)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()
    if not firsts:
        return {"requests": 0, "errors": errors}
    ms = 1000.0
    return {
        "requests": len(firsts),
        "errors": errors,
        "ttfe_p50_ms": _pct(firsts, 50) * ms,
        "ttfe_p99_ms": _pct(firsts, 99) * ms,
        "ttfe_mean_ms": statistics.fmean(firsts) * ms,
        "total_p50_ms": _pct(totals, 50) * ms,
        "total_p99_ms": _pct(totals, 99) * ms,
    }


async def _open_idle(args: argparse.Namespace, request: bytes, gate: asyncio.Semaphore, held: list) -> str | None:
    """Open one stream and wait for its first event; None when it is established, else the error."""
    async with gate:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(args.host, args.port), args.timeout)
        except (TimeoutError, OSError) as exc:
            return type(exc).__name__
    try:
        writer.write(request)
        reply = await asyncio.wait_for(read_reply(reader, time.perf_counter(), stop_at_first_event=True), args.timeout)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
        writer.close()
        return type(exc).__name__
    if reply.status != 200 or reply.t_first_event is None:
        writer.close()
        return f"status {reply.status}"
    held.append((reader, writer))
    return None


async def _watch(reader: asyncio.StreamReader, closed: list[int]) -> None:
    """Drain a held stream; count it if the server ends it while it should be held."""
    try:
        while await reader.read(65536):
            pass
        closed[0] += 1
    except (OSError, asyncio.CancelledError):
        pass


async def cmd_idle(args: argparse.Namespace) -> None:
    request = build_request(args.host, args.port, args.path, args.body.encode(), args.api_key)
    gate = asyncio.Semaphore(args.open_concurrency)
    held: list = []
    t0 = time.perf_counter()
    results = await asyncio.gather(*(_open_idle(args, request, gate, held) for _ in range(args.streams)))
    errors: dict[str, int] = {}
    for err in results:
        if err is not None:
            errors[err] = errors.get(err, 0) + 1
    print(json.dumps({"phase": "open", "held": len(held), "errors": errors,
                      "open_seconds": round(time.perf_counter() - t0, 3)}), flush=True)
    closed = [0]
    watchers = [asyncio.ensure_future(_watch(r, closed)) for r, _ in held]
    loop = asyncio.get_running_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)
    await asyncio.wait([stdin_closed], timeout=args.hold)
    for w in watchers:
        w.cancel()
    for _, writer in held:
        writer.close()
    print(json.dumps({"phase": "done", "closed_by_server_during_hold": closed[0]}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="benchmark client: check, ttfe, idle")
    parser.add_argument("mode", choices=["check", "ttfe", "idle"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--body", required=True, help="the JSON request body")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--kind", choices=["chat", "responses"], default="responses")
    parser.add_argument("--stream", action="store_true", help="check: the body asks for a stream")
    parser.add_argument("--pieces", type=int, default=64, help="check: text pieces expected")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--duration", type=float, default=3.0, help="ttfe: seconds")
    parser.add_argument("--max-requests", type=int, default=2000, help="ttfe: at most this many")
    parser.add_argument("--pause-ms", type=float, default=0.0,
                        help="ttfe: wait this long after each answer before the next request")
    parser.add_argument("--streams", type=int, default=1000, help="idle: streams to hold")
    parser.add_argument("--open-concurrency", type=int, default=100, help="idle: streams opening at once")
    parser.add_argument("--hold", type=float, default=10.0, help="idle: seconds to hold at most")
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.mode == "check":
        print(json.dumps(asyncio.run(cmd_check(args))), flush=True)
    elif args.mode == "ttfe":
        print(json.dumps(asyncio.run(cmd_ttfe(args))), flush=True)
    else:
        asyncio.run(cmd_idle(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
