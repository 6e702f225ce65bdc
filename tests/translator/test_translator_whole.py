"""`chat_completion_to_response` against Responses written out by hand, field by field.

The property tests prove a stream and the same answer whole agree; these prove what both must say:
each expected value below is written from the mapping in docs/wire.md §3.1 and §1.3-§1.4 (finish
reasons, items in order reasoning → message → calls, ids `<prefix><response id without resp_>_<index>`,
usage with zeros where the backend gave no details), never taken from the translator's output.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from translator import chat_completion_to_response

OPTS = {"response_id": "resp_w", "created_at": 1, "completed_at": 2}
TOOL = {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}
REQUEST: dict[str, Any] = {"model": "m", "input": "x", "tools": [TOOL]}


def response(**fields: Any) -> dict[str, Any]:
    """The Response every case below shares (the request echoed, defaults for what it leaves out)."""
    base: dict[str, Any] = {
        "id": "resp_w", "object": "response", "created_at": 1, "completed_at": 2, "status": "completed",
        "incomplete_details": None, "model": "m", "output": [], "usage": None, "error": None,
        "instructions": None, "tool_choice": "auto", "parallel_tool_calls": True,
        "tools": [{"type": "function", "name": "f", "description": None,
                   "parameters": {"type": "object", "properties": {}}, "strict": None}],
        "text": {"format": {"type": "text"}}, "temperature": 1.0, "top_p": 1.0, "presence_penalty": 0.0,
        "frequency_penalty": 0.0, "top_logprobs": 0, "truncation": "disabled", "reasoning": None,
        "max_output_tokens": None, "max_tool_calls": None, "store": True, "background": False,
        "service_tier": "default", "previous_response_id": None, "prompt_cache_key": None,
        "safety_identifier": None, "metadata": {},
    }  # fmt: skip
    return {**base, **fields}


def message(text: str, index: int = 0, status: str = "completed") -> dict[str, Any]:
    return {"id": f"msg_w_{index}", "type": "message", "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def call(call_id: str, name: str, arguments: str, index: int, status: str = "completed") -> dict[str, Any]:
    return {"id": f"fc_w_{index}", "type": "function_call", "status": status, "call_id": call_id,
            "name": name, "arguments": arguments}


def sealed(data: dict[str, Any]) -> str:
    """Reasoning kept for replay without a key: `rb1.` + unpadded base64url of the compact JSON."""
    return "rb1." + base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


def completion(msg: dict[str, Any], finish: str | None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion",
                            "choices": [{"index": 0, "message": {"role": "assistant", **msg}, "finish_reason": finish}]}
    if usage is not None:
        body["usage"] = usage
    return body


NO_FINISH = "The upstream backend ended the stream without a finish reason; the answer may be cut short."
FINISHES = [
    ("stop", response(output=[message("Hi")])),
    ("tool_calls", response(output=[message("Hi")])),
    ("function_call", response(output=[message("Hi")])),  # the legacy name: an ordinary end
    ("eos", response(output=[message("Hi")])),  # a backend's own name for an ordinary end
    ("length", response(status="incomplete", incomplete_details={"reason": "max_output_tokens"},
                        output=[message("Hi", status="incomplete")])),
    ("content_filter", response(status="incomplete", incomplete_details={"reason": "content_filter"},
                                output=[message("Hi", status="incomplete")])),
    ("error", response(status="failed", completed_at=None, output=[message("Hi", status="incomplete")],
                       error={"code": "server_error",
                              "message": "The upstream backend ended the answer with finish_reason 'error'."})),
    (None, response(status="failed", completed_at=None, output=[message("Hi", status="incomplete")],
                    error={"code": "server_error", "message": NO_FINISH})),
]


@pytest.mark.parametrize(("finish", "expected"), FINISHES, ids=[str(f) for f, _ in FINISHES])
def test_every_finish_reason(finish: str | None, expected: dict[str, Any]) -> None:
    assert chat_completion_to_response(completion({"content": "Hi"}, finish), REQUEST, **OPTS) == expected


@pytest.mark.parametrize("parallel", [True, False])
def test_parallel_tool_calls_is_echoed(parallel: bool) -> None:
    calls = [{"id": "call_a", "type": "function", "function": {"name": "f", "arguments": '{"q":1}'}},
             {"id": "call_b", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    got = chat_completion_to_response(completion({"content": None, "tool_calls": calls}, "tool_calls"),
                                      {**REQUEST, "parallel_tool_calls": parallel}, **OPTS)
    assert got == response(parallel_tool_calls=parallel,
                           output=[call("call_a", "f", '{"q":1}', 0), call("call_b", "f", "{}", 1)])


def test_parallel_tool_calls_defaults_to_true() -> None:
    assert chat_completion_to_response(completion({"content": "Hi"}, "stop"), REQUEST, **OPTS)["parallel_tool_calls"] is True


def test_refusal() -> None:
    got = chat_completion_to_response(completion({"content": None, "refusal": "I can't help."}, "stop"), REQUEST, **OPTS)
    assert got == response(output=[{"id": "msg_w_0", "type": "message", "status": "completed", "role": "assistant",
                                    "content": [{"type": "refusal", "refusal": "I can't help."}]}])


def test_reasoning_text_and_tools_with_detailed_usage() -> None:
    msg = {"content": "Checking.", "reasoning_content": "think",
           "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    usage = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8,
             "prompt_tokens_details": {"cached_tokens": 1}, "completion_tokens_details": {"reasoning_tokens": 2}}
    got = chat_completion_to_response(completion(msg, "tool_calls", usage), REQUEST, **OPTS)
    assert got == response(
        output=[{"id": "rs_w_0", "type": "reasoning", "status": "completed",
                 "summary": [{"type": "summary_text", "text": "think"}], "encrypted_content": sealed({"text": "think"})},
                message("Checking.", index=1), call("call_1", "f", "{}", 2)],
        usage={"input_tokens": 3, "input_tokens_details": {"cached_tokens": 1, "cache_write_tokens": 0},
               "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 8},
    )


def test_usage_without_details_gets_zeros() -> None:
    usage = {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
    got = chat_completion_to_response(completion({"content": "Hi"}, "stop", usage), REQUEST, **OPTS)
    assert got == response(output=[message("Hi")],
                           usage={"input_tokens": 4, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                                  "output_tokens": 6, "output_tokens_details": {"reasoning_tokens": 0},
                                  "total_tokens": 10})


def test_deepseek_cache_hits_count_as_cached_tokens() -> None:
    usage = {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10, "prompt_cache_hit_tokens": 3}
    got = chat_completion_to_response(completion({"content": "Hi"}, "stop", usage), REQUEST, **OPTS)
    assert got["usage"]["input_tokens_details"] == {"cached_tokens": 3, "cache_write_tokens": 0}


def test_no_usage_is_null() -> None:
    assert chat_completion_to_response(completion({"content": "Hi"}, "stop"), REQUEST, **OPTS)["usage"] is None


def test_calls_without_ids_stay_apart_by_position() -> None:
    """A whole message's calls are distinct by their position even without ids (the bridge makes
    the call ids up, so only their shape is checked)."""
    calls = [{"type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
             {"type": "function", "function": {"name": "f", "arguments": "{}"}}]
    got = chat_completion_to_response(completion({"content": None, "tool_calls": calls}, "tool_calls"), REQUEST, **OPTS)
    call_ids = [item["call_id"] for item in got["output"]]
    assert all(c.startswith("call_") for c in call_ids) and len(set(call_ids)) == 2
    assert got == response(output=[call(call_ids[0], "f", '{"a":1}', 0), call(call_ids[1], "f", "{}", 1)])
