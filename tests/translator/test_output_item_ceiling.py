"""A backend that opens more output items than `max_output_items` ends the response as failed
(`upstream_too_large`) at the ceiling, instead of the translator building every item."""

from __future__ import annotations

from typing import Any

from translator import ChatStreamTranslator, chat_completion_to_response


def _call(index: int) -> dict[str, Any]:
    return {"index": index, "id": f"call_{index}", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def _chunk(calls: list[dict[str, Any]], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": finish}]}


def test_parallel_calls_in_one_chunk_stop_at_the_ceiling() -> None:
    tr = ChatStreamTranslator({"model": "m"}, max_output_items=50)
    events = tr.start() + tr.feed(_chunk([_call(i) for i in range(5000)], "tool_calls"))
    assert events[-1]["type"] == "response.failed"
    final = events[-1]["response"]
    assert final["error"]["code"] == "upstream_too_large"
    assert "50" in final["error"]["message"]
    assert len(final["output"]) == 50
    assert sum(e["type"] == "response.output_item.added" for e in events) == 50
    assert tr.feed(_chunk([_call(6000)])) == []  # nothing after the end


def test_calls_streamed_one_per_chunk_stop_at_the_ceiling() -> None:
    tr = ChatStreamTranslator({"model": "m"}, max_output_items=20)
    events = tr.start()
    for i in range(1000):
        events += tr.feed(_chunk([_call(i)]))
        if tr.finished:
            break
    assert i == 20  # the 21st call is refused
    assert events[-1]["type"] == "response.failed"
    assert len(events[-1]["response"]["output"]) == 20


def test_at_the_ceiling_exactly_the_answer_completes() -> None:
    tr = ChatStreamTranslator({"model": "m"}, max_output_items=3)
    events = tr.start() + tr.feed(_chunk([_call(i) for i in range(3)], "tool_calls")) + tr.finish()
    assert events[-1]["type"] == "response.completed"
    assert [item["call_id"] for item in events[-1]["response"]["output"]] == ["call_0", "call_1", "call_2"]


def test_a_whole_completion_obeys_the_same_ceiling() -> None:
    completion = {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                  "choices": [{"index": 0, "finish_reason": "tool_calls",
                               "message": {"role": "assistant", "content": None,
                                           "tool_calls": [{k: v for k, v in _call(i).items() if k != "index"}
                                                          for i in range(10)]}}]}  # fmt: skip
    response = chat_completion_to_response(completion, {"model": "m"}, max_output_items=4)
    assert response["status"] == "failed"
    assert response["error"]["code"] == "upstream_too_large"
    assert len(response["output"]) == 4


# ------------------------------------------------------------------ what cannot be carried back


def _deep(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"type": "reasoning.text", "text": "x"}
    for _ in range(depth):
        value = {"type": "reasoning.text", "text": "", "nested": value}
    return value


def test_reasoning_too_deep_to_carry_back_fails_the_stream_as_the_backends_fault() -> None:
    from conformance import validate_events

    tr = ChatStreamTranslator({"model": "m"})
    events = tr.start()
    events += tr.feed({"choices": [{"index": 0, "delta": {"reasoning_details": [_deep(300)]}}]})
    events += tr.feed({"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]})
    events += tr.finish()
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "upstream_malformed_chunk"
    assert validate_events(events) == []


def test_a_whole_answer_with_reasoning_too_deep_fails_as_the_backends_fault() -> None:
    completion = {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                  "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": "hi",
                                           "reasoning_details": [_deep(300)]}}]}  # fmt: skip
    response = chat_completion_to_response(completion, {"model": "m"})
    assert response["status"] == "failed"
    assert response["error"]["code"] == "upstream_malformed_chunk"
