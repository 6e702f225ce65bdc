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

__all__ = [
    "RESPONSE_ERROR_CODES",
    "chat_completion_to_response",
    "completion_to_chunk",
    "map_usage",
    "response_skeleton",
    "response_to_chat_completion",
]

#: ``ResponseError.code`` values the SDK accepts; anything else is reported as server_error.
RESPONSE_ERROR_CODES = frozenset(
    {
        "server_error",
        "rate_limit_exceeded",
        "invalid_prompt",
        "vector_store_timeout",
        "invalid_image",
        "invalid_image_format",
        "invalid_base64_image",
        "invalid_image_url",
        "image_too_large",
        "image_too_small",
        "image_parse_error",
        "image_content_policy_violation",
        "invalid_image_mode",
        "image_file_too_large",
        "unsupported_image_media_type",
        "empty_image_file",
        "failed_to_download_image",
        "image_file_not_found",
    }
)


def _num(value: Any, default: float) -> float:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else default


def _echo_tools(tools: Any) -> list[dict[str, Any]]:
    """The request's tools as the Response echoes them; hosted tools that were dropped are left out."""
    out: list[dict[str, Any]] = []
    if not isinstance(tools, list):
        return out
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        kind = tool.get("type")
        if kind == "function":
            out.append(
                {
                    **tool,
                    "type": "function",
                    "name": tool.get("name"),
                    "description": tool.get("description"),
                    "parameters": tool.get("parameters"),
                    "strict": tool.get("strict"),
                }
            )
        elif kind in ("custom", "namespace"):
            out.append(tool)
    return out


def response_skeleton(request: dict[str, Any], response_id: str, created_at: int) -> dict[str, Any]:
    """A Response in status ``in_progress`` with every field echoed from the request."""
    text = request.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    echo_text: dict[str, Any] = {"format": fmt if isinstance(fmt, dict) else {"type": "text"}}
    if isinstance(text, dict) and text.get("verbosity") is not None:
        echo_text["verbosity"] = text["verbosity"]
    reasoning = request.get("reasoning")
    echo_reasoning = (
        {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")} if isinstance(reasoning, dict) else None
    )
    tool_choice = request.get("tool_choice")
    truncation = request.get("truncation")
    metadata = request.get("metadata")
    service_tier = request.get("service_tier")
    instructions = request.get("instructions")
    out: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "completed_at": None,
        "status": "in_progress",
        "incomplete_details": None,
        "model": request.get("model") if isinstance(request.get("model"), str) else "",
        "output": [],
        "usage": None,
        "error": None,
        "instructions": instructions if isinstance(instructions, str | list) else None,
        "tools": _echo_tools(request.get("tools")),
        "tool_choice": tool_choice if isinstance(tool_choice, str | dict) else "auto",
        "parallel_tool_calls": bool(request.get("parallel_tool_calls", True)),
        "text": echo_text,
        "temperature": _num(request.get("temperature"), 1.0),
        "top_p": _num(request.get("top_p"), 1.0),
        "presence_penalty": _num(request.get("presence_penalty"), 0.0),
        "frequency_penalty": _num(request.get("frequency_penalty"), 0.0),
        "top_logprobs": _num(request.get("top_logprobs"), 0),
        "truncation": truncation if truncation in ("auto", "disabled") else "disabled",
        "reasoning": echo_reasoning,
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"),
        "store": bool(request.get("store", True)),
        "background": bool(request.get("background", False)),
        "service_tier": service_tier if isinstance(service_tier, str) else "default",
        "previous_response_id": request.get("previous_response_id"),
        "prompt_cache_key": request.get("prompt_cache_key"),
        "safety_identifier": request.get("safety_identifier"),
        "metadata": metadata if isinstance(metadata, dict) else {},
    }
    if request.get("user") is not None:
        out["user"] = request["user"]
    return out


_MAX_COUNT = 2**53  # keeps counts serialisable (orjson refuses integers beyond 64 bits)


def _count(value: Any) -> int:
    """A token count as an int (backends have sent floats, strings and null)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, float) and value == value and value not in (float("inf"), float("-inf")):
        value = int(value)
    if isinstance(value, int):
        return min(max(value, 0), _MAX_COUNT)
    return 0


def map_usage(usage: Any) -> dict[str, Any] | None:
    """Chat usage → Responses usage, details always present (0 when the backend says nothing).

    DeepSeek reports cache hits as ``prompt_cache_hit_tokens`` instead of
    ``prompt_tokens_details.cached_tokens``.
    """
    if not isinstance(usage, dict):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    total = _count(usage.get("total_tokens")) or prompt + completion
    pdetails = usage.get("prompt_tokens_details")
    cached = _count(pdetails.get("cached_tokens") if isinstance(pdetails, dict) else None) or _count(
        usage.get("prompt_cache_hit_tokens")
    )
    cdetails = usage.get("completion_tokens_details")
    reasoning = _count(cdetails.get("reasoning_tokens") if isinstance(cdetails, dict) else None)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": total,
    }


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
    from .stream import ChatStreamTranslator

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


def reverse_usage(usage: Any) -> dict[str, Any] | None:
    """Responses usage → chat usage."""
    if not isinstance(usage, dict):
        return None
    idetails = usage.get("input_tokens_details")
    odetails = usage.get("output_tokens_details")
    return {
        "prompt_tokens": _count(usage.get("input_tokens")),
        "completion_tokens": _count(usage.get("output_tokens")),
        "total_tokens": _count(usage.get("total_tokens")),
        "prompt_tokens_details": {
            "cached_tokens": _count(idetails.get("cached_tokens") if isinstance(idetails, dict) else 0)
        },
        "completion_tokens_details": {
            "reasoning_tokens": _count(odetails.get("reasoning_tokens") if isinstance(odetails, dict) else 0)
        },
    }


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
