"""A backend that streams past `max_output_tokens_ceiling` output tokens ends the response as
`incomplete` (`max_output_tokens`) at the chunk that passed it, counted from the backend's own
`usage.completion_tokens` when a chunk carries one and as 4 bytes per token otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from conformance import validate_events
from translator import ChatStreamTranslator, chat_completion_to_response

CEILING = 10


def _text(content: str, usage: dict[str, Any] | None = None, finish: str | None = None) -> dict[str, Any]:
    chunk: dict[str, Any] = {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]}
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def _feed_until_finished(tr: ChatStreamTranslator, chunks: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Events of `chunks` fed one by one until the translator ends; and how many it took."""
    events = tr.start()
    for n, chunk in enumerate(chunks, 1):
        events += tr.feed(chunk)
        if tr.finished:
            return events, n
    return events + tr.finish(), len(chunks)


def _message_text(response: dict[str, Any]) -> str:
    return "".join(part["text"] for item in response["output"] if item["type"] == "message"
                   for part in item["content"] if part["type"] == "output_text")  # fmt: skip


@pytest.mark.parametrize("fast_path", [True, False])
def test_a_stream_one_token_per_chunk_ends_incomplete_past_the_ceiling(fast_path: bool) -> None:
    tr = ChatStreamTranslator({"model": "m"}, fast_path=fast_path, max_output_tokens_ceiling=CEILING)
    events, fed = _feed_until_finished(tr, [_text("tok ") for _ in range(1000)])
    assert fed == CEILING + 1  # the chunk that passed the ceiling is the last one read
    final = events[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert _message_text(final["response"]) == "tok " * (CEILING + 1)
    assert final["response"]["output"][0]["status"] == "incomplete"
    assert tr.ceiling_hit == "max_output_tokens_ceiling"
    assert validate_events(events) == []
    assert tr.feed(_text("more")) == [] and tr.finish() == []


def test_the_fast_and_general_paths_stop_at_the_same_event() -> None:
    def run(fast_path: bool) -> list[dict[str, Any]]:
        tr = ChatStreamTranslator({"model": "m"}, fast_path=fast_path, max_output_tokens_ceiling=CEILING,
                                  response_id="resp_x", created_at=1, completed_at=2)  # fmt: skip
        return _feed_until_finished(tr, [_text("tok ") for _ in range(100)])[0]

    assert run(True) == run(False)


def test_an_answer_at_the_ceiling_exactly_completes() -> None:
    tr = ChatStreamTranslator({"model": "m"}, max_output_tokens_ceiling=CEILING)
    chunks = [_text("tok ") for _ in range(CEILING - 1)] + [_text("tok ", finish="stop")]
    events, _ = _feed_until_finished(tr, chunks)
    assert events[-1]["type"] == "response.completed"
    assert tr.ceiling_hit is None


def test_reasoning_and_tool_call_arguments_count_too() -> None:
    reasoning = [{"choices": [{"index": 0, "delta": {"reasoning_content": "abcd"}}]} for _ in range(6)]
    call = {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}}]}
    args = [{"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1234"}}]}}]}
            for _ in range(100)]  # fmt: skip
    tr = ChatStreamTranslator({"model": "m", "tools": [{"type": "function", "name": "f"}]},
                              max_output_tokens_ceiling=CEILING)  # fmt: skip
    events, fed = _feed_until_finished(tr, [*reasoning, call, *args])
    assert fed == 6 + 1 + 5  # 6 reasoning tokens, then the 5th arguments token passes 10
    final = events[-1]["response"]
    assert final["status"] == "incomplete"
    assert [item["type"] for item in final["output"]] == ["reasoning", "function_call"]
    assert final["output"][1]["arguments"] == "1234" * 5
    assert final["output"][1]["status"] == "incomplete"
    assert validate_events(events) == []


def test_multibyte_text_counts_its_utf8_bytes() -> None:
    tr = ChatStreamTranslator({"model": "m"}, max_output_tokens_ceiling=CEILING)
    _, fed = _feed_until_finished(tr, [_text("é") for _ in range(100)])  # 2 bytes each
    assert fed == 2 * CEILING + 1


# ------------------------------------------------------------------ the backend's own count


@pytest.mark.parametrize("fast_path", [True, False])
def test_continuous_usage_is_preferred_to_the_estimate(fast_path: bool) -> None:
    # one byte per chunk (an estimate of a quarter token) but the backend counts one token each
    chunks = [_text("x", {"prompt_tokens": 3, "completion_tokens": n}) for n in range(1, 100)]
    tr = ChatStreamTranslator({"model": "m"}, fast_path=fast_path, max_output_tokens_ceiling=CEILING)
    events, fed = _feed_until_finished(tr, chunks)
    assert fed == CEILING + 1
    assert events[-1]["type"] == "response.incomplete"


@pytest.mark.parametrize("fast_path", [True, False])
def test_a_low_reported_count_overrides_a_high_estimate(fast_path: bool) -> None:
    # 40 bytes per chunk (10 estimated tokens) that the backend counts as one token
    chunks = [_text("x" * 40, {"completion_tokens": n}) for n in range(1, CEILING + 1)]
    tr = ChatStreamTranslator({"model": "m"}, fast_path=fast_path, max_output_tokens_ceiling=CEILING)
    events, _ = _feed_until_finished(tr, [*chunks, _text("", finish="stop")])
    assert events[-1]["type"] == "response.completed"


def test_text_after_the_last_reported_count_is_estimated_on_top_of_it() -> None:
    chunks = [_text("x", {"completion_tokens": 8})] + [_text("tok ") for _ in range(10)]
    tr = ChatStreamTranslator({"model": "m"}, max_output_tokens_ceiling=CEILING)
    _, fed = _feed_until_finished(tr, chunks)
    assert fed == 1 + 3  # 8 reported, then 9, 10, 11 estimated


# ------------------------------------------------------------------ whole answers


def _completion(content: str, usage: dict[str, Any] | None) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion", "created": 1, "model": "m", "usage": usage,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}]}


def test_a_whole_completion_past_the_ceiling_is_incomplete_with_its_text() -> None:
    response = chat_completion_to_response(_completion("tok " * 50, None), {"model": "m"},
                                           max_output_tokens_ceiling=CEILING)  # fmt: skip
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert _message_text(response) == "tok " * 50


@pytest.mark.parametrize(("reported", "status"), [(CEILING, "completed"), (CEILING + 1, "incomplete")])
def test_a_whole_completion_is_judged_by_its_usage(reported: int, status: str) -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": reported, "total_tokens": reported + 1}
    response = chat_completion_to_response(_completion("tok " * 50, usage), {"model": "m"},
                                           max_output_tokens_ceiling=CEILING)  # fmt: skip
    assert response["status"] == status


@pytest.mark.parametrize("reported", [CEILING, CEILING + 1])
def test_streamed_and_whole_agree_when_usage_comes_last(reported: int) -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": reported, "total_tokens": reported + 1}
    tr = ChatStreamTranslator({"model": "m"}, max_output_tokens_ceiling=CEILING)
    chunks = [_text("tok "), _text("tok ", finish="stop"), {"choices": [], "usage": usage}]
    events, _ = _feed_until_finished(tr, chunks)
    whole = chat_completion_to_response(_completion("tok tok ", usage), {"model": "m"},
                                        max_output_tokens_ceiling=CEILING)  # fmt: skip
    assert events[-1]["response"]["status"] == whole["status"]
    assert _message_text(events[-1]["response"]) == _message_text(whole)


def test_the_option_must_be_a_positive_integer() -> None:
    for bad in (0, -1, 1.5, True, "10"):
        with pytest.raises(TypeError):
            ChatStreamTranslator({"model": "m"}, max_output_tokens_ceiling=bad)
