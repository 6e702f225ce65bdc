"""The reverse direction's request translation (translator/reverse_request.py) and the passthrough
request fixes (translator/chat_fixes.py), field by field."""

from __future__ import annotations

from typing import Any

import pytest

from translator import InvalidRequest, chat_to_responses_request, pack_reasoning
from translator.chat_fixes import fix_chat_request
from translator.reverse_request import dropped_fields

USER = {"role": "user", "content": "q"}


def translate(**request: Any) -> dict[str, Any]:
    return chat_to_responses_request({"model": "m", "messages": [USER], **request})


def test_legacy_functions_become_tools_and_tool_choice() -> None:
    out = translate(functions=[{"name": "f", "description": "d", "parameters": {"type": "object"}}],
                    function_call={"name": "f"})
    assert out["tools"] == [{"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}}]
    assert out["tool_choice"] == {"type": "function", "name": "f"}
    assert translate(functions=[{"name": "f"}], function_call="none")["tool_choice"] == "none"
    with pytest.raises(InvalidRequest) as caught:
        translate(function_call=3)
    assert caught.value.param == "function_call"


def test_legacy_function_messages_become_a_call_and_its_output() -> None:
    out = chat_to_responses_request({"model": "m", "messages": [
        USER, {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{\"a\":1}"}},
        {"role": "function", "name": "f", "content": "42"}]})
    call, output = out["input"][1], out["input"][2]
    assert call == {"type": "function_call", "call_id": "call_legacy_1", "name": "f", "arguments": "{\"a\":1}"}
    assert output == {"type": "function_call_output", "call_id": "call_legacy_1", "output": "42"}
    with pytest.raises(InvalidRequest) as caught:
        chat_to_responses_request({"model": "m", "messages": [USER, {"role": "function", "name": "g", "content": "x"}]})
    assert caught.value.param == "messages[1].name"


def test_n_and_audio_are_refused_with_the_field_named() -> None:
    for request, param in (({"n": 2}, "n"), ({"n": 0}, "n"), ({"modalities": ["text", "audio"]}, "modalities")):
        with pytest.raises(InvalidRequest) as caught:
            translate(**request)
        assert caught.value.param == param
    assert "n" not in translate(n=1)


def test_limits_prefer_max_completion_tokens_and_must_be_positive() -> None:
    assert translate(max_tokens=5)["max_output_tokens"] == 5
    assert translate(max_tokens=5, max_completion_tokens=9)["max_output_tokens"] == 9
    with pytest.raises(InvalidRequest) as caught:
        translate(max_tokens=0)
    assert caught.value.param == "max_tokens"


def test_system_messages_to_instructions_when_asked() -> None:
    request = {"model": "m", "messages": [{"role": "system", "content": "A"}, {"role": "developer", "content": "B"},
                                          USER, {"role": "system", "content": "late"}]}
    out = chat_to_responses_request(request, system="instructions")
    assert out["instructions"] == "A\n\nB"
    assert [i["role"] for i in out["input"]] == ["user", "system"]
    assert chat_to_responses_request(request)["input"][0] == {"type": "message", "role": "system", "content": "A"}


def test_response_format_logprobs_effort_store_and_dropped_fields() -> None:
    out = translate(response_format={"type": "json_object"}, logprobs=True, top_logprobs=3, reasoning_effort="low",
                    seed=7, stop=["x"], store=True)
    assert out["text"] == {"format": {"type": "json_object"}}
    assert out["include"] == ["message.output_text.logprobs"] and out["top_logprobs"] == 3
    assert out["reasoning"] == {"effort": "low"} and out["store"] is True
    assert "seed" not in out and "stop" not in out
    assert dropped_fields({"seed": 7, "stop": ["x"], "stream_options": {}}) == ["seed", "stop"]
    assert translate()["store"] is False
    with pytest.raises(InvalidRequest) as caught:
        translate(response_format={"type": "json_schema", "json_schema": {}})
    assert caught.value.param == "response_format.json_schema.name"


def test_errors_name_the_message_in_the_whole_list() -> None:
    with pytest.raises(InvalidRequest) as caught:
        chat_to_responses_request({"model": "m", "messages": [USER, USER, {"role": "wizard", "content": "x"}]})
    assert caught.value.param == "messages[2].role"


def test_own_replay_tokens_stay_as_they_were() -> None:
    """reasoning_content on an assistant turn replays as our own token (the forward bridge reads it)."""
    out = chat_to_responses_request({"model": "m", "messages": [
        USER, {"role": "assistant", "content": "a", "reasoning_content": "why"}, USER]})
    assert out["input"][1]["encrypted_content"] == pack_reasoning({"text": "why"})


# ------------------------------------------------------------------------------------- passthrough


def test_fixes_follow_the_profile() -> None:
    request = {"model": "m", "max_completion_tokens": 10, "reasoning_effort": "high", "metadata": {"a": "b"},
               "messages": [{"role": "developer", "content": "D"},
                            {"role": "assistant", "content": "x", "reasoning_content": "r"}, USER]}
    plain = fix_chat_request(request)
    assert plain["messages"][0]["role"] == "system" and plain["max_tokens"] == 10
    assert "max_completion_tokens" not in plain and plain["reasoning_effort"] == "high"
    deepseek = fix_chat_request(request, reasoning_effort="deepseek", openai_fields=False, reasoning_replay="reasoning")
    assert deepseek["thinking"] == {"type": "enabled"} and "reasoning_effort" not in deepseek
    assert "metadata" not in deepseek
    assert deepseek["messages"][1] == {"role": "assistant", "content": "x", "reasoning": "r"}
    kept = fix_chat_request(request, developer_role="developer", max_tokens_field="max_completion_tokens")
    assert kept["messages"][0]["role"] == "developer" and kept["max_completion_tokens"] == 10
    assert request["messages"][0]["role"] == "developer"  # the input is not changed


def test_fixes_for_tool_choice() -> None:
    tools = [{"type": "function", "function": {"name": n}} for n in ("a", "b")]
    named = fix_chat_request({"model": "m", "messages": [USER], "tools": tools,
                              "tool_choice": {"type": "function", "function": {"name": "b"}}},
                             named_tool_choice="required")
    assert named["tools"] == [tools[1]] and named["tool_choice"] == "required"
    none = fix_chat_request({"model": "m", "messages": [USER], "tools": tools, "tool_choice": "none"},
                            tool_choice_none="drop_tools")
    assert "tools" not in none and "tool_choice" not in none
