"""Garbage in, never a crash out: the translator meets whatever a broken backend or client sends.

A chat chunk of any JSON shape is tolerated (the stream still ends with a valid terminal event);
a request of any JSON shape either translates or raises InvalidRequest, never TypeError/KeyError
(which the server would turn into a 500).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.stream_check import check_stream
from translator import (
    ChatStreamTranslator,
    InvalidRequest,
    ResponsesStreamTranslator,
    UpstreamError,
    chat_completion_to_response,
    chat_to_responses_request,
    items_to_messages,
    messages_to_items,
    response_to_chat_completion,
    responses_to_chat_request,
)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = ["choices", "delta", "content", "role", "tool_calls", "index", "id", "function", "name", "arguments",
        "finish_reason", "usage", "reasoning_content", "reasoning", "reasoning_details", "refusal", "error",
        "logprobs", "annotations", "type", "text", "extra_content", "custom", "input", "message", "x_groq",
        "prompt_tokens", "model", "tools", "tool_choice", "call_id", "output", "summary", "encrypted_content",
        "instructions", "max_output_tokens", "text", "format", "schema", "reasoning", "effort", "namespace",
        "stream", "include", "top_logprobs", "detail", "image_url", "file_data", "mode", "url_citation"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False, width=16),
                    st.sampled_from(["", "x", "stop", "length", "tool_calls", "error", "function", "user",
                                     "assistant", "message", "function_call", "reasoning", "<think>", "{}",
                                     "input_text", "json_schema", "custom", "auto"]))
json_like = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)), max_leaves=25)


@st.composite
def chunks(draw: st.DrawFn) -> Any:
    """Mostly chunk-shaped garbage: a choices list whose first element has a delta of random stuff."""
    if draw(st.integers(0, 4)) == 0:
        return draw(json_like)
    delta = draw(st.dictionaries(st.sampled_from(KEYS), json_like, max_size=4))
    choice = {"index": draw(st.sampled_from([0, 0, 1, None])), "delta": delta,
              "finish_reason": draw(st.sampled_from([None, None, "stop", "length", "tool_calls", 3]))}
    chunk: dict[str, Any] = {"choices": [choice]}
    if draw(st.booleans()):
        chunk["usage"] = draw(json_like)
    return chunk


REQ = {"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}, {"type": "custom", "name": "c"}]}


@SETTINGS
@given(st.lists(chunks(), max_size=6), st.booleans())
def test_any_chunks_end_in_a_valid_stream(chunk_list: list[Any], done_seen: bool) -> None:
    tr = ChatStreamTranslator(REQ, response_id="resp_f", created_at=1, completed_at=2)
    events = tr.start()
    for chunk in chunk_list:
        events += tr.feed(chunk)
    events += tr.finish(done_seen=done_seen)
    assert tr.finished and events[-1]["type"] in ("response.completed", "response.incomplete", "response.failed")
    check_stream(events, REQ, sdk=events[-1]["type"] == "response.completed")


@SETTINGS
@given(json_like)
def test_any_completion_translates_or_raises_upstream_error(body: Any) -> None:
    try:
        response = chat_completion_to_response(body, REQ)
    except UpstreamError:
        return
    assert response["object"] == "response"


@SETTINGS
@given(st.dictionaries(st.sampled_from(KEYS), json_like, max_size=6), st.booleans())
def test_any_request_translates_or_raises_invalid_request(body: dict[str, Any], with_model: bool) -> None:
    if with_model:
        body = {"model": "m", **body}
    try:
        out = responses_to_chat_request(body)
    except InvalidRequest as exc:
        assert exc.to_error()["error"]["type"] == "invalid_request_error"
        return
    assert out["messages"]


@SETTINGS
@given(st.lists(json_like, max_size=4))
def test_any_items_translate_or_raise_invalid_request(items: list[Any]) -> None:
    try:
        items_to_messages(items)
    except InvalidRequest:
        pass
    try:
        messages_to_items(items)
    except InvalidRequest:
        pass


@SETTINGS
@given(json_like)
def test_reverse_direction_never_crashes(body: Any) -> None:
    for fn in (chat_to_responses_request, response_to_chat_completion):
        try:
            fn(body)
        except (InvalidRequest, UpstreamError):
            pass
    back = ResponsesStreamTranslator({"model": "m"})
    back.feed(body)
    back.finish()


EVENT_TYPES = ["response.created", "response.in_progress", "response.output_text.delta", "response.refusal.delta",
               "response.reasoning_summary_text.delta", "response.reasoning_summary_part.added",
               "response.output_item.added", "response.function_call_arguments.delta", "response.output_item.done",
               "response.completed", "response.incomplete", "response.failed", "error"]
FIELDS = ["response", "delta", "output_index", "item", "summary_index", "message", "code", "error"]


@SETTINGS
@given(st.lists(st.builds(lambda t, rest: {"type": t, **rest}, st.sampled_from(EVENT_TYPES),
                          st.dictionaries(st.sampled_from(FIELDS), json_like, max_size=4)), max_size=8))
def test_reverse_stream_takes_any_event_shapes(events: list[dict[str, Any]]) -> None:
    back = ResponsesStreamTranslator({"model": "m"})
    out = []
    for event in events:
        out += back.feed(event)
    out += back.finish()
    assert back.finished and out  # always ends: a finish chunk or an error chunk
