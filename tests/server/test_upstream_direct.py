"""The upstream client's direct path (`FastTransport.send_raw`, a request head pre-built per upstream)
against httpx's own path: the backend must see the same bytes, and the bridge must read the same
headers, status and body, whichever path a request takes."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

from server.config import BridgeConfig, Timeouts, Upstream
from server.errors import ApiError
from server.transport import FastTransport, RawResponse, ResponseHeaders
from server.upstream import UpstreamClient, _json_headers

UPSTREAMS = [
    Upstream(name="plain", base_url="http://127.0.0.1:9/v1"),
    Upstream(name="keyed", base_url="http://127.0.0.1:9/v1", api_key="sk-upstream-0123"),
    Upstream(name="headers", base_url="http://localhost/prefix/v1", api_key="sk-upstream-0123",
             headers={"X-Org": "org-1", "Accept": "overridden/by-the-request"}),
    Upstream(name="passthrough", base_url="http://backend.internal:8081/v1", api_key="passthrough"),
    Upstream(name="passthrough-headers", base_url="http://h:81/v1", api_key="passthrough",
             headers={"Authorization": "Bearer configured", "x-extra": "1"}),
]  # fmt: skip


def _client(upstream: Upstream, **config: Any) -> UpstreamClient:
    return UpstreamClient(upstream, BridgeConfig(upstreams=(upstream,), store="none", **config))


@pytest.mark.parametrize("upstream", UPSTREAMS, ids=lambda u: u.name)
def test_the_prebuilt_head_is_the_request_httpx_would_send(upstream: Upstream) -> None:
    async def main() -> None:
        client = _client(upstream)
        try:
            assert client._chat_head is not None
            for body in (b"{}", orjson.dumps({"model": "m", "input": "caf\u00e9 " * 50})):
                token = "caller-key-42" if upstream.passthrough else None
                request = client.client.build_request(
                    "POST", client.chat_url, content=body, headers=_json_headers(client._auth(token))
                )
                assert client._chat_head.encode(body, token) == FastTransport._head(request, body) + body
        finally:
            await client.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("url", ["https://api.example.invalid/v1", "http://user:secret@127.0.0.1:9/v1"])
def test_https_upstreams_and_credentials_in_the_url_keep_the_httpx_path(url: str) -> None:
    """TLS is httpx's; so is turning URL credentials into Basic auth, which httpx does when it sends."""

    async def main() -> None:
        client = _client(Upstream(name="kept", base_url=url, api_key="sk-x"))
        try:
            assert client._chat_head is None
        finally:
            await client.aclose()

    asyncio.run(main())


@pytest.mark.parametrize(
    "raw",
    [
        [(b"Content-Type", b"text/event-stream"), (b"X-Twice", b"a"), (b"x-twice", b"b")],
        [(b"retry-after", "caf\u00e9".encode())],  # UTF-8
        [(b"retry-after", b"\xe9t\xe9")],  # neither ASCII nor UTF-8: Latin-1
        [],
    ],
)
def test_response_headers_read_as_httpx_headers_do(raw: list[tuple[bytes, bytes]]) -> None:
    ours, theirs = ResponseHeaders(raw), httpx.Headers(raw)
    assert dict(ours) == dict(theirs)
    for name in ("content-type", "CONTENT-TYPE", "x-twice", "Retry-After", "absent"):
        assert ours.get(name) == theirs.get(name)
        assert (name in ours) == (name in theirs)


class Backend:
    """A loopback chat backend that records every request's bytes and answers from a script."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers
        self.requests: list[bytes] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Backend:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:"))  # fmt: skip
                    self.requests.append(head + await reader.readexactly(length))
                    writer.write(self.answers[min(len(self.requests), len(self.answers)) - 1])
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self._server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()


def _json_answer(obj: Any, status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    body = orjson.dumps(obj)
    return b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        status, len(body), extra, body)  # fmt: skip


COMPLETION = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}  # fmt: skip
SSE = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
       + b"".join(b"%x\r\n%s\r\n" % (len(frame), frame) for frame in (b'data: {"a":1}\n\n', b"data: [DONE]\n\n"))
       + b"0\r\n\r\n")  # fmt: skip


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "httpx"])
def test_both_paths_send_the_same_bytes_and_read_the_same_answers(direct: bool) -> None:
    """Run the same requests through either path; the recorded bytes are compared across the two."""
    seen: dict[bool, list[bytes]] = {}

    async def main(direct: bool) -> list[bytes]:
        error = _json_answer({"error": {"message": "slow down", "type": "rate_limit_error"}}, b"429 Too Many",
                             b"retry-after: 7\r\n")  # fmt: skip
        async with Backend([_json_answer(COMPLETION), SSE, error]) as backend:
            upstream = Upstream(name="u", base_url=f"http://127.0.0.1:{backend.port}/v1", api_key="sk-upstream-0123")
            client = _client(upstream, timeouts=Timeouts(first_byte=7.0, idle=11.0))
            if not direct:
                client._chat_head = None
            try:
                completion = await client.complete({"model": "m", "messages": []}, None)
                assert completion == COMPLETION
                response = await client.open_stream({"model": "m", "messages": [], "stream": True}, None)
                assert isinstance(response, RawResponse) is direct
                assert response.status_code == 200
                assert response.headers.get("Content-Type") == "text/event-stream"
                timeouts = response.timeouts if isinstance(response, RawResponse) else response.request.extensions["timeout"]
                assert timeouts["read"] == 11.0  # switched from first-byte to idle after the headers
                body = b"".join([part async for part in response.aiter_raw()])
                await response.aclose()
                assert body == b'data: {"a":1}\n\ndata: [DONE]\n\n'
                with pytest.raises(ApiError) as info:
                    await client.complete({"model": "m", "messages": []}, None)
                assert info.value.status == 429 and info.value.headers == {"retry-after": "7"}
                assert backend.connections == 1  # one kept-alive connection for all three
            finally:
                await client.aclose()
            return [r.replace(str(backend.port).encode(), b"PORT") for r in backend.requests]

    seen[direct] = asyncio.run(main(direct))
    seen[not direct] = asyncio.run(main(not direct))
    assert seen[True] == seen[False] and len(seen[True]) == 3


def test_the_direct_path_maps_a_refused_connection_to_a_502() -> None:
    async def main() -> None:
        client = _client(Upstream(name="u", base_url="http://127.0.0.1:9/v1"))
        try:
            assert client._chat_head is not None
            with pytest.raises(ApiError) as info:
                await client.complete({"model": "m", "messages": []}, None)
            assert info.value.status == 502 and info.value.code == "upstream_unavailable"
        finally:
            await client.aclose()

    asyncio.run(main())


def test_a_passthrough_upstream_without_a_caller_key_is_refused_before_sending() -> None:
    async def main() -> None:
        async with Backend([_json_answer(COMPLETION)]) as backend:
            client = _client(Upstream(name="u", base_url=f"http://127.0.0.1:{backend.port}/v1", api_key="passthrough"))
            try:
                with pytest.raises(ApiError) as info:
                    await client.complete({"model": "m", "messages": []}, None)
                assert info.value.status == 401 and info.value.code == "missing_api_key"
                await client.complete({"model": "m", "messages": []}, "caller-key")
                assert b"authorization: Bearer caller-key\r\n" in backend.requests[0]
            finally:
                await client.aclose()

    asyncio.run(main())
