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


def map_usage(usage: Any) -> dict[str, Any] | None:
    """Chat usage → Responses usage, details always present (0 when the backend says nothing).

    DeepSeek reports cache hits as ``prompt_cache_hit_tokens`` instead of
    ``prompt_tokens_details.cached_tokens``.
    """
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    total = usage.get("total_tokens") or prompt + completion
    pdetails = usage.get("prompt_tokens_details")
    cached = (pdetails.get("cached_tokens") if isinstance(pdetails, dict) else None) or usage.get(
        "prompt_cache_hit_tokens"
    ) or 0
    cdetails = usage.get("completion_tokens_details")
    reasoning = (cdetails.get("reasoning_tokens") if isinstance(cdetails, dict) else None) or 0
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
    message = choice.get("message") if isinstance(choice, dict) else None
    delta = dict(message) if isinstance(message, dict) else {}
    calls = delta.get("tool_calls")
    if isinstance(calls, list):
        delta["tool_calls"] = [
            {**call, "index": call.get("index", i)} if isinstance(call, dict) else call for i, call in enumerate(calls)
        ]
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
    if not isinstance(choices, list) or not choices:
        raise UpstreamError("The upstream backend returned a completion without choices.", body=completion)
    translator = ChatStreamTranslator(request, **options)
    translator.feed(completion_to_chunk(completion))
    translator.finish(done_seen=True)
    return translator.response


# --------------------------------------------------------------------------- reverse direction


def _finish_reason(response: dict[str, Any]) -> str:
    status = response.get("status")
    if status == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return "content_filter" if reason == "content_filter" else "length"
    if any(
        isinstance(item, dict) and item.get("type") in ("function_call", "custom_tool_call")
        for item in response.get("output") or ()
    ):
        return "tool_calls"
    return "stop"


def reverse_usage(usage: Any) -> dict[str, Any] | None:
    """Responses usage → chat usage."""
    if not isinstance(usage, dict):
        return None
    idetails = usage.get("input_tokens_details") or {}
    odetails = usage.get("output_tokens_details") or {}
    return {
        "prompt_tokens": usage.get("input_tokens", 0),
        "completion_tokens": usage.get("output_tokens", 0),
        "total_tokens": usage.get("total_tokens", 0),
        "prompt_tokens_details": {"cached_tokens": idetails.get("cached_tokens", 0)},
        "completion_tokens_details": {"reasoning_tokens": odetails.get("reasoning_tokens", 0)},
    }


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
    for item in response.get("output") or ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or ():
                if part.get("type") == "output_text":
                    texts.append(part.get("text", ""))
                elif part.get("type") == "refusal":
                    refusals.append(part.get("refusal", ""))
        elif kind == "reasoning":
            parts = item.get("content") or item.get("summary") or ()
            reasoning.append("".join(p.get("text", "") for p in parts if isinstance(p, dict)))
        elif kind == "function_call":
            calls.append(
                {
                    "id": item.get("call_id"),
                    "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
                }
            )
        elif kind == "custom_tool_call":
            calls.append(
                {"id": item.get("call_id"), "type": "custom", "custom": {"name": item.get("name"), "input": item.get("input", "")}}
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if refusals:
        message["refusal"] = "".join(refusals)
    if reasoning and any(reasoning):
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    rid = response.get("id") or ""
    out: dict[str, Any] = {
        "id": "chatcmpl-" + (rid[5:] if rid.startswith("resp_") else rid),
        "object": "chat.completion",
        "created": response.get("created_at") or int(time.time()),
        "model": response.get("model", ""),
        "choices": [{"index": 0, "message": message, "finish_reason": _finish_reason(response), "logprobs": None}],
    }
    usage = reverse_usage(response.get("usage"))
    if usage is not None:
        out["usage"] = usage
    return out
