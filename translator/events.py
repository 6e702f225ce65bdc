"""The event catalogue: every Responses stream event name, the sets the rest of the code branches
on, the item-id prefixes, the Response skeleton and the usage mapping.

It sits at the bottom of the translator and imports nothing else of it, so the stream state
machine, the whole-answer path, the SSE encoder, the server and the conformance kit all read the
same names from one place (docs/wire.md §1.2 describes the events themselves).
"""

from __future__ import annotations

import os
import threading
from typing import Any

__all__ = [
    "EVENT_TYPES",
    "ITEM_ID_PREFIXES",
    "LIFECYCLE_EVENT_TYPES",
    "OUTPUT_DELTA_TYPES",
    "RESPONSE_ERROR_CODES",
    "TERMINAL_EVENT_TYPES",
    "TERMINAL_STATUS",
    "item_id",
    "map_usage",
    "random_hex",
    "response_skeleton",
    "reverse_usage",
]

# Event names, one constant each so a typo is a NameError rather than an event nobody handles.
CREATED = "response.created"
QUEUED = "response.queued"
IN_PROGRESS = "response.in_progress"
COMPLETED = "response.completed"
INCOMPLETE = "response.incomplete"
FAILED = "response.failed"
ERROR = "error"
OUTPUT_ITEM_ADDED = "response.output_item.added"
OUTPUT_ITEM_DONE = "response.output_item.done"
CONTENT_PART_ADDED = "response.content_part.added"
CONTENT_PART_DONE = "response.content_part.done"
OUTPUT_TEXT_DELTA = "response.output_text.delta"
OUTPUT_TEXT_DONE = "response.output_text.done"
OUTPUT_TEXT_ANNOTATION_ADDED = "response.output_text.annotation.added"
REFUSAL_DELTA = "response.refusal.delta"
REFUSAL_DONE = "response.refusal.done"
FUNCTION_CALL_ARGUMENTS_DELTA = "response.function_call_arguments.delta"
FUNCTION_CALL_ARGUMENTS_DONE = "response.function_call_arguments.done"
CUSTOM_TOOL_CALL_INPUT_DELTA = "response.custom_tool_call_input.delta"
CUSTOM_TOOL_CALL_INPUT_DONE = "response.custom_tool_call_input.done"
REASONING_SUMMARY_PART_ADDED = "response.reasoning_summary_part.added"
REASONING_SUMMARY_PART_DONE = "response.reasoning_summary_part.done"
REASONING_SUMMARY_TEXT_DELTA = "response.reasoning_summary_text.delta"
REASONING_SUMMARY_TEXT_DONE = "response.reasoning_summary_text.done"
REASONING_TEXT_DELTA = "response.reasoning_text.delta"
REASONING_TEXT_DONE = "response.reasoning_text.done"
#: The Open Responses spelling of the reasoning text events (``reasoning_events="openresponses"``).
REASONING_DELTA = "response.reasoning.delta"
REASONING_DONE = "response.reasoning.done"

#: Events that open a response, before any output.
LIFECYCLE_EVENT_TYPES = frozenset((CREATED, QUEUED, IN_PROGRESS))
#: The one event that ends a stream, and the Response status each carries.
TERMINAL_STATUS: dict[str, str] = {COMPLETED: "completed", INCOMPLETE: "incomplete", FAILED: "failed"}
TERMINAL_EVENT_TYPES = frozenset(TERMINAL_STATUS)
#: Events that carry a fragment of model output (text, refusal, arguments, custom input, reasoning):
#: once one was sent, a client has seen output and a retry would duplicate it.
OUTPUT_DELTA_TYPES = frozenset((
    OUTPUT_TEXT_DELTA, REFUSAL_DELTA, FUNCTION_CALL_ARGUMENTS_DELTA, CUSTOM_TOOL_CALL_INPUT_DELTA,
    REASONING_SUMMARY_TEXT_DELTA, REASONING_TEXT_DELTA, REASONING_DELTA,
))  # fmt: skip
#: Every Responses stream event type the bridge knows (emits, or judges from another producer).
EVENT_TYPES = frozenset((
    *LIFECYCLE_EVENT_TYPES, *TERMINAL_EVENT_TYPES, ERROR, OUTPUT_ITEM_ADDED, OUTPUT_ITEM_DONE,
    CONTENT_PART_ADDED, CONTENT_PART_DONE, OUTPUT_TEXT_DELTA, OUTPUT_TEXT_DONE, OUTPUT_TEXT_ANNOTATION_ADDED,
    REFUSAL_DELTA, REFUSAL_DONE, FUNCTION_CALL_ARGUMENTS_DELTA, FUNCTION_CALL_ARGUMENTS_DONE,
    CUSTOM_TOOL_CALL_INPUT_DELTA, CUSTOM_TOOL_CALL_INPUT_DONE, REASONING_SUMMARY_PART_ADDED,
    REASONING_SUMMARY_PART_DONE, REASONING_SUMMARY_TEXT_DELTA, REASONING_SUMMARY_TEXT_DONE, REASONING_TEXT_DELTA,
    REASONING_TEXT_DONE, REASONING_DELTA, REASONING_DONE,
))  # fmt: skip

#: Item type → id prefix, the one table (OpenAI's ids start the same way). Output items get
#: ``<prefix><response id without resp_>_<output index>``, so the same answer gets the same ids
#: whether it arrives streamed or whole; input items stored without an id get a prefix from here too.
ITEM_ID_PREFIXES: dict[str, str] = {
    "message": "msg_",
    "function_call": "fc_",
    "custom_tool_call": "ctc_",
    "reasoning": "rs_",
    "compaction": "cmp_",
    "function_call_output": "fco_",
    "custom_tool_call_output": "ctco_",
}


class _Entropy:
    """The operating system's random bytes, read 4 KiB at a time.

    Every request needs two to four random ids (response, input items, tool calls); `uuid.uuid4()`
    costs ~5 µs each, and `os.urandom` per id is a system call that also releases the GIL (a thread
    switch when the store's worker thread wants it). The bytes are the same kernel CSPRNG output,
    only fetched in bulk, so ids stay unguessable (a response id is all that guards a stored
    response when no API keys are configured). A lock keeps two threads from taking the same bytes;
    a forked child starts with a fresh buffer, never its parent's."""

    __slots__ = ("buffer", "lock", "position")

    SIZE = 4096

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.buffer = b""
        self.position = 0

    def hex(self, nbytes: int) -> str:
        with self.lock:
            start = self.position
            end = start + nbytes
            if end > len(self.buffer):
                self.buffer = os.urandom(max(self.SIZE, nbytes))
                start, end = 0, nbytes
            self.position = end
            return self.buffer[start:end].hex()


_ENTROPY = _Entropy()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ENTROPY.reset)


def random_hex(nbytes: int = 16) -> str:
    """``2 * nbytes`` random hex digits (the id shapes: ``resp_`` + 32, ``call_`` + 24, …)."""
    return _ENTROPY.hex(nbytes)


def item_id(item_type: str, base: str, output_index: int) -> str:
    """The id of the output item of ``item_type`` at ``output_index`` of the response ``resp_<base>``."""
    return f"{ITEM_ID_PREFIXES[item_type]}{base}_{output_index}"


#: ``ResponseError.code`` values the SDK's enum lists. A backend's own code in a mid-stream error chunk
#: is relayed only when it is one of these (else ``server_error``); the bridge's own codes
#: (``upstream_timeout``, ``store_unavailable``, ``context_length_exceeded`` …) are sent as they are.
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


def _echo_text(text: Any) -> dict[str, Any]:
    fmt = text.get("format") if isinstance(text, dict) else None
    echo_text: dict[str, Any] = {"format": fmt if isinstance(fmt, dict) else {"type": "text"}}
    if isinstance(text, dict) and text.get("verbosity") is not None:
        echo_text["verbosity"] = text["verbosity"]
    return echo_text


def _same(value: Any) -> Any:
    return value


#: Request field → how the Response echoes it (the field of the same name). What a request leaves
#: out echoes as `_SKELETON`'s value, which is what each rule gives for None.
_ECHO: dict[str, Any] = {
    "model": lambda v: v if isinstance(v, str) else "",
    "instructions": lambda v: v if isinstance(v, str | list) else None,
    "tools": _echo_tools,
    "tool_choice": lambda v: v if isinstance(v, str | dict) else "auto",
    "parallel_tool_calls": bool,
    "text": _echo_text,
    "temperature": lambda v: _num(v, 1.0),
    "top_p": lambda v: _num(v, 1.0),
    "presence_penalty": lambda v: _num(v, 0.0),
    "frequency_penalty": lambda v: _num(v, 0.0),
    "top_logprobs": lambda v: _num(v, 0),
    "truncation": lambda v: v if v in ("auto", "disabled") else "disabled",
    "reasoning": lambda v: {"effort": v.get("effort"), "summary": v.get("summary")} if isinstance(v, dict) else None,
    "max_output_tokens": _same,
    "max_tool_calls": _same,
    "store": bool,
    "background": bool,
    "service_tier": lambda v: v if isinstance(v, str) else "default",
    "previous_response_id": _same,
    "prompt_cache_key": _same,
    "safety_identifier": _same,
    "metadata": lambda v: v if isinstance(v, dict) else {},
}

#: The skeleton of a request that sets nothing, in the Response's field order. Its lists and dicts
#: are replaced per response (callers may change what they get).
_SKELETON: dict[str, Any] = {
    "id": "", "object": "response", "created_at": 0, "completed_at": None, "status": "in_progress",
    "incomplete_details": None, "model": "", "output": None, "usage": None, "error": None, "instructions": None,
    "tools": None, "tool_choice": "auto", "parallel_tool_calls": True, "text": None, "temperature": 1.0,
    "top_p": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0, "top_logprobs": 0, "truncation": "disabled",
    "reasoning": None, "max_output_tokens": None, "max_tool_calls": None, "store": True, "background": False,
    "service_tier": "default", "previous_response_id": None, "prompt_cache_key": None, "safety_identifier": None,
    "metadata": None,
}  # fmt: skip


def response_skeleton(request: dict[str, Any], response_id: str, created_at: int) -> dict[str, Any]:
    """A Response in status ``in_progress`` with every field echoed from the request.

    Built from `_SKELETON` (one C-level copy) with only the fields the request sets converted by
    their `_ECHO` rule: one Response per request, and converting all 22 echoed fields one by one was
    a tenth of a non-streaming request's translation. A present field with the value None gets the
    same rule as any other value (``"store": null`` echoes ``false``, as ``bool(None)``)."""
    out = _SKELETON.copy()
    out["id"] = response_id
    out["created_at"] = created_at
    out["output"] = []
    out["tools"] = []
    out["text"] = {"format": {"type": "text"}}
    out["metadata"] = {}
    for key in request:
        echo = _ECHO.get(key)
        if echo is not None:
            out[key] = echo(request[key])
    if request.get("user") is not None:
        out["user"] = request["user"]
    return out


_MAX_COUNT = 2**53  # keeps counts serialisable (orjson refuses integers beyond 64 bits)


def _count(value: Any) -> int:
    """A token count as an int (backends have sent floats, strings and null)."""
    if type(value) is int and 0 <= value <= _MAX_COUNT:  # what every backend sends: nothing to clamp
        return value
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

    ``output_tokens_details.reasoning_tokens`` is 0, not null, when the backend gives no
    ``completion_tokens_details.reasoning_tokens``: the openai SDK types it as a required ``int``
    (``openai.types.responses.response_usage.OutputTokensDetails``) and OpenAI itself sends 0 for a
    model that did not reason, so null would break a strictly validating client while 0 tells a
    reader nothing false about the bill (no reasoning tokens were reported).
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
