"""Response-object rules: one Response (a non-streaming body, or the one a lifecycle event carries).

:func:`validate_response` checks the fields OpenAI's types and Open Responses' ResponseResource require
(docs/wire.md §1.3), the output items and content parts (§1.4), and, given the request, that the
Response echoes what was asked (§1.3, §4). :func:`check_item` is shared with :mod:`conformance.events`,
which checks items as they are added and done. May import: rules, kinds, catalogue.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from conformance.catalogue import CALL_TEXT_KEY, PART_TEXT_KEY
from conformance.kinds import is_bool, is_dict, is_int, is_list, is_num, is_str, nullable, short
from conformance.rules import Violation, check_profile

__all__ = ["RESPONSE_REQUIRED", "Report", "check_item", "validate_response"]

#: How a check reports one broken rule: ``bad(rule, message)``.
Report = Callable[[str, str], None]

# --------------------------------------------------------------------------------------------------
# Response fields (§1.3)

#: Keys Open Responses' ResponseResource requires to be present (only object and metadata may be omitted).

RESPONSE_REQUIRED = (
    "id", "created_at", "completed_at", "status", "incomplete_details", "model", "previous_response_id",
    "instructions", "output", "error", "tools", "tool_choice", "truncation", "parallel_tool_calls", "text",
    "top_p", "presence_penalty", "frequency_penalty", "top_logprobs", "temperature", "reasoning", "usage",
    "max_output_tokens", "max_tool_calls", "store", "background", "service_tier", "safety_identifier",
    "prompt_cache_key",
)  # fmt: skip

_RESPONSE_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "id": (is_str, "a string"),
    "created_at": (is_int, "an integer (Unix seconds; OR rejects floats)"),
    "completed_at": (nullable(is_int), "an integer or null (OR rejects floats)"),
    "model": (is_str, "a string"),
    "previous_response_id": (nullable(is_str), "a string or null"),
    "instructions": (lambda v: v is None or isinstance(v, (str, list)), "a string, a list or null"),
    "output": (is_list, "a list"),
    "tools": (is_list, "a list"),
    "parallel_tool_calls": (is_bool, "a boolean"),
    "top_p": (is_num, "a number, not null"),
    "temperature": (is_num, "a number, not null"),
    "presence_penalty": (is_num, "a number, not null"),
    "frequency_penalty": (is_num, "a number, not null"),
    "top_logprobs": (is_num, "a number, not null"),
    "max_output_tokens": (nullable(is_int), "an integer or null"),
    "max_tool_calls": (nullable(is_int), "an integer or null"),
    "store": (is_bool, "a boolean"),
    "background": (is_bool, "a boolean"),
    "service_tier": (is_str, "a string, not null"),
    "safety_identifier": (nullable(is_str), "a string or null"),
    "prompt_cache_key": (nullable(is_str), "a string or null"),
    "metadata": (nullable(is_dict), "an object or null"),
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


def validate_response(
    response: Any, *, profile: str = "openai", request: dict | None = None, index: int | None = None
) -> list[Violation]:
    """Check one Response object against OpenAI's types and Open Responses' ResponseResource (§1.3, §1.4).

    ``index`` tags the violations with the event the response came from (None for a non-streaming body).
    With ``request``, the echoed request fields are compared too.
    """
    check_profile(profile)
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
            bad("response-type", f"{key} must be {expected}, got {short(response[key])}")

    status = response.get("status")
    if "status" in response and status not in _STATUSES:
        bad("response-status", f"status must be one of {'|'.join(_STATUSES)}, got {short(status)}")
    incomplete_details = response.get("incomplete_details")
    if incomplete_details is not None and not (
        is_dict(incomplete_details) and is_str(incomplete_details.get("reason"))
    ):
        bad(
            "response-type",
            f"incomplete_details must be null or {{reason}}, got {short(incomplete_details)}",
        )
    if status == "incomplete" and not is_dict(incomplete_details):
        bad("response-status", "an incomplete response must say why in incomplete_details.reason")
    error = response.get("error")
    if error is not None and not (
        is_dict(error) and is_str(error.get("code")) and is_str(error.get("message"))
    ):
        bad("response-type", f"error must be null or {{code: string, message: string}}, got {short(error)}")
    if status == "failed" and error is None:
        bad("response-status", "a failed response must carry an error object")
    if status in ("completed", "in_progress", "queued") and error is not None:
        bad("response-status", f"a {status} response must have error null")

    if "truncation" in response and response["truncation"] not in ("auto", "disabled"):
        bad("response-type", f"truncation must be 'auto' or 'disabled', got {short(response['truncation'])}")
    if "text" in response:
        _check_text_config(response["text"], bad)
    if "reasoning" in response:
        _check_reasoning_config(response["reasoning"], profile, bad)
    if "tool_choice" in response:
        _check_tool_choice(response["tool_choice"], bad)
    if is_list(response.get("tools")):
        _check_tools(response["tools"], profile, bad)
    if "usage" in response:
        _check_usage(response["usage"], bad)
    if is_list(response.get("output")):
        for position, item in enumerate(response["output"]):
            check_item(
                item, profile, bad, where=f"output[{position}]", final=status not in ("in_progress", "queued")
            )
    if request is not None:
        _check_echo(response, request, bad)
    return out


def _check_text_config(text: Any, bad: Report) -> None:
    if not is_dict(text) or not is_dict(text.get("format")):
        bad("response-type", f"text must be {{format: {{type: …}}}}, got {short(text)}")
        return
    fmt = text["format"]
    if fmt.get("type") not in _TEXT_FORMATS:
        bad(
            "response-type",
            f"text.format.type must be one of {'|'.join(_TEXT_FORMATS)}, got {short(fmt.get('type'))}",
        )
    elif fmt["type"] == "json_schema" and not is_str(fmt.get("name")):
        bad("response-type", "text.format of type json_schema needs a string name")


def _check_reasoning_config(reasoning: Any, profile: str, bad: Report) -> None:
    if reasoning is None:
        return
    if not is_dict(reasoning):
        bad("response-type", f"reasoning must be null or {{effort, summary}}, got {short(reasoning)}")
        return
    if profile == "openresponses":
        missing = [k for k in ("effort", "summary") if k not in reasoning]
        if missing:
            bad("response-field", "reasoning is missing " + ", ".join(missing))
    effort = reasoning.get("effort")
    if effort is not None and effort not in _EFFORTS[profile]:
        bad(
            "response-type",
            f"reasoning.effort must be one of {'|'.join(_EFFORTS[profile])}, got {short(effort)}",
        )
    summary = reasoning.get("summary")
    if summary is not None and summary not in ("auto", "concise", "detailed"):
        bad("response-type", f"reasoning.summary must be auto|concise|detailed or null, got {short(summary)}")


def _check_tool_choice(choice: Any, bad: Report) -> None:
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICE_STRINGS:
            bad("response-type", f"tool_choice must be none|auto|required or an object, got {short(choice)}")
    elif not (is_dict(choice) and is_str(choice.get("type"))):
        bad("response-type", f"tool_choice must be a string or an object with a type, got {short(choice)}")
    elif choice["type"] in ("function", "custom") and not is_str(choice.get("name")):
        bad("response-type", f"tool_choice of type {choice['type']} needs a name")


def _check_tools(tools: list, profile: str, bad: Report) -> None:
    for position, tool in enumerate(tools):
        if not (is_dict(tool) and is_str(tool.get("type"))):
            bad("response-type", f"tools[{position}] must be an object with a type, got {short(tool)}")
            continue
        if tool["type"] in ("function", "custom") and not is_str(tool.get("name")):
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
    if not is_dict(usage):
        bad("usage", f"usage must be null or an object, got {short(usage)}")
        return
    chat_keys = [k for k in _CHAT_USAGE_KEYS if k in usage]
    if chat_keys:
        bad(
            "usage",
            f"chat-style usage key(s) {', '.join(chat_keys)}; Responses uses input_tokens/output_tokens",
        )
    for key in _USAGE_INT_KEYS:
        if not is_int(usage.get(key)):
            bad("usage", f"usage.{key} must be an integer, got {short(usage.get(key))}")
    for key, inner in (
        ("input_tokens_details", "cached_tokens"),
        ("output_tokens_details", "reasoning_tokens"),
    ):
        details = usage.get(key)
        if not (is_dict(details) and is_int(details.get(inner))):
            bad("usage", f"usage.{key}.{inner} must be an integer, got {key}={short(details)}")


def check_item(item: Any, profile: str, bad: Report, *, where: str, final: bool = True) -> None:
    """Required keys of one output item (§1.4). ``final`` items must not still be in_progress."""
    if not (is_dict(item) and is_str(item.get("type"))):
        bad("item-field", f"{where} must be an object with a string type, got {short(item)}")
        return
    kind = item["type"]
    status = item.get("status")
    if "status" in item and status not in _ITEM_STATUSES:
        bad(
            "item-field",
            f"{where} ({kind}) status must be in_progress|completed|incomplete, got {short(status)}",
        )
    if kind == "message":
        _require(item, where, kind, {"id": is_str, "status": is_str, "role": is_str, "content": is_list}, bad)
        if item.get("role") != "assistant":
            bad("item-field", f"{where} (message) role must be 'assistant', got {short(item.get('role'))}")
        for ci, part in enumerate(item.get("content") or [] if is_list(item.get("content")) else []):
            _check_part(part, ("output_text", "refusal"), bad, where=f"{where}.content[{ci}]")
    elif kind in ("function_call", "custom_tool_call"):
        text_key = CALL_TEXT_KEY[kind]
        required = {"call_id": is_str, "name": is_str, text_key: is_str}
        if kind == "function_call" or profile == "openresponses":
            required |= {"id": is_str, "status": is_str}
        _require(item, where, kind, required, bad)
        if kind == "custom_tool_call" and profile == "openresponses":
            bad("or-item-type", f"{where} is a custom_tool_call, which is not in Open Responses' item union")
    elif kind == "reasoning":
        required = {"id": is_str, "summary": is_list}
        if profile == "openresponses":
            required["status"] = is_str
        _require(item, where, kind, required, bad)
        for si, part in enumerate(item.get("summary") if is_list(item.get("summary")) else []):
            _check_part(part, ("summary_text",), bad, where=f"{where}.summary[{si}]")
        content = item.get("content")
        if content is not None and not is_list(content):
            bad("item-field", f"{where} (reasoning) content must be a list or absent")
        for ci, part in enumerate(content if is_list(content) else []):
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
            bad("item-field", f"{where} ({kind}) {key} has the wrong type: {short(item[key])}")


def _check_part(part: Any, allowed: tuple[str, ...], bad: Report, *, where: str) -> None:
    if not (is_dict(part) and is_str(part.get("type"))):
        bad("item-field", f"{where} must be an object with a type, got {short(part)}")
        return
    kind = part["type"]
    if kind not in allowed:
        hint = " (Responses output text parts are typed output_text)" if kind == "text" else ""
        bad("item-type", f"{where} has type {kind!r}, expected {'|'.join(allowed)}{hint}")
        return
    key = PART_TEXT_KEY[kind]
    if not is_str(part.get(key)):
        bad("item-field", f"{where} ({kind}) {key} must be a string, got {short(part.get(key))}")
    if kind == "output_text" and not is_list(part.get("annotations")):
        bad(
            "item-field",
            f"{where} (output_text) must have an annotations list, got {short(part.get('annotations'))}",
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
        bad("echo", f"{key}: request sent {short(sent)}, response echoes {short(got)}")

    model = request.get("model")
    got_model = response.get("model")
    # OpenAI answers a snapshot name (gpt-4o → gpt-4o-2024-08-06); anything else is a mismatch
    if is_str(model) and not (is_str(got_model) and got_model.startswith(model)):
        differ("model", model, got_model)
    for key in _ECHO_NUMBERS:
        sent = request.get(key)
        if is_num(sent) and not (
            is_num(response.get(key)) and math.isclose(sent, response[key], abs_tol=1e-6)
        ):
            differ(key, sent, response.get(key))
    for key in _ECHO_SCALARS:
        sent = request.get(key)
        if sent is not None and key in request and response.get(key) != sent:
            differ(key, sent, response.get(key))
    if "tool_choice" in request and request["tool_choice"] is not None:
        sent, got = request["tool_choice"], response.get("tool_choice")
        if isinstance(sent, str) or not is_dict(got):
            if sent != got:
                differ("tool_choice", sent, got)
        elif (sent.get("type"), sent.get("name")) != (got.get("type"), got.get("name")):
            differ("tool_choice", sent, got)
    if is_list(request.get("tools")):
        sent_tools = [(t.get("type"), t.get("name")) for t in request["tools"] if is_dict(t)]
        got_list = response.get("tools") if is_list(response.get("tools")) else []
        got_tools = [(t.get("type"), t.get("name")) for t in got_list if is_dict(t)]
        missing = [f"{k}:{n}" if n else str(k) for k, n in sent_tools if (k, n) not in got_tools]
        if missing:
            bad("echo", "tools sent but not echoed: " + ", ".join(missing))
    sent_text = request.get("text")
    if is_dict(sent_text) and is_dict(sent_text.get("format")):
        got_format = (response.get("text") or {}).get("format") if is_dict(response.get("text")) else None
        sent_format = sent_text["format"]
        if not is_dict(got_format) or (sent_format.get("type"), sent_format.get("name")) != (
            got_format.get("type"),
            got_format.get("name"),
        ):
            differ("text.format", sent_format, got_format)
    sent_reasoning = request.get("reasoning")
    if is_dict(sent_reasoning) and sent_reasoning.get("effort") is not None:
        got_reasoning = response.get("reasoning")
        if not is_dict(got_reasoning) or got_reasoning.get("effort") != sent_reasoning["effort"]:
            differ("reasoning.effort", sent_reasoning["effort"], got_reasoning)
