"""The rules of the Open Responses compliance suite's HTTP tests, as our own tests over a real bridge.

The suite itself runs only locally (tests/support/openresponses/run.sh: it is published as source on
GitHub, not on a package registry). Here each of its HTTP checks is restated in our words: the same
request shapes, and the Response checked with `translator.validate`'s ``openresponses`` profile (the
ResponseResource schema and the streaming event grammar), plus the suite's own assertions (output
present, status completed, a function call for the tool test). The fixture backend cannot choose to
call a tool, so the tool test adds the scripted ``@call`` line the fixture obeys.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from translator.validate import parse_sse, validate_events, validate_response

MODEL = "fixture-scripted"


def _create(url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(url + "/responses", json=body, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    data = response.json()
    violations = validate_response(data, profile="openresponses", request=body)
    assert not violations, violations
    return data


def _completed_with_output(response: dict[str, Any]) -> None:
    assert response["status"] == "completed"
    assert response["output"], "the suite wants at least one output item"


CASES: dict[str, list[dict[str, Any]]] = {
    "basic-response": [{"type": "message", "role": "user", "content": "Say hello in exactly 3 words."}],
    "assistant-phase": [
        {"type": "message", "role": "assistant", "phase": "commentary", "content": "I should answer with the saved number."},
        {"type": "message", "role": "assistant", "phase": "final_answer", "content": "The number is four."},
        {"type": "message", "role": "user", "content": "Repeat only the number."},
    ],
    "system-prompt": [
        {"type": "message", "role": "system", "content": "You are a pirate. Always respond in pirate speak."},
        {"type": "message", "role": "user", "content": "Say hello."},
    ],
    "multi-turn": [
        {"type": "message", "role": "user", "content": "My name is Alice."},
        {"type": "message", "role": "assistant", "content": "Hello Alice! Nice to meet you. How can I help you today?"},
        {"type": "message", "role": "user", "content": "What is my name?"},
    ],
    "image-input": [
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What do you see in this image? Answer in one sentence."},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAf"
                                                 "FcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="},
        ]},
    ],
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_non_streaming_cases(bridge_url: str, case: str) -> None:
    _completed_with_output(_create(bridge_url, {"model": MODEL, "input": CASES[case]}))


def test_tool_calling_returns_a_function_call(bridge_url: str) -> None:
    tool = {
        "type": "function", "name": "get_weather", "description": "Get the current weather for a location",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    }  # fmt: skip
    prompt = 'What\'s the weather like in San Francisco?\n@call get_weather {"location": "San Francisco, CA"}'
    response = _create(bridge_url, {"model": MODEL, "tools": [tool], "input": [
        {"type": "message", "role": "user", "content": prompt}]})  # fmt: skip
    calls = [i for i in response["output"] if i["type"] == "function_call"]
    assert calls and calls[0]["name"] == "get_weather" and calls[0]["call_id"]


def test_streaming_response(bridge_url: str) -> None:
    body = {
        "model": MODEL,
        "stream": True,
        "input": [{"type": "message", "role": "user", "content": "Count from 1 to 5."}],
    }
    with httpx.stream("POST", bridge_url + "/responses", json=body, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read()
    events, framing = parse_sse(raw, require_done=True)  # the suite wants the literal [DONE] at the end
    assert not framing, framing
    assert events, "no streaming events"
    violations = validate_events(events, body, profile="openresponses")
    assert not violations, violations
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["status"] == "completed"


def test_output_phase_labels_are_valid_response_output() -> None:
    """The suite's schema-only case: a Response whose assistant messages carry phase labels is valid."""
    response = {
        "id": "resp_phase_schema", "object": "response", "created_at": 1764967971, "completed_at": 1764967972,
        "status": "completed", "incomplete_details": None, "model": MODEL, "previous_response_id": None,
        "instructions": None, "error": None, "tools": [], "tool_choice": "auto", "truncation": "disabled",
        "parallel_tool_calls": True, "text": {"format": {"type": "text"}}, "top_p": 1, "presence_penalty": 0,
        "frequency_penalty": 0, "top_logprobs": 0, "temperature": 1, "reasoning": {"effort": None, "summary": None},
        "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3,
                  "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}},
        "max_output_tokens": None, "max_tool_calls": None, "store": True, "background": False,
        "service_tier": "default", "metadata": {}, "safety_identifier": None, "prompt_cache_key": None,
        "output": [
            {"id": f"msg_{phase}", "type": "message", "status": "completed", "role": "assistant", "phase": phase,
             "content": [{"type": "output_text", "text": "x", "annotations": []}]}
            for phase in ("commentary", "final_answer")
        ],
    }  # fmt: skip
    assert not validate_response(response, profile="openresponses")
    assert {i["phase"] for i in response["output"]} == {"commentary", "final_answer"}
