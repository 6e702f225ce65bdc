"""Image input through the bridge to the real llama.cpp `llama-server`, with and without a projector.

llama-server takes an image part only when it was started with a multimodal projector (`--mmproj`);
without one it answers the whole request with a 500. The tests' server carries the tiny projector of
tests/support/llamacpp/make_mmproj.py, so here the openai SDK sends what the Open Responses suite's
image-input test sends (an `input_text` and an `input_image` with a data: URL PNG), llama-server
really decodes and encodes the image, and the tiny model answers its greeting (the projector's
embeddings are ones it does not key on). The same request to a server started without the projector
shows what the projector changes: the bridge's OpenAI-shaped 502 instead of an answer.
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import BridgeHandle, start_bridge
from tests.support.llamacpp import behaviour
from tests.support.llamacpp.launcher import LlamaServer, require_build, run_llama_server

MODEL = behaviour.MODEL
PROMPT = "What do you see in this image? Answer in one sentence."


def png_data_url(width: int = 32, height: int = 32) -> str:
    """A red square on white as a PNG data URL, built here so it is certainly a valid image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b""
    for y in range(height):
        row = b"".join(
            b"\xff\x00\x00" if width // 4 <= x < 3 * width // 4 and height // 4 <= y < 3 * height // 4 else b"\xff" * 3
            for x in range(width)
        )
        rows += b"\x00" + row  # filter type 0 per scanline
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(png).decode()


IMAGE_INPUT = [
    {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_text", "text": PROMPT},
            {"type": "input_image", "image_url": png_data_url()},
        ],
    }
]


def _bridge_over(server: LlamaServer) -> BridgeHandle:
    from tests.e2e.test_llamacpp import llama_config

    return start_bridge(llama_config(server.url))


@pytest.fixture(scope="module")
def client(llama: LlamaServer) -> Iterator[openai.OpenAI]:
    handle = _bridge_over(llama)
    try:
        yield openai.OpenAI(base_url=handle.url, api_key="x", max_retries=0, timeout=120)
    finally:
        handle.stop()


def test_image_input_answers(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input=IMAGE_INPUT)
    assert response.status == "completed"
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output_text == behaviour.GREETING

    text_only = client.responses.create(
        model=MODEL, input=[{"type": "message", "role": "user", "content": [{"type": "input_text", "text": PROMPT}]}]
    )
    assert response.usage is not None and text_only.usage is not None
    # the projector really ran: the image took its patch embeddings' places in the prompt llama.cpp
    # counted (its media marker is replaced, not tokenised)
    assert response.usage.input_tokens == text_only.usage.input_tokens + behaviour.IMAGE_TOKENS


def test_image_input_streams(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model=MODEL, input=IMAGE_INPUT, stream=True))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == behaviour.GREETING
    assert events[-1].response.status == "completed"
    assert events[-1].response.output_text == behaviour.GREETING


def test_without_projector_the_image_is_refused(tmp_path: Path) -> None:
    """The same request to a llama-server without `--mmproj`: its 500 becomes the bridge's 502
    `upstream_error` (OpenAI-shaped), so the answers above are the projector's doing."""
    build = require_build()
    with run_llama_server(build, tmp_path, vision=False) as server:
        handle = _bridge_over(server)
        try:
            client = openai.OpenAI(base_url=handle.url, api_key="x", max_retries=0, timeout=120)
            with pytest.raises(openai.APIStatusError) as caught:
                client.responses.create(model=MODEL, input=IMAGE_INPUT)
            # text alone still works on that server
            assert client.responses.create(model=MODEL, input=PROMPT).output_text == behaviour.GREETING
        finally:
            handle.stop()
    assert caught.value.status_code == 502
    body = caught.value.body
    assert isinstance(body, dict) and body.get("code") == "upstream_error", body
    assert "image input is not supported" in str(body.get("message")), body
