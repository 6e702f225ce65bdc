"""Requests and conversations: Responses ⇄ Chat Completions.

The Responses API describes a conversation as a flat list of typed items; Chat Completions as
role messages where an assistant turn bundles its text, its tool calls and (on some backends) its
reasoning. `items_to_messages` regroups items into messages, `messages_to_items` splits them
again, and the two are inverse on the conversations a chat client can produce (a property test
checks this).

Errors name the offending field in OpenAI's ``param`` syntax (``input[3].call_id``) because
clients show that string to the user.
"""

from __future__ import annotations

from typing import Any

import orjson

from .errors import InvalidRequest
from .options import TranslatorOptions
from .reasoning import pack_reasoning, unpack_reasoning

__all__ = [
    "REQUEST_FIELDS",
    "ToolMap",
    "build_tool_map",
    "check_request",
    "items_to_messages",
    "messages_to_items",
    "responses_to_chat_request",
]

NAMESPACE_SEPARATOR = "__"

#: Output items of hosted tools; a client replaying a transcript from OpenAI may send them.
#: They carry nothing a chat backend can use, so they are dropped rather than rejected.
DROPPED_ITEM_TYPES: tuple[str, ...] = tuple(
    {
        "web_search_call",
        "file_search_call",
        "computer_call",
        "computer_call_output",
        "image_generation_call",
        "code_interpreter_call",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "mcp_call",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "tool_search_call",
        "tool_search_output",
        "compaction",
    }
)

# Tuples, not sets: membership tests meet arbitrary client JSON, and a list is unhashable.
_TEXT_PART_TYPES = ("input_text", "output_text", "text", "summary_text", "reasoning_text")
_MESSAGE_ROLES = ("user", "system", "developer", "assistant")


# --------------------------------------------------------------------------- tools


class ToolMap:
    """Chat function name → how the call must come back (function or custom, and its namespace).

    Built from the Responses request's ``tools`` so both the request translation (flattening) and
    the answer translation (un-flattening, custom tool calls) agree on names.
    """

    __slots__ = ("by_chat_name", "to_chat_name")

    def __init__(self) -> None:
        # chat name -> (kind "function" | "custom", name, namespace or None)
        self.by_chat_name: dict[str, tuple[str, str, str | None]] = {}
        # (name, namespace or None) -> chat name
        self.to_chat_name: dict[tuple[str, str | None], str] = {}

    def add(self, kind: str, name: str, namespace: str | None) -> str:
        chat_name = f"{namespace}{NAMESPACE_SEPARATOR}{name}" if namespace else name
        self.by_chat_name[chat_name] = (kind, name, namespace)
        self.to_chat_name[(name, namespace)] = chat_name
        return chat_name

    def resolve(self, chat_name: str) -> tuple[str, str, str | None]:
        """(kind, name, namespace) for a tool call the backend made; unknown names stay functions."""
        return self.by_chat_name.get(chat_name) or ("function", chat_name, None)

    def chat_name(self, name: str, namespace: str | None = None) -> str:
        return self.to_chat_name.get((name, namespace)) or (
            f"{namespace}{NAMESPACE_SEPARATOR}{name}" if namespace else name
        )


def _custom_description(tool: dict[str, Any]) -> str:
    """A custom tool's description plus its grammar: the only way a chat model learns the format."""
    parts = [tool["description"]] if isinstance(tool.get("description"), str) and tool["description"] else []
    fmt = tool.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "grammar":
        syntax = fmt.get("syntax", "lark")
        parts.append(
            f"Put the raw tool input (plain text, not JSON-encoded) in the `input` argument. "
            f"It must match this {syntax} grammar:\n{fmt.get('definition', '')}"
        )
    else:
        parts.append("Put the raw tool input (free-form text) in the `input` argument.")
    return "\n\n".join(parts)


def _function_tool(tool: dict[str, Any], chat_name: str, param: str) -> dict[str, Any]:
    function: dict[str, Any] = {"name": chat_name}
    description = tool.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise InvalidRequest("Tool description must be a string.", f"{param}.description", "invalid_type")
        function["description"] = description
    parameters = tool.get("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    elif not isinstance(parameters, dict):
        raise InvalidRequest("Tool parameters must be a JSON schema object.", f"{param}.parameters", "invalid_type")
    function["parameters"] = parameters
    if tool.get("strict") is not None:
        function["strict"] = bool(tool["strict"])
    return {"type": "function", "function": function}


def _custom_tool(tool: dict[str, Any], chat_name: str, param: str, opts: TranslatorOptions) -> dict[str, Any]:
    if opts.custom_tools == "reject":
        raise InvalidRequest(
            f"Custom tool '{tool.get('name')}' is not supported by this backend.", f"{param}.type", "unsupported_tool"
        )
    if opts.custom_tools == "native":
        custom = {k: tool[k] for k in ("description", "format") if k in tool}
        return {"type": "custom", "custom": {"name": chat_name, **custom}}
    return {
        "type": "function",
        "function": {
            "name": chat_name,
            "description": _custom_description(tool),
            "parameters": {
                "type": "object",
                "properties": {"input": {"type": "string", "description": "The raw tool input."}},
                "required": ["input"],
                "additionalProperties": False,
            },
        },
    }


def _tool_name(tool: dict[str, Any], param: str) -> str:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("Missing required parameter: 'name'.", f"{param}.name", "missing_required_parameter")
    return name


def build_tool_map(tools: Any, opts: TranslatorOptions | None = None) -> tuple[list[dict[str, Any]], ToolMap]:
    """Translate Responses ``tools`` to chat tools; returns (chat tools, name map)."""
    opts = opts or TranslatorOptions()
    tool_map = ToolMap()
    out: list[dict[str, Any]] = []
    if tools is None:
        return out, tool_map
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array.", "tools", "invalid_type")
    for i, tool in enumerate(tools):
        param = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise InvalidRequest("Each tool must be an object.", param, "invalid_type")
        kind = tool.get("type")
        if kind == "function":
            name = _tool_name(tool, param)
            out.append(_function_tool(tool, tool_map.add("function", name, None), param))
        elif kind == "custom":
            name = _tool_name(tool, param)
            out.append(_custom_tool(tool, tool_map.add("custom", name, None), param, opts))
        elif kind == "namespace":
            namespace = _tool_name(tool, param)
            inner = tool.get("tools")
            if not isinstance(inner, list):
                raise InvalidRequest("A namespace tool needs a 'tools' array.", f"{param}.tools", "invalid_type")
            for j, sub in enumerate(inner):
                sub_param = f"{param}.tools[{j}]"
                if not isinstance(sub, dict):
                    raise InvalidRequest("Each tool must be an object.", sub_param, "invalid_type")
                sub_kind = sub.get("type", "function")
                name = _tool_name(sub, sub_param)
                if sub_kind == "function":
                    out.append(_function_tool(sub, tool_map.add("function", name, namespace), sub_param))
                elif sub_kind == "custom":
                    out.append(_custom_tool(sub, tool_map.add("custom", name, namespace), sub_param, opts))
                else:
                    raise InvalidRequest(
                        f"Unsupported tool type in namespace: {sub_kind!r}.", f"{sub_param}.type", "invalid_value"
                    )
        elif isinstance(kind, str) and kind:
            if opts.unsupported_tools == "reject":
                raise InvalidRequest(
                    f"Tool type '{kind}' cannot run on this chat completions backend.",
                    f"{param}.type",
                    "unsupported_tool",
                )
            # dropped: hosted tools have no chat equivalent
        else:
            raise InvalidRequest("Missing required parameter: 'type'.", f"{param}.type", "missing_required_parameter")
    return out, tool_map


def _tool_choice(
    choice: Any, chat_tools: list[dict[str, Any]], tool_map: ToolMap, opts: TranslatorOptions
) -> tuple[Any, list[dict[str, Any]]]:
    """Map ``tool_choice``; returns (chat tool_choice or None to omit, possibly filtered tools)."""
    if choice is None:
        return None, chat_tools
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise InvalidRequest(
                "tool_choice must be 'auto', 'none', 'required' or an object.", "tool_choice", "invalid_value"
            )
        return choice, chat_tools
    if not isinstance(choice, dict):
        raise InvalidRequest(
            f"Invalid type for 'tool_choice': expected a string or an object, but got {_json_type_name(choice)} instead.",
            "tool_choice",
            "invalid_type",
        )
    kind = choice.get("type")
    if kind in ("function", "custom"):
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("Missing required parameter: 'name'.", "tool_choice.name", "missing_required_parameter")
        chat_name = tool_map.chat_name(name, choice.get("namespace"))
        if opts.named_tool_choice == "required":
            # the same constraint in the only form some backends read: that tool alone, and "required"
            return "required", [t for t in chat_tools if _chat_tool_name(t) == chat_name]
        if kind == "custom" and opts.custom_tools == "native":
            return {"type": "custom", "custom": {"name": chat_name}}, chat_tools
        return {"type": "function", "function": {"name": chat_name}}, chat_tools
    if kind == "allowed_tools":
        mode = choice.get("mode", "auto")
        if mode not in ("auto", "required"):
            raise InvalidRequest("allowed_tools mode must be 'auto' or 'required'.", "tool_choice.mode", "invalid_value")
        allowed = choice.get("tools")
        if not isinstance(allowed, list):
            raise InvalidRequest("allowed_tools needs a 'tools' array.", "tool_choice.tools", "invalid_type")
        # Portable form: filter the tool list and send the mode (only OpenAI knows allowed_tools).
        names = set()
        for tool in allowed:
            if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                names.add(tool_map.chat_name(tool["name"], tool.get("namespace")))
        kept = [t for t in chat_tools if _chat_tool_name(t) in names]
        return mode, kept
    if isinstance(kind, str) and kind:
        if opts.unsupported_tools == "reject":
            raise InvalidRequest(
                f"tool_choice type '{kind}' cannot run on this chat completions backend.",
                "tool_choice.type",
                "unsupported_tool",
            )
        return None, chat_tools
    raise InvalidRequest("Missing required parameter: 'type'.", "tool_choice.type", "missing_required_parameter")


def _chat_tool_name(tool: dict[str, Any]) -> str | None:
    inner = tool.get("function") or tool.get("custom") or {}
    return inner.get("name")


# --------------------------------------------------------------------------- items -> messages


def _s(value: Any) -> str:
    """A string field of client JSON, or "" when it holds something else."""
    return value if isinstance(value, str) else ""


def _text_of_parts(parts: list[Any], param: str) -> str:
    texts = []
    for j, part in enumerate(parts):
        if not isinstance(part, dict):
            raise InvalidRequest("Each content part must be an object.", f"{param}[{j}]", "invalid_type")
        if part.get("type") in _TEXT_PART_TYPES:
            texts.append(_s(part.get("text")))
    return "".join(texts)


def _user_part(part: Any, param: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise InvalidRequest("Each content part must be an object.", param, "invalid_type")
    kind = part.get("type")
    if kind in _TEXT_PART_TYPES:
        text = part.get("text")
        if not isinstance(text, str):
            raise InvalidRequest("Missing required parameter: 'text'.", f"{param}.text", "missing_required_parameter")
        return {"type": "text", "text": text}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            if part.get("file_id"):
                raise InvalidRequest(
                    "Images by file_id are not supported by a chat completions backend; send image_url.",
                    f"{param}.file_id",
                    "unsupported_parameter",
                )
            raise InvalidRequest("Missing required parameter: 'image_url'.", f"{param}.image_url", "missing_required_parameter")
        image: dict[str, Any] = {"url": url}
        detail = part.get("detail")
        if detail is not None:
            if not isinstance(detail, str):
                raise InvalidRequest("'detail' must be a string.", f"{param}.detail", "invalid_type")
            image["detail"] = detail
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file = {k: part[k] for k in ("file_data", "file_id", "filename") if isinstance(part.get(k), str)}
        if "file_data" not in file and "file_id" not in file:
            if part.get("file_url"):
                raise InvalidRequest(
                    "input_file by file_url is not supported by a chat completions backend; send file_data.",
                    f"{param}.file_url",
                    "unsupported_parameter",
                )
            raise InvalidRequest("input_file needs file_data or file_id.", param, "missing_required_parameter")
        return {"type": "file", "file": file}
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, dict):
            raise InvalidRequest("input_audio needs an 'input_audio' object.", f"{param}.input_audio", "invalid_type")
        _check_depth(audio, f"{param}.input_audio")
        return {"type": "input_audio", "input_audio": audio}
    raise InvalidRequest(f"Unsupported content part type: {kind!r}.", f"{param}.type", "invalid_value")


def _dumps_or_invalid(value: Any, param: str) -> str:
    """JSON text of a value a client sent as an object where a string belongs (too deep or huge: 400)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        raise InvalidRequest("Value cannot be serialised as JSON (too deep or out of range).", param,
                             "invalid_value") from None


def _tool_output(output: Any, param: str) -> str:
    """Chat tool messages take text only; images and files in an output array are replaced by a note."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        texts = []
        for j, part in enumerate(output):
            if not isinstance(part, dict):
                raise InvalidRequest("Each output part must be an object.", f"{param}[{j}]", "invalid_type")
            if part.get("type") in _TEXT_PART_TYPES:
                texts.append(_s(part.get("text")))
            else:
                texts.append(f"[{part.get('type', 'content')} omitted: the backend accepts only text tool results]")
        return "".join(texts)
    if output is None:
        raise InvalidRequest("Missing required parameter: 'output'.", param, "missing_required_parameter")
    return _dumps_or_invalid(output, param)


class _Builder:
    """Regroups a flat item list into chat messages (one pass, O(n))."""

    def __init__(self, opts: TranslatorOptions, tool_map: ToolMap | None) -> None:
        self.opts = opts
        self.tool_map = tool_map or ToolMap()
        self.messages: list[dict[str, Any]] = []
        self.open_assistant: dict[str, Any] | None = None  # the assistant message calls attach to
        self.pending_reasoning: dict[str, Any] | None = None  # replay data for the next assistant message
        self.call_ids: set[str] = set()
        self.tool_extras: dict[str, Any] = {}

    # reasoning replay -------------------------------------------------
    def _replay_onto(self, message: dict[str, Any]) -> None:
        data = self.pending_reasoning
        self.pending_reasoning = None
        if not data or self.opts.reasoning_replay == "none":
            return
        text = data.get("text") if isinstance(data.get("text"), str) else ""
        if self.opts.reasoning_replay == "reasoning_details":
            details = data.get("details") if isinstance(data.get("details"), list) else None
            if not details and text:
                details = [{"type": "reasoning.text", "text": text, "index": 0}]
            if details:
                message["reasoning_details"] = details
        elif text:
            message[self.opts.reasoning_replay] = text

    def reasoning(self, item: dict[str, Any], param: str) -> None:
        data = unpack_reasoning(item.get("encrypted_content"), self.opts.encryption_key)
        if data is None:
            # Not ours (or no encrypted_content): fall back to visible text, raw content first.
            text = ""
            content = item.get("content")
            if isinstance(content, list):
                text = _text_of_parts(content, f"{param}.content")
            if not text and isinstance(item.get("summary"), list):
                text = "\n\n".join(
                    p["text"] for p in item["summary"] if isinstance(p, dict) and isinstance(p.get("text"), str) and p["text"]
                )
            data = {"text": text} if text else {}
        extras = data.get("tool_extras")
        if isinstance(extras, dict):
            self.tool_extras.update(extras)
        if data.get("text") or data.get("details"):
            self.pending_reasoning = data
            self.open_assistant = None  # new reasoning starts a new assistant turn

    # messages -----------------------------------------------------------
    def message(self, item: dict[str, Any], param: str) -> None:
        role = item.get("role")
        if role not in _MESSAGE_ROLES:
            if role is None:
                raise InvalidRequest("Missing required parameter: 'role'.", f"{param}.role", "missing_required_parameter")
            raise InvalidRequest(
                f"Invalid role {role!r}: expected user, system, developer or assistant.", f"{param}.role", "invalid_value"
            )
        content = item.get("content")
        cparam = f"{param}.content"
        if role == "assistant":
            msg: dict[str, Any] = {"role": "assistant", "content": None}
            if isinstance(content, str):
                msg["content"] = content
            elif isinstance(content, list):
                texts: list[str] = []
                refusal: list[str] = []
                for j, part in enumerate(content):
                    if not isinstance(part, dict):
                        raise InvalidRequest("Each content part must be an object.", f"{cparam}[{j}]", "invalid_type")
                    if part.get("type") == "refusal":
                        refusal.append(_s(part.get("refusal")))
                    elif part.get("type") in _TEXT_PART_TYPES:
                        texts.append(_s(part.get("text")))
                    else:
                        raise InvalidRequest(
                            f"Unsupported assistant content part type: {part.get('type')!r}.",
                            f"{cparam}[{j}].type",
                            "invalid_value",
                        )
                if texts:
                    msg["content"] = "".join(texts)
                if refusal:
                    msg["refusal"] = "".join(refusal)
            elif content is not None:
                raise InvalidRequest("Message content must be a string or an array.", cparam, "invalid_type")
            self._replay_onto(msg)
            self.messages.append(msg)
            self.open_assistant = msg
            return
        self.open_assistant = None
        self.pending_reasoning = None
        chat_role = role
        if role == "developer" and self.opts.developer_role == "system":
            chat_role = "system"
        if isinstance(content, str):
            self.messages.append({"role": chat_role, "content": content})
        elif isinstance(content, list):
            if role == "user":
                parts = [_user_part(p, f"{cparam}[{j}]") for j, p in enumerate(content)]
                self.messages.append({"role": "user", "content": parts})
            else:
                # Many backends (Ollama, older vLLM) want plain-string system content.
                self.messages.append({"role": chat_role, "content": _text_of_parts(content, cparam)})
        elif content is None:
            raise InvalidRequest("Missing required parameter: 'content'.", cparam, "missing_required_parameter")
        else:
            raise InvalidRequest("Message content must be a string or an array.", cparam, "invalid_type")

    def call(self, item: dict[str, Any], param: str, custom: bool) -> None:
        call_id = item.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidRequest("Missing required parameter: 'call_id'.", f"{param}.call_id", "missing_required_parameter")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("Missing required parameter: 'name'.", f"{param}.name", "missing_required_parameter")
        namespace = item.get("namespace") if isinstance(item.get("namespace"), str) else None
        chat_name = self.tool_map.chat_name(name, namespace)
        if custom:
            raw = item.get("input")
            if not isinstance(raw, str):
                raise InvalidRequest("Missing required parameter: 'input'.", f"{param}.input", "missing_required_parameter")
            if self.opts.custom_tools == "native":
                call: dict[str, Any] = {"id": call_id, "type": "custom", "custom": {"name": chat_name, "input": raw}}
            else:
                arguments = orjson.dumps({"input": raw}).decode()
                call = {"id": call_id, "type": "function", "function": {"name": chat_name, "arguments": arguments}}
        else:
            arguments = item.get("arguments")
            if arguments is None or arguments == "":
                arguments = "{}"
            elif not isinstance(arguments, str):
                arguments = _dumps_or_invalid(arguments, f"{param}.arguments")
            call = {"id": call_id, "type": "function", "function": {"name": chat_name, "arguments": arguments}}
        msg = self.open_assistant
        if msg is None:
            msg = {"role": "assistant", "content": None}
            self._replay_onto(msg)
            self.messages.append(msg)
            self.open_assistant = msg
        msg.setdefault("tool_calls", []).append(call)
        self.call_ids.add(call_id)

    def output(self, item: dict[str, Any], param: str) -> None:
        call_id = item.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidRequest("Missing required parameter: 'call_id'.", f"{param}.call_id", "missing_required_parameter")
        if call_id not in self.call_ids:
            raise InvalidRequest(
                f"No tool call found for function call output with call_id {call_id}.",
                f"{param}.call_id",
                "invalid_value",
            )
        self.open_assistant = None
        self.pending_reasoning = None
        self.messages.append(
            {"role": "tool", "tool_call_id": call_id, "content": _tool_output(item.get("output"), f"{param}.output")}
        )

    def finish(self) -> list[dict[str, Any]]:
        if self.tool_extras:
            for msg in self.messages:
                for call in msg.get("tool_calls") or ():
                    extra = self.tool_extras.get(call["id"])
                    if extra is not None:
                        call["extra_content"] = extra
        return self.messages


def items_to_messages(
    items: list[Any], *, tool_map: ToolMap | None = None, param: str = "input", **options: Any
) -> list[dict[str, Any]]:
    """Responses input items → chat messages.

    Consecutive calls (after an assistant message or not) become one assistant message with
    ``tool_calls``; outputs become ``tool`` messages; a reasoning item's replay data goes onto the
    next assistant message (option ``reasoning_replay``). Unknown fields are ignored.
    """
    opts = TranslatorOptions.from_kwargs(**options)
    if not isinstance(items, list):
        raise InvalidRequest(f"'{param}' must be a string or an array of items.", param, "invalid_type")
    b = _Builder(opts, tool_map)
    for i, item in enumerate(items):
        iparam = f"{param}[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest("Each input item must be an object.", iparam, "invalid_type")
        kind = item.get("type")
        if kind == "message" or (kind is None and "role" in item):
            b.message(item, iparam)
        elif kind == "function_call":
            b.call(item, iparam, custom=False)
        elif kind == "custom_tool_call":
            b.call(item, iparam, custom=True)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            b.output(item, iparam)
        elif kind == "reasoning":
            b.reasoning(item, iparam)
        elif kind == "item_reference":
            raise InvalidRequest(
                "item_reference needs a server with storage; it cannot be translated here.",
                f"{iparam}.type",
                "unsupported_parameter",
            )
        elif kind in DROPPED_ITEM_TYPES:
            continue
        elif kind is None:
            raise InvalidRequest("Missing required parameter: 'type'.", f"{iparam}.type", "missing_required_parameter")
        else:
            raise InvalidRequest(f"Invalid input item type: {kind!r}.", f"{iparam}.type", "invalid_value")
    return b.finish()


# --------------------------------------------------------------------------- the request


def _copy_number(request: dict[str, Any], out: dict[str, Any], name: str, chat_name: str | None = None) -> None:
    value = request.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"'{name}' must be a number.", name, "invalid_type")
    out[chat_name or name] = value


def _response_format(text: Any) -> tuple[dict[str, Any] | None, Any]:
    if text is None:
        return None, None
    if not isinstance(text, dict):
        raise InvalidRequest("'text' must be an object.", "text", "invalid_type")
    fmt = text.get("format")
    verbosity = text.get("verbosity")
    if fmt is None:
        return None, verbosity
    if not isinstance(fmt, dict):
        raise InvalidRequest("'text.format' must be an object.", "text.format", "invalid_type")
    kind = fmt.get("type")
    if kind == "text":
        return None, verbosity
    if kind == "json_object":
        return {"type": "json_object"}, verbosity
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise InvalidRequest("Missing required parameter: 'text.format.schema'.", "text.format.schema", "missing_required_parameter")
        json_schema: dict[str, Any] = {"name": fmt.get("name") or "response", "schema": schema}
        if fmt.get("strict") is not None:
            json_schema["strict"] = fmt["strict"]
        if fmt.get("description") is not None:
            json_schema["description"] = fmt["description"]
        return {"type": "json_schema", "json_schema": json_schema}, verbosity
    raise InvalidRequest(f"Unsupported text.format type: {kind!r}.", "text.format.type", "invalid_value")


_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
               dict: "an object"}

_NUMBER = (int, float)

#: Every top-level field of OpenAI's Responses create body (and the two sampling penalties chat
#: backends take, which the bridge forwards), with the JSON types it accepts; None always means
#: "not given". A value of another type is refused naming the field: forwarding or echoing garbage
#: would fail later and less clearly. A name not in this table is an unknown field (`check_request`).
REQUEST_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "input": (str, list),
    "instructions": (str, list),
    "tools": (list,),
    "tool_choice": (str, dict),
    "parallel_tool_calls": (bool,),
    "stream": (bool,),
    "stream_options": (dict,),
    "store": (bool,),
    "background": (bool,),
    "previous_response_id": (str,),
    "conversation": (str, dict),
    "truncation": (str,),
    "include": (list,),
    "metadata": (dict,),
    "max_output_tokens": (int,),
    "max_tool_calls": (int,),
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "top_logprobs": (int,),
    "presence_penalty": _NUMBER,
    "frequency_penalty": _NUMBER,
    "reasoning": (dict,),
    "text": (dict,),
    "user": (str,),
    "safety_identifier": (str,),
    "prompt_cache_key": (str,),
    "prompt_cache_retention": (str,),
    "service_tier": (str,),
    "prompt": (dict,),
    "context_management": (list, dict),
    "verbosity": (str,),
}

#: Deeper JSON than this in a field we forward or echo is refused (orjson stops at 254 levels, and no
#: legitimate schema or metadata comes close).
MAX_DEPTH = 64


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    for kind in (bool, int, float, str, list, dict):
        if isinstance(value, kind):
            return _TYPE_NAMES[kind].split(" ", 1)[1]
    return type(value).__name__


def _check_type(request: dict[str, Any], name: str, kinds: tuple[type, ...]) -> None:
    value = request.get(name)
    if value is None:
        return
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if not ok:
        # an integer is a number: (int, float) reads "a number", not "an integer or a number"
        expected = " or ".join(_TYPE_NAMES[k] for k in kinds if not (k is int and float in kinds))
        raise InvalidRequest(
            f"Invalid type for '{name}': expected {expected}, but got {_json_type_name(value)} instead.",
            name,
            "invalid_type",
        )


def _too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON nesting exceeds ``limit`` (iterative: deep input must not blow Python's stack)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _check_depth(value: Any, param: str) -> None:
    if _too_deep(value):
        raise InvalidRequest(f"'{param}' is nested too deeply (more than {MAX_DEPTH} levels).", param, "invalid_value")


def _validate_fields(request: dict[str, Any]) -> None:
    """Type checks for the top-level fields a translation forwards or echoes."""
    # Runs twice per request, so the check is inlined and walks the request's own fields (a few)
    # rather than every known one (~50); only when one is of a wrong type does the walk over all
    # known fields run, so the field named is the same as ever (the first in REQUEST_FIELDS order).
    fields = REQUEST_FIELDS
    for name, value in request.items():
        if value is None:
            continue
        kinds = fields.get(name)
        if kinds is not None and (not isinstance(value, kinds) or (value.__class__ is bool and bool not in kinds)):
            get = request.get
            for known, known_kinds in fields.items():
                value = get(known)
                if value is not None and (
                    not isinstance(value, known_kinds) or (value.__class__ is bool and bool not in known_kinds)
                ):
                    _check_type(request, known, known_kinds)
            break
    metadata = request.get("metadata")
    if metadata is not None:
        if len(metadata) > 16:
            raise InvalidRequest("'metadata' can have at most 16 keys.", "metadata", "invalid_value")
        for key, value in metadata.items():
            if len(key) > 64:
                raise InvalidRequest("'metadata' keys can be at most 64 characters.", "metadata", "invalid_value")
            if not isinstance(value, str):
                raise InvalidRequest(
                    f"Invalid type for 'metadata.{key}': expected a string, but got {_json_type_name(value)} instead.",
                    f"metadata.{key}",
                    "invalid_type",
                )
            if len(value) > 512:
                raise InvalidRequest(
                    "'metadata' values can be at most 512 characters.", f"metadata.{key}", "invalid_value"
                )
    truncation = request.get("truncation")
    if truncation is not None and truncation not in ("auto", "disabled"):
        raise InvalidRequest("'truncation' must be 'auto' or 'disabled'.", "truncation", "invalid_value")
    include = request.get("include")
    if include is not None:
        for i, entry in enumerate(include):
            if not isinstance(entry, str):
                raise InvalidRequest(
                    f"Invalid type for 'include[{i}]': expected a string, but got {_json_type_name(entry)} instead.",
                    f"include[{i}]",
                    "invalid_type",
                )
    reasoning = request.get("reasoning")
    if reasoning is not None:
        for key in ("effort", "summary", "generate_summary"):
            if reasoning.get(key) is not None and not isinstance(reasoning[key], str):
                raise InvalidRequest(
                    f"Invalid type for 'reasoning.{key}': expected a string.", f"reasoning.{key}", "invalid_type"
                )
    for name in ("text", "tool_choice", "instructions", "stream_options", "prompt", "conversation"):
        value = request.get(name)
        if value.__class__ is not str and value is not None:  # a string or null has no depth
            _check_depth(value, name)
    tools = request.get("tools")
    if isinstance(tools, list):
        for i, tool in enumerate(tools):
            _check_depth(tool, f"tools[{i}]")


def check_request(body: dict[str, Any], *, strict: bool = False) -> list[str]:
    """Validate a Responses create body's top-level fields; return the names it has that are unknown.

    The one validator both the server and library users call, so the same bad field gets the same
    message everywhere: a field of the wrong JSON type (or a value out of its range: metadata
    limits, truncation, include entries, nesting depth) raises `InvalidRequest` naming the field, as
    does a missing ``model``. Unknown names are returned rather than refused, in body order, because OpenAI adds fields
    faster than a bridge follows them and a client sending a new one should still be served (the
    server logs each name once); ``strict=True`` refuses them as OpenAI does, with its wording and
    ``code="unknown_parameter"``. The inside of ``input`` and ``tools`` is checked by the
    translation itself (`responses_to_chat_request`), which needs the tool map to do it.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", None, "invalid_type")
    unknown = [name for name in body if name not in REQUEST_FIELDS]
    if strict and unknown:
        name = unknown[0]
        raise InvalidRequest(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    _validate_fields(body)
    if not body.get("model"):  # the one field no request can do without (input may come from history)
        raise InvalidRequest("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    return unknown


def responses_to_chat_request(request: Any, **options: Any) -> dict[str, Any]:
    """A Responses ``POST /v1/responses`` body → a ``POST /v1/chat/completions`` body.

    ``previous_response_id`` and ``conversation`` are not resolved here (that needs storage): the
    server resolves them into ``input`` before calling this, and they are otherwise ignored.
    """
    opts = TranslatorOptions.from_kwargs(**options)
    if not isinstance(request, dict):
        raise InvalidRequest("The request body must be a JSON object.", None, "invalid_type")
    model = request.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest(
            f"Invalid type for 'model': expected a string, but got {_json_type_name(model)} instead.",
            "model",
            "invalid_type",
        )
    if not model:
        raise InvalidRequest("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    _validate_fields(request)

    chat_tools, tool_map = build_tool_map(request.get("tools"), opts)
    messages: list[dict[str, Any]] = []
    instructions = request.get("instructions")
    if isinstance(instructions, str):
        if instructions:
            role = "developer" if opts.developer_role == "developer" else "system"
            messages.append({"role": role, "content": instructions})
    elif isinstance(instructions, list):
        messages.extend(items_to_messages(instructions, tool_map=tool_map, param="instructions", options=opts))
    elif instructions is not None:
        raise InvalidRequest("'instructions' must be a string.", "instructions", "invalid_type")

    if "input" not in request or request["input"] is None:
        raise InvalidRequest("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    inp = request["input"]
    if isinstance(inp, str):
        messages.append({"role": "user", "content": inp})
    elif isinstance(inp, list):
        messages.extend(items_to_messages(inp, tool_map=tool_map, options=opts))
    else:
        raise InvalidRequest("'input' must be a string or an array of items.", "input", "invalid_type")
    if not messages:
        raise InvalidRequest("'input' must contain at least one message.", "input", "empty_array")

    out: dict[str, Any] = {"model": model, "messages": messages}
    tool_choice, chat_tools = _tool_choice(request.get("tool_choice"), chat_tools, tool_map, opts)
    if tool_choice == "none" and opts.tool_choice_none == "drop_tools":
        chat_tools = []  # a model shown no tools can call none
    if chat_tools:
        out["tools"] = chat_tools
        if tool_choice is not None:
            out["tool_choice"] = tool_choice
        if request.get("parallel_tool_calls") is not None:
            out["parallel_tool_calls"] = bool(request["parallel_tool_calls"])
    elif tool_choice == "none" and request.get("tools"):
        pass  # every tool was dropped; "none" is then implied

    max_output = request.get("max_output_tokens")
    if max_output is not None:
        if isinstance(max_output, bool) or not isinstance(max_output, int) or max_output < 1:
            raise InvalidRequest("'max_output_tokens' must be a positive integer.", "max_output_tokens", "invalid_value")
        out[opts.max_tokens_field] = max_output
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        _copy_number(request, out, name)
    top_logprobs = request.get("top_logprobs")
    include = request.get("include") or ()
    if top_logprobs is not None:
        if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int) or not 0 <= top_logprobs <= 20:
            raise InvalidRequest("'top_logprobs' must be an integer between 0 and 20.", "top_logprobs", "invalid_value")
        out["logprobs"] = True
        out["top_logprobs"] = top_logprobs
    if isinstance(include, list) and "message.output_text.logprobs" in include:
        out["logprobs"] = True

    response_format, verbosity = _response_format(request.get("text"))
    if response_format is not None:
        out["response_format"] = response_format

    reasoning = request.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, dict):
        raise InvalidRequest("'reasoning' must be an object.", "reasoning", "invalid_type")
    effort = reasoning.get("effort") if reasoning else None
    if effort is not None:
        if opts.reasoning_effort == "reasoning_effort":
            out["reasoning_effort"] = effort
        elif opts.reasoning_effort == "openrouter":
            out["reasoning"] = {"effort": effort}
        elif opts.reasoning_effort == "deepseek":
            out["thinking"] = {"type": "disabled" if effort == "none" else "enabled"}

    if opts.openai_fields:
        for name in ("metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier", "user"):
            if request.get(name) is not None:
                out[name] = request[name]
        if verbosity is not None:
            out["verbosity"] = verbosity

    if request.get("stream"):
        out["stream"] = True
        if opts.stream_usage:
            out["stream_options"] = {"include_usage": True}
    return out


# --------------------------------------------------------------------------- reverse direction


def _chat_part_to_item_part(part: Any, role: str, param: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise InvalidRequest("Each content part must be an object.", param, "invalid_type")
    kind = part.get("type")
    if kind == "text":
        return {"type": "output_text" if role == "assistant" else "input_text", "text": part.get("text", "")}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        out: dict[str, Any] = {"type": "input_image", "image_url": url}
        if isinstance(image, dict) and image.get("detail") is not None:
            out["detail"] = image["detail"]
        return out
    if kind == "file":
        file = part.get("file") or {}
        return {"type": "input_file", **{k: v for k, v in file.items() if v is not None}}
    if kind == "input_audio":
        return {"type": "input_audio", "input_audio": part.get("input_audio")}
    if kind == "refusal":
        return {"type": "refusal", "refusal": part.get("refusal", "")}
    raise InvalidRequest(f"Unsupported content part type: {kind!r}.", f"{param}.type", "invalid_value")


def messages_to_items(messages: list[Any]) -> list[dict[str, Any]]:
    """Chat messages → Responses input items (the inverse of `items_to_messages`).

    An assistant message splits into: a reasoning item (its ``reasoning_content``/``reasoning``/
    ``reasoning_details``, packed into ``encrypted_content`` so it replays exactly), a message item,
    one function_call item per tool call, and, when tool calls carry provider extras (Gemini's
    thought signatures), a trailing reasoning item holding only those.
    """
    if not isinstance(messages, list):
        raise InvalidRequest("'messages' must be an array.", "messages", "invalid_type")
    items: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise InvalidRequest("Each message must be an object.", param, "invalid_type")
        role = msg.get("role")
        content = msg.get("content")
        if role in ("system", "developer", "user"):
            if isinstance(content, list):
                content = [_chat_part_to_item_part(p, role, f"{param}.content[{j}]") for j, p in enumerate(content)]
            elif content is None:
                content = ""
            items.append({"type": "message", "role": role, "content": content})
        elif role == "assistant":
            text = msg.get("reasoning_content") or msg.get("reasoning")
            details = msg.get("reasoning_details")
            if (isinstance(text, str) and text) or details:
                data: dict[str, Any] = {}
                if isinstance(text, str) and text:
                    data["text"] = text
                if details:
                    data["details"] = details
                    if "text" not in data:
                        joined = "".join(
                            d.get("text") or d.get("summary") or ""
                            for d in details
                            if isinstance(d, dict)
                        )
                        if joined:
                            data["text"] = joined
                items.append(
                    {
                        "type": "reasoning",
                        "summary": [{"type": "summary_text", "text": data["text"]}] if data.get("text") else [],
                        "encrypted_content": pack_reasoning(data),
                    }
                )
            tool_calls = msg.get("tool_calls") or []
            parts: list[dict[str, Any]] = []
            if isinstance(content, str):
                parts.append({"type": "output_text", "text": content})
            elif isinstance(content, list):
                for j, p in enumerate(content):
                    parts.append(_chat_part_to_item_part(p, "assistant", f"{param}.content[{j}]"))
            if isinstance(msg.get("refusal"), str):
                parts.append({"type": "refusal", "refusal": msg["refusal"]})
            if parts or not tool_calls:
                items.append({"type": "message", "role": "assistant", "content": parts})
            extras: dict[str, Any] = {}
            for j, call in enumerate(tool_calls):
                cparam = f"{param}.tool_calls[{j}]"
                if not isinstance(call, dict):
                    raise InvalidRequest("Each tool call must be an object.", cparam, "invalid_type")
                if call.get("type") == "custom" or "custom" in call:
                    custom = call.get("custom") or {}
                    items.append(
                        {
                            "type": "custom_tool_call",
                            "call_id": call.get("id"),
                            "name": custom.get("name"),
                            "input": custom.get("input", ""),
                        }
                    )
                else:
                    fn = call.get("function") or {}
                    items.append(
                        {
                            "type": "function_call",
                            "call_id": call.get("id"),
                            "name": fn.get("name"),
                            "arguments": fn.get("arguments", ""),
                        }
                    )
                if call.get("extra_content") is not None:
                    extras[call["id"]] = call["extra_content"]
            if extras:
                items.append({"type": "reasoning", "summary": [], "encrypted_content": pack_reasoning({"tool_extras": extras})})
        elif role == "tool":
            output = content
            if isinstance(content, list):
                output = [_chat_part_to_item_part(p, "user", f"{param}.content[{j}]") for j, p in enumerate(content)]
            items.append({"type": "function_call_output", "call_id": msg.get("tool_call_id"), "output": output})
        else:
            raise InvalidRequest(f"Unsupported message role: {role!r}.", f"{param}.role", "invalid_value")
    return items


def _obj(value: Any) -> dict[str, Any]:
    """A sub-object of client JSON, or {} when it is something else (no AttributeError on junk)."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
