"""`server.transport.FastTransport` against raw asyncio servers on loopback.

The servers are hand-written so each test controls the bytes and timing on the wire (chunk
boundaries, stalls, premature closes), which a real HTTP server would smooth over."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from server.config import BridgeConfig, Upstream
from server.transport import FastTransport
from server.upstream import UpstreamClient

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A loopback TCP server running `handler` per connection; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> RawServer:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    def url(self, path: str = "/v1/chat") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One request: (request line, lower-cased headers, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return lines[0], headers, body


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def client(**kwargs: Any) -> httpx.AsyncClient:
    timeout = kwargs.pop("timeout", httpx.Timeout(5.0))
    return httpx.AsyncClient(transport=FastTransport(**kwargs), timeout=timeout)


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


def test_request_reaches_the_server_intact_and_the_connection_is_reused() -> None:
    seen: list[tuple[bytes, dict[bytes, bytes], bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_request(reader)
            seen.append(request)
            writer.write(ok(b"echo:" + request[2], b"content-type: text/plain\r\n"))
            await writer.drain()

    async def main() -> None:
        async with RawServer(handler) as server, client() as http:
            for i in range(3):
                response = await http.post(
                    server.url("/v1/chat?x=1"), content=b'{"n":%d}' % i, headers={"x-k": "v"}
                )
                assert response.status_code == 200
                assert response.text == f'echo:{{"n":{i}}}'
                assert response.headers["content-type"] == "text/plain"
            assert server.connections == 1
        assert [s[0] for s in seen] == [b"POST /v1/chat?x=1 HTTP/1.1"] * 3
        assert seen[0][1][b"x-k"] == b"v"
        assert seen[0][1][b"host"] == f"127.0.0.1:{server.port}".encode()

    run(main())


def test_chunked_body_is_yielded_as_it_arrives() -> None:
    release = asyncio.Event

    async def main() -> None:
        gate = release()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n"
            )
            writer.write(chunk(b"data: one\n\n"))
            await writer.drain()
            await gate.wait()  # the second chunk only after the client has seen the first
            writer.write(chunk(b"data: two\n\n") + b"0\r\n\r\n")
            await writer.drain()
            await read_request(reader)
            writer.write(ok(b"again"))
            await writer.drain()

        async with RawServer(handler) as server, client() as http:
            async with http.stream("POST", server.url(), content=b"{}") as response:
                parts = response.aiter_raw()
                assert await parts.__anext__() == b"data: one\n\n"
                gate.set()
                rest = b"".join([p async for p in parts])
                assert rest == b"data: two\n\n"
            # Fully read and keep-alive: the next request goes over the same connection.
            assert (await http.get(server.url())).text == "again"
            assert server.connections == 1

    run(main())


def test_unfinished_body_closes_the_connection_instead_of_reusing_it() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunk(b"first"))
        await writer.drain()
        await reader.read()  # until the client closes

    async def main() -> None:
        async with RawServer(handler) as server, client() as http:
            for _ in range(2):
                async with http.stream("GET", server.url()) as response:
                    assert await response.aiter_raw().__anext__() == b"first"
            assert server.connections == 2

    run(main())


def test_connection_close_response_and_close_delimited_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil-eof")
        await writer.drain()

    async def main() -> None:
        async with RawServer(handler) as server, client() as http:
            for _ in range(2):
                assert (await http.get(server.url())).text == "until-eof"
            assert server.connections == 2

    run(main())


def test_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def main() -> None:
        async with client() as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{port}/")

    run(main())


def test_close_before_response_and_mid_body_are_remote_protocol_errors() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()

    async def main() -> None:
        async with RawServer(silent) as server, client() as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get(server.url())
        async with RawServer(cut) as server, client() as http, http.stream("GET", server.url()) as response:
            assert response.status_code == 200
            received = b""
            with pytest.raises(httpx.RemoteProtocolError):
                async for part in response.aiter_raw():
                    received += part
            assert received == b"partial"

    run(main())


def test_malformed_response_is_a_remote_protocol_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        await reader.read()

    async def main() -> None:
        async with RawServer(garbage) as server, client() as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get(server.url())

    run(main())


def test_read_timeout_for_headers_and_the_per_read_timeout_set_after_them() -> None:
    async def stall_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(10)

    async def stall_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunk(b"a"))
        await writer.drain()
        await asyncio.sleep(10)

    async def main() -> None:
        async with RawServer(stall_head) as server, client(timeout=httpx.Timeout(5.0, read=0.2)) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(server.url())
        # Like UpstreamClient.open_stream: a long first-byte timeout, switched to a short one after
        # the headers by mutating the request's timeout extension. The short one must apply.
        slow_first_byte = httpx.Timeout(5.0, read=30.0)
        async with (
            RawServer(stall_body) as server,
            client(timeout=slow_first_byte) as http,
            http.stream("GET", server.url()) as response,
        ):
            response.request.extensions["timeout"]["read"] = 0.2
            parts = response.aiter_raw()
            assert await parts.__anext__() == b"a"
            with pytest.raises(httpx.ReadTimeout):
                await asyncio.wait_for(parts.__anext__(), 5)

    run(main())


def test_pool_limit_waits_then_times_out_and_a_released_connection_is_handed_on() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunk(b"x"))
            await writer.drain()
            await asyncio.sleep(0.3)
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async def main() -> None:
        limits = httpx.Limits(max_connections=1)
        async with (
            RawServer(handler) as server,
            client(limits=limits, timeout=httpx.Timeout(5.0, pool=0.05)) as http,
        ):
            async with http.stream("GET", server.url()) as held:
                with pytest.raises(httpx.PoolTimeout):
                    await http.get(server.url())
                assert held.status_code == 200
                await held.aread()
            # With a longer pool timeout a waiter gets the connection once the holder is done.
            slow = httpx.Timeout(5.0, pool=5.0)
            results = await asyncio.gather(*(http.get(server.url(), timeout=slow) for _ in range(3)))
            assert [r.text for r in results] == ["x"] * 3
            assert server.connections == 1

    run(main())


def test_unread_body_pauses_the_socket_instead_of_buffering_everything() -> None:
    total = 64 * 1024 * 1024
    sent = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        block = b"z" * 65536
        while sent < total:
            writer.write(block)
            await writer.drain()
            sent += len(block)

    async def main() -> None:
        async with (
            RawServer(handler) as server,
            client() as http,
            http.stream("GET", server.url()) as response,
        ):
            await asyncio.sleep(0.5)  # a lagging consumer
            # The server got stuck on a full socket: kernel buffers, not the client, hold the rest.
            assert sent < total // 2
            received = 0
            async for part in response.aiter_raw():
                received += len(part)
            assert received == total

    run(main())


def test_non_http_urls_go_to_the_fallback_transport() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(204)

    async def main() -> None:
        transport = FastTransport(fallback=httpx.MockTransport(handler))
        async with httpx.AsyncClient(transport=transport) as http:
            assert (await http.get("https://example.invalid/x")).status_code == 204
        assert seen == ["https://example.invalid/x"]

    run(main())


def test_upstream_client_uses_the_fast_transport() -> None:
    async def main() -> None:
        config = BridgeConfig(upstreams=(Upstream(name="u", base_url="http://127.0.0.1:9/v1"),), store="none")
        upstream = UpstreamClient(config.upstreams[0], config)
        try:
            assert isinstance(upstream.client._transport, FastTransport)
        finally:
            await upstream.aclose()

    run(main())


# ------------------------------------------------------------------------------------------ ceilings
# `server.config.Limits` as the transport and the upstream client enforce them. The hostile backend
# suite (tests/e2e/test_hostile_backend.py) runs the same cases through the whole bridge.

from server.accesslog import AccessRecord, emit  # noqa: E402
from server.config import ConfigError, Limits  # noqa: E402
from server.config_file import parse_config  # noqa: E402
from server.errors import ApiError  # noqa: E402
from server.limits import BodyRate, UpstreamLimitError  # noqa: E402
from server.scrub import scrub  # noqa: E402


def test_a_header_block_over_the_limit_is_refused_while_it_arrives() -> None:
    sent = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nx-big: ")
        for _ in range(256):  # 16 MiB of one header value, never finished
            writer.write(b"a" * 65536)
            await writer.drain()
            sent += 65536

    async def main() -> None:
        async with RawServer(handler) as server, client(ceilings=Limits(upstream_max_header_bytes=32 * 1024)) as http:
            with pytest.raises(UpstreamLimitError, match="upstream_max_header_bytes") as info:
                await http.get(server.url())
            assert info.value.limit == "upstream_max_header_bytes"
            assert sent < 8 * 1024 * 1024  # refused long before the whole header was sent

    run(main())


def test_an_answer_over_the_limit_fails_the_body_read_naming_the_limit() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        while True:
            writer.write(chunk(b"x" * 65536))
            await writer.drain()

    async def main() -> None:
        limit = 1024 * 1024
        async with RawServer(handler) as server, client(ceilings=Limits(upstream_max_answer_bytes=limit)) as http:
            received = 0
            async with http.stream("GET", server.url()) as response:
                with pytest.raises(UpstreamLimitError, match="upstream_max_answer_bytes"):
                    async for part in response.aiter_raw():
                        received += len(part)
            assert received <= limit

    run(main())


@pytest.mark.parametrize("encoding", [b"gzip", b"br", b"deflate", b"GZIP"])
def test_a_compressed_answer_is_refused_never_inflated(encoding: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(b"\x1f\x8b not really gzip", b"content-encoding: " + encoding + b"\r\n"))
        await writer.drain()

    async def main() -> None:
        async with RawServer(handler) as server, client() as http:
            with pytest.raises(UpstreamLimitError, match="Content-Encoding") as info:
                await http.get(server.url())
            assert info.value.code == "upstream_unsupported_encoding"

    run(main())


def test_identity_encoding_is_accepted() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(b"plain", b"content-encoding: identity\r\n"))
        await writer.drain()

    async def main() -> None:
        async with RawServer(handler) as server, client() as http:
            assert (await http.get(server.url())).text == "plain"

    run(main())


def _upstream(url: str, limits: Limits | None = None, key: str = "sk-upstream-secret-0123") -> UpstreamClient:
    config = BridgeConfig(upstreams=(Upstream(name="u", base_url=url, api_key=key),), store="none",
                          limits=limits or Limits())  # fmt: skip
    return UpstreamClient(config.upstreams[0], config)


def test_a_json_answer_over_the_limit_is_a_502_naming_it() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(chunk(b'{"choices":[{"message":{"content":"'))
        for _ in range(64):
            writer.write(chunk(b"a" * 65536))
            await writer.drain()
        writer.write(chunk(b'"}}]}') + b"0\r\n\r\n")
        await writer.drain()

    async def main() -> None:
        async with RawServer(handler) as server:
            upstream = _upstream(server.url("/v1"), Limits(upstream_max_json_bytes=1024 * 1024))
            try:
                with pytest.raises(ApiError) as info:
                    await upstream.complete({"model": "m", "messages": []}, None)
            finally:
                await upstream.aclose()
            assert info.value.status == 502 and "upstream_max_json_bytes" in info.value.message

    run(main())


def test_passed_headers_are_scrubbed_of_the_key_in_every_form() -> None:
    import base64

    key = "sk-upstream-secret-0123"
    raw = key.encode()
    echoes = [raw, key.upper().encode(), base64.b64encode(raw), base64.urlsafe_b64encode(raw).rstrip(b"="),
              base64.b64encode(b"u:" + raw), base64.b64encode(b"ab:" + raw)]  # fmt: skip

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        body = b'{"error":{"message":"slow down","type":"rate_limit_error"}}'
        head = b"retry-after: %s\r\nx-ratelimit-limit-requests: %s\r\nx-ratelimit-remaining-requests: %s\r\n" % tuple(echoes[:3])
        head += b"x-ratelimit-reset-requests: %s\r\nx-ratelimit-limit-tokens: %s\r\nx-ratelimit-reset-tokens: %s\r\n" % tuple(echoes[3:])
        writer.write(b"HTTP/1.1 429 Too Many\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), head, body))
        await writer.drain()

    async def main() -> None:
        async with RawServer(handler) as server:
            upstream = _upstream(server.url("/v1"), key=key)
            try:
                with pytest.raises(ApiError) as info:
                    await upstream.complete({"model": "m", "messages": []}, None)
            finally:
                await upstream.aclose()
            assert info.value.status == 429 and len(info.value.headers) == 6
            for value in info.value.headers.values():
                assert "***" in value
                for echo in echoes:
                    assert echo.decode() not in value

    run(main())


def test_scrub_leaves_unrelated_text_alone() -> None:
    assert scrub("nothing to see in 3 seconds", ("sk-upstream-secret-0123",)) == "nothing to see in 3 seconds"
    assert scrub("Bearer SK-UPSTREAM-SECRET-0123!", ("sk-upstream-secret-0123",)) == "Bearer ***!"


def test_a_backend_404_says_which_url_answered() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        body = b'{"detail":"Not Found"}'
        writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                     % (len(body), body))  # fmt: skip
        await writer.drain()

    async def main() -> None:
        async with RawServer(handler) as server:
            upstream = _upstream(server.url(""))  # the base URL without /v1
            try:
                with pytest.raises(ApiError) as info:
                    await upstream.complete({"model": "m", "messages": []}, None)
            finally:
                await upstream.aclose()
            message = info.value.message
            assert info.value.status == 404
            assert f"http://127.0.0.1:{server.port}/chat/completions answered 404: Not Found" in message
            assert "missing /v1" in message

    run(main())


def test_the_body_rate_rule_judges_an_average_not_a_gap() -> None:
    rate = BodyRate(min_rate=1024, window=10, now=0.0)
    for second in range(1, 10):  # one byte a second: never a long gap, far too slow
        rate.feed(1)
        assert not rate.too_slow(float(second))
    assert rate.too_slow(10.0)
    fair = BodyRate(min_rate=1024, window=10, now=0.0)
    fair.feed(20_000)
    assert not fair.too_slow(10.0)  # a new window starts
    assert fair.too_slow(20.0)  # and nothing came in it


def test_limits_parse_from_toml_and_refuse_nonsense() -> None:
    config = parse_config({"upstreams": [{"base_url": "http://x/v1"}],
                           "limits": {"upstream_max_answer_bytes": 1000, "request_header_timeout": 2}})  # fmt: skip
    assert config.limits.upstream_max_answer_bytes == 1000 and config.limits.request_header_timeout == 2.0
    assert config.limits.upstream_max_json_bytes == Limits().upstream_max_json_bytes
    with pytest.raises(ConfigError, match="unknown keys"):
        parse_config({"upstreams": [{"base_url": "http://x/v1"}], "limits": {"max_header": 1}})
    with pytest.raises(ConfigError, match="positive"):
        Limits(request_max_headers=0)


def test_the_text_access_log_escapes_control_characters(caplog: pytest.LogCaptureFixture) -> None:
    record = AccessRecord("GET", "/v1/responses/x\n2026-01-01 INFO forged line\r\x1b[31m\x7f")
    record.model = "m\nx"
    with caplog.at_level("INFO", logger="responses_bridge.access"):
        emit(record, "text")
    (line,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x7f" not in line
    assert "/v1/responses/x\\x0a2026-01-01\\x20INFO" in line and "model=m\\x0ax" in line
