"""Shared checks for translator streams: the project's validator, the SDK's types, the SDK's accumulator.

Other translator test modules import `check_stream`; the tests at the bottom prove the checks can
fail (a check that accepts everything proves nothing).
"""

from __future__ import annotations

from typing import Any

import pytest
from openai import NOT_GIVEN
from openai._models import construct_type
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from translator import ChatStreamTranslator
from translator.validate import validate_events, validate_response

_EVENT = TypeAdapter(ResponseStreamEvent)
_RESPONSE = TypeAdapter(Response)
#: Open Responses' raw-reasoning event names are not in the SDK union (the SDK passes them through).
_NOT_IN_SDK = {"response.reasoning.delta", "response.reasoning.done"}


def run_stream(request: dict[str, Any], chunks: list[dict[str, Any]], done_seen: bool = True,
               **options: Any) -> tuple[list[dict[str, Any]], ChatStreamTranslator]:
    tr = ChatStreamTranslator(request, **options)
    events = tr.start()
    for chunk in chunks:
        events += tr.feed(chunk)
    events += tr.finish(done_seen=done_seen)
    return events, tr


def sdk_accumulate(events: list[dict[str, Any]]) -> Any:
    """Feed events through the SDK's own `responses.stream` accumulator; returns its final response.

    Raises whatever the SDK raises on a malformed stream (RuntimeError, AssertionError, IndexError).
    """
    state = ResponseStreamState(input_tools=NOT_GIVEN, text_format=NOT_GIVEN)
    for event in events:
        obj = construct_type(type_=ResponseStreamEvent, value=event)  # what the SDK does on the wire
        state.handle_event(obj)  # type: ignore[arg-type]
    return state._completed_response


def check_stream(events: list[dict[str, Any]], request: dict[str, Any] | None = None, *,
                 profile: str = "openai", sdk: bool = True) -> Any:
    """Assert a stream is valid for the project's validator, the SDK types and the SDK accumulator."""
    violations = validate_events(events, request, profile=profile)
    assert not violations, "\n".join(str(v) for v in violations)
    for event in events:
        if event["type"] in _NOT_IN_SDK or (event["type"] == "error" and "message" not in event):
            continue  # OR-only shapes (raw reasoning names, nested error event) are not SDK types
        _EVENT.validate_python(event)
    terminal = events[-1]["response"]
    assert not validate_response(terminal, profile=profile), validate_response(terminal, profile=profile)
    _RESPONSE.validate_python(terminal)
    if not sdk:
        return None
    final = sdk_accumulate(events)
    if events[-1]["type"] == "response.completed":
        assert final is not None
        assert final.model_dump(exclude_none=True)["output"] == _RESPONSE.validate_python(terminal).model_dump(
            exclude_none=True
        )["output"]
    return final


TEXT_CHUNKS = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]},
    {"choices": [{"index": 0, "delta": {"content": " there"}, "finish_reason": "stop"}]},
]


def test_check_stream_accepts_a_good_stream() -> None:
    events, _ = run_stream({"model": "m", "input": "x"}, TEXT_CHUNKS)
    final = check_stream(events, {"model": "m", "input": "x"})
    assert final.output[0].content[0].text == "Hi there"


def test_sdk_accumulator_rejects_a_delta_without_its_item() -> None:
    events, _ = run_stream({"model": "m", "input": "x"}, TEXT_CHUNKS)
    broken = [e for e in events if e["type"] != "response.output_item.added"]
    with pytest.raises(RuntimeError):
        sdk_accumulate(broken)
    with pytest.raises(AssertionError):
        check_stream(broken)


def test_sdk_types_reject_a_delta_without_logprobs() -> None:
    events, _ = run_stream({"model": "m", "input": "x"}, TEXT_CHUNKS)
    delta = next(e for e in events if e["type"] == "response.output_text.delta")
    bad = {k: v for k, v in delta.items() if k != "logprobs"}
    with pytest.raises(ValueError):
        _EVENT.validate_python(bad)
