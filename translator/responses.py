"""Whole answers: a chat completion → a Response object, and back.

The Response object echoes the request with a value in every field the Open Responses schema
requires to be present (its validator fails on a missing ``truncation`` as surely as on a missing
``output``), normalised to the shapes that schema accepts (integer timestamps, numbers where it
wants numbers, function tools with ``description``/``parameters``/``strict`` keys).

`chat_completion_to_response` runs the completion through the same state machine as a stream
(one synthetic chunk), so a streamed answer and the same answer received whole cannot disagree.
"""

from __future__ import annotations

import time
from typing import Any

from .errors import UpstreamError
from .events import RESPONSE_ERROR_CODES, map_usage, response_skeleton, reverse_usage
from .stream import ChatStreamTranslator

# RESPONSE_ERROR_CODES, map_usage, response_skeleton and reverse_usage live in the event catalogue
# (events.py) and are re-exported here for code that imported them from this module.
__all__ = [
    "RESPONSE_ERROR_CODES",
    "chat_completion_to_response",
    "completion_to_chunk",
    "map_usage",
    "response_skeleton",
    "response_to_chat_completion",
    "reverse_usage",
]

def completion_to_chunk(completion: dict[str, Any]) -> dict[str, Any]:
    """A whole chat completion as one stream chunk (message → delta), for the shared state machine."""
    choices = completion.get("choices")
    out: dict[str, Any] = {"id": completion.get("id"), "usage": completion.get("usage")}
    if "x_groq" in completion:
        out["x_groq"] = completion["x_groq"]
    if not isinstance(choices, list) or not choices:
        out["choices"] = []
        return out
    choice = next((c for c in choices if isinstance(c, dict) and c.get("index", 0) == 0), choices[0])
    if not isinstance(choice, dict):
        out["choices"] = []
        return out
    message = choice.get("message")
    delta = dict(message) if isinstance(message, dict) else {}
    calls = delta.get("tool_calls")
    if isinstance(calls, list):
        # a whole message's calls are distinct by position, whatever ids or indexes they carry
        delta["tool_calls"] = [{**call, "index": i} if isinstance(call, dict) else call for i, call in enumerate(calls)]
    out["choices"] = [
        {"index": 0, "delta": delta, "finish_reason": choice.get("finish_reason"), "logprobs": choice.get("logprobs")}
    ]
    return out


def chat_completion_to_response(completion: Any, request: dict[str, Any], **options: Any) -> dict[str, Any]:
    """A chat completion (non-streaming answer) → the Response a Responses client expects.

    Raises `UpstreamError` for an error body or a body that is not a completion at all.
    """
    if not isinstance(completion, dict):
        raise UpstreamError("The upstream backend returned a body that is not a JSON object.", body=completion)
    if completion.get("error"):
        raise UpstreamError.from_body(completion)
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices or not any(isinstance(c, dict) for c in choices):
        raise UpstreamError("The upstream backend returned a completion without choices.", body=completion)
    translator = ChatStreamTranslator(request, **options)
    translator.feed(completion_to_chunk(completion))
    translator.finish(done_seen=True)
    return translator.response


# --------------------------------------------------------------------------- reverse direction


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _items(response: dict[str, Any]) -> list[dict[str, Any]]:
    output = response.get("output")
    return [i for i in output if isinstance(i, dict)] if isinstance(output, list) else []


def _finish_reason(response: dict[str, Any]) -> str:
    if response.get("status") == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        return "content_filter" if reason == "content_filter" else "length"
    if any(item.get("type") in ("function_call", "custom_tool_call") for item in _items(response)):
        return "tool_calls"
    return "stop"


def _parts_text(parts: Any, key: str = "text") -> str:
    if not isinstance(parts, list):
        return ""
    return "".join(_str(p.get(key)) for p in parts if isinstance(p, dict))


def response_to_chat_completion(response: Any) -> dict[str, Any]:
    """A Response object → a ``chat.completion`` (for chat clients in front of a Responses server)."""
    if not isinstance(response, dict):
        raise UpstreamError("The upstream backend returned a body that is not a JSON object.", body=response)
    if response.get("status") == "failed" or (response.get("error") and "output" not in response):
        raise UpstreamError.from_body(response)
    texts: list[str] = []
    refusals: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in _items(response):
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") if isinstance(item.get("content"), list) else ():
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "output_text":
                    texts.append(_str(part.get("text")))
                elif part.get("type") == "refusal":
                    refusals.append(_str(part.get("refusal")))
        elif kind == "reasoning":
            reasoning.append(_parts_text(item.get("content")) or _parts_text(item.get("summary")))
        elif kind == "function_call":
            calls.append(
                {
                    "id": _str(item.get("call_id")),
                    "type": "function",
                    "function": {"name": _str(item.get("name")), "arguments": _str(item.get("arguments"))},
                }
            )
        elif kind == "custom_tool_call":
            calls.append(
                {
                    "id": _str(item.get("call_id")),
                    "type": "custom",
                    "custom": {"name": _str(item.get("name")), "input": _str(item.get("input"))},
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if refusals:
        message["refusal"] = "".join(refusals)
    if any(reasoning):
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    rid = _str(response.get("id"))
    created = response.get("created_at")
    out: dict[str, Any] = {
        "id": "chatcmpl-" + (rid[5:] if rid.startswith("resp_") else rid),
        "object": "chat.completion",
        "created": created if isinstance(created, int) and not isinstance(created, bool) else int(time.time()),
        "model": _str(response.get("model")),
        "choices": [{"index": 0, "message": message, "finish_reason": _finish_reason(response), "logprobs": None}],
    }
    usage = reverse_usage(response.get("usage"))
    if usage is not None:
        out["usage"] = usage
    return out
