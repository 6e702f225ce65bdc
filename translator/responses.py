"""Whole answers: a chat completion → a Response object, and back.

The Response object echoes the request with a value in every field the Open Responses schema
requires to be present (its validator fails on a missing ``truncation`` as surely as on a missing
``output``), normalised to the shapes that schema accepts (integer timestamps, numbers where it
wants numbers, function tools with ``description``/``parameters``/``strict`` keys).

`chat_completion_to_response` runs the completion through the same state machine as a stream
(one synthetic chunk), so a streamed answer and the same answer received whole cannot disagree.
"""

from __future__ import annotations

from typing import Any

from .builders import QuietEmitter
from .errors import UpstreamError
from .events import RESPONSE_ERROR_CODES, map_usage, response_skeleton, reverse_usage
from .reverse import response_to_chat_completion  # the reverse direction lives in reverse.py
from .stream import ChatStreamTranslator

# RESPONSE_ERROR_CODES, map_usage, response_skeleton and reverse_usage live in the event catalogue
# (events.py) and are re-exported here for code that imported them from this module.
__all__ = [
    "RESPONSE_ERROR_CODES",
    "chat_completion_to_response",
    "completion_to_chunk",
    "completion_translator",
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
    return completion_translator(completion, request, **options).response


def completion_translator(completion: Any, request: dict[str, Any], **options: Any) -> ChatStreamTranslator:
    """`chat_completion_to_response`, returning the finished translator: its ``response``, and its
    ``ceiling_hit`` for a caller that logs which ceiling ended the answer."""
    if not isinstance(completion, dict):
        raise UpstreamError("The upstream backend returned a body that is not a JSON object.", body=completion)
    if completion.get("error"):
        raise UpstreamError.from_body(completion)
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices or not any(isinstance(c, dict) for c in choices):
        raise UpstreamError("The upstream backend returned a completion without choices.", body=completion)
    translator = ChatStreamTranslator(request, **options)
    translator._em = QuietEmitter()  # only the final Response is wanted, not the events on the way
    translator.feed(completion_to_chunk(completion))
    translator.finish(done_seen=True)
    return translator
