"""The stream checks of tests/support/stream_check.py can fail: a check that accepts everything
proves nothing. Each test breaks a good stream in one way and expects the check to say so."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from conformance import sdk_accumulate
from tests.support.stream_check import _EVENT, check_stream, digest, expected_from_answer, rebuild, run_stream

REQ: dict[str, Any] = {"model": "m", "input": "x",
                       "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}]}
TEXT_CHUNKS = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]},
    {"choices": [{"index": 0, "delta": {"content": " there"}, "finish_reason": "stop"}]},
]
CALL_CHUNKS = [
    {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":'}}]}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]},
                  "finish_reason": "tool_calls"}]},
]
HI_THERE = expected_from_answer({"content": "Hi there"}, "stop")


def test_a_good_stream_passes_and_the_oracle_reads_it() -> None:
    events, _ = run_stream(REQ, TEXT_CHUNKS)
    final = check_stream(events, REQ, expected=HI_THERE)
    assert final.output[0].content[0].text == "Hi there"
    assert rebuild(events) == {"status": "completed",
                               "output": [{"type": "message", "status": "completed", "parts": [("output_text", "Hi there")]}]}


def test_the_oracle_reads_arguments_from_their_deltas() -> None:
    events, _ = run_stream(REQ, CALL_CHUNKS)
    expected = expected_from_answer({"tool_calls": [{"id": "call_1", "function": {"name": "f", "arguments": '{"a":1}'}}]},
                                    "tool_calls")
    check_stream(events, REQ, expected=expected)
    assert rebuild(events)["output"][0]["arguments"] == '{"a":1}'


def test_every_text_delta_replaced_fails() -> None:
    """The tautology this helper replaces: the SDK's final Response is the terminal's, so only an
    oracle that reads the deltas notices deltas that say something else."""
    events, _ = run_stream(REQ, TEXT_CHUNKS)
    forged = copy.deepcopy(events)
    for event in forged:
        if event["type"] == "response.output_text.delta":
            event["delta"] = "XXXX"
    sdk_accumulate(forged)  # the SDK itself does not notice
    with pytest.raises(AssertionError):  # the kit's delta-sum rule says so first
        check_stream(forged, REQ)
    # and the oracle on its own: the deltas say XXXX, the terminal and the expected answer do not
    assert rebuild(forged)["output"][0]["parts"] == [("output_text", "XXXXXXXX")]
    assert rebuild(forged)["output"] != digest(forged[-1]["response"]["output"])
    assert rebuild(forged)["output"] != HI_THERE["output"]


def test_a_wrong_answer_consistent_with_itself_fails_against_the_expected_one() -> None:
    events, _ = run_stream(REQ, [{"choices": [{"index": 0, "delta": {"content": "Hi thera"}, "finish_reason": "stop"}]}])
    check_stream(events, REQ)  # self-consistent
    with pytest.raises(AssertionError, match="do not say what the answer said"):
        check_stream(events, REQ, expected=HI_THERE)


def test_wrong_status_or_parallel_flag_fails_against_the_expected_one() -> None:
    events, _ = run_stream(REQ, [{"choices": [{"index": 0, "delta": {"content": "Hi there"}, "finish_reason": "length"}]}])
    with pytest.raises(AssertionError):
        check_stream(events, REQ, expected=HI_THERE)
    events, _ = run_stream({**REQ, "parallel_tool_calls": False}, TEXT_CHUNKS)
    with pytest.raises(AssertionError, match="parallel_tool_calls"):
        check_stream(events, REQ, expected=HI_THERE)


def test_forged_arguments_fail() -> None:
    events, _ = run_stream(REQ, CALL_CHUNKS)
    forged = copy.deepcopy(events)
    next(e for e in forged if e["type"] == "response.function_call_arguments.delta")["delta"] = '{"b":'
    with pytest.raises(AssertionError):
        check_stream(forged, REQ)
    assert rebuild(forged)["output"][0]["arguments"] == '{"b":1}'


def test_a_missing_item_done_leaves_the_item_incomplete() -> None:
    events, _ = run_stream(REQ, TEXT_CHUNKS)
    assert rebuild([e for e in events if e["type"] != "response.output_item.done"])["output"][0]["status"] == "incomplete"


def test_sdk_accumulator_rejects_a_delta_without_its_item() -> None:
    events, _ = run_stream(REQ, TEXT_CHUNKS)
    broken = [e for e in events if e["type"] != "response.output_item.added"]
    with pytest.raises(RuntimeError):
        sdk_accumulate(broken)
    with pytest.raises((AssertionError, KeyError)):
        check_stream(broken)


def test_sdk_types_reject_a_delta_without_logprobs() -> None:
    events, _ = run_stream(REQ, TEXT_CHUNKS)
    delta = next(e for e in events if e["type"] == "response.output_text.delta")
    bad = {k: v for k, v in delta.items() if k != "logprobs"}
    with pytest.raises(ValidationError):
        _EVENT.validate_python(bad)


def test_digest_keeps_refusals_and_reasoning_apart() -> None:
    output = [{"type": "reasoning", "summary": [{"type": "summary_text", "text": "s"}],
               "content": [{"type": "reasoning_text", "text": "t"}], "status": "completed"},
              {"type": "message", "status": "completed", "content": [{"type": "refusal", "refusal": "no"}]}]
    assert digest(output) == [{"type": "reasoning", "status": "completed", "summary": ["s"], "text": ["t"]},
                              {"type": "message", "status": "completed", "parts": [("refusal", "no")]}]
