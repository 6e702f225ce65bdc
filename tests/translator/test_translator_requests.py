"""Responses → Chat request mapping (and back), docs/wire.md §4."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from translator import (
    InvalidRequest,
    chat_completion_to_response,
    chat_to_responses_request,
    pack_reasoning,
    response_to_chat_completion,
    responses_to_chat_request,
)

FN = {"type": "function", "name": "get_weather", "description": "Weather", "strict": True,
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def chat(request: dict[str, Any], **options: Any) -> dict[str, Any]:
    return responses_to_chat_request({"model": "m", **request}, **options)


def test_string_input_and_instructions() -> None:
    out = chat({"input": "hi", "instructions": "Be brief."})
    assert out == {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                              {"role": "user", "content": "hi"}]}


def test_developer_role_mapped_to_system_unless_option_keeps_it() -> None:
    req = {"input": [{"role": "developer", "content": "rules"}, {"role": "user", "content": "q"}],
           "instructions": "I"}
    assert [m["role"] for m in chat(req)["messages"]] == ["system", "system", "user"]
    assert [m["role"] for m in chat(req, developer_role="developer")["messages"]] == ["developer", "developer", "user"]


def test_message_parts_and_unknown_fields_ignored() -> None:
    req = {"input": [
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "sys"}]},
        {"role": "user", "phase": "x", "client_metadata": {"a": 1}, "content": [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"},
            {"type": "input_file", "file_data": "data:application/pdf;base64,AA", "filename": "a.pdf"},
        ]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed", "phase": "final_answer",
         "content": [{"type": "output_text", "text": "seen", "annotations": [], "logprobs": []}]},
    ]}
    assert chat(req)["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,AA", "filename": "a.pdf"}},
        ]},
        {"role": "assistant", "content": "seen"},
    ]


def test_calls_merge_into_one_assistant_message_and_outputs_become_tool_messages() -> None:
    req = {"tools": [FN], "input": [
        {"role": "user", "content": "weather in Paris and Oslo?"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}',
         "parsed_arguments": {"city": "Paris"}, "id": "fc_1", "status": "completed"},
        {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": ""},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "rain"}, {"type": "input_image", "image_url": "data:,"}]},
    ]}
    msgs = chat(req)["messages"]
    assert msgs[1] == {"role": "assistant", "content": "Checking.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
    ]}
    assert msgs[2] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    assert msgs[3]["role"] == "tool" and msgs[3]["content"].startswith("rain[input_image omitted")


def test_custom_tool_call_round_trips_as_function_with_input_argument() -> None:
    req = {"tools": [{"type": "custom", "name": "apply_patch"}], "input": [
        {"role": "user", "content": "fix"},
        {"type": "custom_tool_call", "call_id": "call_p", "name": "apply_patch", "input": "*** Begin Patch"},
        {"type": "custom_tool_call_output", "call_id": "call_p", "output": "Done"},
    ]}
    msgs = chat(req)["messages"]
    call = msgs[1]["tool_calls"][0]
    assert orjson.loads(call["function"]["arguments"]) == {"input": "*** Begin Patch"}
    assert msgs[2] == {"role": "tool", "tool_call_id": "call_p", "content": "Done"}
    native = chat(req, custom_tools="native")["messages"][1]["tool_calls"][0]
    assert native == {"id": "call_p", "type": "custom", "custom": {"name": "apply_patch", "input": "*** Begin Patch"}}


@pytest.mark.parametrize(
    ("replay", "expected"),
    [
        ("reasoning_content", {"reasoning_content": "thought"}),
        ("reasoning", {"reasoning": "thought"}),
        ("reasoning_details", {"reasoning_details": [{"type": "reasoning.text", "text": "thought", "index": 0}]}),
        ("none", {}),
    ],
)
def test_reasoning_replayed_on_next_assistant_message(replay: str, expected: dict) -> None:
    req = {"tools": [FN], "input": [
        {"role": "user", "content": "q"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "thought"}],
         "encrypted_content": pack_reasoning({"text": "thought"})},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "ok"},
    ]}
    msg = chat(req, reasoning_replay=replay)["messages"][1]
    assert {k: v for k, v in msg.items() if k not in ("role", "content", "tool_calls")} == expected


def test_foreign_encrypted_content_falls_back_to_visible_text() -> None:
    req = {"input": [
        {"role": "user", "content": "q"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA-openai-opaque",
         "content": [{"type": "reasoning_text", "text": "raw"}]},
        {"type": "message", "role": "assistant", "content": "a"},
    ]}
    assert chat(req)["messages"][1] == {"role": "assistant", "content": "a", "reasoning_content": "raw"}


def test_tools_mapping_function_custom_namespace_hosted() -> None:
    grammar = {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}
    out = chat({"input": "x", "tools": [
        FN,
        {"type": "custom", "name": "apply_patch", "description": "Patch files.", "format": grammar},
        {"type": "namespace", "name": "crm", "description": "CRM",
         "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}},
                   {"type": "custom", "name": "note"}]},
        {"type": "web_search"}, {"type": "mcp", "server_label": "x"}, {"type": "image_generation"},
    ], "parallel_tool_calls": False})
    tools = out["tools"]
    assert tools[0] == {"type": "function", "function": {
        "name": "get_weather", "description": "Weather", "parameters": FN["parameters"], "strict": True}}
    custom = tools[1]["function"]
    assert custom["name"] == "apply_patch" and "start: /.+/" in custom["description"]
    assert custom["description"].startswith("Patch files.")
    assert custom["parameters"]["properties"] == {"input": {"type": "string", "description": "The raw tool input."}}
    assert [t["function"]["name"] for t in tools[2:]] == ["crm__lookup", "crm__note"]
    assert len(tools) == 4 and out["parallel_tool_calls"] is False


def test_unsupported_tools_rejected_by_option() -> None:
    with pytest.raises(InvalidRequest) as info:
        chat({"input": "x", "tools": [FN, {"type": "web_search"}]}, unsupported_tools="reject")
    assert info.value.param == "tools[1].type"
    with pytest.raises(InvalidRequest) as info:
        chat({"input": "x", "tools": [{"type": "custom", "name": "p"}]}, custom_tools="reject")
    assert info.value.param == "tools[0].type"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ({"type": "function", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
        ({"type": "custom", "name": "apply_patch"}, {"type": "function", "function": {"name": "apply_patch"}}),
        ({"type": "function", "name": "lookup", "namespace": "crm"},
         {"type": "function", "function": {"name": "crm__lookup"}}),
    ],
)
def test_tool_choice_forms(choice: Any, expected: Any) -> None:
    tools = [FN, {"type": "custom", "name": "apply_patch"},
             {"type": "namespace", "name": "crm", "description": "", "tools": [{"type": "function", "name": "lookup"}]}]
    assert chat({"input": "x", "tools": tools, "tool_choice": choice})["tool_choice"] == expected


def test_allowed_tools_filters_the_list_and_sends_the_mode() -> None:
    tools = [FN, {"type": "function", "name": "get_time"}]
    out = chat({"input": "x", "tools": tools, "tool_choice": {
        "type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_time"}]}})
    assert out["tool_choice"] == "required" and [t["function"]["name"] for t in out["tools"]] == ["get_time"]


def test_hosted_tool_choice_dropped_and_tool_fields_only_with_tools() -> None:
    out = chat({"input": "x", "tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search_preview"},
                "parallel_tool_calls": True})
    assert "tools" not in out and "tool_choice" not in out and "parallel_tool_calls" not in out


def test_sampling_limits_logprobs_and_formats() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    out = chat({"input": "x", "max_output_tokens": 64, "temperature": 0.2, "top_p": 0.9, "presence_penalty": 0.1,
                "frequency_penalty": 0.3, "top_logprobs": 2,
                "text": {"format": {"type": "json_schema", "name": "thing", "schema": schema, "strict": True},
                         "verbosity": "low"},
                "reasoning": {"effort": "high", "summary": "auto"}, "metadata": {"k": "v"}, "store": False,
                "service_tier": "auto", "prompt_cache_key": "pk", "safety_identifier": "u1", "user": "u"})
    assert out["max_tokens"] == 64
    assert (out["temperature"], out["top_p"], out["presence_penalty"], out["frequency_penalty"]) == (0.2, 0.9, 0.1, 0.3)
    assert out["logprobs"] is True and out["top_logprobs"] == 2
    assert out["response_format"] == {"type": "json_schema", "json_schema": {"name": "thing", "schema": schema,
                                                                            "strict": True}}
    assert out["verbosity"] == "low" and out["reasoning_effort"] == "high"
    assert (out["metadata"], out["store"], out["service_tier"]) == ({"k": "v"}, False, "auto")
    assert (out["prompt_cache_key"], out["safety_identifier"], out["user"]) == ("pk", "u1", "u")
    lean = chat({"input": "x", "max_output_tokens": 64, "metadata": {"k": "v"}, "store": False,
                 "text": {"verbosity": "low"}}, openai_fields=False, max_tokens_field="max_completion_tokens")
    assert lean == {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 64}


def test_text_formats_and_include_logprobs() -> None:
    assert chat({"input": "x", "text": {"format": {"type": "json_object"}}})["response_format"] == {"type": "json_object"}
    assert "response_format" not in chat({"input": "x", "text": {"format": {"type": "text"}}})
    assert chat({"input": "x", "include": ["message.output_text.logprobs"]})["logprobs"] is True
    with pytest.raises(InvalidRequest) as info:
        chat({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}})
    assert info.value.param == "text.format.schema"


@pytest.mark.parametrize(
    ("mode", "effort", "expected"),
    [
        ("reasoning_effort", "low", {"reasoning_effort": "low"}),
        ("openrouter", "medium", {"reasoning": {"effort": "medium"}}),
        ("deepseek", "high", {"thinking": {"type": "enabled"}}),
        ("deepseek", "none", {"thinking": {"type": "disabled"}}),
        ("none", "high", {}),
    ],
)
def test_reasoning_effort_styles(mode: str, effort: str, expected: dict) -> None:
    out = chat({"input": "x", "reasoning": {"effort": effort}}, reasoning_effort=mode)
    assert {k: v for k, v in out.items() if k not in ("model", "messages")} == expected


def test_stream_options_by_option() -> None:
    assert chat({"input": "x", "stream": True})["stream_options"] == {"include_usage": True}
    out = chat({"input": "x", "stream": True}, stream_usage=False)
    assert out["stream"] is True and "stream_options" not in out


@pytest.mark.parametrize(
    ("items", "param"),
    [
        ([{"type": "item_reference", "id": "msg_1"}], "input[0].type"),
        ([{"type": "function_call", "name": "f", "arguments": "{}"}], "input[0].call_id"),
        ([{"type": "function_call_output", "output": "x"}], "input[0].call_id"),
        (["text"], "input[0]"),
        ([{"role": "user"}], "input[0].content"),
        ([{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}], "input[0].content[0].file_id"),
        ([{"role": "user", "content": [{"type": "mystery"}]}], "input[0].content[0].type"),
    ],
)
def test_bad_items_name_their_param(items: list, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        chat({"input": items})
    assert info.value.param == param


def test_bad_option_values_are_refused() -> None:
    with pytest.raises(ValueError):
        chat({"input": "x"}, reasoning_replay="telepathy")
    with pytest.raises(TypeError):
        chat({"input": "x"}, no_such_option=True)


def test_chat_to_responses_request_and_back() -> None:
    chat_req = {
        "model": "m", "stream": True, "max_tokens": 50, "temperature": 0.5,
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}},
        "reasoning_effort": "low",
    }
    resp_req = chat_to_responses_request(chat_req)
    assert resp_req["tools"] == [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    assert resp_req["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert resp_req["max_output_tokens"] == 50 and resp_req["reasoning"] == {"effort": "low"}
    assert resp_req["text"]["format"] == {"type": "json_schema", "name": "n", "schema": {"type": "object"}}
    back = responses_to_chat_request(resp_req, stream_usage=False)
    for key in ("model", "messages", "tool_choice", "response_format", "max_tokens", "temperature", "stream",
                "reasoning_effort"):
        assert back[key] == chat_req[key], key


def test_response_to_chat_completion() -> None:
    req = {"model": "m", "input": "x", "tools": [FN]}
    completion = {"id": "c", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "ok", "reasoning_content": "r",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}
    response = chat_completion_to_response(completion, req, response_id="resp_z", created_at=5)
    back = response_to_chat_completion(response)
    assert back["id"] == "chatcmpl-z" and back["created"] == 5 and back["object"] == "chat.completion"
    choice = back["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {**completion["choices"][0]["message"]}
    assert back["usage"]["prompt_tokens"] == 3 and back["usage"]["total_tokens"] == 7
    truncated = chat_completion_to_response(
        {"choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "a"}}]}, req)
    assert truncated["status"] == "incomplete"
    assert response_to_chat_completion(truncated)["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("stream", "yes"), ("store", 1), ("background", "no"), ("parallel_tool_calls", "true"),
        ("metadata", ["x"]), ("previous_response_id", 5), ("reasoning", "high"), ("text", "json"),
        ("truncation", 3), ("user", {"id": 1}), ("include", "reasoning.encrypted_content"), ("service_tier", 1),
        ("prompt_cache_key", []), ("safety_identifier", 2.5), ("max_tool_calls", "3"), ("max_tool_calls", True),
        ("temperature", "hot"), ("temperature", True), ("top_logprobs", 1.5), ("model", 3), ("tool_choice", 4),
    ],
)
def test_wrong_types_name_the_field(field: str, value: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        responses_to_chat_request({"model": "m", "input": "x", field: value})
    assert (info.value.param, info.value.code) == (field, "invalid_type")  # each value is of a wrong JSON type


def test_metadata_limits_and_string_values() -> None:
    with pytest.raises(InvalidRequest) as info:
        chat({"input": "x", "metadata": {"k": 1}})
    assert info.value.param == "metadata.k"
    with pytest.raises(InvalidRequest):
        chat({"input": "x", "metadata": {f"k{i}": "v" for i in range(17)}})
    assert chat({"input": "x", "metadata": {f"k{i}": "v" * 512 for i in range(16)}})["metadata"]["k0"] == "v" * 512


def test_deep_nesting_is_refused_not_a_crash() -> None:
    deep: Any = {}
    for _ in range(300):
        deep = {"a": deep}
    with pytest.raises(InvalidRequest) as info:
        chat({"input": "x", "tools": [{**FN, "parameters": deep}]})
    assert info.value.param == "tools[0]"
    with pytest.raises(InvalidRequest) as info:
        chat({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": deep}]})
    assert info.value.param == "input[0].arguments"
    assert chat({"input": "x", "text": {"format": {"type": "json_schema", "name": "n", "schema": {
        "type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}}}}}}})


def test_of_several_mistyped_fields_the_first_known_one_is_named_whatever_the_body_order() -> None:
    """The type check walks the body's own fields and, at the first wrong one, every known field in
    REQUEST_FIELDS order: the field named does not depend on the order the client wrote them in."""
    from translator import check_request
    from translator.requests import REQUEST_FIELDS

    first, later = "stream", "temperature"
    assert list(REQUEST_FIELDS).index(first) < list(REQUEST_FIELDS).index(later)
    for body in ({"model": "m", later: "hot", first: "yes"}, {"model": "m", first: "yes", later: "hot"},
                 {later: "hot", "model": "m", first: 1, "input": "x"}):  # fmt: skip
        with pytest.raises(InvalidRequest) as info:
            check_request(body)
        assert info.value.param == first, body
    check_request({"model": "m", "input": "x", "stream": None, "instructions": "plain", "text": None})
