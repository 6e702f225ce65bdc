"""`server.body.read_body` on the ASGI messages a server hands it: whole bodies, bodies in pieces,
stalls, disconnects, and the size and JSON-shape ceilings (refused the same whichever way the body
arrives)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import ClientDisconnect, Request

from server.body import read_body
from server.errors import ApiError

TOOLS_BODY = b'{"model":"m","input":"hi","tools":[' + b'{"type":"function","name":"f"},' * 300 + b"{}]}"


def _request(messages: list[dict[str, Any]], *, content_length: int | None = None, stall: bool = False) -> Request:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        if stall:
            await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    headers = [(b"content-type", b"application/json")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    return Request({"type": "http", "method": "POST", "path": "/v1/responses", "headers": headers}, receive)


def _pieces(body: bytes, size: int) -> list[dict[str, Any]]:
    chunks = [body[at:at + size] for at in range(0, len(body), size)]
    return [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]


def _read(request: Request, **kwargs: Any) -> bytes:
    kwargs.setdefault("limit", 1 << 20)
    kwargs.setdefault("gap", 5.0)
    return asyncio.run(read_body(request, **kwargs))


@pytest.mark.parametrize("piece", [len(TOOLS_BODY), 29, 1000])
def test_the_body_comes_back_whole_however_it_arrives(piece: int) -> None:
    assert _read(_request(_pieces(TOOLS_BODY, piece)), max_json_containers=10_000) == TOOLS_BODY


@pytest.mark.parametrize("piece", [len(TOOLS_BODY), 29, 1000])
def test_a_body_over_the_container_ceiling_is_refused_naming_the_field(piece: int) -> None:
    with pytest.raises(ApiError) as refused:
        _read(_request(_pieces(TOOLS_BODY, piece)), max_json_containers=200)
    assert refused.value.status == 400 and refused.value.param == "tools"
    assert refused.value.code == "request_too_large"


def test_a_body_at_the_container_ceiling_passes() -> None:
    body = b'{"input":[' + b"{}," * 198 + b"{}]}"  # 1 + 1 + 199 = 201 containers
    assert _read(_request(_pieces(body, len(body))), max_json_containers=201) == body
    with pytest.raises(ApiError):
        _read(_request(_pieces(body, len(body))), max_json_containers=200)


def test_size_limits_by_header_and_by_bytes() -> None:
    with pytest.raises(ApiError) as by_header:
        _read(_request(_pieces(b"{}", 2), content_length=10_000), limit=100)
    assert by_header.value.status == 413
    with pytest.raises(ApiError) as by_bytes:
        _read(_request(_pieces(b"x" * 500, 64)), limit=100)
    assert by_bytes.value.status == 413


def test_a_stalled_body_is_a_408() -> None:
    with pytest.raises(ApiError) as stalled:
        _read(_request(_pieces(TOOLS_BODY, 64)[:3], stall=True), gap=0.2)
    assert stalled.value.status == 408 and stalled.value.code == "request_timeout"


def test_a_body_that_keeps_coming_is_not_cut_by_the_gap() -> None:
    """The deadline moves on with every message: a slow but steady body is read whole."""
    pieces = _pieces(TOOLS_BODY, 1000)

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0.05)
        return pieces.pop(0)

    request = Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)
    assert len(pieces) > 6  # longer in all than the gap
    assert asyncio.run(read_body(request, 1 << 20, 0.2)) == TOOLS_BODY


def test_a_disconnect_mid_body_raises_client_disconnect() -> None:
    with pytest.raises(ClientDisconnect):
        _read(_request(_pieces(TOOLS_BODY, 64)[:2]))
