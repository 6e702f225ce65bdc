"""The reverse direction's request: a chat completions body → a Responses body.

Fields are handled by table (`_COPIED`, `_DROPPED`, the checks below), so what happens to each chat
field can be read in one place (docs/reverse.md §1 has the same table in prose):

- ``messages`` become input items, one message at a time through `messages_to_items`; the legacy
  forms are modernised first (an assistant ``function_call`` becomes a one-call ``tool_calls``, a
  ``function`` message a ``tool`` message answering the most recent call of that name);
- leading system/developer messages stay input messages (``system="input"``, what Responses
  servers accept) or become ``instructions`` (``system="instructions"``, for servers that read
  only that);
- ``tools``/``tool_choice`` and the legacy ``functions``/``function_call``; ``response_format`` →
  ``text.format``; ``max_tokens``/``max_completion_tokens`` → ``max_output_tokens``;
  ``reasoning_effort`` → ``reasoning.effort``; ``logprobs``/``top_logprobs`` → ``include`` and
  ``top_logprobs``;
- ``n`` above 1 and audio output are refused (a Response has one answer and no audio);
  ``store`` defaults to False (a chat client expects nothing kept);
- an assistant message's ``reasoning_details`` entry of type ``reasoning.encrypted`` (how
  `response_to_chat_completion` hands out a backend's encrypted reasoning) becomes that backend's
  reasoning item again, so it replays verbatim.
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidRequest
from .requests import messages_to_items

__all__ = ["DROPPED_FIELDS", "chat_to_responses_request", "dropped_fields"]

#: Chat fields copied to the Responses request under the same name.
_COPIED = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "metadata", "service_tier",
           "prompt_cache_key", "safety_identifier", "user", "parallel_tool_calls", "top_logprobs",
           "stream", "background")
#: Chat fields with no Responses counterpart: left out (docs/reverse.md says so for each).
#: ``stream_options.include_usage`` is the chat side's own business (the final usage chunk).
DROPPED_FIELDS = ("seed", "stop", "logit_bias", "stream_options", "prediction", "web_search_options")
_SYSTEM_MODES = ("input", "instructions")
_ENCRYPTED = "reasoning.encrypted"


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _positive_int(request: dict[str, Any], name: str) -> int | None:
    value = request.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"'{name}' must be a positive integer.", name, "invalid_value")
    return value


def _modern_messages(messages: list[Any]) -> list[Any]:
    """Legacy ``function_call`` / ``function`` messages as ``tool_calls`` / ``tool`` messages."""
    out: list[Any] = []
    last_call: dict[str, str] = {}  # function name → the id given to its latest call
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            out.append(msg)
            continue
        role = msg.get("role")
        call = msg.get("function_call")
        if role == "assistant" and isinstance(call, dict) and not msg.get("tool_calls"):
            name = call.get("name")
            if not isinstance(name, str) or not name:
                raise InvalidRequest("Missing required parameter: 'function_call.name'.",
                                     f"messages[{i}].function_call.name", "missing_required_parameter")
            call_id = f"call_legacy_{i}"
            last_call[name] = call_id
            arguments = call.get("arguments")
            msg = {k: v for k, v in msg.items() if k != "function_call"}
            msg["tool_calls"] = [{"id": call_id, "type": "function", "function": {
                "name": name, "arguments": arguments if isinstance(arguments, str) else "{}"}}]
        elif role == "function":
            name = msg.get("name")
            call_id = last_call.get(name) if isinstance(name, str) else None
            if call_id is None:
                raise InvalidRequest(f"A 'function' message (name {name!r}) answers no earlier function_call.",
                                     f"messages[{i}].name", "invalid_value")
            msg = {"role": "tool", "tool_call_id": call_id, "content": msg.get("content")}
        out.append(msg)
    return out


def _message_items(msg: Any, index: int) -> list[dict[str, Any]]:
    """One chat message → its input items; a backend's encrypted reasoning goes back as it came."""
    encrypted: list[dict[str, Any]] = []
    if isinstance(msg, dict) and msg.get("role") == "assistant" and isinstance(msg.get("reasoning_details"), list):
        details = msg["reasoning_details"]
        encrypted = [d for d in details if isinstance(d, dict) and d.get("type") == _ENCRYPTED
                     and isinstance(d.get("data"), str)]
        if encrypted:
            rest = [d for d in details if not (isinstance(d, dict) and d.get("type") == _ENCRYPTED)]
            msg = {k: v for k, v in msg.items() if k != "reasoning_details"}
            if rest:
                msg["reasoning_details"] = rest
    try:
        items = messages_to_items([msg])
    except InvalidRequest as exc:  # name the message in the whole list, not in a list of one
        param = exc.param.replace("messages[0]", f"messages[{index}]", 1) if exc.param else exc.param
        raise InvalidRequest(exc.message, param, exc.code) from None
    if not encrypted:
        return items
    text = msg.get("reasoning_content") or msg.get("reasoning")
    summary = [{"type": "summary_text", "text": text}] if isinstance(text, str) and text else []
    restored = []
    for entry in encrypted:
        item: dict[str, Any] = {"type": "reasoning", "summary": summary, "encrypted_content": entry["data"]}
        if isinstance(entry.get("id"), str):
            item["id"] = entry["id"]
        restored.append(item)
        summary = []
    # the backend's own items replace the replay token messages_to_items made from the same text
    return restored + [i for i in items if i.get("type") != "reasoning"]


def _tools(request: dict[str, Any]) -> list[dict[str, Any]]:
    tools = request.get("tools")
    if tools is None and isinstance(request.get("functions"), list):  # the legacy form
        tools = [{"type": "function", "function": f} for f in request["functions"]]
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array.", "tools", "invalid_type")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise InvalidRequest("Each tool must be an object.", f"tools[{i}]", "invalid_type")
        if tool.get("type") == "custom":
            out.append({"type": "custom", **_obj(tool.get("custom"))})
            continue
        if tool.get("type", "function") != "function":
            raise InvalidRequest(f"Unsupported tool type: {tool.get('type')!r}.", f"tools[{i}].type", "invalid_value")
        fn = _obj(tool.get("function"))
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise InvalidRequest("Missing required parameter: 'function.name'.", f"tools[{i}].function.name",
                                 "missing_required_parameter")
        rtool: dict[str, Any] = {"type": "function", "name": fn["name"]}
        for key in ("description", "parameters", "strict"):
            if key in fn:
                rtool[key] = fn[key]
        out.append(rtool)
    return out


def _tool_choice(request: dict[str, Any]) -> Any:
    choice = request.get("tool_choice")
    if choice is None and "function_call" in request:  # the legacy form
        legacy = request["function_call"]
        if isinstance(legacy, str):
            return legacy
        if isinstance(legacy, dict) and isinstance(legacy.get("name"), str):
            return {"type": "function", "name": legacy["name"]}
        raise InvalidRequest("'function_call' must be 'none', 'auto' or {\"name\": …}.", "function_call",
                             "invalid_value")
    if choice is None or isinstance(choice, str):
        return choice
    if not isinstance(choice, dict):
        raise InvalidRequest("'tool_choice' must be a string or an object.", "tool_choice", "invalid_type")
    kind = choice.get("type")
    if kind == "function":
        return {"type": "function", "name": _obj(choice.get("function")).get("name")}
    if kind == "custom":
        return {"type": "custom", "name": _obj(choice.get("custom")).get("name")}
    if kind == "allowed_tools":
        allowed = _obj(choice.get("allowed_tools"))
        return {"type": "allowed_tools", "mode": allowed.get("mode", "auto"),
                "tools": [{"type": "function", "name": _obj(t.get("function")).get("name")}
                          for t in _list(allowed.get("tools")) if isinstance(t, dict)]}
    raise InvalidRequest(f"Unsupported tool_choice type: {kind!r}.", "tool_choice.type", "invalid_value")


def _text(request: dict[str, Any]) -> dict[str, Any]:
    text: dict[str, Any] = {}
    fmt = request.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, dict):
            raise InvalidRequest("'response_format' must be an object.", "response_format", "invalid_type")
        kind = fmt.get("type")
        if kind == "json_schema":
            schema = _obj(fmt.get("json_schema"))
            if not isinstance(schema.get("name"), str):
                raise InvalidRequest("Missing required parameter: 'response_format.json_schema.name'.",
                                     "response_format.json_schema.name", "missing_required_parameter")
            text["format"] = {"type": "json_schema", **schema}
        elif kind in ("json_object", "text"):
            text["format"] = {"type": kind}
        else:
            raise InvalidRequest(f"Invalid response_format type: {kind!r}.", "response_format.type", "invalid_value")
    if request.get("verbosity") is not None:
        text["verbosity"] = request["verbosity"]
    return text


def chat_to_responses_request(request: Any, *, system: str = "input") -> dict[str, Any]:
    """A ``POST /v1/chat/completions`` body → a ``POST /v1/responses`` body.

    ``system``: ``"input"`` keeps system/developer messages as input messages; ``"instructions"``
    moves the leading ones into ``instructions``. Raises `InvalidRequest` naming the field at fault.
    """
    if system not in _SYSTEM_MODES:
        raise ValueError(f"system={system!r}: expected one of {', '.join(_SYSTEM_MODES)}")
    if not isinstance(request, dict):
        raise InvalidRequest("The request body must be a JSON object.", None, "invalid_type")
    model = request.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    n = request.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise InvalidRequest("'n' must be a positive integer.", "n", "invalid_value")
    if isinstance(n, int) and n > 1:
        raise InvalidRequest("'n' greater than 1 is not supported: this backend speaks the Responses API, "
                             "which returns one answer per request. Send n separate requests.", "n",
                             "unsupported_value")
    modalities = request.get("modalities")
    if request.get("audio") is not None or (isinstance(modalities, list) and "audio" in modalities):
        raise InvalidRequest("Audio output is not supported by a Responses backend.", "modalities",
                             "unsupported_value")

    messages = _modern_messages(messages)
    out: dict[str, Any] = {"model": model}
    if system == "instructions":
        lead: list[str] = []
        while messages and isinstance(messages[0], dict) and messages[0].get("role") in ("system", "developer"):
            content = messages[0].get("content")
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            if isinstance(content, str) and content:
                lead.append(content)
            messages = messages[1:]
        if lead:
            out["instructions"] = "\n\n".join(lead)
    items: list[dict[str, Any]] = []
    offset = len(request["messages"]) - len(messages)
    for i, msg in enumerate(messages):
        items.extend(_message_items(msg, i + offset))
    if not items:
        raise InvalidRequest("'messages' must contain a message besides the system prompt.", "messages",
                             "empty_array")
    out["input"] = items

    tools = _tools(request)
    if tools:
        out["tools"] = tools
    choice = _tool_choice(request)
    if choice is not None:
        out["tool_choice"] = choice
    limit = _positive_int(request, "max_completion_tokens")
    legacy_limit = _positive_int(request, "max_tokens")
    if limit is not None or legacy_limit is not None:
        out["max_output_tokens"] = limit if limit is not None else legacy_limit
    for name in _COPIED:
        if request.get(name) is not None:
            out[name] = request[name]
    out["store"] = bool(request.get("store", False))
    if request.get("logprobs"):
        out["include"] = ["message.output_text.logprobs"]
    text = _text(request)
    if text:
        out["text"] = text
    if request.get("reasoning_effort") is not None:
        out["reasoning"] = {"effort": request["reasoning_effort"]}
    return out


def dropped_fields(request: Any) -> list[str]:
    """The fields of a chat request the translation leaves out (for a log line, not an error)."""
    if not isinstance(request, dict):
        return []
    return [name for name in DROPPED_FIELDS if request.get(name) is not None and name != "stream_options"]
