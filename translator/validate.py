"""Event-grammar and Response-object validator for the Responses API (pure, no I/O).

Strict clients (the openai SDK's stream accumulator, the Open Responses compliance suite, Codex)
break on streams that most routers consider "close enough". This module states the rules those
clients rely on as data plus small checks, so that one function call tells a producer of events
(this project's translator, or any server under ``responses-bridge check``) exactly which event
breaks which rule. Every rule is named in :data:`RULES` with the section of the shared wire
reference (``REFERENCE §1.x``) it comes from.

Three entry points:

* :func:`validate_events` - a whole stream of decoded events (and optionally the request);
* :func:`validate_response` - one Response object (non-streaming body or a lifecycle event's);
* :func:`validate_sse` / :func:`parse_sse` - the raw SSE bytes (framing rules of §1.1).

Two profiles: ``"openai"`` (what OpenAI's API and SDK accept, plus Open Responses' Response-object
constraints that a real OpenAI response also satisfies) and ``"openresponses"`` (adds the stricter Open
Responses rules: its event names, nested ``error`` events, function tools only, no custom tool items).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "PROFILES",
    "RULES",
    "Violation",
    "assert_valid",
    "format_violations",
    "parse_sse",
    "validate_events",
    "validate_response",
    "validate_sse",
]

PROFILES = ("openai", "openresponses")

#: Every rule this module can report, with why it exists and where it comes from.
RULES: dict[str, str] = {
    # SSE framing (REFERENCE §1.1)
    "sse-line-endings": "frames use LF line endings; a CRLF frame never dispatches in the Open Responses parser (§1.1)",
    "sse-event-name": "every frame has an `event:` line equal to its data's `type` (§1.1, OR MUST)",
    "sse-data-lines": "one `data:` line per frame; OR's parser keeps only the last one (§1.1)",
    "sse-id": "no `id:` lines (§1.1, OR: servers SHOULD NOT use id)",
    "sse-json": "every `data:` payload (except [DONE]) is one JSON object (§1.1)",
    "sse-framing": "every frame ends with a blank line (§1.1)",
    "sse-done": "the stream ends with `data: [DONE]` (OR requires it; OpenAI does not send it) and nothing follows it (§1.1)",
    "sse-content-type": "the streaming response has Content-Type text/event-stream (§1.1)",
    # event stream (REFERENCE §1.2, §1.5, §1.6, §1.7)
    "event-type": "every event is an object with a known `type` (§1.1, §1.2)",
    "event-fields": "every event has its required fields with the right types (§1.2)",
    "first-event": "the first event is response.created, and only the first (§1.5, §1.7)",
    "in-progress": "response.in_progress follows response.created, once, before any output (§1.5 canonical prefix)",
    "lifecycle-status": "created/in_progress carry status in_progress (or queued) and output [] at creation (§1.3, §1.5)",
    "sequence-number": "sequence_number is an integer starting at 0 and going up by 1 on every event (§1.6)",
    "response-id": "the response id is the same on every lifecycle event (§1.6, SDK raises)",
    "output-index": "output_index values are 0,1,2,… in the order of output_item.added, each used once (§1.6)",
    "item-not-added": "no event for an output_index before its output_item.added (§1.7, SDK raises)",
    "item-type-mismatch": "text events target message items, argument events function calls, etc. (§1.7, SDK asserts)",
    "content-index": "content_part.added comes before that content_index's events; indexes are 0,1,… per item (§1.6)",
    "item-id": "item_id equals the id of the item from output_item.added (§1.6)",
    "delta-sum": "the deltas concatenated equal the .done text/arguments/input and the done item/part (§1.5)",
    "unclosed-part": "every streamed part and argument string gets its .done events before output_item.done (§1.5)",
    "item-identity": "output_item.done keeps the added item's type, id and (for calls) call_id (§1.6, SDK raises)",
    "item-status": "added items are in_progress; done items completed or incomplete (§1.4, §1.5)",
    "after-done": "no event for an item or part after its own done event (§1.5)",
    "terminal": "exactly one terminal event (completed/incomplete/failed), the last event (§1.5)",
    "terminal-status": "the terminal response's status matches the event type (§1.5)",
    "terminal-output": "the terminal output equals the done items in output_index order (failed: open items marked incomplete) (§1.5, §1.7)",
    "unfinished-item": "completed/incomplete responses have every added item done (§1.7, SDK raises)",
    "incomplete-item": "an incomplete item is the last item and only in an incomplete (or failed) response (§1.5d, OR)",
    "error-event": "the error event has OpenAI's flat and/or Open Responses' nested shape and is followed by response.failed (§1.8)",
    "echo": "the Response echoes the request's model, tools, tool_choice, sampling and limits (§1.3, §4)",
    # Response object (REFERENCE §1.3, §1.4)
    "response-field": "every field Open Responses' ResponseResource requires is present (§1.3)",
    "response-type": "Response fields have the types OR enforces: integer timestamps, numbers not null, … (§1.3)",
    "response-status": "status is a known value; incomplete has incomplete_details, failed has error (§1.3)",
    "usage": "usage is null or the full Responses usage object, not chat-style prompt_tokens (§1.3)",
    "item-field": "output items have their required keys: message id/status/role/content, call ids, summary (§1.4)",
    "item-type": "output items and content parts have known types (output_text, not text) (§1.4)",
    # Open Responses profile only
    "or-event-name": "Open Responses' event set: response.reasoning.* not reasoning_text, no custom/hosted events (§1.2)",
    "or-tools": "Open Responses echoes only function tools, each with description/parameters/strict keys (§1.3)",
    "or-item-type": "Open Responses has no custom_tool_call (or hosted) output items (§1.4)",
}


@dataclass(frozen=True)
class Violation:
    """One broken rule. ``index`` is the event's position in the list, None for whole-stream rules."""

    index: int | None
    rule: str
    message: str

    def __str__(self) -> str:
        where = "" if self.index is None else f"[event {self.index}] "
        return f"{where}{self.rule}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "rule": self.rule, "message": self.message}


def format_violations(violations: Iterable[Violation]) -> str:
    """One violation per line, for assertion messages and CLI output."""
    return "\n".join(str(v) for v in violations)


def assert_valid(
    events: list[dict], request: dict | None = None, *, profile: str = "openai", raw: bytes | None = None
) -> None:
    """Raise AssertionError listing every violation; the one-liner the project's tests call on each stream."""
    violations = validate_sse(raw) if raw is not None else []
    violations += validate_events(events, request, profile=profile)
    if violations:
        raise AssertionError("stream violates the Responses event grammar:\n" + format_violations(violations))


# --------------------------------------------------------------------------------------------------
# small type predicates (bool is an int in Python, never in JSON)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_list(v: Any) -> bool:
    return isinstance(v, list)


def _is_dict(v: Any) -> bool:
    return isinstance(v, dict)


def _type_of(value: Any) -> str | None:
    """The string ``type`` of an object, else None (servers send lists and numbers there too)."""
    kind = value.get("type") if isinstance(value, dict) else None
    return kind if isinstance(kind, str) else None


def _nullable(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (_is_int, "an integer"),
    "str": (_is_str, "a string"),
    "list": (_is_list, "a list"),
    "dict": (_is_dict, "an object"),
    "str?": (_nullable(_is_str), "a string or null"),
}

# --------------------------------------------------------------------------------------------------
# event catalogue (REFERENCE §1.2): required fields other than type and sequence_number

_LIFECYCLE = ("response.created", "response.queued", "response.in_progress")
_TERMINAL = {
    "response.completed": "completed",
    "response.incomplete": "incomplete",
    "response.failed": "failed",
}

_ITEM_TEXT = {"item_id": "str", "output_index": "int", "content_index": "int"}
_SUMMARY = {"item_id": "str", "output_index": "int", "summary_index": "int"}
_CALL = {"item_id": "str", "output_index": "int"}

EVENT_FIELDS: dict[str, dict[str, str]] = {
    **{t: {"response": "dict"} for t in (*_LIFECYCLE, *_TERMINAL)},
    "response.output_item.added": {"output_index": "int", "item": "dict"},
    "response.output_item.done": {"output_index": "int", "item": "dict"},
    "response.content_part.added": {**_ITEM_TEXT, "part": "dict"},
    "response.content_part.done": {**_ITEM_TEXT, "part": "dict"},
    "response.output_text.delta": {**_ITEM_TEXT, "delta": "str", "logprobs": "list"},
    "response.output_text.done": {**_ITEM_TEXT, "text": "str", "logprobs": "list"},
    "response.output_text.annotation.added": {**_ITEM_TEXT, "annotation_index": "int"},
    "response.refusal.delta": {**_ITEM_TEXT, "delta": "str"},
    "response.refusal.done": {**_ITEM_TEXT, "refusal": "str"},
    "response.function_call_arguments.delta": {**_CALL, "delta": "str"},
    "response.function_call_arguments.done": {**_CALL, "arguments": "str"},
    "response.custom_tool_call_input.delta": {**_CALL, "delta": "str"},
    "response.custom_tool_call_input.done": {**_CALL, "input": "str"},
    "response.reasoning_summary_part.added": {**_SUMMARY, "part": "dict"},
    "response.reasoning_summary_part.done": {**_SUMMARY, "part": "dict"},
    "response.reasoning_summary_text.delta": {**_SUMMARY, "delta": "str"},
    "response.reasoning_summary_text.done": {**_SUMMARY, "text": "str"},
    "response.reasoning_text.delta": {**_ITEM_TEXT, "delta": "str"},
    "response.reasoning_text.done": {**_ITEM_TEXT, "text": "str"},
    # Open Responses' names for raw reasoning; the SDK passes them through (§1.2)
    "response.reasoning.delta": {**_ITEM_TEXT, "delta": "str"},
    "response.reasoning.done": {**_ITEM_TEXT, "text": "str"},
    "error": {},  # shape checked separately: flat, nested or both (§1.8)
}

# Events of the SDK union a chat translator never produces (hosted tools, audio, …): known to OpenAI,
# not to Open Responses, and not about items this validator tracks in detail.
_OPENAI_ONLY_PREFIXES = (
    "response.audio.",
    "response.code_interpreter_call",
    "response.file_search_call.",
    "response.web_search_call.",
    "response.image_generation_call.",
    "response.mcp_call",
    "response.mcp_list_tools.",
    "response.shell_call",
    "response.compaction.",
)

# The Open Responses event set (§1.2): OpenAI's minus custom-tool, audio, hosted and reasoning_text events.
_OR_REJECTED = ("response.reasoning_text.", "response.custom_tool_call_input.", *_OPENAI_ONLY_PREFIXES)

# delta/done events that build up one string of an item: type → (item type, container, part type, field)
# container "content" = item.content[content_index], "summary" = item.summary[summary_index],
# None = the call's own arguments/input.
_TEXT_EVENTS: dict[str, tuple[str, str | None, str | None, str]] = {
    "response.output_text.delta": ("message", "content", "output_text", "delta"),
    "response.output_text.done": ("message", "content", "output_text", "text"),
    "response.refusal.delta": ("message", "content", "refusal", "delta"),
    "response.refusal.done": ("message", "content", "refusal", "refusal"),
    "response.reasoning_text.delta": ("reasoning", "content", "reasoning_text", "delta"),
    "response.reasoning_text.done": ("reasoning", "content", "reasoning_text", "text"),
    "response.reasoning.delta": ("reasoning", "content", "reasoning_text", "delta"),
    "response.reasoning.done": ("reasoning", "content", "reasoning_text", "text"),
    "response.reasoning_summary_text.delta": ("reasoning", "summary", "summary_text", "delta"),
    "response.reasoning_summary_text.done": ("reasoning", "summary", "summary_text", "text"),
    "response.function_call_arguments.delta": ("function_call", None, None, "delta"),
    "response.function_call_arguments.done": ("function_call", None, None, "arguments"),
    "response.custom_tool_call_input.delta": ("custom_tool_call", None, None, "delta"),
    "response.custom_tool_call_input.done": ("custom_tool_call", None, None, "input"),
}

_PART_EVENTS: dict[str, tuple[str, str, bool]] = {
    # type → (container, index field, is_done)
    "response.content_part.added": ("content", "content_index", False),
    "response.content_part.done": ("content", "content_index", True),
    "response.reasoning_summary_part.added": ("summary", "summary_index", False),
    "response.reasoning_summary_part.done": ("summary", "summary_index", True),
}

# part types allowed in each (item type, container), and the key holding the part's text
_PART_TYPES: dict[tuple[str, str], tuple[str, ...]] = {
    ("message", "content"): ("output_text", "refusal"),
    ("reasoning", "content"): ("reasoning_text",),
    ("reasoning", "summary"): ("summary_text",),
}
_PART_TEXT_KEY = {
    "output_text": "text",
    "refusal": "refusal",
    "reasoning_text": "text",
    "summary_text": "text",
}
_CALL_TEXT_KEY = {"function_call": "arguments", "custom_tool_call": "input"}

# --------------------------------------------------------------------------------------------------
# Response object (REFERENCE §1.3)

#: Keys Open Responses' ResponseResource requires to be present (only object and metadata may be omitted).
RESPONSE_REQUIRED = (
    "id", "created_at", "completed_at", "status", "incomplete_details", "model", "previous_response_id",
    "instructions", "output", "error", "tools", "tool_choice", "truncation", "parallel_tool_calls", "text",
    "top_p", "presence_penalty", "frequency_penalty", "top_logprobs", "temperature", "reasoning", "usage",
    "max_output_tokens", "max_tool_calls", "store", "background", "service_tier", "safety_identifier",
    "prompt_cache_key",
)  # fmt: skip

_RESPONSE_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "id": (_is_str, "a string"),
    "created_at": (_is_int, "an integer (Unix seconds; OR rejects floats)"),
    "completed_at": (_nullable(_is_int), "an integer or null (OR rejects floats)"),
    "model": (_is_str, "a string"),
    "previous_response_id": (_nullable(_is_str), "a string or null"),
    "instructions": (lambda v: v is None or isinstance(v, (str, list)), "a string, a list or null"),
    "output": (_is_list, "a list"),
    "tools": (_is_list, "a list"),
    "parallel_tool_calls": (_is_bool, "a boolean"),
    "top_p": (_is_num, "a number, not null"),
    "temperature": (_is_num, "a number, not null"),
    "presence_penalty": (_is_num, "a number, not null"),
    "frequency_penalty": (_is_num, "a number, not null"),
    "top_logprobs": (_is_num, "a number, not null"),
    "max_output_tokens": (_nullable(_is_int), "an integer or null"),
    "max_tool_calls": (_nullable(_is_int), "an integer or null"),
    "store": (_is_bool, "a boolean"),
    "background": (_is_bool, "a boolean"),
    "service_tier": (_is_str, "a string, not null"),
    "safety_identifier": (_nullable(_is_str), "a string or null"),
    "prompt_cache_key": (_nullable(_is_str), "a string or null"),
    "metadata": (_nullable(_is_dict), "an object or null"),
}

_STATUSES = ("completed", "failed", "in_progress", "cancelled", "queued", "incomplete")
_EFFORTS = {
    "openai": ("none", "minimal", "low", "medium", "high", "xhigh", "max"),
    "openresponses": ("none", "low", "medium", "high", "xhigh"),
}
_TOOL_CHOICE_STRINGS = ("none", "auto", "required")
_TEXT_FORMATS = ("text", "json_object", "json_schema")
_ITEM_STATUSES = ("in_progress", "completed", "incomplete")
_USAGE_INT_KEYS = ("input_tokens", "output_tokens", "total_tokens")
_CHAT_USAGE_KEYS = (
    "prompt_tokens",
    "completion_tokens",
    "prompt_tokens_details",
    "completion_tokens_details",
)
# OpenAI output item types a chat translator does not produce but a Responses server may (hosted tools)
_OTHER_ITEM_TYPES = (
    "web_search_call", "file_search_call", "computer_call", "code_interpreter_call", "image_generation_call",
    "local_shell_call", "shell_call", "shell_call_output", "mcp_call", "mcp_list_tools", "mcp_approval_request",
    "apply_patch_call", "apply_patch_call_output", "compaction",
)  # fmt: skip


def _check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")


def validate_response(
    response: Any, *, profile: str = "openai", request: dict | None = None, index: int | None = None
) -> list[Violation]:
    """Check one Response object against OpenAI's types and Open Responses' ResponseResource (§1.3, §1.4).

    ``index`` tags the violations with the event the response came from (None for a non-streaming body).
    With ``request``, the echoed request fields are compared too.
    """
    _check_profile(profile)
    out: list[Violation] = []

    def bad(rule: str, message: str) -> None:
        out.append(Violation(index, rule, message))

    if not isinstance(response, dict):
        bad("response-type", f"the response must be an object, got {type(response).__name__}")
        return out
    missing = [k for k in RESPONSE_REQUIRED if k not in response]
    if missing:
        bad("response-field", "missing required field(s): " + ", ".join(missing))
    if "object" in response and response["object"] != "response":
        bad("response-type", f"object must be 'response', got {response['object']!r}")
    for key, (check, expected) in _RESPONSE_TYPES.items():
        if key in response and not check(response[key]):
            bad("response-type", f"{key} must be {expected}, got {_short(response[key])}")

    status = response.get("status")
    if "status" in response and status not in _STATUSES:
        bad("response-status", f"status must be one of {'|'.join(_STATUSES)}, got {_short(status)}")
    incomplete_details = response.get("incomplete_details")
    if incomplete_details is not None and not (
        _is_dict(incomplete_details) and _is_str(incomplete_details.get("reason"))
    ):
        bad(
            "response-type",
            f"incomplete_details must be null or {{reason}}, got {_short(incomplete_details)}",
        )
    if status == "incomplete" and not _is_dict(incomplete_details):
        bad("response-status", "an incomplete response must say why in incomplete_details.reason")
    error = response.get("error")
    if error is not None and not (
        _is_dict(error) and _is_str(error.get("code")) and _is_str(error.get("message"))
    ):
        bad("response-type", f"error must be null or {{code: string, message: string}}, got {_short(error)}")
    if status == "failed" and error is None:
        bad("response-status", "a failed response must carry an error object")
    if status in ("completed", "in_progress", "queued") and error is not None:
        bad("response-status", f"a {status} response must have error null")

    if "truncation" in response and response["truncation"] not in ("auto", "disabled"):
        bad("response-type", f"truncation must be 'auto' or 'disabled', got {_short(response['truncation'])}")
    if "text" in response:
        _check_text_config(response["text"], bad)
    if "reasoning" in response:
        _check_reasoning_config(response["reasoning"], profile, bad)
    if "tool_choice" in response:
        _check_tool_choice(response["tool_choice"], bad)
    if _is_list(response.get("tools")):
        _check_tools(response["tools"], profile, bad)
    if "usage" in response:
        _check_usage(response["usage"], bad)
    if _is_list(response.get("output")):
        for position, item in enumerate(response["output"]):
            _check_item(
                item, profile, bad, where=f"output[{position}]", final=status not in ("in_progress", "queued")
            )
    if request is not None:
        _check_echo(response, request, bad)
    return out


def _short(value: Any, limit: int = 80) -> str:
    """A compact JSON rendering for messages (long values cut)."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


Report = Callable[[str, str], None]


def _check_text_config(text: Any, bad: Report) -> None:
    if not _is_dict(text) or not _is_dict(text.get("format")):
        bad("response-type", f"text must be {{format: {{type: …}}}}, got {_short(text)}")
        return
    fmt = text["format"]
    if fmt.get("type") not in _TEXT_FORMATS:
        bad(
            "response-type",
            f"text.format.type must be one of {'|'.join(_TEXT_FORMATS)}, got {_short(fmt.get('type'))}",
        )
    elif fmt["type"] == "json_schema" and not _is_str(fmt.get("name")):
        bad("response-type", "text.format of type json_schema needs a string name")


def _check_reasoning_config(reasoning: Any, profile: str, bad: Report) -> None:
    if reasoning is None:
        return
    if not _is_dict(reasoning):
        bad("response-type", f"reasoning must be null or {{effort, summary}}, got {_short(reasoning)}")
        return
    if profile == "openresponses":
        missing = [k for k in ("effort", "summary") if k not in reasoning]
        if missing:
            bad("response-field", "reasoning is missing " + ", ".join(missing))
    effort = reasoning.get("effort")
    if effort is not None and effort not in _EFFORTS[profile]:
        bad(
            "response-type",
            f"reasoning.effort must be one of {'|'.join(_EFFORTS[profile])}, got {_short(effort)}",
        )
    summary = reasoning.get("summary")
    if summary is not None and summary not in ("auto", "concise", "detailed"):
        bad(
            "response-type", f"reasoning.summary must be auto|concise|detailed or null, got {_short(summary)}"
        )


def _check_tool_choice(choice: Any, bad: Report) -> None:
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICE_STRINGS:
            bad("response-type", f"tool_choice must be none|auto|required or an object, got {_short(choice)}")
    elif not (_is_dict(choice) and _is_str(choice.get("type"))):
        bad("response-type", f"tool_choice must be a string or an object with a type, got {_short(choice)}")
    elif choice["type"] in ("function", "custom") and not _is_str(choice.get("name")):
        bad("response-type", f"tool_choice of type {choice['type']} needs a name")


def _check_tools(tools: list, profile: str, bad: Report) -> None:
    for position, tool in enumerate(tools):
        if not (_is_dict(tool) and _is_str(tool.get("type"))):
            bad("response-type", f"tools[{position}] must be an object with a type, got {_short(tool)}")
            continue
        if tool["type"] in ("function", "custom") and not _is_str(tool.get("name")):
            bad("response-type", f"tools[{position}] ({tool['type']}) needs a string name")
        if profile != "openresponses":
            continue
        if tool["type"] != "function":
            bad(
                "or-tools",
                f"tools[{position}] has type {tool['type']!r}; Open Responses echoes only function tools",
            )
            continue
        missing = [k for k in ("description", "parameters", "strict") if k not in tool]
        if missing:
            bad(
                "or-tools",
                f"tools[{position}] ({tool.get('name')}) lacks key(s) {', '.join(missing)} (null is allowed)",
            )


def _check_usage(usage: Any, bad: Report) -> None:
    if usage is None:
        return
    if not _is_dict(usage):
        bad("usage", f"usage must be null or an object, got {_short(usage)}")
        return
    chat_keys = [k for k in _CHAT_USAGE_KEYS if k in usage]
    if chat_keys:
        bad(
            "usage",
            f"chat-style usage key(s) {', '.join(chat_keys)}; Responses uses input_tokens/output_tokens",
        )
    for key in _USAGE_INT_KEYS:
        if not _is_int(usage.get(key)):
            bad("usage", f"usage.{key} must be an integer, got {_short(usage.get(key))}")
    for key, inner in (
        ("input_tokens_details", "cached_tokens"),
        ("output_tokens_details", "reasoning_tokens"),
    ):
        details = usage.get(key)
        if not (_is_dict(details) and _is_int(details.get(inner))):
            bad("usage", f"usage.{key}.{inner} must be an integer, got {key}={_short(details)}")


def _check_item(item: Any, profile: str, bad: Report, *, where: str, final: bool = True) -> None:
    """Required keys of one output item (§1.4). ``final`` items must not still be in_progress."""
    if not (_is_dict(item) and _is_str(item.get("type"))):
        bad("item-field", f"{where} must be an object with a string type, got {_short(item)}")
        return
    kind = item["type"]
    status = item.get("status")
    if "status" in item and status not in _ITEM_STATUSES:
        bad(
            "item-field",
            f"{where} ({kind}) status must be in_progress|completed|incomplete, got {_short(status)}",
        )
    if kind == "message":
        _require(
            item, where, kind, {"id": _is_str, "status": _is_str, "role": _is_str, "content": _is_list}, bad
        )
        if item.get("role") != "assistant":
            bad("item-field", f"{where} (message) role must be 'assistant', got {_short(item.get('role'))}")
        for ci, part in enumerate(item.get("content") or [] if _is_list(item.get("content")) else []):
            _check_part(part, ("output_text", "refusal"), bad, where=f"{where}.content[{ci}]")
    elif kind in ("function_call", "custom_tool_call"):
        text_key = _CALL_TEXT_KEY[kind]
        required = {"call_id": _is_str, "name": _is_str, text_key: _is_str}
        if kind == "function_call" or profile == "openresponses":
            required |= {"id": _is_str, "status": _is_str}
        _require(item, where, kind, required, bad)
        if kind == "custom_tool_call" and profile == "openresponses":
            bad("or-item-type", f"{where} is a custom_tool_call, which is not in Open Responses' item union")
    elif kind == "reasoning":
        required = {"id": _is_str, "summary": _is_list}
        if profile == "openresponses":
            required["status"] = _is_str
        _require(item, where, kind, required, bad)
        for si, part in enumerate(item.get("summary") if _is_list(item.get("summary")) else []):
            _check_part(part, ("summary_text",), bad, where=f"{where}.summary[{si}]")
        content = item.get("content")
        if content is not None and not _is_list(content):
            bad("item-field", f"{where} (reasoning) content must be a list or absent")
        for ci, part in enumerate(content if _is_list(content) else []):
            _check_part(part, ("reasoning_text",), bad, where=f"{where}.content[{ci}]")
    elif kind in _OTHER_ITEM_TYPES:
        if profile == "openresponses":
            bad("or-item-type", f"{where} has type {kind!r}, which Open Responses does not define")
    else:
        bad("item-type", f"{where} has unknown output item type {kind!r}")
    if final and status == "in_progress":
        bad("item-status", f"{where} ({kind}) is still in_progress in a finished response")


def _require(
    item: dict, where: str, kind: str, required: dict[str, Callable[[Any], bool]], bad: Report
) -> None:
    for key, check in required.items():
        if key not in item:
            bad("item-field", f"{where} ({kind}) is missing {key}")
        elif not check(item[key]):
            bad("item-field", f"{where} ({kind}) {key} has the wrong type: {_short(item[key])}")


def _check_part(part: Any, allowed: tuple[str, ...], bad: Report, *, where: str) -> None:
    if not (_is_dict(part) and _is_str(part.get("type"))):
        bad("item-field", f"{where} must be an object with a type, got {_short(part)}")
        return
    kind = part["type"]
    if kind not in allowed:
        hint = " (Responses output text parts are typed output_text)" if kind == "text" else ""
        bad("item-type", f"{where} has type {kind!r}, expected {'|'.join(allowed)}{hint}")
        return
    key = _PART_TEXT_KEY[kind]
    if not _is_str(part.get(key)):
        bad("item-field", f"{where} ({kind}) {key} must be a string, got {_short(part.get(key))}")
    if kind == "output_text" and not _is_list(part.get("annotations")):
        bad(
            "item-field",
            f"{where} (output_text) must have an annotations list, got {_short(part.get('annotations'))}",
        )


# --------------------------------------------------------------------------------------------------
# request echo (§1.3, §4)

_ECHO_SCALARS = (
    "instructions", "max_output_tokens", "max_tool_calls", "parallel_tool_calls", "previous_response_id",
    "top_logprobs", "truncation", "store", "background", "safety_identifier", "prompt_cache_key", "metadata",
)  # fmt: skip
_ECHO_NUMBERS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")


def _check_echo(response: dict, request: dict, bad: Report) -> None:
    def differ(key: str, sent: Any, got: Any) -> None:
        bad("echo", f"{key}: request sent {_short(sent)}, response echoes {_short(got)}")

    model = request.get("model")
    got_model = response.get("model")
    # OpenAI answers a snapshot name (gpt-4o → gpt-4o-2024-08-06); anything else is a mismatch
    if _is_str(model) and not (_is_str(got_model) and got_model.startswith(model)):
        differ("model", model, got_model)
    for key in _ECHO_NUMBERS:
        sent = request.get(key)
        if _is_num(sent) and not (
            _is_num(response.get(key)) and math.isclose(sent, response[key], abs_tol=1e-6)
        ):
            differ(key, sent, response.get(key))
    for key in _ECHO_SCALARS:
        sent = request.get(key)
        if sent is not None and key in request and response.get(key) != sent:
            differ(key, sent, response.get(key))
    if "tool_choice" in request and request["tool_choice"] is not None:
        sent, got = request["tool_choice"], response.get("tool_choice")
        if isinstance(sent, str) or not _is_dict(got):
            if sent != got:
                differ("tool_choice", sent, got)
        elif (sent.get("type"), sent.get("name")) != (got.get("type"), got.get("name")):
            differ("tool_choice", sent, got)
    if _is_list(request.get("tools")):
        sent_tools = [(t.get("type"), t.get("name")) for t in request["tools"] if _is_dict(t)]
        got_list = response.get("tools") if _is_list(response.get("tools")) else []
        got_tools = [(t.get("type"), t.get("name")) for t in got_list if _is_dict(t)]
        missing = [f"{k}:{n}" if n else str(k) for k, n in sent_tools if (k, n) not in got_tools]
        if missing:
            bad("echo", "tools sent but not echoed: " + ", ".join(missing))
    sent_text = request.get("text")
    if _is_dict(sent_text) and _is_dict(sent_text.get("format")):
        got_format = (response.get("text") or {}).get("format") if _is_dict(response.get("text")) else None
        sent_format = sent_text["format"]
        if not _is_dict(got_format) or (sent_format.get("type"), sent_format.get("name")) != (
            got_format.get("type"),
            got_format.get("name"),
        ):
            differ("text.format", sent_format, got_format)
    sent_reasoning = request.get("reasoning")
    if _is_dict(sent_reasoning) and sent_reasoning.get("effort") is not None:
        got_reasoning = response.get("reasoning")
        if not _is_dict(got_reasoning) or got_reasoning.get("effort") != sent_reasoning["effort"]:
            differ("reasoning.effort", sent_reasoning["effort"], got_reasoning)


# --------------------------------------------------------------------------------------------------
# the event stream


@dataclass
class _Part:
    """One streamed string: a content part, a summary part, or a call's arguments/input."""

    added_at: int
    kind: str | None
    text: str = ""
    text_done: str | None = None  # from the .delta's matching .done event
    part_done: dict | None = None  # from content_part.done / reasoning_summary_part.done
    streamed: bool = False


@dataclass
class _Item:
    added_at: int
    output_index: int
    item: dict
    content: list[_Part] = field(default_factory=list)
    summary: list[_Part] = field(default_factory=list)
    call: _Part | None = None
    done: dict | None = None
    done_at: int | None = None
    tainted: bool = False  # an event for it had missing/mistyped fields: its text can't be followed

    @property
    def type(self) -> str | None:
        return _type_of(self.item)

    @property
    def id(self) -> Any:
        return self.item.get("id")


def _identity(item: dict) -> tuple[Any, Any, Any]:
    """The SDK's `_output_identity`: calls are known by call_id, everything else by id (§1.6)."""
    if item.get("type") in ("function_call", "custom_tool_call"):
        return item.get("type"), None, item.get("call_id")
    return item.get("type"), item.get("id"), item.get("call_id")


class _StreamChecker:
    """Walks the events once, keeping per-item state, and collects violations."""

    def __init__(self, events: list[dict], request: dict | None, profile: str) -> None:
        self.events = events
        self.request = request
        self.profile = profile
        self.out: list[Violation] = []
        self.items: dict[int, _Item] = {}
        self.order: list[int] = []  # output_index values in output_item.added order
        self.response_id: Any = None
        self.terminals: list[int] = []
        self.error_events: list[int] = []
        self.incomplete_done_at: int | None = None
        self.in_progress_seen = False

    def bad(self, index: int | None, rule: str, message: str) -> None:
        self.out.append(Violation(index, rule, message))

    def run(self) -> list[Violation]:
        if not self.events:
            self.bad(None, "first-event", "the stream has no events")
            self.bad(None, "terminal", "the stream has no terminal event")
            return self.out
        previous_seq: int | None = None
        for i, event in enumerate(self.events):
            if not _is_dict(event) or not _is_str(event.get("type")):
                self.bad(
                    i, "event-type", f"an event must be an object with a string type, got {_short(event)}"
                )
                continue
            previous_seq = self._sequence(i, event, previous_seq)
            if self.terminals:
                self.bad(i, "terminal", f"{event['type']} after the terminal event at {self.terminals[0]}")
            self._event(i, event)
        self._finish()
        return self.out

    def _sequence(self, i: int, event: dict, previous: int | None) -> int | None:
        seq = event.get("sequence_number")
        if not _is_int(seq):
            got = _short(seq) if "sequence_number" in event else "nothing (the field is missing)"
            self.bad(i, "sequence-number", f"sequence_number must be an integer, got {got}")
            return previous
        # after events without a usable number, the position is what the counter should have reached
        expected = i if previous is None else previous + 1
        if seq != expected:
            self.bad(i, "sequence-number", f"sequence_number {seq}, expected {expected}")
        return seq

    def _event(self, i: int, event: dict) -> None:
        kind = event["type"]
        if i == 0 and kind != "response.created":
            self.bad(0, "first-event", f"the first event must be response.created, got {kind}")
        if self.profile == "openresponses" and kind.startswith(_OR_REJECTED):
            rename = " (Open Responses names it response.reasoning.*)" if "reasoning_text" in kind else ""
            self.bad(i, "or-event-name", f"{kind} is not an Open Responses event{rename}")
        if kind not in EVENT_FIELDS:
            if not kind.startswith(_OPENAI_ONLY_PREFIXES):
                self.bad(i, "event-type", f"unknown event type {kind!r}")
            return
        fields_ok = self._fields(i, event, EVENT_FIELDS[kind])
        if kind == "error":
            self._error_event(i, event)
        elif not fields_ok:
            if kind in _TERMINAL:  # still the end of the stream, even without a usable response
                self.terminals.append(i)
            self._taint(i, event)
        elif kind in _LIFECYCLE or kind in _TERMINAL:
            self._lifecycle(i, event)
        elif kind == "response.output_item.added":
            self._item_added(i, event)
        elif kind == "response.output_item.done":
            self._item_done(i, event)
        elif kind in _PART_EVENTS:
            self._part_event(i, event)
        elif kind in _TEXT_EVENTS:
            self._text_event(i, event)
        elif kind == "response.output_text.annotation.added":
            item = self._item_for(i, event, "message")
            if item is not None and event["content_index"] >= len(item.content):
                self.bad(
                    i,
                    "content-index",
                    f"annotation for content_index {event['content_index']} with no such part",
                )

    def _taint(self, i: int, event: dict) -> None:
        """An item event with missing or mistyped fields: check what can be checked, then stop comparing
        that item's text (a delta-sum report would blame the wrong thing)."""
        oi = event.get("output_index")
        if not _is_int(oi) or event["type"] in _LIFECYCLE or event["type"] in _TERMINAL:
            return
        item = self.items.get(oi)
        if item is None:
            if event["type"] != "response.output_item.added":
                self.bad(
                    i, "item-not-added", f"{event['type']} for output_index {oi} before its output_item.added"
                )
            return
        item.tainted = True
        if _is_str(event.get("item_id")) and event["item_id"] != item.id:
            self.bad(
                i, "item-id", f"item_id {_short(event['item_id'])} is not the item's id {_short(item.id)}"
            )

    def _in_progress(self, i: int) -> None:
        """The canonical prefix is created then in_progress (§1.5); strict clients wait for the latter."""
        if not self.in_progress_seen:
            self.in_progress_seen = True
            self.bad(i, "in-progress", "no response.in_progress between response.created and the output")

    def _fields(self, i: int, event: dict, spec: dict[str, str]) -> bool:
        ok = True
        for name, kind in spec.items():
            check, expected = _KINDS[kind]
            if name not in event:
                self.bad(i, "event-fields", f"{event['type']} is missing {name}")
                ok = False
            elif not check(event[name]):
                self.bad(
                    i, "event-fields", f"{event['type']}.{name} must be {expected}, got {_short(event[name])}"
                )
                ok = False
        return ok

    # -- lifecycle -----------------------------------------------------------------------------

    def _lifecycle(self, i: int, event: dict) -> None:
        kind = event["type"]
        response = event["response"]
        if kind == "response.created" and i != 0:
            self.bad(i, "first-event", "response.created may only be the first event")
        if i == 0 and kind == "response.created":
            self.response_id = response.get("id")
        elif response.get("id") != self.response_id:
            self.bad(
                i,
                "response-id",
                f"response id {_short(response.get('id'))} differs from {_short(self.response_id)}",
            )
        status = response.get("status")
        if kind in _LIFECYCLE:
            allowed = ("queued",) if kind == "response.queued" else ("in_progress", "queued")
            if status not in allowed:
                self.bad(
                    i,
                    "lifecycle-status",
                    f"{kind} must carry status {'|'.join(allowed)}, got {_short(status)}",
                )
            if kind == "response.created" and response.get("output") not in ([], None):
                self.bad(i, "lifecycle-status", "response.created must carry output []")
            if kind == "response.in_progress":
                if self.in_progress_seen:
                    self.bad(i, "in-progress", "response.in_progress after output items, or twice")
                self.in_progress_seen = True
        else:
            self._in_progress(i)
            self.terminals.append(i)
            if status != _TERMINAL[kind]:
                self.bad(
                    i,
                    "terminal-status",
                    f"{kind} carries status {_short(status)}, expected {_TERMINAL[kind]!r}",
                )
        request = self.request if kind in _TERMINAL else None
        self.out.extend(validate_response(response, profile=self.profile, request=request, index=i))

    def _error_event(self, i: int, event: dict) -> None:
        self.error_events.append(i)
        nested = event.get("error")
        has_flat = "message" in event
        if nested is not None:
            if not (_is_dict(nested) and _is_str(nested.get("message")) and _is_str(nested.get("type"))):
                self.bad(
                    i,
                    "error-event",
                    f"nested error must be {{type, code, message, param}}, got {_short(nested)}",
                )
            elif self.profile == "openresponses":
                missing = [k for k in ("code", "param") if k not in nested]
                if missing:
                    self.bad(i, "error-event", "nested error lacks key(s) " + ", ".join(missing))
        elif self.profile == "openresponses":
            self.bad(
                i,
                "error-event",
                "Open Responses needs the nested shape {type:'error', error:{type,code,message,param}}",
            )
        if has_flat and not _is_str(event["message"]):
            self.bad(i, "error-event", f"error.message must be a string, got {_short(event['message'])}")
        if not has_flat and nested is None:
            self.bad(
                i,
                "error-event",
                "error event has neither a message (OpenAI) nor an error object (Open Responses)",
            )
        for key in ("code", "param"):
            if event.get(key) is not None and not _is_str(event[key]):
                self.bad(i, "error-event", f"error.{key} must be a string or null, got {_short(event[key])}")

    # -- items ---------------------------------------------------------------------------------

    def _item_added(self, i: int, event: dict) -> None:
        oi, item = event["output_index"], event["item"]
        self._in_progress(i)
        if oi in self.items:
            self.bad(
                i,
                "output-index",
                f"duplicate output_index {oi} (first added at event {self.items[oi].added_at})",
            )
            return
        if oi != len(self.order):
            self.bad(
                i,
                "output-index",
                f"output_index {oi}, expected {len(self.order)} (0,1,2,… in emission order)",
            )
        if self.incomplete_done_at is not None:
            self.bad(
                i,
                "incomplete-item",
                f"item added after the incomplete item done at event {self.incomplete_done_at}",
            )
        _check_item(item, self.profile, lambda r, m: self.bad(i, r, m), where="item", final=False)
        if item.get("status") not in (None, "in_progress"):
            self.bad(i, "item-status", f"an added item must be in_progress, got {_short(item.get('status'))}")
        state = _Item(added_at=i, output_index=oi, item=item)
        kind = _type_of(item)
        if kind in _CALL_TEXT_KEY:
            initial = item.get(_CALL_TEXT_KEY[kind])
            state.call = _Part(added_at=i, kind=None, text=initial if _is_str(initial) else "")
        for container in ("content", "summary"):
            if _is_list(item.get(container)) and item[container]:
                self.bad(
                    i,
                    "content-index",
                    f"added item already has {container}; parts must be streamed with events",
                )
        self.items[oi] = state
        self.order.append(oi)

    def _item_for(self, i: int, event: dict, item_type: str | None) -> _Item | None:
        """The item an event refers to, after the checks every item event shares."""
        oi = event["output_index"]
        item = self.items.get(oi)
        if item is None:
            self.bad(
                i, "item-not-added", f"{event['type']} for output_index {oi} before its output_item.added"
            )
            return None
        if item.done is not None:
            self.bad(
                i,
                "after-done",
                f"{event['type']} for output_index {oi} after its output_item.done at {item.done_at}",
            )
        if "item_id" in event and event["item_id"] != item.id:
            self.bad(
                i, "item-id", f"item_id {_short(event['item_id'])} is not the item's id {_short(item.id)}"
            )
        if item_type is not None and item.type != item_type:
            self.bad(
                i, "item-type-mismatch", f"{event['type']} targets a {item.type} item (output_index {oi})"
            )
            return None
        return item

    def _part_event(self, i: int, event: dict) -> None:
        container, index_key, is_done = _PART_EVENTS[event["type"]]
        item_type = "reasoning" if container == "summary" else None
        item = self._item_for(i, event, item_type)
        if item is None:
            return
        allowed = _PART_TYPES.get((item.type, container))
        if allowed is None:
            self.bad(i, "item-type-mismatch", f"{event['type']} on a {item.type} item")
            return
        parts = getattr(item, container)
        index = event[index_key]
        part = event["part"]
        kind = _type_of(part)
        if kind not in allowed:
            hint = " (use output_text)" if kind == "text" else ""
            self.bad(
                i,
                "item-type",
                f"part type {_short(kind)} on a {item.type} item, expected {'|'.join(allowed)}{hint}",
            )
        if not is_done:
            if index != len(parts):
                self.bad(
                    i, "content-index", f"{index_key} {index}, expected {len(parts)} (parts are added 0,1,…)"
                )
                return
            text_key = _PART_TEXT_KEY.get(kind, "text")
            if part.get(text_key, "") != "":
                self.bad(
                    i,
                    "delta-sum",
                    f"an added part must start empty, got {text_key}={_short(part.get(text_key))}",
                )
            if kind == "output_text" and not _is_list(part.get("annotations")):
                self.bad(i, "item-field", "an output_text part needs an annotations list")
            parts.append(_Part(added_at=i, kind=kind))
            return
        state = self._part_at(i, event, item, parts, index, index_key)
        if state is None:
            return
        if state.part_done is not None:
            self.bad(i, "after-done", f"second {event['type']} for {index_key} {index}")
            return
        if kind != state.kind:
            self.bad(i, "item-type", f"part done with type {_short(kind)}, added as {state.kind}")
        got = part.get(_PART_TEXT_KEY.get(state.kind or "", "text"))
        if got != state.text and not item.tainted:
            self.bad(
                i, "delta-sum", f"done part text {_short(got)} != concatenated deltas {_short(state.text)}"
            )
        if state.streamed and state.text_done is None:
            self.bad(i, "unclosed-part", f"{event['type']} before the text's own .done event")
        state.part_done = part

    def _part_at(
        self, i: int, event: dict, item: _Item, parts: list[_Part], index: Any, index_key: str
    ) -> _Part | None:
        if not _is_int(index) or not 0 <= index < len(parts):
            self.bad(i, "content-index", f"{event['type']} for {index_key} {index} before its part was added")
            item.tainted = True  # its text went nowhere: comparing the done item would only repeat this
            return None
        return parts[index]

    def _text_event(self, i: int, event: dict) -> None:
        item_type, container, part_type, value_key = _TEXT_EVENTS[event["type"]]
        item = self._item_for(i, event, item_type)
        if item is None:
            return
        is_delta = value_key == "delta"
        if container is None:
            state = item.call
            assert state is not None  # created with every call item
        else:
            index_key = "summary_index" if container == "summary" else "content_index"
            state = self._part_at(i, event, item, getattr(item, container), event[index_key], index_key)
            if state is None:
                return
            if state.kind != part_type:
                self.bad(i, "item-type-mismatch", f"{event['type']} on a {state.kind} part")
                return
            if state.part_done is not None:
                self.bad(i, "after-done", f"{event['type']} after the part's done event at {state.part_done}")
        if state.text_done is not None:
            self.bad(i, "after-done", f"{event['type']} after the text's .done event")
            return
        if is_delta:
            state.text += event["delta"]
            state.streamed = True
        else:
            value = event[value_key]
            if value != state.text and not item.tainted:
                self.bad(
                    i,
                    "delta-sum",
                    f"{event['type']}.{value_key} {_short(value)} != concatenated deltas {_short(state.text)}",
                )
            state.text_done = value
            state.streamed = True

    def _item_done(self, i: int, event: dict) -> None:
        done = event["item"]
        item = self._item_for(i, event, None)
        if item is None:
            return
        if item.done is not None:
            return  # after-done already reported
        _check_item(done, self.profile, lambda r, m: self.bad(i, r, m), where="item", final=True)
        if _identity(done) != _identity(item.item) or (item.id is not None and done.get("id") != item.id):
            self.bad(
                i,
                "item-identity",
                f"done item {_short(_identity(done))} differs from added {_short(_identity(item.item))}",
            )
        if done.get("status") == "incomplete":
            self.incomplete_done_at = i
        if item.tainted:
            item.done, item.done_at = done, i
            return
        kind = item.type
        if kind in _CALL_TEXT_KEY and item.call is not None:
            key = _CALL_TEXT_KEY[kind]
            if done.get(key) != item.call.text:
                self.bad(
                    i, "delta-sum", f"done {key} {_short(done.get(key))} != streamed {_short(item.call.text)}"
                )
            if item.call.streamed and item.call.text_done is None:
                self.bad(i, "unclosed-part", f"output_item.done before the {key}.done event")
        for container in ("content", "summary"):
            if (kind, container) not in _PART_TYPES:
                continue
            self._compare_parts(i, container, item, getattr(item, container), done.get(container))
        item.done, item.done_at = done, i

    def _compare_parts(self, i: int, container: str, item: _Item, parts: list[_Part], final: Any) -> None:
        final_list = final if _is_list(final) else []
        if not parts:
            if any(_is_dict(p) and p.get(_PART_TEXT_KEY.get(_type_of(p) or "", "text")) for p in final_list):
                self.bad(i, "delta-sum", f"done item has {container} text that was never streamed as deltas")
            return
        if len(final_list) != len(parts):
            self.bad(
                i,
                "delta-sum",
                f"done item has {len(final_list)} {container} part(s), {len(parts)} were streamed",
            )
        for position, (state, part) in enumerate(zip(parts, final_list, strict=False)):
            if state.part_done is None:
                self.bad(
                    i, "unclosed-part", f"{container}[{position}] was never closed with its part .done event"
                )
            got = part.get(_PART_TEXT_KEY.get(state.kind or "", "text")) if _is_dict(part) else None
            if got != state.text:
                self.bad(
                    i,
                    "delta-sum",
                    f"done {container}[{position}] text {_short(got)} != streamed {_short(state.text)}",
                )

    # -- end of stream -------------------------------------------------------------------------

    def _finish(self) -> None:
        if not self.terminals:
            self.bad(
                None,
                "terminal",
                "no terminal event (response.completed, response.incomplete or response.failed)",
            )
        elif len(self.terminals) > 1:
            self.bad(self.terminals[1], "terminal", f"a second terminal event (first at {self.terminals[0]})")
        if self.error_events and not (
            self.terminals and self.events[self.terminals[0]]["type"] == "response.failed"
            and self.terminals[0] > self.error_events[0]
        ):  # fmt: skip
            self.bad(
                self.error_events[0], "error-event", "an error event must be followed by response.failed"
            )
        if not self.terminals:
            return
        t = self.terminals[0]
        kind = self.events[t]["type"]
        response = self.events[t].get("response")
        open_items = [oi for oi in self.order if self.items[oi].done is None]
        if kind != "response.failed" and open_items:
            self.bad(t, "unfinished-item", f"{kind} with output_index(es) {open_items} never done")
        output = response.get("output") if _is_dict(response) else None
        if not _is_list(output):
            return  # a missing/invalid response or output is reported by event-fields/validate_response
        expected = [self._expected_final(oi) for oi in self.order]
        if len(output) != len(expected):
            self.bad(
                t, "terminal-output", f"output has {len(output)} item(s), the stream added {len(expected)}"
            )
        for position, (got, (want, left_open)) in enumerate(zip(output, expected, strict=False)):
            problem = self._compare_final(got, want, left_open=left_open)
            if problem:
                self.bad(t, "terminal-output", f"output[{position}] {problem}")
        statuses = [it.get("status") if _is_dict(it) else None for it in output]
        for position, status in enumerate(statuses):
            if status != "incomplete":
                continue
            if position != len(statuses) - 1:
                self.bad(t, "incomplete-item", f"output[{position}] is incomplete but not the last item")
            if kind == "response.completed":
                self.bad(t, "incomplete-item", f"output[{position}] is incomplete in a completed response")

    def _expected_final(self, oi: int) -> tuple[dict, bool]:
        """The item the terminal output should hold at this position, and whether it was left open."""
        item = self.items[oi]
        if item.done is not None:
            return item.done, False
        partial = dict(item.item)  # failed: what was streamed so far, marked incomplete (§1.5e)
        partial["status"] = "incomplete"
        if item.call is not None:
            partial[_CALL_TEXT_KEY[item.type]] = item.call.text
        for container in ("content", "summary"):
            parts = getattr(item, container)
            if parts:
                partial[container] = [
                    {"type": p.kind, _PART_TEXT_KEY.get(p.kind or "", "text"): p.text} for p in parts
                ]
        return partial, True

    @staticmethod
    def _compare_final(got: Any, want: dict, *, left_open: bool) -> str | None:
        if not _is_dict(got):
            return f"is not an object: {_short(got)}"
        if _identity(got) != _identity(want) or got.get("id") != want.get("id"):
            return (
                f"identity {_short(_identity(got))} differs from the streamed item {_short(_identity(want))}"
            )
        if not left_open:
            if got != want:
                keys = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
                return "differs from its output_item.done item in " + ", ".join(keys)
            return None
        # an item left open by a failure: compare status and the streamed text only
        if got.get("status") != "incomplete":
            return (
                f"was left open by the failure and must be status incomplete, got {_short(got.get('status'))}"
            )
        for key in ("arguments", "input"):
            if key in want and got.get(key) != want[key]:
                return f"{key} {_short(got.get(key))} != streamed {_short(want[key])}"
        for container in ("content", "summary"):
            if container in want and _is_list(got.get(container)):
                texts = [
                    p.get(_PART_TEXT_KEY.get(_type_of(p) or "", "text"))
                    for p in got[container]
                    if _is_dict(p)
                ]
                wanted = [p[_PART_TEXT_KEY.get(p["type"] or "", "text")] for p in want[container]]
                if texts != wanted:
                    return f"{container} text {_short(texts)} != streamed {_short(wanted)}"
        return None


def validate_events(
    events: list[dict], request: dict | None = None, *, profile: str = "openai"
) -> list[Violation]:
    """Every violation of the Responses event grammar in ``events`` (decoded JSON objects, in order).

    With ``request`` (the Responses request body), the terminal Response must echo its fields.
    Violations are ordered by the pass that found them; each carries the index of the event at fault.
    """
    _check_profile(profile)
    return _StreamChecker(events, request, profile).run()


# --------------------------------------------------------------------------------------------------
# SSE framing (§1.1)


def parse_sse(raw: bytes, *, require_done: bool = True) -> tuple[list[dict], list[Violation]]:
    """Decode SSE bytes leniently (CRLF, multi-line data, like the SDK) while reporting framing violations.

    Returns the decoded event objects (without the ``[DONE]`` sentinel) and the violations. A violation's
    index is the position of the event in the returned list, or None for stream-level problems.
    ``require_done=False`` accepts a stream that just ends: Open Responses requires ``data: [DONE]`` but
    OpenAI's own API does not send it (§1.1); a frame after ``[DONE]`` is reported either way.
    """
    out: list[Violation] = []
    events: list[dict] = []
    if b"\r" in raw:
        out.append(
            Violation(
                None, "sse-line-endings", "CR characters in the stream; frames must use LF line endings"
            )
        )
    text = raw.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    if text.strip() and not text.endswith("\n\n"):
        out.append(Violation(None, "sse-framing", "the last frame is not terminated by a blank line"))
    done_seen = False
    for block in text.split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        name: str | None = None
        data_lines: list[str] = []
        has_id = False
        for line in lines:
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "event":
                name = value
            elif key == "data":
                data_lines.append(value)
            elif key == "id":
                has_id = True
        if not data_lines:
            continue  # a frame without data dispatches nothing in any parser
        position = len(events)
        if done_seen:
            out.append(Violation(position, "sse-done", "a frame after data: [DONE]"))
        data = "\n".join(data_lines)
        if data.startswith("[DONE]"):
            done_seen = True
            if has_id:
                out.append(Violation(None, "sse-id", "the [DONE] frame has an id: line"))
            continue
        if has_id:
            out.append(Violation(position, "sse-id", "frame has an id: line (servers should not send ids)"))
        if len(data_lines) > 1:
            out.append(
                Violation(
                    position, "sse-data-lines", f"frame has {len(data_lines)} data: lines, expected one"
                )
            )
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            out.append(Violation(position, "sse-json", f"data is not JSON ({exc}): {data[:80]!r}"))
            continue
        if not isinstance(event, dict):
            out.append(Violation(position, "sse-json", f"data must be a JSON object, got {_short(event)}"))
            continue
        event_type = event.get("type")
        if name is None:
            out.append(
                Violation(position, "sse-event-name", f"frame has no event: line (data type {event_type!r})")
            )
        elif name != event_type:
            out.append(
                Violation(position, "sse-event-name", f"event: {name!r} but data type is {event_type!r}")
            )
        events.append(event)
    if require_done and not done_seen:
        out.append(Violation(None, "sse-done", "the stream does not end with data: [DONE]"))
    return events, out


def validate_sse(raw: bytes, *, require_done: bool = True) -> list[Violation]:
    """The framing violations of a raw SSE body (§1.1); see :func:`parse_sse` for the events too."""
    return parse_sse(raw, require_done=require_done)[1]
