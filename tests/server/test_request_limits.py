"""Request-shape and answer-shape ceilings (`[limits]`), each refused with a clear OpenAI error."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest

from server.config import Limits
from tests.support.assertions import assert_openai_error
from tests.support.servers import run_app


def _limits(**fields: Any) -> Limits:
    return dataclasses.replace(Limits(), **fields)


@pytest.mark.parametrize(
    ("field", "element"),
    [("input", {"role": "user", "content": "x"}), ("tools", {"type": "function", "name": "f"})],
)
def test_an_array_over_its_length_limit_is_a_400_naming_it(make_bridge: Any, backend_requests: Any,
                                                           clear_backend_requests: Any, field: str,
                                                           element: dict[str, Any]) -> None:  # fmt: skip
    bridge = make_bridge(limits=_limits(request_max_input_items=5, request_max_tools=3))
    clear_backend_requests()
    body: dict[str, Any] = {"model": "m", "input": "hi", field: [element] * 6}
    error = assert_openai_error(httpx.post(bridge.url + "/responses", json=body, timeout=30), 400)
    assert error["param"] == field
    assert error["code"] == "array_above_max_length"
    assert "6" in error["message"]
    assert backend_requests() == []
    body[field] = [element] * 3  # at the limit: served
    assert httpx.post(bridge.url + "/responses", json=body, timeout=30).status_code == 200


def test_a_body_with_too_many_json_containers_is_refused_before_parsing(make_bridge: Any) -> None:
    bridge = make_bridge(limits=_limits(request_max_json_containers=1000))
    body = {"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": "x"}]}] * 400}
    error = assert_openai_error(httpx.post(bridge.url + "/responses", json=body, timeout=30), 400)
    assert error["code"] == "request_too_large"
    assert error["param"] == "input"


async def _huge_frame_backend(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A chat backend whose stream opens normally, then sends one SSE line that never ends."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})  # fmt: skip
    first = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}\n\n'
    await send({"type": "http.response.body", "body": first, "more_body": True})
    for _ in range(12):  # 12 MiB of one line, past the decoder's 8 MiB ceiling
        await send({"type": "http.response.body", "body": b"data: " + b"x" * (1 << 20), "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def test_a_backend_frame_over_the_ceiling_ends_the_stream_as_upstream_error(make_bridge: Any) -> None:
    with run_app(_huge_frame_backend) as backend:
        bridge = make_bridge(upstream={"base_url": backend.url + "/v1"})
        response = httpx.post(bridge.url + "/responses", json={"model": "m", "input": "hi", "stream": True},
                              timeout=60)  # fmt: skip
    assert response.status_code == 200
    text = response.text
    assert text.rstrip().endswith("data: [DONE]")
    failed = [line for line in text.splitlines() if line.startswith("data: {") and '"response.failed"' in line]
    assert len(failed) == 1
    assert '"code":"upstream_error"' in failed[0]
    assert "SSE frame over" in failed[0]
