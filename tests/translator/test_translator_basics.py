"""Unit tests of the translator's public API: SSE framing, errors, requests, whole answers."""

from __future__ import annotations

import orjson
import pytest

import translator
from translator import (
    DONE_FRAME,
    ChatStreamTranslator,
    InvalidRequest,
    SSEDecoder,
    UpstreamError,
    chat_completion_to_response,
    encode_sse,
    responses_to_chat_request,
)


def test_public_names_import() -> None:
    for name in (
        "InvalidRequest", "UpstreamError", "SSEDecoder", "encode_sse", "responses_to_chat_request",
        "chat_to_responses_request", "chat_completion_to_response", "response_to_chat_completion",
        "ChatStreamTranslator", "ResponsesStreamTranslator", "items_to_messages", "messages_to_items",
        "TranslatorOptions",
    ):
        assert hasattr(translator, name), name


# ----------------------------------------------------------------------------- SSE


def test_sse_decoder_any_split_crlf_comments_multiline() -> None:
    stream = (
        b": keep-alive\r\n\r\n"
        b"data: {\"a\": 1}\r\n\r\n"
        b"event: ping\ndata: line1\ndata: line2\n\n"
        b"data:nospace\n\n"
        b"\n\n"
        b"data: [DONE]\n\n"
    )
    expected = [(None, '{"a": 1}'), ("ping", "line1\nline2"), (None, "nospace"), (None, "[DONE]")]
    for size in (1, 2, 3, 7, len(stream)):
        dec = SSEDecoder()
        frames = []
        for i in range(0, len(stream), size):
            frames += dec.feed(stream[i : i + size])
        frames += dec.close()
        assert frames == expected, size


def test_sse_decoder_close_flushes_unterminated_frame() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"data: {\"x\":2}") == []
    assert dec.close() == [(None, '{"x":2}')]


def test_encode_sse_one_frame() -> None:
    frame = encode_sse({"type": "response.output_text.delta", "delta": "a\nb", "sequence_number": 3})
    assert frame.startswith(b"event: response.output_text.delta\ndata: {")
    assert frame.endswith(b"\n\n") and frame.count(b"\n") == 3
    (name, data), = SSEDecoder().feed(frame)
    assert name == "response.output_text.delta" and orjson.loads(data)["delta"] == "a\nb"
    assert DONE_FRAME == b"data: [DONE]\n\n"


# ----------------------------------------------------------------------------- errors


def test_error_envelopes() -> None:
    err = InvalidRequest("bad", param="input[3].call_id", code="invalid_value").to_error()
    assert err == {"error": {"message": "bad", "type": "invalid_request_error", "param": "input[3].call_id",
                             "code": "invalid_value"}}
    up = UpstreamError("boom")
    assert up.status == 502 and up.to_error()["error"]["type"] == "server_error"
    assert UpstreamError("slow down", status=429, code="rate_limit_exceeded").to_error()["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize(
    ("request_body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": [{"type": "bogus"}]}, "input[0].type"),
        ({"model": "m", "input": [{"type": "message", "role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": [{"role": "user", "content": "a"}, {"type": "function_call_output", "call_id": "c9",
                                                                       "output": "x"}]}, "input[1].call_id"),
        ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"model": "m", "input": "x", "tool_choice": "sometimes"}, "tool_choice"),
        ({"model": "m", "input": "x", "max_output_tokens": "many"}, "max_output_tokens"),
        ({"model": "m", "input": []}, "input"),
    ],
)
def test_invalid_requests_name_the_param(request_body: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        responses_to_chat_request(request_body)
    assert info.value.param == param
    assert info.value.to_error()["error"]["type"] == "invalid_request_error"


def test_chat_completion_error_body_raises_upstream_error() -> None:
    with pytest.raises(UpstreamError) as info:
        chat_completion_to_response({"error": {"message": "model overloaded", "code": "overloaded"}}, {"model": "m"})
    assert info.value.message == "model overloaded"


# ----------------------------------------------------------------------------- a stream


def test_text_stream_canonical_sequence() -> None:
    req = {"model": "m", "input": "hi", "stream": True}
    tr = ChatStreamTranslator(req, response_id="resp_x", created_at=10, completed_at=11)
    events = []
    events += tr.feed({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    events += tr.feed({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]})
    events += tr.feed({"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]})
    events += tr.feed({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}})
    events += tr.finish()
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert final["usage"]["total_tokens"] == 4 and final["completed_at"] == 11
    assert tr.finished and tr.feed({"choices": []}) == [] and tr.finish() == []


def test_upstream_error_from_body_keeps_identifiers_only() -> None:
    err = UpstreamError.from_body({"error": {"message": "nope", "code": "context_length_exceeded", "param": "messages[2]"}},
                                  status=400)
    assert (err.message, err.code, err.param, err.status) == ("nope", "context_length_exceeded", "messages[2]", 400)
    leaky = UpstreamError.from_body({"error": {"message": "m", "code": "Bearer sk-secret", "param": "auth: sk-x"}})
    assert leaky.code == "server_error" and leaky.param is None
    assert UpstreamError.from_body({"error": {"message": "slow", "code": 429}}).status == 429
    assert UpstreamError.from_body({"error": "plain text"}).message == "plain text"
    assert UpstreamError.from_body("garbage").message
